"""Shared machinery for catalogue processors whose sources are lists of raster files.

A `RasterCatalogueProcessor` subclass declares its sources as `RasterSource` items (the origin
URL of a GeoTIFF or of an archive, plus the GeoTIFF's name inside the archive) through
`raster_sources()`. `generate()` then, for each source in order:

1. gets the GeoTIFF from the source cache (`context.sources`, `processors.sources`): fetched
   once into the cache shared by every worker and run (or from the configured mirror), verified
   (declared sizes/hashes; GDAL must open it and read its first and last blocks, once per copy
   of the file), archives
   extracted once, safely and within `max_extract_bytes`/`max_extract_ratio`; members are found
   by path or by name anywhere in the extracted tree (ISIMIP's zip nests them in a folder). After
   the first file, the next few are prefetched by a small thread pool while others are clipped,
   so a dataset of hundreds of files is not a series of round trips; the first file's download
   reports its progress into the file's share of the job's percent.
2. clips the GeoTIFF to the boundary polygon with one `BoundaryClipper` for all files (window read, polygon mask,
   the first file alone, then `parallel_clips` files at once in threads, one per core),
   source CRS and grid kept, COG) into `context.output_dir/<name>-<version>[-<part>]-<boundary>.tif`
   (`part` is the source's stem for multi-file datasets, none for single-file ones; boundaries
   across the antimeridian or with far-apart parts get `-east`/`-west`/`-part<k>` outputs from the
   clipper). A source that fails
   while being read is discarded from the cache and fetched again, once. Outputs made from a
   synthetic stand-in carry its SYNTHETIC tag.
3. describes every output for the package: a label and its values along the processor's
   `dimensions` (from `RasterSource.label`/`dimensions`; a `part` dimension is added when the
   boundary was split, at the antimeridian or into far-apart clusters).

Empty is a result: a boundary with no pixel of a file gets an all-nodata COG on the file's grid
over the boundary's bounding box (`write_nodata_cog`: a layer that loads in the right place and
shows nothing), marked `empty` in the package and noted in the description. All files of one
dataset share a grid, so when the boundary misses the first file, the others (those without a
`grid` of their own) get the same empty output without being fetched. A source that cannot be
fetched raises `SourceUnavailable` naming the URL (and the mirror location when a mirror is used).

Progress: percent = files done / total files, and the step names the file. Cancellation is
polled by the main thread at least every 0.25 s; the clip threads stop at their next strip or file.
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import ClassVar, Mapping
from urllib.parse import unquote, urlsplit

from rasterio.errors import RasterioIOError

from processors.base import Boundary, DataLicense, Dimension, OutputFile, Processor, ProcessorContext, ProcessorOutput
from processors.errors import Cancelled, NoDataForBoundary, SourceCorrupt, SourceUnavailable
from processors.estimate import DEFAULT_COMPRESSION_RATIO, RasterGrid, estimate_raster_sources, estimate_vector
from processors.fetch import DEFAULT_MAX_RATIO
from processors.outputs import SYNTHETIC_TAG
from processors.raster import DEFAULT_COMPRESSION, BoundaryClipper, RasterClipResult, write_nodata_cog
from processors.samples import synthetic_note
from processors.sources import SourceUnreadable, check_raster, check_vector
from processors.vector import VectorClipResult, clip_vector_into_output

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


#: The extra dimension of a boundary clipped into several outputs (`processors.raster.split_boundary`).
PART = "part"


def part_label(part: str) -> str:
    """"east" -> "east of the antimeridian", "part2" -> "part 2", "part2-west" -> "part 2, west of the antimeridian"."""
    cluster, _, side = part.partition("-") if part.startswith("part") else ("", "", part)
    words = [f"part {cluster[len('part'):]}"] if cluster else []
    return ", ".join(words + ([f"{side} of the antimeridian"] if side else []))


def part_dimension(parts: list[str]) -> Dimension:
    """The `part` dimension for the parts written, largest first (the default)."""
    return Dimension(PART, "Part of the boundary", tuple(parts), parts[0])


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
    compress: ClassVar[str] = DEFAULT_COMPRESSION
    max_extract_bytes: ClassVar[int] = 20 * 1024**3
    max_extract_ratio: ClassVar[float] = DEFAULT_MAX_RATIO
    prefetch: ClassVar[int] = 4
    #: Files clipped at once, in threads: one per core. A clip is CPU-bound, but GDAL and rasterio
    #: release the GIL while they decode, mask and compress, so one dataset uses every core.
    parallel_clips: ClassVar[int] = len(os.sched_getaffinity(0))
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
        output_dir = Path(context.output_dir)
        stop = threading.Event()

        def check() -> None:  # in the main thread
            if stop.is_set():
                raise Cancelled("stopped")
            context.check_cancelled()

        def check_in_thread() -> None:
            # Prefetch and clip threads only watch `stop`: the context's cancel check may not be
            # thread-safe (the backend's reads the queue's storage); the main thread polls it.
            if stop.is_set():
                raise Cancelled("stopped")

        def wait(future: concurrent.futures.Future) -> RasterClipResult:
            while True:
                try:
                    return future.result(timeout=0.25)
                except concurrent.futures.TimeoutError:
                    check()

        prefetch: concurrent.futures.ThreadPoolExecutor | None = None
        clips: concurrent.futures.ThreadPoolExecutor | None = None

        def shut_down() -> None:
            for pool in (clips, prefetch):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)

        downloads: dict[str, concurrent.futures.Future] = {}
        pending: list[concurrent.futures.Future] = []
        results: list[RasterClipResult] = []  # in source order
        # One clipper for every file: the boundary's work per grid is done once for the dataset.
        clipper = BoundaryClipper(geometry, compress=self.compress)
        try:
            clipper.__enter__()
            # The first file alone, with its download's progress: it tells whether the boundary
            # overlaps the data at all, and works out the grid's plan and mask for the others.
            first = sources[0]
            context.progress(0, f"1/{total}: fetching {first.filename}")
            tif, result = self._clip_healing(first, context, clipper, output_dir / self._filename(boundary, first),
                                             (0.0, 50.0 / total), check)
            results.append(result)
            # The boundary misses the dataset: the others on this grid get the same empty output unfetched.
            empty_template = tif if not result.outputs[0].inside_pixels else None
            if total > 1:
                if self.prefetch > 0 and empty_template is None:
                    # download ahead while clipping
                    prefetch = concurrent.futures.ThreadPoolExecutor(self.prefetch, thread_name_prefix="prefetch")
                    for later in sources[1:]:
                        if later.url not in downloads and later.url != first.url:
                            downloads[later.url] = prefetch.submit(self._obtain, later, context, None, check_in_thread)
                clips = concurrent.futures.ThreadPoolExecutor(self.parallel_clips, thread_name_prefix="clip")
                pending = [clips.submit(self._clip_in_thread, src, context, clipper, output_dir / self._filename(boundary, src),
                                        empty_template, downloads.get(src.url), check_in_thread)
                           for src in sources[1:]]
                for i, future in enumerate(pending, 2):
                    results.append(wait(future))
                    context.progress(100.0 * i / total, f"{i}/{total}: clipped {sources[i - 1].filename}")
        except BaseException:
            stop.set()
            shut_down()  # no thread writes after this
            done = [f.result() for f in pending if f.done() and not f.cancelled() and f.exception() is None]
            for path in {p for r in results + done for p in r.paths}:
                path.unlink(missing_ok=True)
            raise
        finally:
            shut_down()
            clipper.__exit__(None, None, None)

        files = [p.name for r in results for p in r.paths]
        details = [self._detail(src, out) for src, r in zip(sources, results) for out in r.outputs]
        context.progress(100, f"clipped {total} source file{'s' if total > 1 else ''}")
        parts = list(dict.fromkeys(d.dimensions[PART] for d in details if PART in d.dimensions))
        empty = sum(d.empty for d in details)
        return ProcessorOutput(
            files=files,
            format=self.output_format,
            description=(
                f"{self.metadata.title} clipped to {boundary.name_long or boundary.name}: "
                f"{len(files)} Cloud-Optimised GeoTIFF{'s' if len(files) != 1 else ''}"
                + (f". {'No' if empty == len(files) else f'For {empty} of them, no'} pixel of the dataset lies "
                   "within the boundary: all-nodata rasters over the boundary's extent, on the dataset's grid"
                   if empty else "")
            ),
            extra={"source_file_count": total},
            dimensions=tuple(self.dimensions) + ((part_dimension(parts),) if parts else ()),
            details=tuple(details),
            synthetic=context.sources.synthetic,
        )

    def _filename(self, boundary: Boundary, src: RasterSource) -> str:
        return self.output_filename(boundary, "tif", part=src.part)

    def _clip_in_thread(self, src: RasterSource, context: ProcessorContext, clipper: BoundaryClipper,
                        destination: Path, empty_template: Path | None, download: concurrent.futures.Future | None,
                        check) -> RasterClipResult:
        """One file after the first, in a clip thread (no progress reports: the main thread makes them)."""
        if empty_template is not None and src.grid is None:
            # Same grid as the first file, which the boundary misses: no need to fetch it.
            return write_nodata_cog(empty_template, boundary=clipper.boundary, destination=destination,
                                    tags=self._tags(src, context), compress=self.compress)
        # the prefetched file is verified already: its failure is this file's, its path the one to clip
        tif = download.result() if download is not None else None
        return self._clip_healing(src, context, clipper, destination, None, check, obtained=tif)[1]

    def _obtain(self, src: RasterSource, context: ProcessorContext, span, check) -> Path:
        """The verified GeoTIFF of `src` from the source cache (fetched, extracted as needed)."""
        if src.is_archive:
            if not src.member:
                raise SourceUnavailable(f"{self.full_name()}: {src.url} is an archive; name its GeoTIFF (`member`)")
            return context.sources.archive_member(
                src.url, src.member, sha256=src.sha256, sha1=src.sha1, size=src.size,
                member_sha256=src.member_sha256, member_sha1=src.member_sha1,
                max_bytes=self.max_extract_bytes, max_ratio=self.max_extract_ratio,
                validate=check_raster, progress=span, check_cancelled=check,
            )
        return context.sources.fetch(src.url, sha256=src.sha256, sha1=src.sha1, size=src.size,
                                     validate=check_raster, progress=span, check_cancelled=check)

    def _clip_healing(self, src: RasterSource, context: ProcessorContext, clipper: BoundaryClipper,
                      destination: Path, span, check, obtained: Path | None = None) -> tuple[Path, RasterClipResult]:
        """The source GeoTIFF and `src` clipped (an all-nodata raster when no pixel of it lies in
        the boundary); a source that passed its checks but fails while being read is discarded
        from the cache and fetched again, once (then the failure is reported). `span`: the
        file's share of the job's percent, or None for no progress reports (in a thread);
        `obtained`: the file a prefetch already got from the cache (not looked up twice)."""
        for attempt in (1, 2):
            tif = obtained if attempt == 1 and obtained is not None else self._obtain(src, context, span, check)
            tags = self._tags(src, context)
            if span is not None:
                context.progress(span[1], f"clipping {src.filename}")
            try:
                try:
                    return tif, clipper.clip(tif, destination, expected_crs=self.expected_crs, tags=tags,
                                             check_cancelled=check)
                except NoDataForBoundary:
                    return tif, write_nodata_cog(tif, boundary=clipper.boundary, destination=destination, tags=tags,
                                                 compress=self.compress)
            except SourceCorrupt as exc:  # the CRS, checked on the dataset the clipper opened
                raise SourceCorrupt(f"{exc} (from {src.url})") from exc
            except (RasterioIOError, SourceUnavailable) as exc:
                context.sources.discard(src.url, check_cancelled=check)
                if attempt == 2:
                    raise SourceUnreadable(f"{src.filename} from {src.url} cannot be read even after fetching it "
                                           f"again: {exc}") from exc
                log.warning("%s cannot be read (%s): discarded, fetching it again", src.filename, exc)
        raise AssertionError("unreachable")

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
            cached = (context.sources.cached_member(src.url, src.member) if src.is_archive and src.member
                      else context.sources.cached(src.url))
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

    # ------------------------------------------------------------------------------ helpers

    @staticmethod
    def _tags(src: RasterSource, context: ProcessorContext) -> dict[str, str] | None:
        """The SYNTHETIC tag for outputs of a source that was a synthetic stand-in."""
        record = context.sources.record(src.url)
        synthetic = record.synthetic if record else context.sources.synthetic
        return {SYNTHETIC_TAG: synthetic_note(src.url)} if synthetic else None

    @staticmethod
    def _detail(src: RasterSource, out) -> OutputFile:
        """Label and dimension values of one written output (of one part of the boundary, maybe)."""
        label = src.label or src.stem
        dimensions = dict(src.dimensions)
        if out.part:
            label = f"{label} ({part_label(out.part)})"
            dimensions[PART] = out.part
        return OutputFile(name=out.path.name, label=label, dimensions=dimensions, empty=out.inside_pixels == 0)


class VectorClipProcessor(Processor):
    """A dataset of one vector source clipped to the boundary polygon into one GeoPackage.

    Subclasses set `name`, `version`, `metadata` and either `source_url` (fetched through the
    source cache, checked to open with OGR) or override `source()` (an archive member, a derived
    file, a local file); optionally `layers` (source layers appended into one output layer, None
    for the first), `output_layer`, `keep_whole` (features crossing the boundary written
    unclipped), `explode` and `properties_schema` (see `clip_vector_to_gpkg`), `feature_noun` for
    messages, and `declared_feature_count`/`declared_feature_bytes` for estimates before the
    source was fetched. A boundary with no feature gives an empty layer with the full schema:
    a result (the file is marked `empty` in the package), never a failure.
    """

    source_url: ClassVar[str | None] = None
    layers: ClassVar[tuple[str | None, ...]] = (None,)
    output_layer: ClassVar[str | None] = None
    keep_whole: ClassVar[bool] = False
    explode: ClassVar[bool] = False
    properties_schema: ClassVar[Mapping[str, str] | None] = None
    feature_noun: ClassVar[str] = "features"
    declared_feature_count: ClassVar[int | None] = None
    declared_feature_bytes: ClassVar[int | None] = None

    def source(self, context: ProcessorContext) -> Path:
        """The verified source file (default: `source_url` through the source cache)."""
        return context.sources.fetch(self.source_url, validate=check_vector, progress=(0.0, 5.0))

    def cached_source(self, context: ProcessorContext) -> Path | None:
        """The source when it is already in the cache (for estimates); never downloads."""
        return context.sources.cached(self.source_url) if self.source_url else None

    def generate(self, boundary: Boundary, context: ProcessorContext) -> ProcessorOutput:
        context.progress(0, f"fetching the source of {self.metadata.title or self.full_name()}")
        source = self.source(context)
        filename = self.output_filename(boundary, "gpkg")
        result = clip_vector_source(
            source, context, boundary, filename, layers=self.layers, output_layer=self.output_layer,
            keep_whole=self.keep_whole, explode=self.explode, properties_schema=self.properties_schema,
            progress_range=(5.0, 95.0),
        )
        empty = result.feature_count == 0
        context.progress(100, f"wrote {result.feature_count} {self.feature_noun}")
        where = boundary.name_long or boundary.name
        description = (
            f"{self.metadata.title} {'within' if self.keep_whole else 'clipped to'} {where}: "
            f"{result.feature_count} {self.feature_noun} (layer {result.layer}, {result.geometry_type})"
        )
        if empty:
            description += f". No {self.feature_noun} of the dataset lie within the boundary: the layer is empty (schema kept)."
        return ProcessorOutput(
            files=[filename],
            format="GPKG",
            description=description,
            extra={"layer": result.layer, "feature_count": result.feature_count, "geometry_type": result.geometry_type},
            details=(OutputFile(name=filename, label=self.metadata.title or self.full_name(), empty=empty),),
            synthetic=context.sources.synthetic,
        )

    def estimate(self, boundary: Boundary, context: ProcessorContext) -> dict:
        return estimate_vector(
            self, boundary, self.cached_source(context), layers=list(self.layers),
            declared_features=self.declared_feature_count, declared_feature_bytes=self.declared_feature_bytes,
        )


def clip_vector_source(
    source: Path,
    context: ProcessorContext,
    boundary: Boundary,
    filename: str,
    *,
    layers: tuple[str | None, ...] = (None,),
    progress_range: tuple[float, float],
    **options,
) -> VectorClipResult:
    """`clip_vector_into_output` for a source from the context's cache: when this run used
    synthetic stand-ins, the GeoPackage carries a SYNTHETIC metadata item naming them."""
    synthetic = [r.url for r in context.sources.records if r.synthetic]
    metadata = {SYNTHETIC_TAG: synthetic_note(", ".join(synthetic))} if synthetic else None
    return clip_vector_into_output(
        source, layer=layers[0], extra_layers=layers[1:], boundary=boundary, context=context, filename=filename,
        progress_range=progress_range, metadata=metadata, **options,
    )
