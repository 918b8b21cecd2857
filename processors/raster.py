"""Clip a raster to a boundary polygon and write it as a Cloud-Optimised GeoTIFF.

Reusable by every raster dataset processor. The approach:

* **Boundary, not raster, is reprojected.** The boundary (shapely, EPSG:4326) is densified
  (edges of at most 0.1 degree) and transformed into the source CRS (e.g. ESRI:54009 Mollweide
  for GHSL); the output keeps the source CRS, grid alignment, resolution and dtype. No pixel is
  resampled.
* **Only the window is read.** The window is the boundary's bounding box snapped to the source
  grid and clipped to the raster's extent. A window larger than `strip_bytes` is read in strips
  of whole rows of the source's tiles (STRIPS_IN_MEMORY of them share `strip_bytes`, a strip holds
  at least one row of tiles: no tile is decoded twice), so memory stays bounded whatever the
  window size. Cancellation is checked between strips.
* **Pixel-centre rule, one per boundary.** A pixel is kept when its centre lies inside the
  polygon (GDAL's rasterize, `RasterizeLayer` without ALL_TOUCHED, see `_outside_mask`);
  every other pixel of the window is set to nodata, in all bands. The window holds exactly the
  pixels whose centres lie within the polygon's bounding box. When a side of the boundary (see
  Antimeridian; the whole boundary when it is not split) has *no* pixel centre inside (smaller
  than a pixel, e.g. a small island on a 1 km grid), the pixels the boundary touches are kept
  instead, on *every* side (`all_touched=True`, with the windows snapped outwards to every pixel
  the bounding box meets): small boundaries still get their data, and the outputs of one
  boundary never mix two rules (Fiji's east and west sides follow the same one).
* **Nodata.** The source's nodata value is kept. A source without one gets: NaN for floats, the
  dtype's minimum for signed integers (-32768 for int16), its maximum for unsigned integers (255
  for uint8). Source pixels inside the polygon that happen to equal that chosen value then read
  as nodata too (unavoidable with a nodata value; the chosen values are the conventional ones).
* **Antimeridian.** A boundary whose parts lie on both sides of +-180 degrees (Fiji, Russia, the
  USA, Kiribati in EPSG:4326) has a world-wide bounding box. When its parts, grouped by the sign
  of their centroid's longitude, are more compact measured across the antimeridian than across
  the prime meridian, the boundary is split into an "east" group (longitudes >= 0, e.g. Fiji's
  177..180) and a "west" group (< 0, e.g. -180..-178), and each group is clipped to its own
  output: `<stem>-east<ext>` and `<stem>-west<ext>` next to `destination` (or the paths that
  `part_path(part)` returns). Never a world-wide strip of nodata. A group that misses the
  raster is skipped; when only one output results, it is written at `destination` itself.
* **Far-apart parts.** Likewise, a boundary whose parts lie so far apart that one window would be
  mostly nodata (France: mainland, Guiana, Réunion, Mayotte, the Antilles; one window over all of
  them is 99 % outside the polygon) gets one output per cluster of nearby parts, largest first:
  `<stem>-part1<ext>`, `<stem>-part2<ext>`, ... (see `split_boundary`: parts within
  CLUSTER_GAP_DEGREES or a quarter of their extent are one cluster; clusters are used only when
  their windows cover less than CLUSTER_FILL of the single window). A cluster crossing the
  antimeridian is split as above (`-part2-east`).
* **Output.** The masked strips go into a temporary tiled, uncompressed GTiff next to the
  destination (tiles with no pixel inside are not written: they read as nodata), which
  GDAL's `COG` driver (GDAL >= 3.1) copies into a Cloud-Optimised GeoTIFF: 512x512 tiles (an
  output smaller than that is one tile just large enough to hold it, see `block_size`),
  ZSTD (the default) or DEFLATE, level 1 unless `level` is given, with a predictor (PREDICTOR=YES:
  horizontal differencing, 2, for integers, floating-point, 3, for floats), internal overviews down to one tile (`overview_resampling`,
  "nearest" by default so that classes stay classes; GDAL ignores nodata when averaging; the
  levels OVERVIEWS=AUTO would choose, made in the uncompressed temporary file or in memory and
  copied with OVERVIEWS=FORCE_USE_EXISTING so they are compressed once; NEAREST ones are
  sampled from the rows as they pass, exactly the pixels of GDAL's BuildOverviews, see
  `_NearestOverviews`),
  BIGTIFF when needed. The COG is written under a temporary name and moved into place with
  `os.replace`: a destination either does not exist or is complete; on an error or
  cancellation, no output of the call is left behind. `cog_options` gives these creation
  options, so that a benchmark can give GDAL's own tools exactly the same.
* **Decoding threads, one handle each.** GDAL 3.6 can decode the tiles of one read in parallel
  (the NUM_THREADS open option), but then a damaged tile reads as garbage without an error (seen
  on a DEFLATE tile overwritten with random bytes; one thread raises), and a damaged cached source
  must be found and fetched again (tests/test_source_cache.py). So every read decodes in the
  thread that asked for it: a window larger than a strip is read by READ_THREADS threads, each
  with a dataset handle of its own, one strip each, while the calling thread makes the next
  strip's mask and writes the finished strips in order (a damaged tile still raises
  `SourceUnavailable`, tested). Brazil's 5364x4681 window: 0.43 -> 0.24-0.28 s.
* **Memory.** The clipper itself holds at most STRIPS_IN_MEMORY strips (together `strip_bytes`,
  16 MiB by default, or STRIPS_IN_MEMORY rows of source tiles for a window so wide that one row
  of them is larger; a strip's mask only while it is read) and their overview rows. GDAL's
  process-wide block cache (GDAL_CACHEMAX, 5 % of RAM by default) would also keep
  decoded source blocks and written blocks that are never used again: while a clip runs, the cache
  is lowered to CLIP_CACHE_BYTES (4 MiB; never raised) and restored afterwards. Measured on
  Brazil's 50 MB window: peak 0.97-1.01x the window above the process's baseline (4.3x with the
  default cache; 1.10x with one 16 MiB strip and its mask).
* **Many files, one boundary.** `BoundaryClipper` clips one boundary out of any number of
  rasters: the antimeridian split, the reprojected boundary, the windows and (for windows that fit
  in one strip) the pixel mask are worked out once per grid and reused for every file on that grid;
  one GDAL environment serves the whole run. Such one-strip windows are masked in memory and
  copied into the COG from a MEM dataset (no temporary file); the output is the same file as the
  strips' path gives (tested). Measured on 90 of the bench's 3600x1800 files, Kenya: 72 -> 22 ms
  per file, identical outputs.
* A boundary that misses the raster raises `NoDataForBoundary`; a source that cannot be opened
  raises `SourceUnavailable`.

`read_window_only(source, boundary)` reads the same windows in the same strips, in one thread, every
tile of the window (touched or not), and does nothing else: the I/O floor for benchmarks.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import math
import os
import queue
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.windows import Window
from osgeo import gdal, gdal_array, ogr, osr  # the same system libgdal as rasterio: its block cache is the one rasterio uses
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.wkb import loads as wkb_loads

from processors.errors import NoDataForBoundary, ProcessorError, SourceCorrupt, SourceUnavailable
from processors.reproject import boundary_in_crs

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], None]

TILE_SIZE = 512
#: Upper bound of the pixel data of the strips held at once (all bands), in bytes; a window up
#: to this size is clipped in memory, in one piece.
DEFAULT_STRIP_BYTES = 16 * 1024 * 1024
#: Threads that read (decode) and mask the strips of a window larger than a strip, each with a
#: dataset handle of its own (GDAL releases the GIL while it decodes): two on a machine of two
#: cores or more (Brazil: reading 0.10 -> 0.06 s).
READ_THREADS = max(1, min(2, os.cpu_count() or 1))
#: Strips in memory at once: one per reading thread, and the one being written.
STRIPS_IN_MEMORY = READ_THREADS + 1
COMPRESSIONS = ("ZSTD", "DEFLATE")
#: ZSTD, not DEFLATE: on Brazil's 5364x4681 Int16 window (2 threads) the COG copy took 0.12 s with
#: ZSTD level 1 and 0.48 s with DEFLATE level 1, for a file 9 % larger (12.6 vs 11.6 MB, 0.25x the
#: bounding-box PACKBITS crop). GDAL >= 2.3 (QGIS's GDAL on every platform) reads it.
DEFAULT_COMPRESSION = "ZSTD"
#: GDAL block cache (process-wide) allowed while a clip runs; see `_bounded_block_cache`.
CLIP_CACHE_BYTES = 4 * 1024 * 1024
#: Pixel masks a `BoundaryClipper` keeps for the next file on the same grid (one byte a pixel).
MASK_CACHE_BYTES = 32 * 1024 * 1024
#: Compression level when none is given. Level 1: on Brazil's window ZSTD 2 gave a file 6 % smaller
#: than ZSTD 1 for a COG copy twice as long (DEFLATE 1 instead of GDAL's 6: 1.6 % larger than
#: level 3 for a copy about 25 % faster).
DEFAULT_LEVEL = {"DEFLATE": 1, "ZSTD": 1}
EPSG_4326 = CRS.from_epsg(4326)


@dataclass(frozen=True)
class RasterOutput:
    """One written COG."""

    path: Path
    part: str | None  # None for a single output; "east" / "west" for antimeridian splits
    width: int
    height: int
    bounds: tuple[float, float, float, float]  # left, bottom, right, top in the source CRS
    transform: tuple[float, ...]  # GDAL-order affine (a, b, c, d, e, f) of the output grid
    inside_pixels: int  # pixels kept (centre inside the polygon, or touched: see all_touched)
    all_touched: bool  # True when the touched-pixel fallback was used

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)


@dataclass(frozen=True)
class RasterClipResult:
    """What `clip_raster_to_cog` wrote: one output, or one per side of the antimeridian."""

    outputs: list[RasterOutput]
    crs: str  # "EPSG:4326", "ESRI:54009", ... or the WKT when the CRS has no authority code
    crs_wkt: str
    dtype: str
    nodata: float | int
    count: int  # bands
    res: tuple[float, float]  # pixel size (x, y) in CRS units, as in the source

    @property
    def paths(self) -> list[Path]:
        return [o.path for o in self.outputs]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Union of the outputs' bounds (source CRS)."""
        b = [o.bounds for o in self.outputs]
        return (min(x[0] for x in b), min(x[1] for x in b), max(x[2] for x in b), max(x[3] for x in b))

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the single output (of the first one after a split)."""
        return self.outputs[0].shape


def default_nodata(dtype: str) -> float | int:
    """NaN for floats, the minimum for signed and the maximum for unsigned integers."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return float("nan")
    if dt.kind == "i":
        return int(np.iinfo(dt).min)
    if dt.kind in ("u", "b"):
        return int(np.iinfo(dt).max) if dt.kind == "u" else 0
    raise ProcessorError(f"unsupported raster data type {dtype}")


def split_antimeridian(boundary) -> list[tuple[str | None, object]]:
    """[(None, boundary)], or [("east", parts >= 0), ("west", parts < 0)] for a boundary that is
    more compact across the antimeridian than across the prime meridian (EPSG:4326)."""
    polygons = list(boundary.geoms) if isinstance(boundary, MultiPolygon) else [boundary]
    east = [p for p in polygons if p.centroid.x >= 0]
    west = [p for p in polygons if p.centroid.x < 0]
    if not east or not west:
        return [(None, boundary)]
    east_b = MultiPolygon(east).bounds
    west_b = MultiPolygon(west).bounds
    across_prime = max(east_b[2], west_b[2]) - min(east_b[0], west_b[0])
    across_anti = (180.0 - east_b[0]) + (west_b[2] + 180.0)
    if across_anti >= across_prime:
        return [(None, boundary)]
    return [("east", _multi(east)), ("west", _multi(west))]


#: Parts of a boundary are clustered together when the gap between their bounding boxes is at
#: most this many degrees, or a quarter of the larger part's extent (Corsica joins mainland France)...
CLUSTER_GAP_DEGREES = 1.0
#: ... and clusters get outputs of their own only when their windows would cover less than this
#: share of the boundary's single window (France with its overseas regions: under 1 %).
CLUSTER_FILL = 0.2
#: Boundaries of more parts than this are not clustered (the pairwise gaps would cost too much).
CLUSTER_MAX_PARTS = 2000


def split_boundary(boundary) -> list[tuple[str | None, object]]:
    """The parts of a boundary (EPSG:4326) that get an output of their own, with the part's name:
    [(None, boundary)] for a compact boundary; `split_antimeridian`'s "east"/"west"; or, for
    parts so far apart that one window would be mostly nodata, one cluster each ("part1",
    "part2", ..., largest area first), a cluster crossing the antimeridian split further
    ("part2-east", "part2-west"). Remembered for the last few boundaries: every file of a
    dataset asks for the same one."""
    return list(_split_boundary(boundary.wkb))


@functools.lru_cache(maxsize=8)
def _split_boundary(wkb: bytes) -> tuple[tuple[str | None, object], ...]:
    boundary = wkb_loads(wkb)
    polygons = list(boundary.geoms) if isinstance(boundary, MultiPolygon) else [boundary]
    clusters = _clusters(polygons) if 1 < len(polygons) <= CLUSTER_MAX_PARTS else [polygons]
    if len(clusters) > 1:
        whole = _window_area(boundary)
        if sum(_window_area(_multi(c)) for c in clusters) >= CLUSTER_FILL * whole:
            clusters = [polygons]
    if len(clusters) == 1:
        return tuple(split_antimeridian(boundary))
    clusters.sort(key=lambda c: -sum(p.area for p in c))
    return tuple(
        (f"part{k}" + (f"-{side}" if side else ""), geom)
        for k, cluster in enumerate(clusters, 1)
        for side, geom in split_antimeridian(_multi(cluster))
    )


def _window_area(geom) -> float:
    """Square degrees of the window(s) one output per antimeridian side would cover."""
    return sum(box(*g.bounds).area for _, g in split_antimeridian(geom))


def _clusters(polygons: list[Polygon]) -> list[list[Polygon]]:
    """Polygons grouped by single linkage: two are linked when their bounding boxes are at most
    CLUSTER_GAP_DEGREES (or a quarter of the larger one's diagonal) apart, across the
    antimeridian too."""
    bounds = [p.bounds for p in polygons]
    reach = [max(CLUSTER_GAP_DEGREES, 0.25 * math.hypot(b[2] - b[0], b[3] - b[1])) for b in bounds]
    parent = list(range(len(polygons)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(bounds):
        for j in range(i + 1, len(bounds)):
            b = bounds[j]
            dy = max(0.0, a[1] - b[3], b[1] - a[3])
            dx = min(max(0.0, a[0] - (b[2] + shift), (b[0] + shift) - a[2]) for shift in (-360.0, 0.0, 360.0))
            if math.hypot(dx, dy) <= max(reach[i], reach[j]):
                parent[root(i)] = root(j)
    groups: dict[int, list[Polygon]] = {}
    for i, polygon in enumerate(polygons):
        groups.setdefault(root(i), []).append(polygon)
    return list(groups.values())


def clip_raster_to_cog(
    source: Path,
    *,
    boundary,
    destination: Path,
    compress: str = DEFAULT_COMPRESSION,
    level: int | None = None,
    band_indexes: list[int] | None = None,
    overview_resampling: str = "nearest",
    part_path: Callable[[str], Path] | None = None,
    strip_bytes: int = DEFAULT_STRIP_BYTES,
    strip_rows: int | None = None,
    threads: int | str = "ALL_CPUS",
    tags: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
    check_cancelled: CancelCheck | None = None,
) -> RasterClipResult:
    """Clip `source` to the `boundary` polygon (shapely, EPSG:4326) into a COG at `destination`.

    See the module docstring for the rules (window, pixel centres, nodata, antimeridian split into
    `-east`/`-west` outputs named by `part_path(part)` or `<stem>-<part><ext>`). `strip_rows`
    forces the strip height (tests); otherwise strips hold at most `strip_bytes`. `tags` are
    written as dataset metadata into every output (e.g. the SYNTHETIC marker). `progress`
    receives (percent 0-100, step); `check_cancelled` is called between strips and should raise to
    stop (no output is left then). Raises `NoDataForBoundary` when the boundary misses the
    raster and `SourceUnavailable` when the source cannot be opened.
    For many sources and one boundary, use one `BoundaryClipper` (the work per grid is shared).
    """
    with BoundaryClipper(boundary, compress=compress, level=level, overview_resampling=overview_resampling,
                         strip_bytes=strip_bytes, strip_rows=strip_rows, threads=threads) as clipper:
        return clipper.clip(source, destination, band_indexes=band_indexes, part_path=part_path, tags=tags,
                            progress=progress, check_cancelled=check_cancelled)


@dataclass
class _GridPlan:
    """What a boundary needs on one grid (CRS, transform, size): one `_Side` per antimeridian side
    that overlaps the raster, and the pixel masks of windows that fit in one strip."""

    wkt: str  # the grid's CRS
    sides: list["_Side"]
    masks: dict[tuple[int, bool], np.ndarray]


@dataclass(frozen=True)
class _Side:
    part: str | None  # "east" / "west" across the antimeridian, else None
    geom: object  # the boundary (side) in the raster's CRS
    tight: Window | None  # pixels whose centre lies in its bounding box
    outer: Window  # pixels its bounding box touches


class BoundaryClipper:
    """Clips one boundary out of any number of rasters; a context manager:
    `with BoundaryClipper(boundary) as clipper: clipper.clip(source, destination)`.

    What depends only on the boundary and a raster's grid is worked out once per grid and reused
    for every file on it (the 140 STORM files share one grid): the antimeridian split, the
    boundary in the raster's CRS, the windows, and the pixel mask of windows that fit in one
    strip. One GDAL environment and one lowered block cache serve the whole run, not one per file.
    A window that fits in one strip takes a lean path: read, masked and turned into the COG in
    memory (GDAL's MEM driver), with no temporary file; larger windows go through the strips.
    """

    def __init__(
        self,
        boundary,
        *,
        compress: str = DEFAULT_COMPRESSION,
        level: int | None = None,
        overview_resampling: str = "nearest",
        strip_bytes: int = DEFAULT_STRIP_BYTES,
        strip_rows: int | None = None,
        threads: int | str = "ALL_CPUS",
    ) -> None:
        compress = compress.upper()
        if compress not in COMPRESSIONS:
            raise ValueError(f"compress must be one of {COMPRESSIONS}, not {compress!r}")
        _check_boundary(boundary)
        self.boundary = boundary
        self.compress, self.level = compress, (level if level is not None else DEFAULT_LEVEL[compress])
        self.overview_resampling = overview_resampling
        self.strip_bytes, self.strip_rows, self.threads = strip_bytes, strip_rows, threads
        self._grids: dict[tuple, _GridPlan] = {}
        self._mask_bytes = 0
        self._crs_cache: dict[str, CRS] = {}
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> "BoundaryClipper":
        stack = contextlib.ExitStack()
        stack.enter_context(rasterio.Env())
        stack.enter_context(_bounded_block_cache())
        self._stack = stack
        return self

    def __exit__(self, *exc) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def clip(
        self,
        source: Path,
        destination: Path,
        *,
        band_indexes: list[int] | None = None,
        part_path: Callable[[str], Path] | None = None,
        expected_crs: str | None = None,
        tags: dict[str, str] | None = None,
        progress: ProgressCallback | None = None,
        check_cancelled: CancelCheck | None = None,
    ) -> RasterClipResult:
        """Clip `source` into a COG at `destination` (see `clip_raster_to_cog`). With
        `expected_crs` ("EPSG:4326", "ESRI:54009", ...), a source in another CRS raises
        `SourceCorrupt` before anything is written."""
        if self._stack is None:
            raise RuntimeError("use BoundaryClipper as a context manager")
        destination = Path(destination)
        report = progress or (lambda percent, step: None)
        check = check_cancelled or (lambda: None)
        with _open(source) as src:
            if expected_crs is not None and src.crs != self._crs(expected_crs):
                raise SourceCorrupt(f"{Path(source).name} is in {src.crs.to_string()}, expected {expected_crs}")
            indexes = band_indexes or list(range(1, src.count + 1))
            dtype = src.dtypes[indexes[0] - 1]
            if any(src.dtypes[i - 1] != dtype for i in indexes):
                raise ProcessorError(f"{Path(source).name}: bands of different data types are not supported")
            nodata = src.nodata if src.nodata is not None else default_nodata(dtype)
            plan = self._grid_plan(src)
            if not plan.sides:
                raise NoDataForBoundary(f"the boundary does not overlap the raster {Path(source).name}")

            multiple = len(plan.sides) > 1
            written: list[Path] = []
            outputs: list[RasterOutput] = []
            try:
                # One pixel rule per boundary: centres, unless a side of it would keep no pixel by
                # centres (then touched pixels on every side, so both sides follow the same rule).
                for all_touched in (False, True):
                    for i, side in enumerate(plan.sides):
                        target = destination if not multiple else (part_path(side.part) if part_path else _suffixed(destination, side.part))
                        span = (100.0 * i / len(plan.sides), 100.0 * (i + 1) / len(plan.sides))
                        out = self._clip_side(src, plan, i, side, all_touched, target, side.part if multiple else None,
                                              indexes, dtype, nodata, tags or {}, _scaled(report, *span), check)
                        if out is not None:
                            written.append(out.path)
                            outputs.append(out)
                    if all_touched or len(outputs) == len(plan.sides):
                        break
                    for path in written:
                        path.unlink(missing_ok=True)
                    written, outputs = [], []
            except BaseException:
                for path in written:
                    path.unlink(missing_ok=True)
                raise
            if not outputs:
                raise NoDataForBoundary(f"no pixel of {Path(source).name} lies within the boundary")
            if multiple and len(outputs) == 1 and outputs[0].path != destination:
                os.replace(outputs[0].path, destination)
                outputs = [_replace_path(outputs[0], destination, None)]

            report(100.0, f"wrote {len(outputs)} COG{'s' if len(outputs) > 1 else ''}")
            return RasterClipResult(
                outputs=outputs,
                crs=_crs_name(src.crs),
                crs_wkt=src.crs.to_wkt(),
                dtype=dtype,
                nodata=nodata,
                count=len(indexes),
                res=(abs(src.transform.a), abs(src.transform.e)),
            )

    # -- per grid ---------------------------------------------------------------------------

    def _crs(self, name: str) -> CRS:
        if name not in self._crs_cache:
            self._crs_cache[name] = CRS.from_user_input(name)
        return self._crs_cache[name]

    def _grid_plan(self, src) -> _GridPlan:
        key = (src.wkt, tuple(src.transform), src.width, src.height)
        plan = self._grids.get(key)
        if plan is None:
            sides = [_Side(part, geom, tight, outer) for part, geom, tight, outer in _plan(src, self.boundary)]
            plan = self._grids[key] = _GridPlan(wkt=src.wkt, sides=sides, masks={})
        return plan

    def _mask(self, plan: _GridPlan, side_index: int, side: _Side, window: Window, transform: Affine,
              all_touched: bool) -> np.ndarray:
        """True outside the polygon, for a whole one-strip window; kept for the next file on the
        grid while the masks stay under MASK_CACHE_BYTES."""
        key = (side_index, all_touched)
        mask = plan.masks.get(key)
        if mask is None:
            mask = _outside_mask(side.geom.wkb, plan.wkt, int(window.height), int(window.width), transform, all_touched)
            if self._mask_bytes + mask.nbytes <= MASK_CACHE_BYTES:
                plan.masks[key] = mask
                self._mask_bytes += mask.nbytes
        return mask

    # -- per file ---------------------------------------------------------------------------

    def _fits_one_strip(self, window: Window, bands: int, dtype: str) -> bool:
        return self.strip_rows is None and int(window.width) * int(window.height) * bands * np.dtype(dtype).itemsize <= self.strip_bytes

    def _clip_side(self, src, plan: _GridPlan, side_index: int, side: _Side, all_touched: bool, target: Path, part,
                   indexes, dtype, nodata, tags, report, check) -> RasterOutput | None:
        """One output under one pixel rule (centres in `side.tight`, or touched in `side.outer`);
        None when that rule keeps no pixel."""
        window = side.outer if all_touched else side.tight
        if window is None:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:12]
        strips_tmp = target.with_name(f".{target.stem}.{token}.strips.tif")
        cog_tmp = target.with_name(f".{target.stem}.{token}.cog.tif")
        win_transform = src.window_transform(window)
        width, height = int(window.width), int(window.height)
        levels = _overview_levels(width, height)
        overviews = _NearestOverviews.of(width, height, levels, self.overview_resampling)
        options = cog_options(width, height, compress=self.compress, level=self.level, threads=self.threads,
                              overview_resampling=self.overview_resampling)
        # Overviews are made in the uncompressed temporary file or in memory (nearest: sampled
        # while the strips pass, see _NearestOverviews), then copied as they are: the COG driver
        # would otherwise compute them into a compressed temporary file and decompress and
        # recompress them again.
        options["OVERVIEWS"] = "FORCE_USE_EXISTING" if levels else "NONE"
        try:
            masked = None
            if self._fits_one_strip(window, len(indexes), dtype):
                check()
                outside = self._mask(plan, side_index, side, window, win_transform, all_touched)
                inside = outside.size - int(np.count_nonzero(outside))
                if inside:
                    masked = _read_masked(src, indexes, window, outside, np.array(nodata, dtype=dtype))
            else:
                inside = _write_strips(
                    src, side.geom, window, strips_tmp, indexes, dtype, nodata, all_touched,
                    self.strip_bytes, self.strip_rows, tags, levels, overviews, self.overview_resampling, report, check,
                )
            if not inside:
                return None
            check()
            report(80.0, f"writing the Cloud-Optimised GeoTIFF ({width}x{height})")
            if masked is not None:
                _cog_from_memory(masked, src, indexes, win_transform, nodata, tags, levels, overviews,
                                 self.overview_resampling, cog_tmp, options)
            else:
                _copy_to_cog(_gdal_open(strips_tmp), cog_tmp, options)
            check()
            os.replace(cog_tmp, target)
        finally:
            for tmp in (strips_tmp, cog_tmp):
                _remove_raster(tmp)
        left, top = win_transform.c, win_transform.f
        right, bottom = win_transform * (width, height)
        return RasterOutput(
            path=target,
            part=part,
            width=width,
            height=height,
            bounds=(min(left, right), min(top, bottom), max(left, right), max(top, bottom)),
            transform=tuple(win_transform.to_gdal()),
            inside_pixels=inside,
            all_touched=all_touched,
        )


def read_window_only(
    source: Path,
    boundary,
    *,
    strip_bytes: int = DEFAULT_STRIP_BYTES,
    strip_rows: int | None = None,
) -> int:
    """Read the windows `clip_raster_to_cog` would read, in the same strips; return bytes read."""
    _check_boundary(boundary)
    total = 0
    with _open(source) as src:
        indexes = list(range(1, src.count + 1))
        for _, _, tight, outer in _plan(src, boundary):
            window = tight or outer
            for strip in _strips(window, src, len(indexes), strip_bytes, strip_rows):
                total += src.read(indexes, window=strip).nbytes
    return total


# --------------------------------------------------------------------------- planning


def _check_boundary(boundary) -> None:
    if boundary is None or boundary.is_empty:
        raise ValueError("the boundary geometry is empty")
    if not isinstance(boundary, (Polygon, MultiPolygon)):
        raise ValueError(f"the boundary must be a Polygon or MultiPolygon, not {boundary.geom_type}")


class _Source:
    """A source raster opened with GDAL's own bindings, described in rasterio's terms (CRS,
    Affine, windows). rasterio.open took 0.7 ms per file, for it rebuilds its GDAL environment at
    every open, and GDAL's open 0.03 ms: over a tenth of a small clip, and a hazard dataset is
    hundreds of small clips. Read errors raise `SourceUnavailable` (the caller fetches again)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.name = self.path.name
        gdal.PushErrorHandler("CPLQuietErrorHandler")  # the failure is raised below, with GDAL's message
        try:
            ds = gdal.OpenEx(str(path), gdal.OF_RASTER | gdal.OF_READONLY)
        except RuntimeError:  # when another module turned GDAL exceptions on
            ds = None
        finally:
            gdal.PopErrorHandler()
        if ds is None or ds.RasterCount == 0:
            raise SourceUnavailable(f"cannot open raster {path}: {gdal.GetLastErrorMsg() or 'no band'}")
        self.ds = ds
        bands = [ds.GetRasterBand(i) for i in range(1, ds.RasterCount + 1)]
        self.width, self.height, self.count = ds.RasterXSize, ds.RasterYSize, ds.RasterCount
        self.dtypes = tuple(np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(b.DataType)).name for b in bands)
        self.nodata = bands[0].GetNoDataValue()
        self.block_shapes = [tuple(reversed(b.GetBlockSize())) for b in bands]  # (rows, cols)
        self.colorinterp = [ColorInterp(b.GetColorInterpretation()) for b in bands]
        self.transform = Affine.from_gdal(*ds.GetGeoTransform())
        self.wkt = ds.GetProjection()
        self.crs = _crs_from_wkt(self.wkt) if self.wkt else None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """left, bottom, right, top (north-up)."""
        right, bottom = self.transform * (self.width, self.height)
        return (self.transform.c, bottom, right, self.transform.f)

    def window_transform(self, window: Window) -> Affine:
        return rasterio.windows.transform(window, self.transform)

    def read(self, indexes: list[int], window: Window, out: np.ndarray | None = None) -> np.ndarray:
        """Bands `indexes` of `window` as (bands, rows, cols), into `out` (a view is fine) when given."""
        col, row, width, height = (int(v) for v in (window.col_off, window.row_off, window.width, window.height))
        if out is None:
            out = np.empty((len(indexes), height, width), dtype=self.dtypes[indexes[0] - 1])
        gdal.PushErrorHandler("CPLQuietErrorHandler")
        try:
            done = self.ds.ReadAsArray(col, row, width, height, buf_obj=out, band_list=list(indexes))
        except RuntimeError:
            done = None
        finally:
            gdal.PopErrorHandler()
        if done is None:
            raise SourceUnavailable(f"cannot read {self.name} ({width}x{height} at {col},{row}): {gdal.GetLastErrorMsg()}")
        return out

    def close(self) -> None:
        self.ds = None

    def __enter__(self) -> "_Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@functools.lru_cache(maxsize=16)
def _crs_from_wkt(wkt: str) -> CRS:
    return CRS.from_wkt(wkt)


def _open(source: Path) -> _Source:
    src = _Source(source)
    if src.crs is None:
        src.close()
        raise SourceUnavailable(f"raster {source} has no coordinate reference system")
    t = src.transform
    if t.b != 0 or t.d != 0:
        src.close()
        raise ProcessorError(f"raster {source} is rotated; only north-up grids are supported")
    return src


def _plan(src, boundary) -> list[tuple[str | None, object, Window | None, Window]]:
    """(part, boundary in the raster CRS, centre window or None, outer window) for every side
    that overlaps the raster."""
    plans = []
    extent = box(*src.bounds)
    for part, geom in split_boundary(boundary):
        projected = boundary_in_crs(geom, src.crs)
        if projected.is_empty or not projected.intersects(extent):
            continue
        outer = _window(projected.bounds, src.transform, src.width, src.height, centres=False)
        if outer is not None:
            tight = _window(projected.bounds, src.transform, src.width, src.height, centres=True)
            plans.append((part, projected, tight, outer))
    return plans


def _window(bounds, transform: Affine, width: int, height: int, *, centres: bool) -> Window | None:
    """The source pixels whose centre (`centres`) or area meets `bounds`, clipped to the raster;
    None when there is none."""
    left, bottom, right, top = bounds
    inverse = ~transform
    cols, rows = zip(*(inverse * (x, y) for x, y in ((left, top), (right, bottom))))
    if centres:  # pixel i has its centre at i + 0.5
        col0, col1 = math.ceil(min(cols) - 0.5), math.floor(max(cols) - 0.5) + 1
        row0, row1 = math.ceil(min(rows) - 0.5), math.floor(max(rows) - 0.5) + 1
    else:
        col0, col1 = math.floor(min(cols)), math.ceil(max(cols))
        row0, row1 = math.floor(min(rows)), math.ceil(max(rows))
    col0, col1, row0, row1 = max(0, col0), min(width, col1), max(0, row0), min(height, row1)
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def _strips(window: Window, src, bands: int, strip_bytes: int, strip_rows: int | None) -> Iterator[Window]:
    """Strips of whole rows of `window`, of `strip_rows` rows, or else whole rows of the source's
    blocks (tiles), as many as fit in strip_bytes / STRIPS_IN_MEMORY bytes (all bands) but at
    least one: a strip ends on a row of blocks, so that no block is decoded twice (a window so
    wide that one row of blocks exceeds the budget is still read a row of blocks at a time)."""
    height = int(window.height)
    first = 0
    if strip_rows is None:
        row_bytes = max(1, int(window.width) * bands * np.dtype(src.dtypes[0]).itemsize)
        block_rows = src.block_shapes[0][0]
        strip_rows = max(block_rows, strip_bytes // STRIPS_IN_MEMORY // row_bytes // block_rows * block_rows)
        first = -int(window.row_off) % block_rows  # rows above the first whole row of blocks
    edges = ([0] if first else []) + list(range(first, height, strip_rows)) + [height]
    for top, bottom in zip(edges, edges[1:]):
        yield Window(window.col_off, window.row_off + top, window.width, bottom - top)


# --------------------------------------------------------------------------- clipping


#: The COG driver's smallest BLOCKSIZE (it warns below).
MIN_TILE_SIZE = 128


def block_size(width: int, height: int) -> int:
    """The COG's tile side: TILE_SIZE, or for an output that fits in one tile, the smallest
    multiple of 16 (TIFF's rule for tiles) that holds it, at least MIN_TILE_SIZE. A 105x84 clip
    is then one 128x128 tile instead of a 512x512 tile that is 97 % padding, whose compression
    was most of the time of a small clip (the COG copy of one STORM file for Kenya: 15 -> 2.5 ms)."""
    side = max(width, height)
    return TILE_SIZE if side >= TILE_SIZE else max(MIN_TILE_SIZE, -(-side // 16) * 16)


def cog_options(width: int, height: int, *, compress: str = DEFAULT_COMPRESSION, level: int | None = None,
                threads: int | str = "ALL_CPUS", overview_resampling: str = "nearest") -> dict[str, str]:
    """The COG driver's creation options of an output of `width` x `height` pixels (overviews:
    OVERVIEWS=AUTO's levels, see `_overview_levels`). Benchmarks give GDAL's tools the same."""
    compress = compress.upper()
    options = dict(
        COMPRESS=compress,
        LEVEL=str(level if level is not None else DEFAULT_LEVEL[compress]),
        PREDICTOR="YES",
        BLOCKSIZE=str(block_size(width, height)),
        OVERVIEW_RESAMPLING=overview_resampling.upper(),
        BIGTIFF="IF_SAFER",
    )
    if width * height > TILE_SIZE * TILE_SIZE:
        # compression threads only pay with several tiles: for one tile, starting them
        # took longer than compressing (a 120x100 output: 28 -> 13 ms per COG copy)
        options["NUM_THREADS"] = str(threads)
    return options


def _overview_levels(width: int, height: int) -> list[int]:
    """The overview factors of the COG driver's OVERVIEWS=AUTO: halve until one tile holds it."""
    levels, factor = [], 1
    while max(-(-width // factor), -(-height // factor)) > TILE_SIZE:
        factor *= 2
        levels.append(factor)
    return levels


def _nearest_samples(size: int, levels: list[int]) -> list[np.ndarray] | None:
    """Along one axis of `size` pixels: for each overview level (ceil(size / factor) pixels), the
    full-resolution pixel each overview pixel holds in GDAL's NEAREST overviews of a GTiff. GDAL
    samples each level from the one before it, pixel int(0.5 + i * before / now) (in doubles),
    so the picks compose. None when a level is not smaller than the one before it (GDAL then
    samples another way; it builds those overviews itself)."""
    picks, current = [], np.arange(size)
    for factor in levels:
        n = -(-size // factor)
        if n >= len(current):
            return None
        current = current[(0.5 + np.arange(n) * (len(current) / n)).astype(np.intp)]
        picks.append(current)
    return picks


def _as_slice(index: np.ndarray) -> slice | np.ndarray:
    """`index` (increasing) as a slice when its steps are equal: numpy copies slices far faster."""
    if len(index) == 0:
        return slice(0, 0)
    step = int(index[1] - index[0]) if len(index) > 1 else 1
    if step > 0 and np.array_equal(index, np.arange(int(index[0]), int(index[0]) + step * len(index), step)):
        return slice(int(index[0]), int(index[-1]) + 1, step)
    return index


@dataclass(frozen=True)
class _NearestOverviews:
    """NEAREST overviews sampled from the full-resolution rows as they pass, exactly the pixels
    GDAL's BuildOverviews("NEAREST") puts in a GTiff (tested), without reading the file back:
    building them in Brazil's temporary GTiff took about 0.09 s, sampling them 0.02 s."""

    rows: list[np.ndarray]  # per level: the full-resolution row of each overview row
    cols: list[slice | np.ndarray]  # per level: the full-resolution column of each overview column

    @classmethod
    def of(cls, width: int, height: int, levels: list[int], resampling: str) -> "_NearestOverviews | None":
        """None unless the overviews are NEAREST ones that `_nearest_samples` reproduces."""
        if not levels or resampling.lower() != "nearest":
            return None
        rows, cols = _nearest_samples(height, levels), _nearest_samples(width, levels)
        if rows is None or cols is None:
            return None
        return cls(rows=rows, cols=[_as_slice(c) for c in cols])

    def sample(self, data: np.ndarray, row0: int) -> list[tuple[int, np.ndarray]]:
        """Per level, (first overview row, overview rows) sampled from `data` (bands, rows,
        cols), the full-resolution rows from `row0` on."""
        pieces = []
        for rows, cols in zip(self.rows, self.cols):
            a, b = (int(i) for i in np.searchsorted(rows, (row0, row0 + data.shape[1])))
            pieces.append((a, data[:, _as_slice(rows[a:b] - row0)][:, :, cols]))
        return pieces


def _describe(ds, src, indexes, transform: Affine, nodata, tags: dict[str, str]) -> None:
    """Georeferencing, nodata, metadata and colour interpretation of a new dataset (MEM or the
    temporary GTiff) as the COG should have them."""
    ds.SetGeoTransform(transform.to_gdal())
    ds.SetProjection(src.wkt)
    for key, value in tags.items():
        ds.SetMetadataItem(key, value)
    for i, index in enumerate(indexes):
        band = ds.GetRasterBand(i + 1)
        band.SetNoDataValue(float(nodata))
        try:  # colour interpretation follows the source (e.g. RGB imagery)
            band.SetColorInterpretation(int(src.colorinterp[index - 1]))
        except Exception:  # pragma: no cover - drivers may refuse some combinations
            pass


def _write_overview_block(ds, level: int, data: np.ndarray, col: int, row: int, path) -> None:
    """`data` (bands, rows, cols) into overview `level` of every band of `ds`, at (col, row)."""
    for i in range(data.shape[0]):
        if ds.GetRasterBand(i + 1).GetOverview(level).WriteArray(data[i], col, row) != 0:
            raise ProcessorError(f"cannot write {path}: {gdal.GetLastErrorMsg()}")


def _copy_to_cog(ds, path: Path, options: dict[str, str]) -> None:
    """`ds` (its overviews as they are) copied into a COG at `path` by GDAL's COG driver."""
    cog = gdal.GetDriverByName("COG").CreateCopy(str(path), ds, strict=0,
                                                 options=[f"{k}={v}" for k, v in options.items()])
    if cog is None:
        raise ProcessorError(f"cannot write {path}: {gdal.GetLastErrorMsg()}")
    cog = ds = None  # closes (and flushes) both


def _gdal_open(path: Path):
    ds = gdal.Open(str(path))
    if ds is None:
        raise ProcessorError(f"cannot read back {path}: {gdal.GetLastErrorMsg()}")
    return ds


def _cog_from_memory(data: np.ndarray, src, indexes, transform: Affine, nodata, tags: dict[str, str],
                     levels: list[int], overviews: _NearestOverviews | None, overview_resampling: str,
                     path: Path, options: dict[str, str]) -> None:
    """The masked window `data` (bands, rows, cols) as a COG at `path`, through a MEM dataset
    with the same georeferencing, nodata, tags, colour interpretation and overviews as the
    strips' temporary GTiff, so both paths give the same file content."""
    bands, height, width = data.shape
    mem = gdal.GetDriverByName("MEM").Create("", width, height, bands, gdal_array.NumericTypeCodeToGDALTypeCode(data.dtype))
    _describe(mem, src, indexes, transform, nodata, tags)
    for i in range(bands):
        mem.GetRasterBand(i + 1).WriteArray(data[i])
    if overviews is not None:
        mem.BuildOverviews("NONE", levels)  # the levels, left empty: filled below
        for level, (row0, rows) in enumerate(overviews.sample(data, 0)):
            _write_overview_block(mem, level, rows, 0, row0, path)
    elif levels:
        mem.BuildOverviews(overview_resampling.upper(), levels)
    _copy_to_cog(mem, path, options)


def _outside_mask(boundary_wkb: bytes, wkt: str, rows: int, cols: int, transform: Affine, all_touched: bool) -> np.ndarray:
    """True for the pixels of a `rows` x `cols` grid at `transform` (CRS `wkt`) outside the polygon
    (`boundary_wkb`, in that CRS): GDAL's RasterizeLayer of the polygon, pixel centres (or every
    pixel touched), burnt straight into the mask. Every call has its own OGR layer, so reading
    threads can each make their own (rasterio's rasterize, in such threads, warned of a missing
    geotransform); the same pixels as rasterio's geometry_mask, about a third faster on Brazil."""
    outside = np.ones((rows, cols), dtype=np.uint8)
    raster = gdal_array.OpenArray(outside)  # a MEM dataset on the array itself
    raster.SetGeoTransform(transform.to_gdal())
    raster.SetProjection(wkt)
    vector = ogr.GetDriverByName("Memory").CreateDataSource("")
    layer = vector.CreateLayer("boundary", srs=osr.SpatialReference(wkt=wkt), geom_type=ogr.wkbUnknown)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkb(boundary_wkb))
    layer.CreateFeature(feature)
    if gdal.RasterizeLayer(raster, [1], layer, burn_values=[0], options=["ALL_TOUCHED=TRUE"] if all_touched else []) != 0:
        raise ProcessorError(f"cannot rasterize the boundary: {gdal.GetLastErrorMsg()}")
    raster = feature = layer = vector = None
    return outside.view(bool)


def _blocks_with_inside(outside: np.ndarray, row_edges: list[int], col_edges: list[int]) -> np.ndarray:
    """(blocks down, blocks across): True for the blocks, starting at those edges, that hold a
    pixel inside the polygon."""
    return ~np.logical_and.reduceat(np.logical_and.reduceat(outside, row_edges, axis=0), col_edges, axis=1)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in `flags`."""
    padded = np.concatenate(([False], flags, [False]))
    starts, stops = np.flatnonzero(padded[1:] & ~padded[:-1]), np.flatnonzero(~padded[1:] & padded[:-1])
    return list(zip(starts.tolist(), stops.tolist()))


def _read_masked(src, indexes, window: Window, outside: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """The pixels of `window`, those `outside` the polygon set to `fill`. Source blocks (tiles)
    with no pixel inside are not read at all: the polygon of a country leaves many tiles of its
    bounding box untouched (Brazil: 65 of the 132 tiles of its window, Kenya: 5 of 12), and decoding them was the
    larger part of a clip's reading. Blocks are read in runs of neighbouring tiles, rows of
    blocks at least TILE_SIZE high (a file of one-row strips is read in bands of TILE_SIZE rows)."""
    rows, cols = outside.shape
    data = np.empty((len(indexes), rows, cols), dtype=fill.dtype)
    block_h, block_w = src.block_shapes[0]
    block_h *= max(1, TILE_SIZE // block_h)
    row0, col0 = int(window.row_off), int(window.col_off)
    # window-relative first row/column of each source block the window meets
    row_edges = [0] + list(range(-(row0 % block_h) + block_h, rows, block_h))
    col_edges = [0] + list(range(-(col0 % block_w) + block_w, cols, block_w))
    needed = _blocks_with_inside(outside, row_edges, col_edges)
    row_ends, col_ends = row_edges[1:] + [rows], col_edges[1:] + [cols]
    for i, (top, bottom) in enumerate(zip(row_edges, row_ends)):
        for a, b in _runs(needed[i]):  # runs of neighbouring needed blocks: one read each
            left, right = col_edges[a], col_ends[b - 1]
            src.read(indexes, window=Window(col0 + left, row0 + top, right - left, bottom - top),
                     out=data[:, top:bottom, left:right])
    # np.copyto with where= is several times faster than boolean-index assignment
    np.copyto(data, fill, where=outside[np.newaxis, :, :])
    return data


@dataclass
class _MaskedStrip:
    """One strip of the window, read and masked by a reading thread."""

    row0: int  # its first row in the window
    data: np.ndarray  # (bands, rows, cols), nodata outside the polygon
    tiles: np.ndarray  # per row of output tiles the strip meets: the tile columns with a pixel inside
    inside: int  # pixels kept
    overview_rows: list[tuple[int, np.ndarray]]  # per overview level: (first row, rows), see _NearestOverviews


def _read_strip(handles: queue.SimpleQueue, boundary_wkb: bytes, all_touched: bool, strip: Window, row0: int, indexes,
                fill: np.ndarray, overviews: _NearestOverviews | None) -> _MaskedStrip:
    """Runs in a reading thread, with a dataset handle of its own taken from `handles`: the
    strip's mask, its pixels, the output tiles with a pixel inside (the mask goes with this
    call) and its overview rows."""
    src = handles.get()
    try:
        outside = _outside_mask(boundary_wkb, src.wkt, int(strip.height), int(strip.width), src.window_transform(strip),
                                all_touched)
        data = _read_masked(src, indexes, strip, outside, fill)
    finally:
        handles.put(src)
    tile_rows = [0] + [edge for edge in range(-row0 % TILE_SIZE, outside.shape[0], TILE_SIZE) if edge]
    return _MaskedStrip(row0=row0, data=data, tiles=_blocks_with_inside(outside, tile_rows, list(range(0, outside.shape[1], TILE_SIZE))),
                        inside=outside.size - int(np.count_nonzero(outside)),
                        overview_rows=overviews.sample(data, row0) if overviews is not None else [])


class _TileRows:
    """Rows arriving top to bottom, in pieces of any height (the strips follow the source's
    tiles, not the output's), gathered into whole rows of output tiles (TILE_SIZE rows; the last
    one what is left) and passed on as `write(pieces, row0)`, so that every tile of the file is
    written whole, while it is in GDAL's block cache, without copying the strips together."""

    def __init__(self, height: int, write: Callable[[list[tuple[np.ndarray, np.ndarray | None]], int], None]):
        self.height, self.write = height, write
        self.row = 0  # first row of the tile row being gathered
        self.rows = 0  # rows gathered for it
        self.pieces: list[tuple[np.ndarray, np.ndarray | None]] = []

    def push(self, data: np.ndarray, tiles: np.ndarray | None = None) -> None:
        """`data` (bands, rows, cols) continues the rows pushed before; `tiles[i]` flags the tile
        columns with a pixel inside in the i-th row of tiles `data` meets (None: every tile)."""
        top = 0
        for i in itertools.count():
            if top == data.shape[1]:
                break
            n = min(TILE_SIZE - self.rows, data.shape[1] - top)
            self.pieces.append((data[:, top:top + n], None if tiles is None else tiles[i]))
            self.rows += n
            top += n
            if self.rows == TILE_SIZE or self.row + self.rows == self.height:
                self.write(self.pieces, self.row)
                self.row, self.rows, self.pieces = self.row + self.rows, 0, []
        if self.pieces:  # rows of a tile row still to come: copied, so that the strip's buffer can go
            piece, flags = self.pieces[-1]
            self.pieces[-1] = (piece.copy(), flags)


def _write_tiles(write_block: Callable[[np.ndarray, int, int], None], pieces, row0: int) -> None:
    """One row of tiles, from `pieces` (rows of it top to bottom, with the flags of the tiles
    to write, or None for all), tile by tile: `write_block(rows, col, row)`."""
    width = pieces[0][0].shape[2]
    flags = [f for _, f in pieces]
    needed = np.ones(-(-width // TILE_SIZE), dtype=bool) if any(f is None for f in flags) else np.logical_or.reduce(flags)
    for col in np.flatnonzero(needed).tolist():
        left, right, top = col * TILE_SIZE, min((col + 1) * TILE_SIZE, width), row0
        for data, _ in pieces:
            write_block(data[:, :, left:right], left, top)
            top += data.shape[1]


def _write_strips(
    src, geom, window, path: Path, indexes, dtype, nodata, all_touched, strip_bytes, strip_rows, tags, levels,
    overviews: _NearestOverviews | None, overview_resampling: str, report, check,
) -> int:
    """Masked window, with its overviews, written to an uncompressed tiled GTiff at `path`;
    returns pixels kept. READ_THREADS threads mask and read the strips (each with its own
    dataset handle, see the module docstring) while this thread writes them in order; tiles with
    no pixel inside are not written (SPARSE_OK: they read as nodata)."""
    width, height = int(window.width), int(window.height)
    ds = gdal.GetDriverByName("GTiff").Create(
        str(path), width, height, len(indexes), gdal_array.NumericTypeCodeToGDALTypeCode(np.dtype(dtype)),
        options=["TILED=YES", f"BLOCKXSIZE={TILE_SIZE}", f"BLOCKYSIZE={TILE_SIZE}", "COMPRESS=NONE",
                 "SPARSE_OK=TRUE", "BIGTIFF=IF_SAFER"])
    if ds is None:
        raise ProcessorError(f"cannot create {path}: {gdal.GetLastErrorMsg()}")
    _describe(ds, src, indexes, src.window_transform(window), nodata, tags)
    if overviews is not None:
        ds.BuildOverviews("NONE", levels)  # the levels, left empty: filled as the strips pass
    band_list = list(range(1, len(indexes) + 1))

    def write_block(data: np.ndarray, col: int, row: int) -> None:
        if ds.WriteArray(data, col, row, band_list=band_list) != 0:
            raise ProcessorError(f"cannot write {path}: {gdal.GetLastErrorMsg()}")

    full = _TileRows(height, lambda pieces, row0: _write_tiles(write_block, pieces, row0))
    levels_out = [
        _TileRows(len(rows), lambda pieces, row0, level=level: _write_tiles(
            lambda data, col, row: _write_overview_block(ds, level, data, col, row, path), pieces, row0))
        for level, rows in enumerate(overviews.rows if overviews is not None else [])
    ]
    handles = queue.SimpleQueue()
    handles.put(src)
    extra = [_open(src.path) for _ in range(READ_THREADS - 1)]
    for handle in extra:
        handles.put(handle)
    fill = np.array(nodata, dtype=dtype)
    boundary_wkb = geom.wkb
    inside_total = 0
    last_report = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(READ_THREADS) as pool:
            pending: collections.deque = collections.deque()
            strips = iter(_strips(window, src, len(indexes), strip_bytes, strip_rows))

            def read_ahead() -> None:  # keeps every reading thread busy while this one writes
                while len(pending) < READ_THREADS and (strip := next(strips, None)) is not None:
                    pending.append(pool.submit(_read_strip, handles, boundary_wkb, all_touched, strip,
                                               int(strip.row_off - window.row_off), indexes, fill, overviews))

            try:
                read_ahead()
                while pending:
                    check()
                    done = pending.popleft().result()
                    read_ahead()
                    inside_total += done.inside
                    full.push(done.data, done.tiles)
                    for out, (_, rows) in zip(levels_out, done.overview_rows):
                        out.push(rows)
                    now = time.monotonic()
                    if now - last_report >= 0.5:
                        last_report = now
                        rows_done = done.row0 + done.data.shape[1]
                        report(80.0 * rows_done / height, f"clipping: {rows_done}/{height} rows")
                    done = None
            finally:
                for future in pending:
                    future.cancel()
        if levels and overviews is None:
            ds.BuildOverviews(overview_resampling.upper(), levels)
        ds.FlushCache()
    finally:
        ds = None
        for handle in extra:
            handle.close()
    return inside_total


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _bounded_block_cache(limit: int | None = None):
    """Lower GDAL's process-wide block cache to `limit` bytes (CLIP_CACHE_BYTES) for the duration
    of a clip, then restore it. The clip reads each source block once and writes each output
    block once, so a large cache only holds blocks that are never used again (at the default,
    5 % of RAM, it took the peak memory of a Brazil clip to 4x its uncompressed window)."""
    limit = CLIP_CACHE_BYTES if limit is None else limit
    previous = gdal.GetCacheMax()
    lowered = previous > limit
    if lowered:
        gdal.SetCacheMax(limit)
    try:
        yield
    finally:
        if lowered:
            gdal.SetCacheMax(previous)


def _multi(polygons: list[Polygon]):
    return polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)


def _suffixed(destination: Path, part: str) -> Path:
    return destination.with_name(f"{destination.stem}-{part}{destination.suffix}")


def _replace_path(out: RasterOutput, path: Path, part) -> RasterOutput:
    return RasterOutput(
        path=path, part=part, width=out.width, height=out.height, bounds=out.bounds,
        transform=out.transform, inside_pixels=out.inside_pixels, all_touched=out.all_touched,
    )


def _scaled(report: ProgressCallback, start: float, end: float) -> ProgressCallback:
    return lambda percent, step: report(start + (end - start) * percent / 100.0, step)


def _crs_name(crs: CRS) -> str:
    try:
        authority = crs.to_authority()
    except Exception:  # pragma: no cover
        authority = None
    return f"{authority[0]}:{authority[1]}" if authority else crs.to_wkt()


def _remove_raster(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".aux.xml"), path.with_name(path.name + ".ovr"),
              path.with_name(path.name + ".ovr.tmp"), path.with_name(path.name + ".msk")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


#: Longest side, in pixels, of the all-nodata output written for a boundary with no pixel.
EMPTY_MAX_SIDE = 1024


def write_nodata_cog(template: Path, *, boundary, destination: Path, tags: dict[str, str] | None = None,
                     compress: str = DEFAULT_COMPRESSION) -> RasterClipResult:
    """What a boundary with no pixel of a dataset gets: an all-nodata COG on `template`'s grid
    (its CRS, alignment, data type, bands and nodata value) over the boundary's bounding box (its
    larger side when split at the antimeridian), so the package still holds a layer, in the right
    place, that shows nothing. Pixels are coarsened by a whole factor when the box would be longer
    than EMPTY_MAX_SIDE pixels. Written under a temporary name and moved into place."""
    _check_boundary(boundary)
    destination = Path(destination)
    with _open(template) as src:
        dtype, count = src.dtypes[0], src.count
        nodata = src.nodata if src.nodata is not None else default_nodata(dtype)
        geom = max((g for _, g in split_boundary(boundary)), key=lambda g: g.area)
        left, bottom, right, top = boundary_in_crs(geom, src.crs).bounds
        t = src.transform
        col0, col1 = math.floor((left - t.c) / t.a), math.ceil((right - t.c) / t.a)
        row0, row1 = math.floor((top - t.f) / t.e), math.ceil((bottom - t.f) / t.e)
        factor = max(1, math.ceil(max(col1 - col0, row1 - row0) / EMPTY_MAX_SIDE))
        width, height = max(1, math.ceil((col1 - col0) / factor)), max(1, math.ceil((row1 - row0) / factor))
        transform = Affine(t.a * factor, 0, t.c + col0 * t.a, 0, t.e * factor, t.f + row0 * t.e)
        crs = src.crs
    token = uuid.uuid4().hex[:12]
    plain = destination.with_name(f".{destination.stem}.{token}.empty.tif")
    cog = destination.with_name(f".{destination.stem}.{token}.cog.tif")
    try:
        with rasterio.open(plain, "w", driver="GTiff", width=width, height=height, count=count, dtype=dtype,
                           crs=crs, transform=transform, nodata=nodata) as dst:
            if tags:
                dst.update_tags(**tags)
            dst.write(np.full((count, height, width), nodata, dtype=dtype))
        rasterio.shutil.copy(str(plain), str(cog), driver="COG", **cog_options(width, height, compress=compress),
                             OVERVIEWS="NONE")
        os.replace(cog, destination)
    finally:
        for tmp in (plain, cog):
            _remove_raster(tmp)
    right_, bottom_ = transform * (width, height)
    out = RasterOutput(path=destination, part=None, width=width, height=height,
                       bounds=(transform.c, bottom_, right_, transform.f), transform=tuple(transform.to_gdal()),
                       inside_pixels=0, all_touched=False)
    return RasterClipResult(outputs=[out], crs=_crs_name(crs), crs_wkt=crs.to_wkt(), dtype=dtype, nodata=nodata,
                            count=count, res=(abs(transform.a), abs(transform.e)))
