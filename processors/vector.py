"""Clip a vector layer to a boundary polygon and write it as a GeoPackage.

Reusable by every vector dataset processor. The approach:

* Candidates are found in bulk: the fids and envelopes of the features whose envelope meets the
  boundary's bounding box, from the GeoPackage R*Tree alone when the source has one (no feature
  is read), else by reading geometries only through OGR's Arrow stream (any OGR driver).
* A grid of the boundary (`_BoundaryGrid`, GDAL rasterisation + summed-area tables) sorts all
  envelopes at once (numpy): inside (every cell the envelope meets is covered), outside (every
  such cell is missed: dropped unread) and undecided (near the boundary's edge, a few percent).
* The features inside are written whole: from a GeoPackage source by `gdal.VectorTranslate` with
  their fid list (GDAL copies them, Multi* promotion included, without Python per feature, in a
  thread of its own while the undecided features below are tested: `_BackgroundCopy`); from
  other drivers, or when their parts must be exploded and checked one by one, through the writer
  below. Undecided features are read one by one (`GetFeature`) and tested as follows, so shapely
  only sees the geometry of features near the boundary (WKB in, WKB out).
* When the source CRS is not EPSG:4326, the *boundary* is reprojected into the source CRS (after
  densifying its edges), never the data: outputs keep the source CRS and untouched features keep
  their exact coordinates.
* The boundary is cut into a quadtree of pieces (`_PieceTree`): cells it covers, cells it misses,
  and cells it crosses, whose piece (boundary n cell, at most a few dozen vertices) is prepared. A
  candidate whose envelope lies in a covered (missed) cell is kept whole (dropped) from its
  envelope alone; one in a crossed cell is tested against that cell's prepared piece, which gives
  the same answers as the whole boundary since the feature lies inside the cell; a candidate
  spanning cells uses the smallest cell that holds it (the whole boundary at worst).
* A prepared boundary piece (`shapely.prepared.prep`) classifies the candidates: features covered by the
  polygon are written whole (no intersection computed, coordinates unchanged); features crossing
  the boundary are clipped with `intersection` (or written whole when `keep_whole=True`); features
  that do not intersect are dropped, and so are features whose only contact with the boundary is
  of a lower dimension (a neighbouring province sharing an edge, a road ending on the border).
  Both modes therefore keep the same set of features.
* One output feature per source feature: a clipped feature that falls apart into several pieces is
  kept as one multi-part feature (no explode), like `ogr2ogr -clipsrc` and unlike PostGIS
  `ST_Dump`.
* The output geometry type is promoted to its Multi* form for lines and polygons ("LineString" ->
  "MultiLineString", "Polygon" -> "MultiPolygon", Z kept), because clipping can split a single
  part into several; every written geometry is normalised to that type (single parts wrapped,
  GeometryCollections reduced to the parts of the layer's dimension, lower-dimension leftovers of
  features that only touch the boundary, clip slivers below SLIVER_TOLERANCE and empty results
  dropped). Point layers stay "Point": a
  point is either inside or outside, clipping never splits it. Layers of mixed or unknown geometry
  type are written as they come (empty results dropped).
* fiona creates the empty output layer (schema, field types and CRS as fiona writes them), then
  features are appended through OGR (GDAL's copy, or the writer's transactions of
  WRITE_BATCH_SIZE): only fids and envelopes of the candidates are held in memory. Output order:
  per source layer, the features written whole, then those decided one by one, each in fid order
  (in source order for drivers without random reads, such as CSV and GML).
  The GeoPackage gets GDAL's R*Tree spatial index (its table, triggers and extension row), whose
  nodes are packed in one pass at the end from the features' boxes (`_PackedRtree`), and no disk
  sync but one. The file is written under a temporary name in the destination folder and moved into
  place with `os.replace`, so `destination` either does not exist or is complete. With no
  matching feature, an empty layer with the full schema is still written.

Uses only the shapely 1.8 API (`shape`, `mapping`, `prep`, `intersection`, `wkb`), which shapely 2 keeps.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import shutil
import sqlite3
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import fiona
import numpy as np
from osgeo import gdal, ogr  # the same system libgdal as fiona (and rasterio)
from rasterio.features import rasterize
from rasterio.transform import from_bounds
from shapely.wkb import loads as wkb_loads
from shapely.geometry import (
    GeometryCollection,
    LineString,
    MultiLineString,
    MultiPoint,
    MultiPolygon,
    Point,
    Polygon,
    box,
)
from shapely.prepared import prep

from processors.base import Boundary, ProcessorContext
from processors.errors import ProcessorError, SourceUnavailable
from processors.reproject import boundary_in_crs

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], None]

#: Features between two `check_cancelled()` calls.
CANCEL_CHECK_EVERY = 128
#: Features per transaction of the output GeoPackage.
WRITE_BATCH_SIZE = 1000
#: Pieces of a clipped feature smaller than this are slivers of the cut, not data, and are
#: dropped: lines shorter than it, polygons with less area than its square (layer CRS units: in
#: degrees 1e-9 is about 0.1 mm). A feature left with no piece is dropped like one that only
#: touches the boundary. No line or polygon row (whole, clipped or exploded part) is written
#: with an extent below it either: such a row is a point, not a line or an area.
SLIVER_TOLERANCE = 1e-9

_PROMOTE = {"LineString": "MultiLineString", "Polygon": "MultiPolygon"}
_DIMENSION = {
    "Point": 0,
    "MultiPoint": 0,
    "LineString": 1,
    "MultiLineString": 1,
    "Polygon": 2,
    "MultiPolygon": 2,
}
_MULTI_CLASS = {0: MultiPoint, 1: MultiLineString, 2: MultiPolygon}
_SINGLE_CLASS = {0: Point, 1: LineString, 2: Polygon}


@dataclass(frozen=True)
class VectorClipResult:
    """What `clip_vector_to_gpkg` wrote."""

    path: Path  # the GeoPackage written (== destination)
    layer: str  # layer name inside it
    feature_count: int  # features written
    geometry_type: str  # output layer geometry type, e.g. "MultiPolygon", "3D MultiLineString", "Point"
    crs: str  # the source/output CRS as "EPSG:<code>" when it has one, else its WKT ("" when none)
    crs_wkt: str  # the source/output CRS as WKT ("" when the source has none)
    candidates: int  # features read through the bounding-box filter
    kept_whole: int  # features written unchanged (inside the polygon, or keep_whole)
    clipped: int  # features written after intersection with the polygon
    tested: int  # candidates tested one by one (the others were decided from their envelope)
    bounds: tuple[float, float, float, float] | None  # extent of the written features (layer CRS)


def output_geometry_type(source_type: str) -> str:
    """The layer geometry type written for a source layer type: lines and polygons become Multi*.

    >>> output_geometry_type("Polygon"), output_geometry_type("3D LineString"), output_geometry_type("Point")
    ('MultiPolygon', '3D MultiLineString', 'Point')
    """
    prefix, base = _split_type(source_type)
    return prefix + _PROMOTE.get(base, base)


def clip_vector_to_gpkg(
    source: Path,
    *,
    layer: str | None,
    boundary,
    destination: Path,
    keep_whole: bool = False,
    output_layer: str | None = None,
    progress: ProgressCallback | None = None,
    check_cancelled: CancelCheck | None = None,
    extra_layers: Sequence[str] = (),
    explode: bool = False,
    properties_schema: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> VectorClipResult:
    """Clip `layer` of `source` to the `boundary` polygon (shapely, EPSG:4326) into a GeoPackage.

    `destination` is replaced atomically; its layer is `output_layer` (default: the source layer
    name). With `keep_whole`, features crossing the boundary are written unclipped. `progress`
    receives (percent 0-100, step) now and then; `check_cancelled` is called every few hundred
    features and should raise to stop (nothing is left at `destination` then).

    `extra_layers`: further layers of `source` (same CRS) appended to the same output layer after
    `layer`. `explode`: one output feature per part (like PostGIS `ST_Dump`), and the layer type
    is the single-part type ("LineString" rather than "MultiLineString"). `properties_schema`:
    a fixed output schema (`{name: fiona type}`); each record keeps those keys (missing -> null,
    others dropped). Without it the first layer's schema is used. `metadata`: dataset metadata
    items of the GeoPackage (gpkg_metadata), e.g. the SYNTHETIC marker.
    Raises `SourceUnavailable` when the source or a layer cannot be opened.
    """
    source = Path(source)
    destination = Path(destination)
    report = progress or (lambda percent, step: None)
    check = check_cancelled or (lambda: None)

    if boundary is None or boundary.is_empty:
        raise ValueError("the boundary geometry is empty")
    if not isinstance(boundary, (Polygon, MultiPolygon)):
        raise ValueError(f"the boundary must be a Polygon or MultiPolygon, not {boundary.geom_type}")

    def open_layer(name):
        try:
            return fiona.open(source, layer=name) if name is not None else fiona.open(source)
        except Exception as exc:  # fiona raises DriverError, ValueError (missing layer), ...
            what = f"layer {name!r} of {source}" if name is not None else str(source)
            raise SourceUnavailable(f"cannot open {what}: {exc}") from exc

    src = open_layer(layer)
    with src:
        crs_wkt = src.crs_wkt or ""
        epsg = _epsg(src)
        crs = f"EPSG:{epsg}" if epsg else crs_wkt
        source_type = src.schema.get("geometry") or "Unknown"
        out_type = output_geometry_type(source_type)
        write_type = _single_type(out_type) if explode else out_type
        props_schema = dict(properties_schema) if properties_schema is not None else src.schema["properties"]
        schema = {"geometry": write_type, "properties": props_schema}
        layer_name = output_layer or src.name

        clip_geom = boundary
        if crs_wkt and epsg != 4326:
            clip_geom = boundary_in_crs(boundary, crs_wkt)
        bbox = clip_geom.bounds
    names = [layer] + [n for n in extra_layers]
    for name in names[1:]:
        with open_layer(name) as s:
            if (s.crs_wkt or "") != crs_wkt:
                raise SourceUnavailable(f"layer {name!r} of {source} is not in the CRS of layer {layer!r}")

    report(0.0, "finding candidate features")
    src_ds = _ogr_open(source)
    # A GeoPackage source evaluates a list of fids in SQLite, so GDAL can copy the features that
    # lie inside without Python per feature; OGR SQL (other drivers) cannot parse such lists.
    copies_by_fid = src_ds.GetDriver().ShortName == "GPKG"
    whole_rows_need_extent = _DIMENSION.get(_split_type(out_type)[1]) != 0  # not for points
    candidates = {}
    for name in names:
        candidates[name] = _candidate_envelopes(src_ds, _ogr_layer(src_ds, source, name), bbox)
        check()
    total = sum(len(fids) for fids, _ in candidates.values())
    grid = _BoundaryGrid(clip_geom, _grid_size(total))
    plans = []
    for name, (fids, envelopes) in candidates.items():
        inside, undecided = grid.split(envelopes, whole_rows_need_extent=whole_rows_need_extent)
        plans.append(_LayerPlan(name, fids[inside], fids[undecided], len(fids)))
    del candidates
    work = sum(len(plan.inside) + len(plan.undecided) for plan in plans)

    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(f".{destination.stem}.{uuid.uuid4().hex[:12]}.tmp.gpkg")
    counts = _Counts(candidates=total)
    dst_ds = dst = writer = None
    try:
        with unsynced_sqlite_writes():
            # fiona creates the (empty) layer, so the schema, field types and CRS are exactly those
            # fiona writes; features are then appended through OGR, and the R*Tree is packed in one
            # pass at the end (cheaper than its per-row triggers).
            with fiona.open(
                tmp, "w", driver="GPKG", schema=schema, crs_wkt=crs_wkt or None, layer=layer_name,
                SPATIAL_INDEX="NO",
            ):
                pass
            dst_ds = gdal.OpenEx(str(tmp), gdal.OF_VECTOR | gdal.OF_UPDATE)
            if dst_ds is None:
                raise ProcessorError(f"cannot reopen {tmp} for writing: {gdal.GetLastErrorMsg()}")
            dst = dst_ds.GetLayer(0)
            index = _PackedRtree(dst_ds, layer_name, dst.GetGeometryColumn() or "geom")
            writer = _Writer(dst_ds, dst, out_type, explode, counts)
            progress_ = _Progress(report, check, work)
            report(1.0, f"clipping {total} candidate features")
            tree = None
            for plan in plans:
                lyr = _ogr_layer(src_ds, source, plan.name)
                copy_options = writer.whole_copy_options(lyr) if copies_by_fid else None
                whole = plan.inside if copy_options is None else plan.inside[:0]
                copy = None
                if copy_options is not None:
                    copy = _BackgroundCopy(source, plan.name, plan.inside, dst_ds, layer_name, copy_options)
                with copy or contextlib.nullcontext():
                    if tree is None:  # while GDAL copies
                        tree = _PieceTree(clip_geom)
                    kept = _kept_features(lyr, whole, plan.undecided, bbox, tree, keep_whole, out_type, progress_)
                    if copy is not None:
                        kept = list(kept)  # decided while GDAL copies the features inside
                        for copied in copy.chunks():
                            progress_.step(copied)
                        counts.kept_whole += len(plan.inside)
                writer.set_source(lyr.GetLayerDefn())
                dst_ds.StartTransaction()
                for feature, decision in kept:
                    _write_kept(feature, decision, writer)
                dst_ds.CommitTransaction()
            check()
            feature_count = dst.GetFeatureCount()
            fids, boxes = index.envelopes(dst_ds)
            bounds = None
            if len(boxes):  # (minx, miny, maxx, maxy) of the features written
                bounds = tuple(map(float, (*boxes[:, [0, 2]].min(axis=0), *boxes[:, [1, 3]].max(axis=0))))
            for key, value in (metadata or {}).items():
                dst_ds.SetMetadataItem(key, value)
            dst = writer = None
            dst_ds = None  # closes the GeoPackage
            index.load(tmp, fids, boxes)
        _fsync(tmp)  # the one sync: the file is complete on disk before it takes the real name
        os.replace(tmp, destination)
    except BaseException as exc:
        # The frames the exception came through (a check() that raised Cancelled, GDAL's copy)
        # hold the output dataset too: cleared, so that it is closed before its file is removed.
        traceback.clear_frames(exc.__traceback__)
        dst = writer = None
        dst_ds = None
        _remove_gpkg(tmp)
        raise
    finally:
        src_ds = None

    report(100.0, f"wrote {feature_count} features")
    return VectorClipResult(
        path=destination,
        layer=layer_name,
        feature_count=feature_count,
        geometry_type=write_type,
        crs=crs,
        crs_wkt=crs_wkt,
        candidates=counts.candidates,
        kept_whole=counts.kept_whole,
        clipped=counts.clipped,
        tested=sum(len(plan.undecided) for plan in plans),
        bounds=bounds,
    )


# --------------------------------------------------------------------------- OGR fast path

_OGR_FLAT = {
    "Point": ogr.wkbPoint, "LineString": ogr.wkbLineString, "Polygon": ogr.wkbPolygon,
    "MultiPoint": ogr.wkbMultiPoint, "MultiLineString": ogr.wkbMultiLineString,
    "MultiPolygon": ogr.wkbMultiPolygon,
}
_OGR_FORCE = {
    "MultiPoint": ogr.ForceToMultiPoint, "MultiLineString": ogr.ForceToMultiLineString,
    "MultiPolygon": ogr.ForceToMultiPolygon,
}
_OGR_MULTI = (ogr.wkbMultiLineString, ogr.wkbMultiPolygon)

#: Quadtree pieces of the boundary: a node is split while its piece has more vertices than this.
MAX_PIECE_VERTICES = 64
#: ... and, on demand, once this many features have landed in a cell the boundary crosses,
SPLIT_AFTER_VISITS = 16
#: down to cells of 1/2**MAX_PIECE_DEPTH of the boundary's bounding box.
MAX_PIECE_DEPTH = 14
_OUT, _IN, _PART = 0, 1, 2
#: The grid that sorts candidates (`_BoundaryGrid`) has about this many cells per candidate
#: (finer cells leave fewer candidates undecided, but cost time to build) ...
GRID_CELLS_PER_CANDIDATE = 16
#: ... and from 64 to 1024 cells per side (its tables: at most 4 MB each).
GRID_SIDES = (64, 1024)
#: SQLite page cache of the output while it is written (SQLite's default is 2 MB; Brazil's roads
#: were written in 1.50-1.87 s with it, 1.62-2.01 s without).
OUTPUT_SQLITE_CACHE_MB = 64
#: Features copied per GDAL call (`_copy_features`): progress and cancellation come between calls.
COPY_CHUNK = 10_000


def _ogr_open(source: Path):
    # A gdal.Dataset (not an ogr.DataSource): gdal.VectorTranslate takes it as its source.
    ds = gdal.OpenEx(str(source), gdal.OF_VECTOR)
    if ds is None:
        raise SourceUnavailable(f"cannot open {source}: {gdal.GetLastErrorMsg()}")
    return ds


def _ogr_layer(ds, source: Path, name):
    lyr = ds.GetLayerByName(name) if name is not None else ds.GetLayer(0)
    if lyr is None:
        raise SourceUnavailable(f"cannot open layer {name!r} of {source}")
    if lyr.GetLayerDefn().GetGeomFieldCount() == 0:
        raise SourceUnavailable(f"layer {lyr.GetName()!r} of {source} has no geometry column: nothing to clip")
    return lyr


def _sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_rows(ds, sql: str) -> dict[str, np.ndarray]:
    """The columns of an SQL result as numpy arrays (read in bulk through OGR's Arrow stream)."""
    result = ds.ExecuteSQL(sql)
    if result is None:
        raise ProcessorError(f"cannot run {sql[:200]!r}: {gdal.GetLastErrorMsg()}")
    try:
        batches = list(result.GetArrowStreamAsNumPy())
        names = [result.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(result.GetLayerDefn().GetFieldCount())]
        return {name: np.concatenate([batch[name] for batch in batches]) if batches else np.empty(0) for name in names}
    finally:
        ds.ReleaseResultSet(result)


def _has_spatial_index(ds, table: str, column: str) -> bool:
    (answer,) = _sql_rows(ds, f"SELECT HasSpatialIndex({_sql_string(table)}, {_sql_string(column)})").values()
    return bool(answer.all())


def _candidate_envelopes(ds, lyr, bbox) -> tuple[np.ndarray, np.ndarray]:
    """The fids (int64) and envelopes (rows of minx, maxx, miny, maxy) of the features of `lyr`
    whose envelope meets `bbox`, in fid order.

    A GeoPackage layer with its R*Tree answers from the index alone (no feature is read). Its
    boxes are float32 that SQLite rounds outward, so each holds the feature's exact envelope: a
    decision from it (all inside, all outside) holds for the feature. Other layers are read once,
    geometry only, through OGR's Arrow stream."""
    minx, miny, maxx, maxy = bbox
    table, column = lyr.GetName(), lyr.GetGeometryColumn()
    if ds.GetDriver().ShortName == "GPKG" and column and _has_spatial_index(ds, table, column):
        rows = _sql_rows(ds, f"SELECT id, minx, maxx, miny, maxy FROM {_sql_identifier(f'rtree_{table}_{column}')} "
                             f"WHERE maxx >= {minx!r} AND minx <= {maxx!r} AND maxy >= {miny!r} AND miny <= {maxy!r}")
        order = np.argsort(rows["id"], kind="stable")
        envelopes = np.column_stack([rows[k] for k in ("minx", "maxx", "miny", "maxy")]).astype(np.float64)
        return rows["id"].astype(np.int64)[order], envelopes[order].reshape(-1, 4)
    defn = lyr.GetLayerDefn()
    fid_key = lyr.GetFIDColumn() or "OGC_FID"
    geom_key = lyr.GetGeometryColumn() or "wkb_geometry"
    fids, envelopes = [], []
    lyr.SetSpatialFilterRect(minx, miny, maxx, maxy)
    lyr.SetIgnoredFields([defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())])
    try:
        for batch in lyr.GetArrowStreamAsNumPy(options=["INCLUDE_FID=YES"]):
            for fid, wkb in zip(batch[fid_key].tolist(), batch[geom_key]):
                geom = ogr.CreateGeometryFromWkb(bytes(wkb)) if wkb is not None else None
                if geom is not None and not geom.IsEmpty():
                    fids.append(fid)
                    envelopes.append(geom.GetEnvelope())
    finally:
        lyr.SetIgnoredFields([])
        lyr.SetSpatialFilter(None)
    order = np.argsort(np.asarray(fids, dtype=np.int64), kind="stable")
    return np.asarray(fids, dtype=np.int64)[order], np.asarray(envelopes, dtype=np.float64).reshape(-1, 4)[order]


@dataclass(frozen=True)
class _LayerPlan:
    """What becomes of one source layer's candidates (fids in fid order)."""

    name: str | None
    inside: np.ndarray  # covered by the boundary: written whole, no geometry test
    undecided: np.ndarray  # near the boundary's edge: tested, and clipped, one by one
    candidates: int  # features read through the bounding-box filter


class _BoundaryGrid:
    """The boundary rasterised on size x size cells over its bounding box, to sort
    thousands of candidate envelopes at once (numpy) into: inside (every cell the envelope
    meets is covered by the boundary), outside (every such cell misses it), and undecided.

    A cell is 'crossed' when the boundary's rings touch it (GDAL all-touched rasterisation, the
    cells of every ring vertex, so that rings smaller than a cell count, then widened by one cell
    against rounding on cell edges); a cell that is not crossed lies wholly on one side, the side
    of its centre (GDAL's default rasterisation). Summed-area tables count covered and missed
    cells under each envelope's cell range."""

    def __init__(self, geom, size: int) -> None:
        x0, y0, x1, y1 = geom.bounds
        self.size, self.x0, self.y1 = size, x0, y1
        self.dx, self.dy = (x1 - x0) / size, (y1 - y0) / size
        transform = from_bounds(x0, y0, x1, y1, size, size)
        centre_inside = rasterize([geom], out_shape=(size, size), transform=transform, dtype="uint8").astype(bool)
        crossed = rasterize([geom.boundary], out_shape=(size, size), transform=transform, all_touched=True,
                            dtype="uint8").astype(bool)
        vertices = np.concatenate([np.asarray(ring.coords)[:, :2] for ring in _rings(geom)])
        cols, rows = self._cells(vertices[:, 0], vertices[:, 1])
        crossed[rows, cols] = True
        widened = crossed.copy()
        widened[1:, :] |= crossed[:-1, :]
        widened[:-1, :] |= crossed[1:, :]
        crossed = widened.copy()
        crossed[:, 1:] |= widened[:, :-1]
        crossed[:, :-1] |= widened[:, 1:]
        self.covered = _summed_area(centre_inside & ~crossed)
        self.missed = _summed_area(~centre_inside & ~crossed)

    def _cells(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        last = self.size - 1
        cols = np.clip(np.floor((x - self.x0) / self.dx), 0, last).astype(np.int64)
        rows = np.clip(np.floor((self.y1 - y) / self.dy), 0, last).astype(np.int64)
        return cols, rows

    def split(self, envelopes: np.ndarray, *, whole_rows_need_extent: bool) -> tuple[np.ndarray, np.ndarray]:
        """Masks (inside, undecided) of `envelopes` (rows of minx, maxx, miny, maxy); the rest
        is outside. With `whole_rows_need_extent` (lines, polygons), an inside feature whose
        envelope may be smaller than SLIVER_TOLERANCE is left undecided: the writer drops it."""
        minx, maxx, miny, maxy = envelopes.T
        # Widened by a millionth of a cell, so that rounding never leaves out a cell touched.
        fx, fy = self.dx * 1e-6, self.dy * 1e-6
        raw_col0, raw_col1 = np.floor((minx - fx - self.x0) / self.dx), np.floor((maxx + fx - self.x0) / self.dx)
        raw_row0, raw_row1 = np.floor((self.y1 - maxy - fy) / self.dy), np.floor((self.y1 - miny + fy) / self.dy)
        beyond = (raw_col0 < 0) | (raw_row0 < 0) | (raw_col1 >= self.size) | (raw_row1 >= self.size)
        last = self.size - 1
        col0, col1, row0, row1 = (np.clip(v, 0, last).astype(np.int64) for v in (raw_col0, raw_col1, raw_row0, raw_row1))
        cells = (col1 - col0 + 1) * (row1 - row0 + 1)

        def count(table):
            return table[row1 + 1, col1 + 1] - table[row0, col1 + 1] - table[row1 + 1, col0] + table[row0, col0]

        inside = ~beyond & (count(self.covered) == cells)
        # What lies beyond the bounding box is outside the boundary too.
        disjoint = (raw_col1 < 0) | (raw_row1 < 0) | (raw_col0 >= self.size) | (raw_row0 >= self.size)
        outside = disjoint | (count(self.missed) == cells)
        if whole_rows_need_extent:
            coordinate = np.abs(envelopes).max(axis=1) if len(envelopes) else np.empty(0)
            slack = 4 * np.spacing(coordinate.astype(np.float32)).astype(np.float64)  # float32 index boxes
            inside &= np.maximum(maxx - minx, maxy - miny) - slack >= SLIVER_TOLERANCE
        return inside, ~inside & ~outside


def _grid_size(candidates: int) -> int:
    """Cells per side of the boundary grid for this many candidates: a power of two."""
    side = 2 ** math.ceil(math.log2(max(1.0, (GRID_CELLS_PER_CANDIDATE * candidates) ** 0.5)))
    return min(max(side, GRID_SIDES[0]), GRID_SIDES[1])


def _summed_area(mask: np.ndarray) -> np.ndarray:
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int32)
    np.cumsum(mask, axis=0, dtype=np.int32, out=table[1:, 1:])
    np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
    return table


def _rings(geom) -> Iterable:
    for polygon in geom.geoms if isinstance(geom, MultiPolygon) else [geom]:
        yield polygon.exterior
        yield from polygon.interiors


class _Progress:
    """Progress and cancellation over `work` features written (whole or one by one)."""

    def __init__(self, report: ProgressCallback, check: CancelCheck, work: int) -> None:
        self.report, self.check, self.work = report, check, max(work, 1)
        self.done = 0
        self.last_report = time.monotonic()

    def step(self, count: int = 1) -> None:
        before = self.done
        self.done += count
        if before // CANCEL_CHECK_EVERY != self.done // CANCEL_CHECK_EVERY:
            self.check()
            now = time.monotonic()
            if now - self.last_report >= 0.5:
                self.last_report = now
                self.report(1.0 + 98.0 * min(self.done, self.work) / self.work,
                            f"clipping: {self.done}/{self.work} features done")


def _copy_features(src_ds, lyr, fids: np.ndarray, dst_ds, layer_name: str, options: dict) -> Iterable[int]:
    """Append the features `fids` of `lyr` unchanged (but for `options`, e.g. the promotion to
    Multi*) to `layer_name` of `dst_ds`: one GDAL call per COPY_CHUNK features (the GeoPackage
    evaluates the fid list), yielding the features copied after each, so that progress and
    cancellation come between calls (GDAL gives no progress for a filtered GeoPackage layer)."""
    fid_column = _sql_identifier(lyr.GetFIDColumn() or "fid")
    lyr.SetSpatialFilter(None)
    try:
        for start in range(0, len(fids), COPY_CHUNK):
            chunk = fids[start:start + COPY_CHUNK]
            where = f"{fid_column} IN ({','.join(map(str, chunk.tolist()))})"
            try:
                ok = gdal.VectorTranslate(dst_ds, src_ds, accessMode="append", layers=[lyr.GetName()],
                                          layerName=layer_name, where=where, **options)
                error = gdal.GetLastErrorMsg()
            except RuntimeError as exc:  # with gdal.UseExceptions() in this process
                ok, error = 0, str(exc)
            if not ok:
                raise ProcessorError(f"cannot copy the features inside the boundary: {error}")
            yield len(chunk)
    finally:
        lyr.SetAttributeFilter(None)


class _BackgroundCopy:
    """`_copy_features` in a thread of its own, while the calling thread decides the features near
    the boundary's edge (GDAL, and GEOS through shapely's ctypes calls, run without the GIL). The
    thread reads the source through a dataset of its own (a GDAL dataset serves one thread at a
    time) and writes `dst_ds`, which the calling thread leaves alone until the copy has ended.
    Progress and cancellation stay in the calling thread: `chunks()` yields the features copied
    by each GDAL call as they are done, and raises what the copy raised; leaving the context stops
    the copy after its current GDAL call and waits for the thread."""

    def __init__(self, source: Path, layer, fids: np.ndarray, dst_ds, layer_name: str, options: dict) -> None:
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source, layer, fids, dst_ds, layer_name, options),
                                        name="vector-copy", daemon=True)

    def __enter__(self) -> "_BackgroundCopy":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self._thread.join()

    def stop(self) -> None:
        self._stop.set()

    def chunks(self) -> Iterable[int]:
        while (event := self._events.get()) is not None:
            if isinstance(event, BaseException):
                raise event
            yield event

    def _run(self, source: Path, layer, fids: np.ndarray, dst_ds, layer_name: str, options: dict) -> None:
        try:
            src_ds = _ogr_open(source)
            copies = _copy_features(src_ds, _ogr_layer(src_ds, source, layer), fids, dst_ds, layer_name, options)
            with contextlib.closing(copies):  # ends with the layer's filter reset, before the dataset closes
                for copied in copies:
                    self._events.put(copied)
                    if self._stop.is_set():
                        break
        except BaseException as exc:  # raised in the calling thread by chunks()
            self._events.put(exc)
        else:
            self._events.put(None)


def _kept_features(lyr, whole: np.ndarray, undecided: np.ndarray, bbox, tree: _PieceTree, keep_whole: bool,
                   out_type: str, progress: _Progress) -> Iterable[tuple[Any, tuple | None]]:
    """(feature, what to write of it: see `_clip_ogr_feature`) for the fids `whole` (written whole)
    and `undecided` (tested) of `lyr`."""
    for feature, inside in _read_features(lyr, whole, undecided, bbox):
        if inside:
            yield feature, (feature.GetGeometryRef(), False)
        else:
            yield feature, _clip_ogr_feature(feature, tree, keep_whole, out_type)
        progress.step()


def _read_features(lyr, whole: np.ndarray, undecided: np.ndarray, bbox) -> Iterable[tuple[Any, bool]]:
    """(feature, True) for the fids `whole` (known to lie inside), (feature, False) for the fids
    `undecided`: by fid where the driver reads features at random (GeoPackage, shapefile, ...),
    else in one pass over the candidates (CSV, GML: each GetFeature would read the file again)."""
    if lyr.TestCapability(ogr.OLCRandomRead):
        for fid in whole.tolist():
            yield lyr.GetFeature(fid), True
        for fid in undecided.tolist():
            yield lyr.GetFeature(fid), False
        return
    inside, tested = set(whole.tolist()), set(undecided.tolist())
    lyr.SetSpatialFilterRect(*bbox)
    lyr.ResetReading()
    try:
        for feature in iter(lyr.GetNextFeature, None):
            fid = feature.GetFID()
            if fid in inside or fid in tested:
                yield feature, fid in inside
    finally:
        lyr.SetSpatialFilter(None)


class _PackedRtree:
    """GDAL's spatial index of the output layer (its R*Tree virtual table, triggers and
    gpkg_extensions row, made by `CreateSpatialIndex` while the table is empty), filled once at the
    end by packing every feature's box into its nodes (sort-tile-recursive), rather than by one
    R*Tree insertion per feature: GDAL 3.6 inserts row by row (1.1-1.4 s of the 2.5 s of Brazil's
    127,000 roads; GDAL >= 3.7 bulk-loads its index this way itself). Meanwhile the insert trigger
    is dropped, so that the features written do not go into the tree one by one; `load` puts it
    back as GDAL wrote it. The boxes stored are those SQLite stores for the same values (float32
    rounded outward), so queries answer as with GDAL's own index. Memory: the fids and boxes of
    the features written, and one level of cells at a time (rows go to SQLite as they are made)."""

    def __init__(self, ds, table: str, column: str) -> None:
        self.table, self.column = table, column
        self.rtree = f"rtree_{table}_{column}"
        _execute(ds, f"SELECT CreateSpatialIndex({_sql_string(table)}, {_sql_string(column)})")
        trigger = f"{self.rtree}_insert"
        result = ds.ExecuteSQL(f"SELECT sql FROM sqlite_master WHERE type = 'trigger' "
                               f"AND name = {_sql_string(trigger)}")
        try:
            self.insert_trigger = [feature.GetField(0) for feature in result]
        finally:
            ds.ReleaseResultSet(result)
        if len(self.insert_trigger) != 1:
            raise ProcessorError(f"GDAL made no trigger {trigger} for the spatial index of {table}")
        _execute(ds, f"DROP TRIGGER {_sql_identifier(trigger)}")

    def envelopes(self, ds) -> tuple[np.ndarray, np.ndarray]:
        """fids and boxes (rows of minx, maxx, miny, maxy) of the features written, as GDAL's
        `CreateSpatialIndex` selects them (no null or empty geometry)."""
        table, column = _sql_identifier(self.table), _sql_identifier(self.column)
        result = ds.ExecuteSQL(f"SELECT fid, ST_MinX({column}) AS minx, ST_MaxX({column}) AS maxx, "
                               f"ST_MinY({column}) AS miny, ST_MaxY({column}) AS maxy FROM {table} "
                               f"WHERE {column} NOT NULL AND NOT ST_IsEmpty({column})")
        if result is None:
            raise ProcessorError(f"cannot read the extents of the features written: {gdal.GetLastErrorMsg()}")
        try:
            fid_key = result.GetFIDColumn()
            batches = list(result.GetArrowStreamAsNumPy(options=["INCLUDE_FID=YES"]))
        finally:
            ds.ReleaseResultSet(result)
        fids = np.concatenate([b[fid_key] for b in batches]).astype(np.int64) if batches else np.empty(0, np.int64)
        boxes = (np.column_stack([np.concatenate([b[k] for b in batches]) for k in ("minx", "maxx", "miny", "maxy")])
                 if batches else np.empty((0, 4)))
        return fids, boxes.astype(np.float64)

    def load(self, path: Path, fids: np.ndarray, boxes: np.ndarray) -> None:
        """Write the tree of `boxes` into the closed GeoPackage `path` and put the trigger back."""
        node = _sql_identifier(f"{self.rtree}_node")
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
            db.execute("PRAGMA synchronous = OFF")  # the caller syncs the file once
            db.execute("BEGIN")
            (node_size,), = db.execute(f"SELECT length(data) FROM {node} WHERE nodeno = 1")
            if len(fids):
                self._write_levels(db, fids, boxes, node_size)
            db.execute(self.insert_trigger[0])
            db.execute("COMMIT")

    def _write_levels(self, db, fids: np.ndarray, boxes: np.ndarray, node_size: int) -> None:
        node, parent, rowid = (_sql_identifier(f"{self.rtree}_{s}") for s in ("node", "parent", "rowid"))
        capacity = (node_size - 4) // _RTREE_CELL.itemsize
        for depth, numbers, sizes, cells in _rtree_levels(fids, _rtree_boxes(boxes), capacity):
            ends = np.cumsum(sizes)
            blobs = (_rtree_node(depth if number == 1 else 0, cells[start:end], node_size)
                     for number, start, end in zip(numbers.tolist(), (ends - sizes).tolist(), ends.tolist()))
            db.executemany(f"INSERT OR REPLACE INTO {node} (nodeno, data) VALUES (?, ?)", zip(numbers.tolist(), blobs))
            # each cell's rowid (in a leaf) or child node, and the node that holds it
            links = parent if depth else rowid
            db.executemany(f"INSERT INTO {links} VALUES (?, ?)", _pairs(cells["id"], np.repeat(numbers, sizes)))


#: SQLite's R*Tree rounding of a double to the float32 it stores (rtree.c RNDTOWARDS, RNDAWAY).
_RTREE_TOWARDS, _RTREE_AWAY = 1.0 - 1.0 / 8388608.0, 1.0 + 1.0 / 8388608.0
#: An R*Tree node: a 2-byte depth (in the root only) and a 2-byte cell count, then its cells: a
#: rowid (leaf) or child node number, and the box as float32, all big-endian.
_RTREE_CELL = np.dtype([("id", ">i8"), ("box", ">f4", (4,))])


def _rtree_boxes(boxes: np.ndarray) -> np.ndarray:
    """float32 boxes as SQLite's R*Tree stores doubles: minima rounded down, maxima up
    (rtreeValueDown, rtreeValueUp)."""
    out = boxes.astype(np.float32)
    minima = np.array([True, False, True, False])  # minx, maxx, miny, maxy
    inward = np.where(minima, out > boxes, out < boxes)
    outward = np.where((boxes < 0) == minima, _RTREE_AWAY, _RTREE_TOWARDS)
    out[inward] = (boxes * outward)[inward].astype(np.float32)
    return out


def _rtree_levels(fids: np.ndarray, boxes: np.ndarray, capacity: int) -> Iterable[tuple]:
    """The levels of an R*Tree of `boxes` (float32 rows of minx, maxx, miny, maxy), leaves first:
    (depth, node numbers, cells per node, cells: child ids and boxes in node order).
    Sort-tile-recursive packing, level by level from the leaves (each level's entries sorted by x
    into vertical slices, each slice by y into nodes of at most `capacity` cells). Nodes are
    numbered from 2 up, level by level, but the root, which SQLite expects to be node 1."""
    ids, entries, first, depth = fids, boxes, 2, 0
    while True:
        groups = _str_groups(entries, capacity)
        order = np.concatenate(groups)
        sizes = np.array([len(g) for g in groups])
        numbers = np.array([1]) if len(groups) == 1 else first + np.arange(len(groups))
        ordered = entries[order]
        cells = np.empty(len(order), _RTREE_CELL)
        cells["id"], cells["box"] = ids[order], ordered
        yield depth, numbers, sizes, cells
        if len(groups) == 1:
            return
        starts = np.cumsum(sizes) - sizes
        entries = np.column_stack([reduce.reduceat(ordered[:, i], starts) for i, reduce in
                                   enumerate((np.minimum, np.maximum, np.minimum, np.maximum))])
        ids, first, depth = numbers, first + len(groups), depth + 1


def _rtree_node(depth: int, cells: np.ndarray, node_size: int) -> bytes:
    blob = np.array([depth, len(cells)], ">u2").tobytes() + cells.tobytes()
    return blob + bytes(node_size - len(blob))


def _pairs(a: np.ndarray, b: np.ndarray, chunk: int = 65536) -> Iterable[tuple[int, int]]:
    """(a[i], b[i]) as Python ints, converted a chunk at a time (not millions of objects at once)."""
    for start in range(0, len(a), chunk):
        yield from zip(a[start:start + chunk].tolist(), b[start:start + chunk].tolist())


def _str_groups(boxes: np.ndarray, capacity: int) -> list[np.ndarray]:
    """Indices of `boxes` in groups of at most `capacity`, neighbours together: sorted by the x
    of their centres into about sqrt(nodes) slices, each sorted by y and cut evenly."""
    if len(boxes) <= capacity:
        return [np.arange(len(boxes))]
    x, y = boxes[:, 0] + boxes[:, 1], boxes[:, 2] + boxes[:, 3]
    slices = math.ceil(math.sqrt(-(-len(boxes) // capacity)))
    groups = []
    for part in np.array_split(np.argsort(x, kind="stable"), slices):
        part = part[np.argsort(y[part], kind="stable")]
        groups.extend(np.array_split(part, -(-len(part) // capacity)))
    return groups


def _execute(ds, sql: str) -> None:
    result = ds.ExecuteSQL(sql)
    if result is not None:
        ds.ReleaseResultSet(result)


class _Node:
    """A quadtree cell of the boundary's bounding box: outside, inside, or crossed by the boundary
    (`piece` = boundary within the cell, prepared). `children` (4, or None for a leaf): a child is
    None when its piece is not purely polygonal (the boundary only touches that cell along an edge
    or at a point); features there are tested against the parent's piece."""

    __slots__ = ("status", "piece", "prepared", "box", "depth", "visits", "xm", "ym", "children")

    def __init__(self, status: int, piece=None, cell=None, depth: int = 0) -> None:
        self.status = status
        self.piece = piece
        self.prepared = prep(piece) if piece is not None else None
        self.box = cell
        self.depth = depth
        self.visits = 0
        self.children = None
        self.xm = self.ym = 0.0


class _PieceTree:
    """The boundary cut into quadtree pieces.

    A feature whose envelope lies within a cell is tested and clipped against that cell's piece
    only: with the feature inside the (closed) cell, feature n boundary == feature n (boundary n
    cell), so the results equal those against the whole boundary, at a fraction of the cost for
    a boundary of thousands of vertices. Cells the boundary covers entirely, or misses entirely,
    decide a feature from its envelope alone (no geometry is built). Cells are split up front
    while their piece has more than MAX_PIECE_VERTICES vertices, and later, on demand, once
    SPLIT_AFTER_VISITS features have landed in a crossed cell (down to MAX_PIECE_DEPTH levels),
    so that the cells are fine where the features are dense."""

    def __init__(self, geom) -> None:
        self.bounds = geom.bounds
        self.root = _Node(_PART, geom, self.bounds, 0)
        self._split_big(self.root)

    def _split_big(self, node: _Node) -> None:
        if node.depth < MAX_PIECE_DEPTH and _vertex_count(node.piece) > MAX_PIECE_VERTICES:
            self._split(node)
            for child in node.children:
                if child is not None and child.status == _PART:
                    self._split_big(child)

    @staticmethod
    def _split(node: _Node) -> None:
        x0, y0, x1, y1 = node.box
        xm, ym = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        children = []
        depth = node.depth + 1
        for cell in ((x0, y0, xm, ym), (xm, y0, x1, ym), (x0, ym, xm, y1), (xm, ym, x1, y1)):
            shape_ = box(*cell)
            if not node.prepared.intersects(shape_):
                children.append(_Node(_OUT, depth=depth))
            elif node.prepared.covers(shape_):
                children.append(_Node(_IN, depth=depth))
            else:
                sub = node.piece.intersection(shape_)
                if sub.is_empty or not isinstance(sub, (Polygon, MultiPolygon)):
                    children.append(None)
                else:
                    children.append(_Node(_PART, sub, cell, depth))
        node.xm, node.ym, node.children = xm, ym, children

    def locate(self, minx: float, maxx: float, miny: float, maxy: float) -> _Node:
        """The deepest cell holding the envelope (the root when it is not inside the bounds)."""
        node = self.root
        x0, y0, x1, y1 = self.bounds
        if minx < x0 or maxx > x1 or miny < y0 or maxy > y1:
            return node
        while True:
            children = node.children
            if children is None:
                if node.status != _PART or node.depth >= MAX_PIECE_DEPTH:
                    return node
                node.visits += 1
                if node.visits <= SPLIT_AFTER_VISITS:
                    return node
                self._split(node)
                children = node.children
            if maxx <= node.xm:
                i = 0
            elif minx >= node.xm:
                i = 1
            else:
                return node
            if maxy <= node.ym:
                pass
            elif miny >= node.ym:
                i += 2
            else:
                return node
            child = children[i]
            if child is None:
                return node
            node = child


def _vertex_count(geom) -> int:
    return sum(len(ring.coords) for ring in _rings(geom))


class _Writer:
    """Appends output features to the OGR layer `dst` in transactions of WRITE_BATCH_SIZE."""

    def __init__(self, ds, dst, out_type: str, explode: bool, counts: _Counts) -> None:
        self.ds, self.dst, self.defn = ds, dst, dst.GetLayerDefn()
        self.out_type = out_type
        _, base = _split_type(out_type)
        self.base = base
        self.flat = _OGR_FLAT.get(base)  # None: a layer of mixed/unknown type, written as is
        self.single_flat = _OGR_FLAT.get(base[len("Multi"):]) if base.startswith("Multi") else None
        self.force = _OGR_FORCE.get(base)
        self.explode = explode
        self.counts = counts
        self.field_map: list[int] = []
        self.pending = 0

    def set_source(self, src_defn) -> None:
        self.field_map = [self.defn.GetFieldIndex(src_defn.GetFieldDefn(i).GetName())
                          for i in range(src_defn.GetFieldCount())]

    def whole_copy_options(self, lyr) -> dict[str, str] | None:
        """gdal.VectorTranslate options that copy the features of the source layer `lyr` as
        `_write_whole` writes them, or None when only this writer can: a layer of mixed or
        unknown type (normalised geometry by geometry), or Multi* features to explode (each part
        is checked for slivers)."""
        if self.flat is None:
            return None
        flat = ogr.GT_Flatten(lyr.GetGeomType())
        if flat == self.flat:
            return None if self.explode and flat in _OGR_MULTI else {}
        if flat == self.single_flat:
            return {} if self.explode else {"geometryType": "PROMOTE_TO_MULTI"}
        return None

    def promote(self, geom):
        """A kept-whole OGR geometry in the layer's type, coordinates untouched (None if it cannot be)."""
        if self.flat is None:
            return geom
        flat = ogr.GT_Flatten(geom.GetGeometryType())
        if flat == self.flat:
            return geom
        if flat == self.single_flat:
            return self.force(geom)
        # Another type than the layer's (a mixed source): go through the normaliser.
        normalised = _normalise(wkb_loads(bytes(geom.ExportToWkb())), self.out_type)
        return None if normalised is None else ogr.CreateGeometryFromWkb(normalised.wkb)

    def write(self, feature, geom) -> int:
        """Write `geom` with the attributes of the source `feature`; returns features written."""
        if self.explode and ogr.GT_Flatten(geom.GetGeometryType()) in _OGR_MULTI:
            parts = [geom.GetGeometryRef(i).Clone() for i in range(geom.GetGeometryCount())]
        else:
            parts = [geom]
        if _DIMENSION.get(self.base):  # lines and polygons: never a row of (almost) zero extent
            parts = [part for part in parts if _extent(part) >= SLIVER_TOLERANCE]
        for part in parts:
            out = ogr.Feature(self.defn)
            out.SetFromWithMap(feature, 1, self.field_map)
            out.SetGeometry(part)
            if self.dst.CreateFeature(out) != 0:
                raise ProcessorError(f"cannot write a feature: {gdal.GetLastErrorMsg()}")
            self.pending += 1
            if self.pending >= WRITE_BATCH_SIZE:
                self.ds.CommitTransaction()
                self.ds.StartTransaction()
                self.pending = 0
        return len(parts)


def _write_whole(feature, geom, writer: _Writer) -> int:
    """Write a feature with its geometry untouched (promoted to the layer's type)."""
    out = writer.promote(geom)
    written = 0 if out is None else writer.write(feature, out)
    if written:
        writer.counts.kept_whole += 1
    return written


def _extent(geom) -> float:
    """The larger side of an OGR geometry's envelope."""
    minx, maxx, miny, maxy = geom.GetEnvelope()
    return max(maxx - minx, maxy - miny)


def _clip_ogr_feature(feature, tree: _PieceTree, keep_whole: bool, out_type: str):
    """What to write of one candidate OGR feature: None (dropped), or (geometry, clipped): its own
    geometry (clipped False, written whole) or its intersection with the boundary as `out_type`.

    Both modes keep the same set of features: those whose intersection with the boundary has the
    layer's dimension (a polygon sharing only an edge, or a line touching at a point, is dropped).
    Features covered by the boundary are written whole without an intersection; the others are
    clipped, or written whole with `keep_whole`. Decisions are made against the quadtree piece
    that holds the feature's envelope (the whole boundary when none does)."""
    geom = feature.GetGeometryRef()
    if geom is None or geom.IsEmpty():
        return None
    node = tree.locate(*geom.GetEnvelope())
    status = node.status
    if status == _OUT:
        return None
    if status == _IN:
        return geom, False
    shp = wkb_loads(bytes(geom.ExportToWkb()))
    prepared = node.prepared
    if shp.is_empty or not prepared.intersects(shp):
        return None
    if prepared.covers(shp):
        return geom, False
    clipped = _normalise(_intersection(shp, node.piece), out_type, min_size=SLIVER_TOLERANCE)
    if clipped is None:
        return None
    if keep_whole:
        return geom, False
    return ogr.CreateGeometryFromWkb(clipped.wkb), True


def _write_kept(feature, decision, writer: _Writer) -> None:
    """Write what `_clip_ogr_feature` (or the sorting of envelopes) kept of `feature`."""
    if decision is None:
        return
    geom, clipped = decision
    if clipped:
        writer.counts.clipped += 1
        writer.write(feature, geom)
    else:
        _write_whole(feature, geom, writer)


def _single_type(geometry_type: str) -> str:
    """"LineString" from "MultiLineString" (prefix kept); other types unchanged."""
    prefix, base = _split_type(geometry_type)
    return prefix + (base[len("Multi"):] if base.startswith("Multi") and base != "MultiPoint" else base)


@dataclass
class _Counts:
    candidates: int
    kept_whole: int = 0
    clipped: int = 0


def _intersection(geom, clip_geom):
    try:
        return geom.intersection(clip_geom)
    except Exception:  # GEOS TopologyException on an invalid source geometry: repair and retry
        log.debug("repairing an invalid geometry with buffer(0) before clipping")
        return geom.buffer(0).intersection(clip_geom)


def _normalise(geom, out_type: str, *, min_size: float = 0.0):
    """`geom` as `out_type` (Multi* wrap, parts of the layer's dimension only, lines shorter than
    `min_size` and polygons smaller than its square dropped), or None if nothing is left."""
    if geom is None or geom.is_empty:
        return None
    _, base = _split_type(out_type)
    dim = _DIMENSION.get(base)
    if dim is None:  # Unknown / Geometry / GeometryCollection layer: write as is
        return geom
    parts = [p for p in _flatten(geom) if _DIMENSION.get(p.geom_type) == dim and not p.is_empty
             and (dim == 0 or (p.length if dim == 1 else p.area ** 0.5) >= min_size)]
    if not parts:
        return None  # e.g. a polygon that only touches the boundary: a line or point is left
    if base.startswith("Multi"):
        return _MULTI_CLASS[dim](parts)
    if len(parts) == 1 and isinstance(parts[0], _SINGLE_CLASS[dim]):
        return parts[0]
    # A single-type layer that cannot hold the result (only Point layers stay single, and a point
    # clipped to a polygon is one point); keep the first part rather than fail the whole layer.
    log.warning("clipped geometry has %d parts for a %s layer; keeping the first", len(parts), out_type)
    return parts[0]


def _flatten(geom) -> Iterable:
    if isinstance(geom, (GeometryCollection, MultiPoint, MultiLineString, MultiPolygon)):
        for part in geom.geoms:
            yield from _flatten(part)
    else:
        yield geom


def _as_dict(geometry) -> dict[str, Any]:
    """A GeoJSON-like dict from a fiona 1.9 Geometry (or a plain dict with older fiona)."""
    if isinstance(geometry, dict):
        return geometry
    if getattr(geometry, "type", None) == "GeometryCollection":
        return {"type": "GeometryCollection", "geometries": [_as_dict(g) for g in geometry.geometries]}
    return {"type": geometry.type, "coordinates": geometry.coordinates}


def _split_type(geometry_type: str) -> tuple[str, str]:
    """("3D ", "LineString") from "3D LineString"; ("", "Polygon") from "Polygon"."""
    if geometry_type.startswith("3D "):
        return "3D ", geometry_type[3:]
    return "", geometry_type


def _epsg(collection) -> int | None:
    crs = collection.crs
    if not crs:
        return None
    try:
        return crs.to_epsg()  # fiona >= 1.9 CRS object
    except AttributeError:  # fiona < 1.9: a dict like {"init": "epsg:4326"}
        init = dict(crs).get("init", "")
        return int(init.split(":")[1]) if init.lower().startswith("epsg:") else None


@contextlib.contextmanager
def unsynced_sqlite_writes():
    """SQLite writes through GDAL in this thread without a disk sync per commit
    (`OGR_SQLITE_SYNCHRONOUS=OFF`): for files written under a temporary name, synced once
    (`_fsync`) before the rename that publishes them. A small clip did 28 syncs before.
    Databases opened meanwhile get a page cache of up to OUTPUT_SQLITE_CACHE_MB."""
    options = {"OGR_SQLITE_SYNCHRONOUS": "OFF", "OGR_SQLITE_CACHE": str(OUTPUT_SQLITE_CACHE_MB)}
    previous = {key: gdal.GetThreadLocalConfigOption(key, None) for key in options}
    for key, value in options.items():
        gdal.SetThreadLocalConfigOption(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            gdal.SetThreadLocalConfigOption(key, value)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_gpkg(path: Path) -> None:
    for p in (path, *(path.with_name(path.name + s) for s in ("-journal", "-wal", "-shm"))):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def clip_vector_into_output(
    source: Path,
    *,
    layer: str | None,
    boundary: Boundary,
    context: ProcessorContext,
    filename: str,
    keep_whole: bool = False,
    output_layer: str | None = None,
    progress_range: tuple[float, float] = (0.0, 100.0),
    **clip_options: Any,
) -> VectorClipResult:
    """Clip into the processing folder, then move the GeoPackage into `context.output_dir`.

    `clip_options` go to `clip_vector_to_gpkg` (`extra_layers`, `explode`, `properties_schema`,
    `metadata`). A boundary that no feature overlaps gives an empty layer with the full schema
    (a result, not an error); nothing is left behind on any failure."""
    start, end = progress_range
    scratch = Path(context.processing_dir) / filename
    try:
        result = clip_vector_to_gpkg(
            source,
            layer=layer,
            boundary=boundary.shape(),
            destination=scratch,
            keep_whole=keep_whole,
            output_layer=output_layer,
            progress=lambda percent, step: context.progress(start + (end - start) * percent / 100, step),
            check_cancelled=context.check_cancelled,
            **clip_options,
        )
        shutil.move(str(scratch), str(Path(context.output_dir) / filename))
    finally:
        scratch.unlink(missing_ok=True)
    return result
