"""Reads and writes that stay under a root folder: no `..`, no symbolic links, no over-long names.

The package root and the processing folder may sit on shared storage where other people can
create links; following one would read or write outside the root (a `datasets` folder linked
elsewhere once made a job write there and report SUCCESS). So nothing here follows a link: a
link anywhere on the way is refused, whatever it points to. Used by the backend (packages,
scratch) and the source cache alike, hence here: processors import nothing from the backend.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from processors.errors import PathOutsideRoot

NAME_MAX = 255  # bytes in one path segment on Linux file systems
PATH_MAX = 4096  # bytes in a whole path


def relative_parts(relative: str) -> list[str]:
    """The segments of a `/`-separated relative path; PathOutsideRoot for `..`, `.`, NUL or over-long ones."""
    if relative.startswith("/"):
        raise PathOutsideRoot(f"invalid path: {relative!r} is absolute")
    parts = [p for p in relative.split("/") if p]
    for part in parts:
        if part in (".", "..") or "\0" in part:
            raise PathOutsideRoot(f"invalid path: {relative!r}")
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise PathOutsideRoot(f"invalid path: a segment is longer than {NAME_MAX} bytes")
    return parts


def _refuse_link(path: Path) -> os.stat_result | None:
    """lstat of `path` (None when missing); PathOutsideRoot when it is a symbolic link."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        raise PathOutsideRoot(f"{path} is a symbolic link: refusing to follow it out of {path.parent}")
    return info


def inside(root: Path, path: Path) -> Path:
    """`path` after checking it is under `root` with no symbolic link between them (it may not exist)."""
    current = root
    for part in relative_parts(_relative(root, path)):
        current = current / part
        if _refuse_link(current) is None:
            break
    return path


def _relative(root: Path, path: Path) -> str:
    if len(os.fsencode(path)) >= PATH_MAX:
        raise PathOutsideRoot(f"invalid path: longer than {PATH_MAX} bytes")
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        raise PathOutsideRoot(f"{path} is outside {root}") from None


def make_dirs(root: Path, path: Path) -> Path:
    """`mkdir -p path` under `root` (created if missing: it is configured, so trusted), refusing to
    go through a symbolic link or a file."""
    root.mkdir(parents=True, exist_ok=True)
    current = root
    for part in relative_parts(_relative(root, path)):
        current = current / part
        try:
            os.mkdir(current)
        except FileExistsError:
            pass
        info = _refuse_link(current)
        if info is None or not stat.S_ISDIR(info.st_mode):
            raise PathOutsideRoot(f"{current} is not a folder")
    return path


def open_no_follow(path: Path, mode: str = "r", **kwargs):
    """`open()` that refuses a symbolic link at `path` itself (O_NOFOLLOW: ELOOP becomes PathOutsideRoot)."""
    flags = {"r": os.O_RDONLY, "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND}[mode]
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component is a link
            raise PathOutsideRoot(f"{path} is a symbolic link: refusing to follow it") from None
        raise
    return os.fdopen(fd, mode, **kwargs)
