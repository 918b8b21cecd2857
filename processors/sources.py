"""The source cache: the one way processors (built-in and third-party) get their source files.

`context.sources` (a `SourceCache`) offers four operations:

``fetch(url, ...)``
    The file at `url` (or at its place in the configured mirror), downloaded once into the
    shared cache (`processors.fetch.fetch`: streamed, resumable, locked, atomic) and verified:
    declared size/sha256/sha1, never empty, never an HTML page, and `validate(path)` when given
    (e.g. `check_raster`: GDAL opens it and reads its first and last blocks).
``archive_member(url, member, ...)``
    A file inside the archive at `url`: the archive is fetched as above, then extracted once
    (under a lock, safely: no `..`, absolute paths or links; total size capped by `max_bytes`
    and by `max_ratio` times the archive's size) into `<archive>.d/`. A marker records the
    archive's sha256 and every member's size, sha256 and modification time: the extraction is
    redone when the archive changed (fetched again) or a member was modified or removed.
``derived(name, inputs, build)``
    A file the processor builds from cached sources (e.g. a point GeoPackage from a CSV),
    built once under a lock (its size and sha256 recorded) and rebuilt when an input's sha256
    changed or the file was modified.
``cached(url)`` / ``cached_member(url, member)``
    The verified cached file, or None: never downloads (for size estimates).

Never outside the cache: a cached file, its companions (download, lock, record, extraction) and
every folder on the way to them are checked before use, and a symbolic link among them is refused
with `PathOutsideRoot` (`processors.safepaths`): the cache may sit on shared storage, and a link
would make a job read or write outside the processing folder. An extracted member that became a
link no longer matches its extraction record, so the archive is extracted again (the link itself
removed, never followed).

Healing: every cached file carries the size and sha256 it had when fetched (its
`.fetch.json` record). A file whose size or modification time no longer matches is hashed
again and discarded if it changed. A file that fails verification, fails `validate`, or whose
archive cannot be extracted safely is discarded (with its extraction) and fetched again, once;
if that copy fails too, `SourceCorrupt` (or `UnsafeArchive`) names the URL, and the cache holds
nothing of it, so a later run, after the origin is fixed, fetches it afresh. A processor that
finds a source unreadable later (`SourceUnreadable` from its own reading) calls `discard(url)`
and asks again, once (`RasterCatalogueProcessor` does).

Mirrors: `mirror` (a base URL or a folder laid out `<mirror>/<host>/<path>`) replaces every
origin. A folder mirror holding the sample manifest (`processors.samples`) may replace a
declared hash by its stand-in's, only for a file that carries the SYNTHETIC marker itself;
such a source is recorded as synthetic, and so is any source carrying the marker (from any
mirror), and everything made from them.

Provenance: `records` lists every source used by this run (URL, mirror location, bytes, sha256,
retrieval time, synthetic), for `provenance.json`.

Progress: `fetch`/`archive_member` take `progress=(start, end)`: the download's share maps onto
that span of the job's percent, and the step names the file and the megabytes received.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import requests

from processors import samples
from processors.errors import SourceCorrupt, SourceUnavailable, UnsafeArchive
from processors.safepaths import inside
from processors.fetch import (
    DEFAULT_MAX_RATIO,
    USER_AGENT,
    Hasher,
    cache_path,
    checked_facts,
    discard,
    extract_archive,
    fetch,
    file_lock,
    mark_checked,
    source_record,
)

log = logging.getLogger(__name__)

Validator = Callable[[Path], None]
ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], None]

_MARKER = ".extracted.json"
# What sits beside a cached file: its download, lock, fetch record, extraction and its lock.
_COMPANIONS = (".part", ".lock", ".fetch.json", ".d", ".d.lock")


class SourceUnreadable(SourceCorrupt):
    """A cached source could not be read while processing it (e.g. a damaged tile)."""


@dataclass(frozen=True)
class SourceRecord:
    """One source used by a run, as provenance.json records it."""

    url: str
    mirror: str | None  # the mirror location read instead of `url`, None when read from the origin
    bytes: int
    sha256: str
    retrieved: str  # UTC time it was fetched into the cache
    synthetic: bool

    def as_json(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- validators


def check_raster(path: Path) -> None:
    """`SourceCorrupt` unless GDAL opens `path` as a raster and reads the first and last block of
    every band (a truncated GeoTIFF opens, but its last blocks are gone)."""
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        ds = gdal.Open(str(path))
        if ds is None or ds.RasterCount == 0:
            raise SourceCorrupt(f"{path} is not a raster GDAL can open ({gdal.GetLastErrorMsg() or 'no band'})")
        for index in range(1, ds.RasterCount + 1):
            band = ds.GetRasterBand(index)
            bx, by = band.GetBlockSize()
            nx, ny = math.ceil(ds.RasterXSize / bx), math.ceil(ds.RasterYSize / by)
            for col, row in ((0, 0), (nx - 1, ny - 1)):
                x, y = col * bx, row * by
                w, h = min(bx, ds.RasterXSize - x), min(by, ds.RasterYSize - y)
                if band.ReadRaster(x, y, w, h) is None:
                    raise SourceCorrupt(f"{path}: block ({col}, {row}) of band {index} cannot be read "
                                        f"({gdal.GetLastErrorMsg()})")
    except RuntimeError as exc:  # when another module turned GDAL exceptions on
        raise SourceCorrupt(f"{path} cannot be read as a raster: {exc}") from exc
    finally:
        ds = None
        gdal.PopErrorHandler()


def check_vector(path: Path) -> None:
    """`SourceCorrupt` unless OGR opens `path` and finds at least one layer."""
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        ds = gdal.OpenEx(str(path), gdal.OF_VECTOR)
        if ds is None or ds.GetLayerCount() == 0:
            raise SourceCorrupt(f"{path} is not a vector file OGR can open ({gdal.GetLastErrorMsg() or 'no layer'})")
    except RuntimeError as exc:
        raise SourceCorrupt(f"{path} cannot be read as a vector file: {exc}") from exc
    finally:
        ds = None
        gdal.PopErrorHandler()


# --------------------------------------------------------------------------- the cache


class SourceCache:
    """Sources of one processor version under `root`, for one run (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        *,
        mirror: str | None = None,
        report: ProgressCallback | None = None,
        check_cancelled: CancelCheck | None = None,
        pool_size: int = 8,
    ):
        self.root = Path(root).resolve()  # as `cache_path` gives paths under it
        self.mirror = mirror or None
        self._report = report
        self._check = check_cancelled or (lambda: None)
        self._pool_size = pool_size
        self._session: requests.Session | None = None
        self._lock = threading.Lock()
        self._records: dict[str, SourceRecord] = {}
        self._digests: dict[Path, str] = {}
        self._extractions: dict[Path, dict] = {}  # extraction folder -> its marker, checked in this run
        self._stand_ins = samples.stand_ins(self.mirror)

    # -- public operations ----------------------------------------------------------------------
    def path(self, url: str) -> Path:
        """Where `url` is cached (whether or not it is); `PathOutsideRoot` when a symbolic link
        lies on the way to it or is one of its companions."""
        return _confined(self.root, cache_path(url, self.root), _COMPANIONS)

    def fetch(
        self,
        url: str,
        *,
        sha256: str | None = None,
        sha1: str | None = None,
        size: int | None = None,
        validate: Validator | None = None,
        progress: tuple[float, float] | None = None,
        check_cancelled: CancelCheck | None = None,
    ) -> Path:
        """The verified cached file of `url`; fetched (again, once, if it fails) as needed.

        `check_cancelled` replaces the context's check (prefetch threads pass their own; they
        should not pass `progress`)."""
        return self._obtain(url, sha256, sha1, size, validate, progress, check_cancelled)

    def archive_member(
        self,
        url: str,
        member: str,
        *,
        sha256: str | None = None,
        sha1: str | None = None,
        size: int | None = None,
        member_sha256: str | None = None,
        member_sha1: str | None = None,
        max_bytes: int,
        max_ratio: float | None = DEFAULT_MAX_RATIO,
        validate: Validator | None = None,
        progress: tuple[float, float] | None = None,
        check_cancelled: CancelCheck | None = None,
    ) -> Path:
        """`member` (a path inside the archive, or a file name found anywhere in it) of the
        archive at `url`, extracted once; `validate` checks the member, `member_sha*` its hash."""
        found: list[Path] = []

        def extract_and_check(archive: Path) -> None:
            folder, marker = self._extracted(url, archive, max_bytes, max_ratio, check_cancelled)
            path = self._find_member(url, folder, marker, member)
            want = self._member_hashes(url, member, member_sha256, member_sha1)
            if any(want.values()):
                got = self._member_digest(folder, marker, path, sha1="sha1" in want and bool(want["sha1"]))
                for key, expected in want.items():
                    if expected and got[key] != expected.lower():
                        raise SourceCorrupt(f"{PurePosixPath(member).name} from {url} failed verification: "
                                            f"{key} {got[key]}, expected {expected.lower()}")
            if validate is not None:
                validate(path)
            found[:] = [path]

        self._obtain(url, sha256, sha1, size, None, progress, check_cancelled, then=extract_and_check)
        return found[0]

    def derived(self, name: str, inputs: Sequence[Path], build: Callable[[Path], None],
                validate: Validator | None = None) -> Path:
        """`<root>/derived/<name>`, made by `build(path)` from `inputs` (files this cache handed
        out in this run) once, under a lock; made again when an input's sha256 changed or the
        file was modified. `build` writes the path it is given; it is moved into place after."""
        target = self._derived_path(name)
        stamp = {"inputs": [self._digests.get(Path(p)) or Hasher.of(Path(p))["sha256"] for p in inputs]}
        record_path = target.with_name(target.name + ".derived.json")
        with file_lock(target.with_name(target.name + ".lock"), self._check):
            try:
                record = json.loads(record_path.read_text())
            except (OSError, ValueError):
                record = None
            if (record and record.get("inputs") == stamp["inputs"] and target.is_file()
                    and record.get("bytes") == target.stat().st_size and record.get("mtime_ns") == target.stat().st_mtime_ns):
                return target
            tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}{target.suffix}")
            try:
                build(tmp)
                if validate is not None:
                    validate(tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            stamp.update(bytes=target.stat().st_size, sha256=Hasher.of(target)["sha256"], mtime_ns=target.stat().st_mtime_ns)
            _write_json(record_path, stamp)
        return target

    def local(self, path: Path, *, validate: Validator | None = None) -> Path:
        """A source that is a local file, not fetched (e.g. QGIS's world map): checked with
        `validate` and recorded for provenance (`file://` URL, bytes, sha256, modification time)."""
        path = Path(path)
        if not path.is_file():
            raise SourceUnavailable(f"source file not found: {path}")
        if validate is not None:
            validate(path)
        digest = Hasher.of(path)
        modified = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime))
        with self._lock:
            self._records.setdefault(path.as_uri(), SourceRecord(
                url=path.as_uri(), mirror=None, bytes=int(digest["size"]), sha256=str(digest["sha256"]),
                retrieved=modified, synthetic=samples.carries_marker(path)))
            self._digests[path] = str(digest["sha256"])
        return path

    def cached_derived(self, name: str) -> Path | None:
        """The derived file `name` when it was built before; never builds (for size estimates)."""
        target = self._derived_path(name)
        return target if target.is_file() else None

    def _derived_path(self, name: str) -> Path:
        return _confined(self.root, self.root / "derived" / name, (".lock", ".derived.json"))

    def cached(self, url: str) -> Path | None:
        """The cached file of `url` when it was fetched before and is unchanged; never downloads."""
        path = self.path(url)
        record = source_record(path)
        if not (record and path.is_file()):
            return None
        st = path.stat()
        return path if record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns else None

    def cached_member(self, url: str, member: str) -> Path | None:
        """The extracted `member` when the archive was fetched and extracted before; never downloads."""
        archive = self.cached(url)
        if archive is None:
            return None
        folder = archive.with_name(archive.name + ".d")
        marker = _read_json(folder / _MARKER)
        if not marker or marker.get("archive_sha256") != (source_record(archive) or {}).get("sha256"):
            return None
        try:
            return self._find_member(url, folder, marker, member)
        except SourceCorrupt:
            return None

    def discard(self, url: str, *, check_cancelled: CancelCheck | None = None) -> None:
        """Forget the cached copy of `url` (file, record and extraction); the next call fetches it."""
        path = self.path(url)
        with file_lock(path.with_name(path.name + ".lock"), check_cancelled or self._check):
            shutil.rmtree(path.with_name(path.name + ".d"), ignore_errors=True)
            discard(path)
        with self._lock:
            self._records.pop(url, None)
            self._extractions.pop(path.with_name(path.name + ".d"), None)

    @property
    def records(self) -> list[SourceRecord]:
        """Sources used in this run, in first-use order."""
        with self._lock:
            return list(self._records.values())

    def record(self, url: str) -> SourceRecord | None:
        with self._lock:
            return self._records.get(url)

    @property
    def synthetic(self) -> bool:
        """True when any source used in this run was a synthetic stand-in."""
        return any(r.synthetic for r in self.records)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- internals --------------------------------------------------------------------------------
    def _http(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                session = requests.Session()
                session.headers["User-Agent"] = USER_AGENT
                adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=self._pool_size)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                self._session = session
            return self._session

    def _obtain(self, url, sha256, sha1, size, validate, progress, check_cancelled, then: Validator | None = None) -> Path:
        """The fetched file of `url`. Its content checks (the stand-in's marker, `validate`, whether
        it is synthetic) run once per copy of the file: their result is kept in its fetch record
        until the file is fetched again or modified (a multi-file dataset reopened every cached
        GeoTIFF at every use: 20 % of a job's time). `then` runs at every use (an archive's member)."""
        check = check_cancelled or self._check
        stand_in = self._stand_ins.get(url)
        if stand_in is not None:  # a sample mirror's stand-in: its own hashes, and it must say so
            sha256, sha1, size = stand_in.get("sha256"), stand_in.get("sha1"), stand_in.get("bytes")
        path = self.path(url)
        for attempt in (1, 2):
            try:
                fetch(url, path, sha256=sha256, sha1=sha1, size=size, mirror=self.mirror, session=self._http(),
                      progress=self._progress(url, progress), check_cancelled=check)
                facts = checked_facts(path)
                if facts is None:
                    checked_stat = path.stat()
                    if stand_in is not None and not samples.carries_marker(path):
                        raise SourceCorrupt(f"{url}: the mirror's manifest lists a synthetic stand-in, but the file "
                                            "does not carry the SYNTHETIC marker")
                    if validate is not None:
                        validate(path)
                    facts = {"synthetic": stand_in is not None or samples.carries_marker(path)}
                    mark_checked(path, checked_stat, **facts)
                if then is not None:
                    then(path)
            except (SourceCorrupt, UnsafeArchive) as exc:
                self.discard(url, check_cancelled=check)
                if attempt == 2:
                    raise type(exc)(f"source {url}: {exc} (discarded and fetched again once; still unusable: the "
                                    "cache holds nothing of it now, a later run fetches it afresh)") from exc
                log.warning("%s: %s; discarded, fetching it again", url, exc)
                continue
            self._remember(url, path, synthetic=bool(facts.get("synthetic")))
            return path
        raise AssertionError("unreachable")

    def _progress(self, url: str, span: tuple[float, float] | None) -> ProgressCallback | None:
        if span is None or self._report is None:
            return None
        start, end = span
        name = PurePosixPath(url).name
        return lambda percent, step: self._report(start + (end - start) * percent / 100.0, f"{name}: {step}")

    def _remember(self, url: str, path: Path, *, synthetic: bool) -> None:
        """Record a verified source for this run; it is synthetic when the sample manifest listed
        it or when the file carries the SYNTHETIC marker (whichever mirror served it)."""
        if self.record(url) is not None:
            return
        record = source_record(path) or {}
        location = record.get("location") or url
        entry = SourceRecord(
            url=url,
            mirror=None if location == url else location,
            bytes=int(record.get("size", path.stat().st_size)),
            sha256=record.get("sha256", ""),
            retrieved=record.get("fetched", ""),
            synthetic=synthetic,
        )
        with self._lock:
            self._records.setdefault(url, entry)
            self._digests[path] = entry.sha256

    def _member_hashes(self, url: str, member: str, sha256: str | None, sha1: str | None) -> dict[str, str | None]:
        stand_in = self._stand_ins.get(url)
        if stand_in is not None:
            own = stand_in.get("members", {}).get(PurePosixPath(member).name, {})
            return {"sha256": own.get("sha256"), "sha1": own.get("sha1")}
        return {"sha256": sha256, "sha1": sha1}

    @staticmethod
    def _member_digest(folder: Path, marker: dict, path: Path, *, sha1: bool) -> dict[str, str]:
        entry = marker.get("members", {}).get(path.relative_to(folder).as_posix(), {})
        if not sha1 and entry.get("sha256"):
            return {"sha256": entry["sha256"]}
        return Hasher.of(path)

    def _extracted(self, url: str, archive: Path, max_bytes: int, max_ratio, check_cancelled) -> tuple[Path, dict]:
        """`<archive>.d/`, extracted from the current archive and unmodified since, and its
        marker. Checked once per run and archive: ISIMIP's 245 members come from one zip, and
        checking every member at every use made the run quadratic."""
        check = check_cancelled or self._check
        folder = archive.with_name(archive.name + ".d")
        archive_sha256 = (source_record(archive) or {}).get("sha256")
        with self._lock:
            seen = self._extractions.get(folder)
        if seen is not None and seen.get("archive_sha256") == archive_sha256:
            return folder, seen
        with file_lock(folder.with_name(folder.name + ".lock"), check):
            marker = _read_json(folder / _MARKER)
            if not (marker and marker.get("archive_sha256") == archive_sha256 and _members_intact(folder, marker)):
                if folder.exists():
                    log.info("%s: extracting %s again (%s)", url, archive.name,
                             "the archive changed" if marker else "incomplete extraction")
                    shutil.rmtree(folder)
                members = extract_archive(archive, folder, max_bytes=max_bytes, max_ratio=max_ratio, check_cancelled=check)
                marker = {
                    "archive": archive.name,
                    "archive_sha256": archive_sha256,
                    "members": {
                        path.relative_to(folder).as_posix(): {"bytes": m.bytes, "sha256": m.sha256,
                                                              "mtime_ns": path.stat().st_mtime_ns}
                        for path, m in members.items()
                    },
                }
                _write_json(folder / _MARKER, marker)
        with self._lock:
            for path, entry in marker.get("members", {}).items():
                self._digests[folder / path] = entry["sha256"]
            self._extractions[folder] = marker
        return folder, marker

    def _find_member(self, url: str, folder: Path, marker: dict, member: str) -> Path:
        members = marker.get("members", {})
        wanted = PurePosixPath(member)
        if wanted.as_posix() in members:
            return inside(self.root, folder.joinpath(*wanted.parts))
        found = [name for name in members if name.rsplit("/", 1)[-1] == wanted.name]  # keys are POSIX paths
        if len(found) != 1:
            what = "is missing from" if not found else "appears more than once in"
            raise SourceCorrupt(f"{wanted.name} {what} the archive {url}")
        return inside(self.root, folder.joinpath(*PurePosixPath(found[0]).parts))


def _confined(root: Path, path: Path, companions: Sequence[str]) -> Path:
    """`path` after checking that no folder on the way to it, nor it, nor its companions (its name
    plus each suffix) is a symbolic link; `PathOutsideRoot` otherwise."""
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in companions)):
        inside(root, candidate)
    return path


def _members_intact(folder: Path, marker: dict) -> bool:
    """Every extracted member is still the file it was extracted as (its size and modification
    time; lstat, so a member replaced by a symbolic link does not match)."""
    for name, entry in marker.get("members", {}).items():
        path = folder.joinpath(*PurePosixPath(name).parts)
        try:
            st = path.lstat()
        except OSError:
            return False
        if st.st_size != entry.get("bytes") or st.st_mtime_ns != entry.get("mtime_ns"):
            log.warning("%s was modified since it was extracted", path)
            return False
    return True


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)
