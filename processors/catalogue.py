"""Shared machinery for catalogue processors whose sources are lists of raster files.

A `RasterCatalogueProcessor` subclass declares its sources as `RasterSource` items (the origin
URL of a GeoTIFF or of an archive, plus the GeoTIFF's name inside the archive) through
`raster_sources()`. `generate()` then, for each source in order:

1. fetches the URL into `context.source_dir` (`processors.fetch.fetch`: streamed, resumable,
   verified against declared sizes/hashes, locked, atomic; `cache_path` layout, so the cache is
   shared by every worker and every run). `context.options["source_mirror"]` (a base URL or a
   folder laid out like the origins) replaces every origin. One `requests.Session` is reused for
   all files (keep-alive), and after the first file the next few are prefetched by a small thread
   pool while the current one is clipped, so a dataset of hundreds of files is not a series of
   round trips. No process is spawned per file: clipping happens in this process.
2. extracts archives once (`extract_archive`: refuses `..`/absolute members, links and archives
   that expand past `max_extract_bytes`), under a lock, into `<archive>.d/`; a marker file records
   a completed extraction (and the verified hash of members that declare one). Members are found
   by name anywhere in the extracted tree (ISIMIP's zip nests them in a folder).
3. clips the GeoTIFF to the boundary polygon with `clip_raster_to_cog` (window read, polygon mask,
   source CRS and grid kept, COG) into `context.output_dir/<name>-<version>[-<part>]-<boundary>.tif`
   (`part` is the source's stem for multi-file datasets, none for single-file ones; boundaries
   across the antimeridian get `-east`/`-west` outputs from the clipper).

All files of one dataset share a grid, so a boundary that misses the first file misses them all:
`NoDataForBoundary` ends the run at once with a message naming the dataset and the boundary,
before any other file is fetched. A source that cannot be fetched raises `SourceUnavailable`
naming the URL (and the mirror location when a mirror is used).

Progress: percent = files done / total files, and the step names the file.
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import shutil
import threading
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import ClassVar, Mapping
from urllib.parse import unquote, urlsplit

import requests

from processors.base import Boundary, DataLicense, Dimension, OutputFile, Processor, ProcessorContext, ProcessorOutput
from processors.errors import Cancelled, NoDataForBoundary, SourceCorrupt, SourceUnavailable
from processors.fetch import USER_AGENT, Hasher, cache_path, extract_archive, fetch, file_lock, synthetic_hashes
from processors.estimate import DEFAULT_COMPRESSION_RATIO, RasterGrid, estimate_raster_sources
from processors.raster import clip_raster_to_cog

log = logging.getLogger(__name__)

CC_BY_4 = DataLicense(
    name="CC-BY-4.0",
    path="https://creativecommons.org/licenses/by/4.0/",
    title="Creative Commons Attribution 4.0",
)
CC0 = DataLicense(
    name="CC0-1.0",
    path="https://creativecommons.org/publicdomain/zero/1.0/",
    title="Creative Commons CC0 1.0 Universal (public domain dedication)",
)
NATURAL_EARTH_TERMS = DataLicense(
    name="Natural-Earth",
    path="https://www.naturalearthdata.com/about/terms-of-use/",
    title="Natural Earth Terms of Use (public domain)",
)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_MARKER = ".extracted.json"


@dataclass(frozen=True)
class RasterSource:
    """One GeoTIFF of a dataset: the file at `url`, or `member` of the archive at `url`.

    `sha256`/`sha1`/`size` verify the fetched file (the archive, for archived sources);
    `member_sha1`/`member_sha256` verify the extracted member once, when it is extracted.
    `part` names the output (`<name>-<version>-<part>-<boundary>.tif`); None for single-file
    datasets.
    """

    url: str
    member: str | None = None
    part: str | None = None
    sha256: str | None = None
    sha1: str | None = None
    size: int | None = None
    member_sha1: str | None = None
    member_sha256: str | None = None
    grid: "RasterGrid | None" = None  # this file's grid, when it differs from the dataset's `grid`
    label: str | None = None  # human label of the output (default: the file stem)
    dimensions: Mapping[str, str] = field(default_factory=dict)  # values along the dataset's `dimensions`

    @property
    def filename(self) -> str:
        """The GeoTIFF's file name: the member's base name or the URL's last path segment."""
        if self.member:
            return PurePosixPath(self.member).name
        return unquote(PurePosixPath(urlsplit(self.url).path).name)

    @property
    def stem(self) -> str:
        name = self.filename
        return name[: -len(Path(name).suffix)] if Path(name).suffix else name

    @property
    def is_archive(self) -> bool:
        return urlsplit(self.url).path.lower().endswith(ARCHIVE_SUFFIXES)


def part_from_stem(url: str, **kwargs) -> RasterSource:
    """The RasterSource of a plain GeoTIFF URL whose output is named after its file stem."""
    return RasterSource(url=url, part=RasterSource(url=url).stem, **kwargs)


#: The extra dimension of outputs split at the antimeridian (see `processors.raster`).
SIDE = Dimension("side", "Side of the antimeridian", ("east", "west"), "east")


class RasterCatalogueProcessor(Processor):
    """A dataset of one or more GeoTIFFs (plain or in archives) clipped to the boundary polygon.

    Subclasses set `name`, `version`, `metadata` and `sources` (or override `raster_sources()`),
    and optionally `expected_crs` (checked on every source), `compress`, `max_extract_bytes`,
    `prefetch` (files downloaded ahead while clipping; 0 disables).
    """

    sources: ClassVar[tuple[RasterSource, ...]] = ()
    #: Axes the files vary along (each source's `dimensions` gives its values); () for one file.
    dimensions: ClassVar[tuple[Dimension, ...]] = ()
    expected_crs: ClassVar[str | None] = None
    compress: ClassVar[str] = "DEFLATE"
    max_extract_bytes: ClassVar[int] = 20 * 1024**3
    prefetch: ClassVar[int] = 4
    output_format: ClassVar[str] = "GeoTIFF"
    #: The real dataset's grid (for estimates before the source is downloaded).
    grid: ClassVar[RasterGrid | None] = None
    #: Compressed/raw ratio of valid pixels in the output COGs (for estimates).
    compression_ratio: ClassVar[float] = DEFAULT_COMPRESSION_RATIO

    @classmethod
    def raster_sources(cls) -> tuple[RasterSource, ...]:
        """The dataset's GeoTIFFs, in output order."""
        return tuple(cls.sources)

    @classmethod
    def total_expected_files(cls) -> int:
        """Outputs for a boundary that does not cross the antimeridian."""
        return len(cls.raster_sources())

    # ------------------------------------------------------------------------------ generate

    def generate(self, boundary: Boundary, context: ProcessorContext) -> ProcessorOutput:
        sources = list(self.raster_sources())
        if not sources:
            raise SourceUnavailable(f"{self.full_name()} declares no source files")
        total = len(sources)
        geometry = boundary.shape()
        mirror = context.options.get("source_mirror") or None
        self._mirror = mirror
        source_dir = Path(context.source_dir)
        output_dir = Path(context.output_dir)
        stop = threading.Event()

        def check() -> None:  # in the main thread
            if stop.is_set():
                raise Cancelled("stopped")
            context.check_cancelled()

        def check_in_thread() -> None:
            # Prefetch threads only watch `stop`: the context's cancel check may not be
            # thread-safe (the backend's reads the queue's storage); the main thread polls it.
            if stop.is_set():
                raise Cancelled("stopped")

        session = requests.Session()
        session.headers["User-Agent"] = USER_AGENT
        # A pool sized for the prefetch threads plus the main thread.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(4, self.prefetch + 1))
        session.mount("http://", adapter)
        session.mount("https://", adapter)

        def fetch_one(src: RasterSource, in_thread: bool = False) -> Path:
            return fetch(
                src.url,
                cache_path(src.url, source_dir),
                sha256=src.sha256,
                sha1=src.sha1,
                size=src.size,
                mirror=mirror,
                session=session,
                check_cancelled=check_in_thread if in_thread else check,
            )

        def wait(future: concurrent.futures.Future) -> Path:
            while True:
                try:
                    return future.result(timeout=0.25)
                except concurrent.futures.TimeoutError:
                    check()

        pool: concurrent.futures.ThreadPoolExecutor | None = None
        futures: dict[str, concurrent.futures.Future] = {}
        files: list[str] = []
        details: list[OutputFile] = []
        written: list[Path] = []
        member_index: dict[Path, dict[str, list[Path]]] = {}
        try:
            for i, src in enumerate(sources):
                context.progress(100.0 * i / total, f"{i + 1}/{total}: fetching {src.filename}")
                if src.url in futures:
                    fetched = wait(futures[src.url])
                else:
                    fetched = fetch_one(src)
                tif = self._resolve(src, fetched, member_index, check)
                if self.expected_crs:
                    self._check_crs(src, tif)
                filename = self.output_filename(boundary, "tif", part=src.part)
                context.progress(100.0 * i / total, f"{i + 1}/{total}: clipping {src.filename}")
                try:
                    result = clip_raster_to_cog(
                        tif,
                        boundary=geometry,
                        destination=output_dir / filename,
                        compress=self.compress,
                        check_cancelled=context.check_cancelled,
                    )
                except NoDataForBoundary as exc:
                    raise NoDataForBoundary(
                        f"{self.metadata.title or self.full_name()}: boundary {boundary.name!r} does not "
                        f"overlap the dataset ({exc})"
                    ) from exc
                written.extend(result.paths)
                files.extend(p.name for p in result.paths)
                details.extend(self._detail(src, out) for out in result.outputs)
                if i == 0 and total > 1 and self.prefetch > 0:
                    # The first file showed that the boundary overlaps the data: from here on,
                    # download ahead while clipping.
                    pool = concurrent.futures.ThreadPoolExecutor(self.prefetch, thread_name_prefix="prefetch")
                    for later in sources[1:]:
                        if later.url not in futures and later.url != src.url:
                            futures[later.url] = pool.submit(fetch_one, later, True)
        except BaseException:
            stop.set()
            for path in written:
                path.unlink(missing_ok=True)
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            session.close()

        context.progress(100, f"clipped {total} source file{'s' if total > 1 else ''}")
        split = any(d.dimensions.get(SIDE.name) for d in details)
        return ProcessorOutput(
            files=files,
            format=self.output_format,
            description=(
                f"{self.metadata.title} clipped to {boundary.name_long or boundary.name}: "
                f"{len(files)} Cloud-Optimised GeoTIFF{'s' if len(files) != 1 else ''}"
            ),
            extra={"source_file_count": total},
            dimensions=tuple(self.dimensions) + ((SIDE,) if split else ()),
            details=tuple(details),
        )

    @staticmethod
    def _detail(src: RasterSource, out) -> OutputFile:
        """Label and dimension values of one written output (one side of the antimeridian, maybe)."""
        label = src.label or src.stem
        dimensions = dict(src.dimensions)
        if out.part:
            label = f"{label} ({out.part} of the antimeridian)"
            dimensions[SIDE.name] = out.part
        return OutputFile(name=out.path.name, label=label, dimensions=dimensions)

    # ------------------------------------------------------------------------------ estimate

    def estimate(self, boundary: Boundary, context: ProcessorContext) -> dict:
        """Outputs' bytes and count from the source grid and the polygon (no download): the
        cached source's grid when it was fetched before, else the declared `grid`."""
        sources = list(self.raster_sources())
        geometry = boundary.shape()
        shared: tuple[RasterGrid, str] | None = None
        grids = []
        for src in sources:
            if src.grid is None and shared is not None:
                grids.append(shared)
                continue
            cached = self.cached_raster(src, Path(context.source_dir))
            if cached is not None:
                found = (RasterGrid.from_file(cached), "the cached source")
            elif (src.grid or self.grid) is not None:
                found = (src.grid or self.grid, "declared metadata")
            else:
                return {"bytes": None, "files": len(sources), "method": "no cached source and no declared grid"}
            if src.grid is None:
                shared = found
            grids.append(found)
        return estimate_raster_sources(grids, geometry, compression_ratio=self.compression_ratio)

    @staticmethod
    def cached_raster(src: RasterSource, source_dir: Path) -> Path | None:
        """The GeoTIFF of `src` in the source cache, when it was fetched (and extracted) before."""
        path = cache_path(src.url, source_dir)
        if not src.is_archive:
            return path if path.is_file() else None
        folder = path.with_name(path.name + ".d")
        if not (folder / _MARKER).is_file():
            return None
        if src.member:
            exact = folder.joinpath(*PurePosixPath(src.member).parts)
            if exact.is_file():
                return exact
        return next((p for p in folder.rglob(src.filename if src.member else "*.tif") if p.is_file()), None)

    # ------------------------------------------------------------------------------ helpers

    def _resolve(self, src: RasterSource, fetched: Path, index: dict, check) -> Path:
        """The GeoTIFF for `src`: the fetched file, or its member in the extracted archive."""
        if not src.is_archive:
            return fetched
        folder = fetched.with_name(fetched.name + ".d")
        members = index.get(folder)
        if members is None:
            self._extract_once(src, fetched, folder, check)
            members = {}
            for path in folder.rglob("*"):
                if path.is_file() and path.name != _MARKER:
                    members.setdefault(path.name, []).append(path)
            index[folder] = members
        wanted = src.filename if src.member else None
        if wanted is None:
            tifs = [p for name, paths in members.items() if name.lower().endswith((".tif", ".tiff")) for p in paths]
            if len(tifs) != 1:
                raise SourceCorrupt(f"{src.url}: expected exactly one GeoTIFF in the archive, found {len(tifs)}")
            return tifs[0]
        found = members.get(wanted, [])
        exact = folder.joinpath(*PurePosixPath(src.member).parts)
        if exact.is_file():
            return exact
        if len(found) != 1:
            what = "is missing from" if not found else "appears more than once in"
            raise SourceCorrupt(f"{wanted} {what} the archive {src.url}")
        return found[0]

    def _extract_once(self, src: RasterSource, archive: Path, folder: Path, check) -> None:
        marker = folder / _MARKER
        with file_lock(folder.with_name(folder.name + ".lock"), check):
            if marker.is_file():
                return
            if folder.exists():  # an interrupted extraction: start again
                shutil.rmtree(folder)
            extract_archive(archive, folder, max_bytes=self.max_extract_bytes, check_cancelled=check)
            record = {"archive": archive.name}
            stand_in = synthetic_hashes(src.url, getattr(self, "_mirror", None))
            for member_src in self.raster_sources():
                if stand_in is not None:  # generated stand-ins: their own hashes, from the manifest
                    own = stand_in.get("members", {}).get(member_src.filename, {})
                    member_src = replace(member_src, member_sha1=own.get("sha1"), member_sha256=own.get("sha256"))
                if member_src.url != src.url or not (member_src.member_sha1 or member_src.member_sha256):
                    continue
                path = next(iter(folder.rglob(member_src.filename)), None)
                if path is None:
                    continue
                hasher = Hasher()
                hasher.catch_up(path, path.stat().st_size)
                got = hasher.result()
                for key, want in (("sha1", member_src.member_sha1), ("sha256", member_src.member_sha256)):
                    if want and got[key] != want.lower():
                        shutil.rmtree(folder, ignore_errors=True)
                        raise SourceCorrupt(
                            f"{member_src.filename} from {src.url} failed verification: "
                            f"{key} {got[key]}, expected {want.lower()}"
                        )
                record[member_src.filename] = {"sha1": got["sha1"], "sha256": got["sha256"]}
            tmp = folder / f".marker-{uuid.uuid4().hex[:8]}"
            tmp.write_text(json.dumps(record, indent=1))
            os.replace(tmp, marker)

    def _check_crs(self, src: RasterSource, tif: Path) -> None:
        import rasterio
        from rasterio.crs import CRS

        try:
            with rasterio.open(tif) as ds:
                crs = ds.crs
        except rasterio.errors.RasterioIOError as exc:
            raise SourceUnavailable(f"cannot open {src.filename} from {src.url}: {exc}") from exc
        if crs is None or crs != CRS.from_user_input(self.expected_crs):
            raise SourceCorrupt(
                f"{src.filename} from {src.url} is in {crs.to_string() if crs else 'no CRS'}, "
                f"expected {self.expected_crs}"
            )
