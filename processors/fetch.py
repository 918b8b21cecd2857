"""Fetch source files into a persistent cache: streamed, resumable, verified, locked, atomic.

The transport under the source cache (`processors.sources`), which processors use through
`context.sources`; they do not call this module themselves.

Downloads
    `fetch(url, destination)` streams `url` with `requests` into `<destination>.part`, then
    verifies it (declared size, sha256 and/or sha1; never empty, never an HTML page where data
    was expected)
    and moves it into place with `os.replace`, so `destination` either does not exist or is a
    complete, verified file. Connection failures, timeouts, HTTP 429/5xx and truncated bodies are
    retried with exponential backoff (`backoff * 2**attempt` seconds, at most 60 s); an attempt
    that made the `.part` file grow does not use up a retry. After a broken transfer the `.part`
    file is kept and the next request asks for the rest with `Range: bytes=<part size>-`; a 206
    whose `Content-Range` starts at that offset is appended, anything else (a 200 from a server
    that ignores Range) starts again from zero. HTTP 4xx other than 408/429 is not retried.

    An unreachable origin, or one that keeps failing, raises `SourceUnavailable` whose message
    names the URL. A failed verification raises `SourceCorrupt` (a `SourceUnavailable`) and
    deletes the `.part` file: nothing unverified is ever left in the cache.

HTML instead of data
    Servers often answer a missing file with a 200 and an HTML page (login walls, "not found"
    pages). Unless the URL itself names an HTML page (`.html`/`.htm`) or `allow_html=True`, a
    `text/html` content type or a body starting with `<!DOCTYPE` or `<html` is refused.

Cache and locking
    `destination` is the cached file's path. While fetching, `<destination>.lock` is held with
    `fcntl.flock` (exclusive), so two workers (processes or threads) never download the same file
    at once: the second waits, then finds the file cached and returns at once. Lock files are
    left in place (deleting them would race with waiters). Every fetched file gets a record,
    `<destination>.fetch.json`: URL, location read (origin or mirror), size, sha256, sha1,
    modification time and retrieval time. A file already at `destination` is used only while it
    is what was fetched: size and modification time equal to the record's (otherwise it is hashed
    again and must still have the recorded sha256) and the recorded hashes equal the declared
    ones; anything else (including a file without a record) is discarded and fetched again.
    `cache_path(url, cache_dir)` gives the conventional location, laid out like a mirror.

Mirrors
    A mirror replaces every origin, for offline sites and tests. It is either a base URL
    (`http(s)://...`) or a local folder (a path or `file://` URL), laid out like the origins:

        https://host/path/to/file.zip  ->  <mirror>/host/path/to/file.zip

    i.e. the scheme, any port, user info, query string and fragment are dropped, the host name is
    the first folder, and the URL path follows (percent-decoded for folders, kept encoded for
    URL mirrors). `mirror_url(url, mirror)` computes it. A folder mirror is copied into the cache
    with the same verification; paths that would leave the mirror folder (`..`) are refused.

Archives
    `extract_archive(archive, destination, max_bytes=..., max_ratio=...)` extracts zip and tar
    (gz/bz2/xz) archives after checking every member: absolute paths, `..` components, symbolic
    or hard links and special files are refused, and so is an archive whose uncompressed total
    exceeds `max_bytes` or `max_ratio` times the archive's own size (an archive bomb), checked on
    the declared sizes and again on the bytes actually written (against lying headers). Members
    are hashed (sha256) while written into a temporary sibling folder and moved into
    `destination` only when all succeeded, so a refused or failed archive writes nothing into
    `destination` and leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import tarfile
import time
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator
from urllib.parse import unquote, urlsplit

import requests

from processors.errors import SourceCorrupt, SourceUnavailable, UnsafeArchive

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], None]

CHUNK_SIZE = 1 << 20
MAX_BACKOFF_SECONDS = 60.0
LOCK_POLL_SECONDS = 0.1
USER_AGENT = "ccg-autopkg (+https://github.com/nismod)"
_HTML_PREFIXES = (b"<!doctype", b"<html")
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class _Retry(Exception):
    """An attempt failed in a way worth retrying."""


# --------------------------------------------------------------------------- mirrors and cache


def _mirror_relative(url: str) -> tuple[str, str]:
    """(host, path) of `url` for the mirror layout; raises ValueError for URLs without a host."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"not an absolute URL: {url!r}")
    return parts.hostname, parts.path.lstrip("/")


def mirror_url(url: str, mirror: str) -> str:
    """Where `url` lives in `mirror`: `https://host/path/f` -> `<mirror>/host/path/f`.

    For a URL mirror the result is a URL; for a folder (path or `file://` URL) it is a local path.
    """
    host, path = _mirror_relative(url)
    if _is_url_mirror(mirror):
        return f"{mirror.rstrip('/')}/{host}/{path}"
    root = _mirror_folder(mirror)
    relative = PurePosixPath(host, unquote(path))
    if any(p in ("..", "") for p in relative.parts) or relative.is_absolute():
        raise ValueError(f"URL {url!r} does not map to a path inside the mirror")
    return str(root.joinpath(*relative.parts))


def cache_path(url: str, cache_dir: Path) -> Path:
    """The conventional cache location of `url`: `<cache_dir>/<host>/<path>` (a mirror layout)."""
    return Path(mirror_url(url, str(Path(cache_dir).resolve())))


def _is_url_mirror(mirror: str) -> bool:
    return mirror.startswith(("http://", "https://"))


def _mirror_folder(mirror: str) -> Path:
    if mirror.startswith("file://"):
        return Path(unquote(urlsplit(mirror).path))
    return Path(mirror)


# --------------------------------------------------------------------------- locking


@contextlib.contextmanager
def file_lock(path: Path, check_cancelled: CancelCheck | None = None) -> Iterator[None]:
    """Hold an exclusive `fcntl.flock` on `path` (created if needed), waiting for other holders.

    Works between processes and between threads (each call opens its own file description).
    `check_cancelled` is called while waiting.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if check_cancelled:
                    check_cancelled()
                time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- fetch


def fetch(
    url: str,
    destination: Path,
    *,
    sha256: str | None = None,
    sha1: str | None = None,
    size: int | None = None,
    mirror: str | None = None,
    session: requests.Session | None = None,
    retries: int = 4,
    timeout: float | tuple[float, float] = 30,
    backoff: float = 1.0,
    allow_html: bool | None = None,
    progress: ProgressCallback | None = None,
    check_cancelled: CancelCheck | None = None,
) -> Path:
    """Download `url` (or its copy in `mirror`) to `destination`, verified; return `destination`.

    Returns at once when a verified copy is already cached. `timeout` is the read timeout, or a
    (connect, read) pair; `retries` counts extra attempts after the first. `progress` receives
    (percent 0-100, step); `check_cancelled` is called between chunks and should raise to stop
    (the `.part` file is kept for a later resume). Raises `SourceUnavailable` (origin unreachable
    or failing), `SourceCorrupt` (size/hash mismatch, HTML instead of data).
    """
    destination = Path(destination)
    check = check_cancelled or (lambda: None)
    report = progress or (lambda percent, step: None)
    expected = _Expected(sha256=_norm_hex(sha256), sha1=_norm_hex(sha1), size=size)
    if allow_html is None:
        allow_html = urlsplit(url).path.lower().endswith((".html", ".htm"))

    destination.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(destination.with_name(destination.name + ".lock"), check):
        if _cached_ok(destination, expected):
            report(100.0, f"{destination.name} already cached")
            return destination
        part = destination.with_name(destination.name + ".part")
        source = mirror_url(url, mirror) if mirror else url
        label = url if source == url else f"{url} (mirror: {source})"
        if mirror and not _is_url_mirror(mirror):
            hashes = _copy_local(Path(source), part, label, expected, report, check)
        else:
            own_session = session is None
            http = session or _new_session()
            try:
                hashes = _download(
                    http, source, part, label, expected, retries, timeout, backoff, allow_html, report, check
                )
            finally:
                if own_session:
                    http.close()
        _verify(part, label, expected, hashes, allow_html)
        os.replace(part, destination)
        _write_record(destination, url, hashes, location=source)
    report(100.0, f"fetched {destination.name}")
    return destination


class _Expected:
    def __init__(self, *, sha256: str | None, sha1: str | None, size: int | None):
        self.sha256, self.sha1, self.size = sha256, sha1, size


def _norm_hex(value: str | None) -> str | None:
    return value.strip().lower() if value else None


def _new_session() -> requests.Session:
    s = requests.Session()
    s.headers["User-Agent"] = USER_AGENT
    return s


def _timeouts(timeout: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(timeout, tuple):
        return timeout
    return (min(float(timeout), 10.0), float(timeout))


class Hasher:
    """sha256 + sha1 + byte count of the `.part` file, kept in step with what was appended."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sha256 = hashlib.sha256()
        self.sha1 = hashlib.sha1()
        self.count = 0

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        self.sha1.update(data)
        self.count += len(data)

    def catch_up(self, path: Path, size: int) -> None:
        """Hash the first `size` bytes of `path` unless already done."""
        if self.count == size:
            return
        self.reset()
        with open(path, "rb") as f:
            while self.count < size:
                data = f.read(min(CHUNK_SIZE, size - self.count))
                if not data:
                    break
                self.update(data)

    def result(self) -> dict[str, object]:
        return {"sha256": self.sha256.hexdigest(), "sha1": self.sha1.hexdigest(), "size": self.count}

    @classmethod
    def of(cls, path: Path) -> dict[str, object]:
        """sha256, sha1 and size of a whole file."""
        hasher = cls()
        hasher.catch_up(path, Path(path).stat().st_size)
        return hasher.result()


def _download(
    session, url, part: Path, label, expected: _Expected, retries, timeout, backoff, allow_html, report, check
) -> dict:
    hasher = Hasher()
    attempt = 0
    best = -1
    last_error: Exception | str | None = None
    while True:
        check()
        offset = part.stat().st_size if part.exists() else 0
        if expected.size is not None and offset > expected.size:
            part.unlink()
            offset = 0
        if offset > best:
            if best >= 0:
                attempt = 0  # progress was made: a broken transfer does not use up the retries
            best = offset
        try:
            done = _attempt(session, url, part, offset, label, expected, timeout, allow_html, hasher, report, check)
            if done:
                return hasher.result()
            last_error = "the transfer ended early"
        except _Retry as exc:
            last_error = exc.__cause__ or exc
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            last_error = exc
        except requests.RequestException as exc:  # invalid URL, too many redirects, ...
            raise SourceUnavailable(f"cannot download {label}: {exc}") from exc
        if attempt >= retries:
            raise SourceUnavailable(f"cannot download {label} after {attempt + 1} attempts: {last_error}")
        delay = min(MAX_BACKOFF_SECONDS, backoff * 2**attempt)
        attempt += 1
        log.info("retrying %s in %.1f s (%s)", label, delay, last_error)
        _sleep(delay, check)


def _attempt(session, url, part: Path, offset, label, expected, timeout, allow_html, hasher, report, check) -> bool:
    """One request; True when the body arrived complete. Raises `_Retry` on retryable failures."""
    headers = {"Range": f"bytes={offset}-", "Accept-Encoding": "identity"} if offset else {"Accept-Encoding": "identity"}
    with session.get(url, stream=True, timeout=_timeouts(timeout), headers=headers) as resp:
        if resp.status_code == 416 and offset:
            # Range not satisfiable: the .part may already be complete (or the file changed).
            total = _content_range_total(resp.headers.get("Content-Range", ""))
            if total == offset or (total is None and expected.size == offset):
                hasher.catch_up(part, offset)
                return True
            part.unlink()
            raise _Retry("the server refused to resume; starting again")
        if resp.status_code in _RETRY_STATUS:
            raise _Retry(f"HTTP {resp.status_code} {resp.reason}")
        if resp.status_code >= 400:
            raise SourceUnavailable(f"cannot download {label}: HTTP {resp.status_code} {resp.reason}")
        if offset and resp.status_code == 206 and _content_range_start(resp.headers.get("Content-Range", "")) == offset:
            mode = "ab"
            hasher.catch_up(part, offset)
        else:
            if resp.status_code != 200:
                raise _Retry(f"unexpected HTTP {resp.status_code} {resp.reason}")
            mode, offset = "wb", 0
            hasher.reset()
        if not allow_html and "text/html" in resp.headers.get("Content-Type", "").lower():
            part.unlink(missing_ok=True)
            raise SourceCorrupt(f"expected data from {label} but the server sent an HTML page (Content-Type text/html)")
        length = resp.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        if resp.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
            remaining = None  # Content-Length counts encoded bytes; size and hashes still apply
        total = (offset + remaining) if remaining is not None else expected.size
        received = 0
        last_report = 0.0
        try:
            with open(part, mode) as f:
                for chunk in resp.iter_content(CHUNK_SIZE):
                    if not chunk:
                        continue
                    if hasher.count == 0 and not allow_html and _looks_like_html(chunk):
                        f.close()
                        part.unlink(missing_ok=True)
                        raise SourceCorrupt(f"expected data from {label} but the server sent an HTML page")
                    f.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    now = time.monotonic()
                    if now - last_report >= 0.5:
                        last_report = now
                        done = offset + received
                        percent = 100.0 * done / total if total else 0.0
                        report(min(percent, 99.0), f"downloading {part.name[:-5]}: {done / 1e6:.1f} MB")
                    check()
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout) as exc:
            raise _Retry(str(exc)) from exc
        if remaining is not None and received < remaining:
            return False
        return True


def _content_range_start(value: str) -> int | None:
    # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _content_range_total(value: str) -> int | None:
    try:
        return int(value.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None


def _looks_like_html(head: bytes) -> bool:
    start = head[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith(_HTML_PREFIXES)


def _sleep(seconds: float, check: CancelCheck) -> None:
    deadline = time.monotonic() + seconds
    while True:
        check()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.2))


def _copy_local(source: Path, part: Path, label, expected, report, check) -> dict:
    if not source.is_file():
        raise SourceUnavailable(f"cannot fetch {label}: not found in the mirror folder")
    hasher = Hasher()
    total = source.stat().st_size
    try:
        with open(source, "rb") as src, open(part, "wb") as dst:
            while True:
                check()
                data = src.read(CHUNK_SIZE)
                if not data:
                    break
                dst.write(data)
                hasher.update(data)
                report(min(99.0, 100.0 * hasher.count / max(total, 1)), f"copying {source.name}")
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return hasher.result()


def _verify(part: Path, label, expected: _Expected, hashes: dict, allow_html: bool) -> None:
    problems = []
    if hashes["size"] == 0 and expected.size != 0:
        problems.append("it is empty (0 bytes)")
    if expected.size is not None and hashes["size"] != expected.size:
        problems.append(f"size {hashes['size']} bytes, expected {expected.size}")
    if expected.sha256 and hashes["sha256"] != expected.sha256:
        problems.append(f"sha256 {hashes['sha256']}, expected {expected.sha256}")
    if expected.sha1 and hashes["sha1"] != expected.sha1:
        problems.append(f"sha1 {hashes['sha1']}, expected {expected.sha1}")
    if not problems and not allow_html:
        with open(part, "rb") as f:
            if _looks_like_html(f.read(512)):
                problems.append("it is an HTML page, not data")
    if problems:
        part.unlink(missing_ok=True)
        raise SourceCorrupt(f"{label} failed verification: " + "; ".join(problems))


def _record_path(destination: Path) -> Path:
    return destination.with_name(destination.name + ".fetch.json")


def _write_record(destination: Path, url: str, hashes: dict, *, location: str, fetched: str | None = None) -> None:
    record = {
        "url": url,
        "location": location,  # the URL or mirror location it was read from
        **hashes,
        "mtime_ns": destination.stat().st_mtime_ns,
        "fetched": fetched or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _save_record(destination, record)


def _save_record(destination: Path, record: dict) -> None:
    tmp = _record_path(destination).with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, _record_path(destination))


def source_record(destination: Path) -> dict | None:
    """What was recorded when `destination` was fetched: url, location, size, sha256, sha1,
    mtime_ns and fetched (UTC)."""
    try:
        return json.loads(_record_path(Path(destination)).read_text())
    except (OSError, ValueError):
        return None


def mark_checked(destination: Path, checked_stat: os.stat_result, **facts) -> None:
    """Note in `destination`'s fetch record that the file, as `checked_stat` found it (size and
    modification time, taken before the checks), passed its user's content checks, and what
    they found (`facts`, e.g. synthetic=True). Under the file's lock, and only while the record
    still describes that file (not a copy fetched since)."""
    with file_lock(destination.with_name(destination.name + ".lock")):
        record = source_record(destination)
        if record is None or (record.get("size"), record.get("mtime_ns")) != (checked_stat.st_size, checked_stat.st_mtime_ns):
            return
        record["checked"] = {"size": checked_stat.st_size, "mtime_ns": checked_stat.st_mtime_ns, **facts}
        _save_record(destination, record)


def checked_facts(destination: Path) -> dict | None:
    """What `mark_checked` noted, while `destination` is still the file that was checked (same
    size and modification time); None otherwise (never checked, fetched again, modified)."""
    checked = (source_record(destination) or {}).get("checked")
    try:
        stat_ = destination.stat()
    except OSError:
        return None
    if not checked or (checked.get("size"), checked.get("mtime_ns")) != (stat_.st_size, stat_.st_mtime_ns):
        return None
    return {k: v for k, v in checked.items() if k not in ("size", "mtime_ns")}


def discard(destination: Path) -> None:
    """Remove a cached file and its record (the next fetch downloads it again)."""
    for path in (Path(destination), _record_path(Path(destination))):
        path.unlink(missing_ok=True)


def _cached_ok(destination: Path, expected: _Expected) -> bool:
    """A cached file is used when it still is what was fetched: its size and modification time
    equal the record's (otherwise it is hashed again and must equal the recorded sha256), and the
    recorded hashes equal the declared ones. Anything else is discarded and fetched again."""
    if not destination.is_file():
        return False
    stat_ = destination.stat()
    record = source_record(destination) or {}
    stale = None
    if expected.size is not None and stat_.st_size != expected.size:
        stale = f"has {stat_.st_size} bytes, expected {expected.size}"
    elif record.get("size") != stat_.st_size:
        stale = f"has {stat_.st_size} bytes, {record.get('size')} when it was fetched"
    elif record.get("mtime_ns") != stat_.st_mtime_ns or any(getattr(expected, k) and not record.get(k) for k in ("sha256", "sha1")):
        hasher = Hasher()
        hasher.catch_up(destination, stat_.st_size)
        got = hasher.result()
        if record.get("sha256") not in (None, got["sha256"]):
            stale = "was modified since it was fetched (sha256 differs)"
        else:
            _write_record(destination, record.get("url", ""), got, location=record.get("location", ""), fetched=record.get("fetched"))
            record = source_record(destination) or {}
    for key in ("sha256", "sha1"):
        want = getattr(expected, key)
        if stale is None and want and record.get(key) != want:
            stale = f"has another {key} than declared"
    if stale is not None:
        log.warning("cached %s %s: fetching it again", destination, stale)
        discard(destination)
        return False
    return True


# --------------------------------------------------------------------------- archives


#: Largest accepted ratio of uncompressed bytes to archive bytes. Real data archives stay far below
#: (internally compressed GeoTIFFs about 1, CSV and shapefiles under 10); DEFLATE bombs reach 1000.
DEFAULT_MAX_RATIO = 200.0


@dataclass(frozen=True)
class ExtractedMember:
    bytes: int
    sha256: str  # hashed while it was written


def extract_archive(
    archive: Path,
    destination: Path,
    *,
    max_bytes: int,
    max_ratio: float | None = DEFAULT_MAX_RATIO,
    check_cancelled: CancelCheck | None = None,
) -> dict[Path, ExtractedMember]:
    """Extract a zip or tar archive into `destination` safely; return {extracted path: size and sha256}.

    Raises `UnsafeArchive` for absolute or `..` members, links and special files, and when the
    uncompressed total exceeds `max_bytes` or `max_ratio` times the archive's size (both checked
    on the declared sizes first, then on the bytes actually written, against lying headers);
    nothing is written into `destination` then.
    """
    archive, destination = Path(archive), Path(destination)
    check = check_cancelled or (lambda: None)
    if zipfile.is_zipfile(archive):
        extractor = _ZipMembers(archive)
    elif tarfile.is_tarfile(archive):
        extractor = _TarMembers(archive)
    else:
        raise SourceCorrupt(f"{archive.name} is neither a zip nor a tar archive")
    limit = max_bytes
    if max_ratio is not None:
        limit = min(limit, int(max_ratio * max(1, archive.stat().st_size)))

    def too_big(total: int) -> UnsafeArchive:
        if limit < max_bytes:
            return UnsafeArchive(
                f"{archive.name} expands to more than {max_ratio:g} times its {archive.stat().st_size} bytes "
                f"({total} bytes or more): refused as an archive bomb (limit {limit} bytes)"
            )
        return UnsafeArchive(f"{archive.name} expands to {total} bytes or more, past the limit of {max_bytes} bytes")

    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.extract-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        with extractor:
            members = extractor.members()  # validated names and declared sizes
            declared = sum(size for _, _, size in members)
            if declared > limit:
                raise too_big(declared)
            written = 0
            files: dict[PurePosixPath, ExtractedMember] = {}
            for member, relative, _ in members:
                check()
                target = staging.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                digest, size = hashlib.sha256(), 0
                with extractor.open(member) as src, open(target, "wb") as dst:
                    while True:
                        data = src.read(CHUNK_SIZE)
                        if not data:
                            break
                        written += len(data)
                        if written > limit:
                            raise too_big(written)
                        dst.write(data)
                        digest.update(data)
                        size += len(data)
                files[relative] = ExtractedMember(bytes=size, sha256=digest.hexdigest())
        destination.mkdir(parents=True, exist_ok=True)
        out = {}
        for relative, member in files.items():
            target = destination.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging.joinpath(*relative.parts), target)
            out[target] = member
        return out
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise SourceCorrupt(f"{archive.name} is a damaged archive: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _safe_relative(name: str, archive: Path) -> PurePosixPath | None:
    """The member's relative path, None for a directory entry; `UnsafeArchive` if it escapes."""
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        raise UnsafeArchive(f"{archive.name}: member {name!r} has an absolute path")
    parts = [p for p in normalised.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{archive.name}: member {name!r} points outside the archive folder")
    if not parts or normalised.endswith("/"):
        return None
    return PurePosixPath(*parts)


class _ZipMembers:
    def __init__(self, archive: Path):
        self.archive = archive

    def __enter__(self):
        self.zf = zipfile.ZipFile(self.archive)
        return self

    def __exit__(self, *exc):
        self.zf.close()

    def members(self):
        out = []
        for info in self.zf.infolist():
            relative = _safe_relative(info.filename, self.archive)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the writer recorded no file type
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeArchive(f"{self.archive.name}: member {info.filename!r} is a link or special file")
            if relative is None or info.is_dir():
                continue
            out.append((info, relative, info.file_size))
        return out

    def open(self, member):
        return self.zf.open(member)


class _TarMembers:
    def __init__(self, archive: Path):
        self.archive = archive

    def __enter__(self):
        self.tf = tarfile.open(self.archive)
        return self

    def __exit__(self, *exc):
        self.tf.close()

    def members(self):
        out = []
        for info in self.tf.getmembers():
            relative = _safe_relative(info.name, self.archive)
            if info.isdir():
                continue
            if not info.isfile():
                raise UnsafeArchive(f"{self.archive.name}: member {info.name!r} is a link or special file")
            if relative is None:
                continue
            out.append((info, relative, info.size))
        return out

    def open(self, member):
        return self.tf.extractfile(member)
