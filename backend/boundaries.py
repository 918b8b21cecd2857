"""Boundary store: named (multi)polygons in SpatiaLite, searchable by name and by point.

Two tables:

- `boundaries` (id, name, name_long, admin_level, geometry MULTIPOLYGON 4326, plus case- and
  accent-folded copies of the names for search);
- `boundary_parts` (boundary_id, geometry POLYGON 4326): every boundary exploded into polygon parts
  and split into quadrants until each piece has at most `PART_MAX_VERTICES` vertices. Point search
  runs on the parts: the R*Tree picks the few pieces whose box holds the point, then an exact
  `ST_Intersects` on small polygons decides. Whole 1:10m countries have up to ~100k vertices, so
  testing them directly is what made point search slow.

One SQLite connection per thread (FastAPI runs sync endpoints in a threadpool), WAL journal,
explicit `BEGIN IMMEDIATE` write transactions.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
import re
import sqlite3
import threading
import unicodedata
import weakref
from contextlib import contextmanager
from functools import lru_cache, partial
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import anyio
import numpy
import sqlite_utils
from shapely import wkb
from shapely.geometry import MultiPolygon, Polygon, box, shape
from shapely.geometry.polygon import orient
from shapely.geometry.base import BaseGeometry
from shapely.ops import clip_by_rect, unary_union
from shapely.validation import explain_validity, make_valid

from backend.bounded import BudgetExceeded, run_bounded
from backend.errors import BoundaryExists, BoundaryNotFound, InvalidBoundary, InvalidRequest, PayloadTooLarge

if TYPE_CHECKING:
    from backend.settings import Settings

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,127}\Z")
NAME_MAX_LENGTH = 128
# Most vertices in one piece of `boundary_parts`. bench/bench_boundaries.py over the Natural Earth
# admin-0 + admin-1 seed (4,788 boundaries), point search p50/p90: 64 -> 0.06/0.08 ms (35.6k parts,
# seed 7.9 s), 128 -> 0.07/0.10 ms (22.2k parts, 5.6 s), 256 -> 0.09/0.13 ms (16.5k parts, 4.8 s).
PART_MAX_VERTICES = 128
DEFAULT_MAX_VERTICES = 200_000
CUSTOM_ADMIN_LEVEL = 99  # admin_level of uploaded custom boundaries: listed after admin 0, 1...
DEFAULT_MAX_BYTES = 16_000_000  # 200,000 vertices at full double precision are about 8 MB of GeoJSON
# A country at 1:10m has at most a few hundred parts; 200 overlapping triangles took GEOS a minute.
DEFAULT_MAX_PARTS = 10_000
# Deepest JSON nesting accepted in an upload: a FeatureCollection's coordinates sit at depth 7.
MAX_JSON_DEPTH = 32
DEFAULT_CHECK_SECONDS = 15.0
DEFAULT_CHECK_MEMORY_BYTES = 1024 * 1024 * 1024
# Uploads checked at the same time (each in its own process within the memory budget); more wait.
UPLOAD_CHECKS_AT_ONCE = 2
_MIN_SPLIT_SIZE = 1e-7  # degrees; below this a piece is kept whatever its vertex count
# A stored boundary whose WKB is larger (about 60,000 vertices) is rendered as JSON in a child process.
RENDER_IN_CHILD_BYTES = 1_000_000
RENDER_COORDINATES = 4096  # per json.dumps call when rendering GeoJSON (a few ms each; see _geojson_json)
_WGS84_CRS_NAME = re.compile(r"(?:EPSG\b.*\D4326|CRS:?84)$")

# Letters that Unicode decomposition does not reduce to ASCII.
_ASCII_EXTRA = str.maketrans({
    "ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE", "đ": "d", "Đ": "D",
    "ł": "l", "Ł": "L", "þ": "th", "Þ": "Th", "ð": "d", "Ð": "D", "ı": "i", "ħ": "h", "Ħ": "H",
})


@dataclass
class LoadReport:
    """Outcome of a bulk load: how many boundaries were loaded or skipped, and why."""

    loaded: int = 0
    skipped: int = 0
    messages: list[str] = field(default_factory=list)

    def extend(self, other: "LoadReport") -> None:
        self.loaded += other.loaded
        self.skipped += other.skipped
        self.messages.extend(other.messages)


def slugify(text: str) -> str:
    """URL- and path-safe name: ASCII-folded, lower-case, runs of other characters -> `_`.

    Returns "" when nothing ASCII-alphanumeric is left (e.g. a name only in Chinese script).
    """
    folded = unicodedata.normalize("NFKD", str(text).translate(_ASCII_EXTRA))
    ascii_text = folded.encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_text).strip("_")
    return slug[:NAME_MAX_LENGTH].rstrip("_")


def _fold(text: str | None) -> str:
    """Case- and accent-insensitive form of a name, for search (keeps non-Latin letters)."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text.translate(_ASCII_EXTRA))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def _vertex_count(geom: BaseGeometry) -> int:
    if geom.is_empty:
        return 0
    if isinstance(geom, Polygon):
        return len(geom.exterior.coords) + sum(len(ring.coords) for ring in geom.interiors)
    if hasattr(geom, "geoms"):
        return sum(_vertex_count(g) for g in geom.geoms)
    return len(geom.coords)


def _polygons(geom: BaseGeometry) -> list[Polygon]:
    """The non-empty polygons in any geometry (collections are flattened, other types dropped)."""
    if geom.is_empty:
        return []
    if isinstance(geom, Polygon):
        return [geom]
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _polygons(g)]
    return []


def _subdivide(polygon: Polygon, max_vertices: int = PART_MAX_VERTICES) -> list[Polygon]:
    """Split a polygon into quadrant pieces of at most `max_vertices` vertices each."""
    pieces: list[Polygon] = []
    stack = [polygon]
    while stack:
        poly = stack.pop()
        minx, miny, maxx, maxy = poly.bounds
        if (_vertex_count(poly) <= max_vertices
                or (maxx - minx < _MIN_SPLIT_SIZE and maxy - miny < _MIN_SPLIT_SIZE)):
            pieces.append(poly)
            continue
        midx, midy = (minx + maxx) / 2, (miny + maxy) / 2
        for rect in ((minx, miny, midx, midy), (midx, miny, maxx, midy),
                     (minx, midy, midx, maxy), (midx, midy, maxx, maxy)):
            stack.extend(_polygons(clip_by_rect(poly, *rect)))
    return pieces


def _part_wkbs(geom: MultiPolygon, max_vertices: int) -> list[bytes]:
    """WKB of the small polygon pieces used by point search."""
    return [piece.wkb for poly in geom.geoms for piece in _subdivide(poly, max_vertices)]


def _drop_z(geom: BaseGeometry) -> BaseGeometry:
    if not geom.has_z:
        return geom
    return wkb.loads(wkb.dumps(geom, output_dimension=2))


def _as_multipolygon(polygons: list[Polygon]) -> MultiPolygon:
    return MultiPolygon(polygons)


def _normalised(geom: MultiPolygon) -> MultiPolygon:
    """Canonical form (ring starts, part order), exterior rings counter-clockwise as RFC 7946 says."""
    return MultiPolygon([orient(p, 1.0) for p in _polygons(geom.normalize())])


def _clean_geometry(geom: BaseGeometry, what: str = "geometry") -> tuple[MultiPolygon, str | None]:
    """Validate a geometry in EPSG:4326 and return it as a MultiPolygon (+ a note if repaired).

    Raises InvalidBoundary with a message saying what is wrong.
    """
    if geom is None or geom.is_empty:
        raise InvalidBoundary(f"{what} is empty")
    if not isinstance(geom, (Polygon, MultiPolygon)):
        if geom.geom_type != "GeometryCollection" or not _polygons(geom):
            raise InvalidBoundary(
                f"{what} is a {geom.geom_type}; a boundary must be a Polygon or MultiPolygon")
        geom = MultiPolygon(_polygons(geom))
    geom = _drop_z(geom)
    minx, miny, maxx, maxy = geom.bounds
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise InvalidBoundary(f"{what} has non-finite coordinates")
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise InvalidBoundary(
            f"{what} has coordinates outside EPSG:4326 range (bounds {minx:g}, {miny:g}, {maxx:g}, "
            f"{maxy:g}; longitude must be in [-180, 180], latitude in [-90, 90]), is the CRS right?")
    note = None
    if not geom.is_valid:
        reason = _invalidity(geom)
        try:
            repaired = _repaired(geom)
        except Exception:  # GEOS gave up on the topology (its own text names no coordinates)
            repaired = []
        if not repaired:
            raise InvalidBoundary(
                f"{what} is invalid ({reason}) and could not be repaired into polygons: fix it in a"
                " GIS (e.g. QGIS 'Fix geometries') and upload it again")
        geom = _as_multipolygon(repaired)
        note = f"repaired invalid geometry ({reason})"
    polygons = _polygons(geom)
    if not polygons:
        raise InvalidBoundary(f"{what} is empty")
    return _as_multipolygon(polygons), note


_VALIDITY_REASON = re.compile(r"^(?P<reason>[^\[]+)\[(?P<x>\S+) (?P<y>\S+)\]$")


def _invalidity(geom: BaseGeometry) -> str:
    """Why a geometry is invalid, as "self-intersection at (lon, lat)" rather than GEOS's text."""
    text = explain_validity(geom)
    match = _VALIDITY_REASON.match(text)
    if not match:
        return text
    return f"{match['reason'].strip().lower()} at ({float(match['x']):g}, {float(match['y']):g})"


def _repaired(geom: BaseGeometry) -> list[Polygon]:
    """Valid polygons covering what `geom` meant, parts overlapping each other merged.

    Each part is repaired alone and the results are unioned: repairing a MultiPolygon whole makes
    GEOS node every part against every other (200 overlapping triangles: over a minute), and its
    overlaps would come out as holes.
    """
    pieces = geom.geoms if isinstance(geom, MultiPolygon) else [geom]
    repaired = [p for piece in pieces
                for p in _polygons(piece if piece.is_valid else make_valid(piece)) if p.area > 0]
    if len(repaired) > 1 and isinstance(geom, MultiPolygon):
        repaired = _polygons(unary_union(repaired))
    return repaired


def _json_depth(value: Any) -> int:
    """Deepest nesting of lists and objects in a parsed JSON value (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


@dataclass(frozen=True)
class PreparedUpload:
    """An upload checked and repaired: the normalised MultiPolygon as WKB, its point-search pieces,
    and its GeoJSON (geometry and envelope) already rendered, so the server never builds a
    200,000-vertex answer vertex by vertex (that held its event loop for 0.15 s)."""

    wkb: bytes
    parts: list[bytes]
    geometry_json: bytes
    envelope_json: bytes


@dataclass(frozen=True)
class UploadedBoundary:
    """A boundary as stored; `json()` is the API's answer, `as_dict()` the same as a dict."""

    id: int
    name: str
    name_long: str
    admin_level: int
    geometry_json: bytes
    envelope_json: bytes

    def json(self) -> bytes:
        head = json.dumps({"id": self.id, "name": self.name, "name_long": self.name_long,
                           "admin_level": str(self.admin_level)},  # a string in the v1 API (predecessor)
                          ensure_ascii=False, separators=(",", ":"))
        return b"".join((head[:-1].encode(), b',"geometry":', self.geometry_json,
                         b',"envelope":', self.envelope_json, b"}"))

    def as_dict(self) -> dict[str, Any]:
        return json.loads(self.json())


def _boundary_json(boundary_id: int, name: str, name_long: str, admin_level: int, geometry_wkb: bytes) -> bytes:
    """A stored boundary as the API's JSON answer."""
    geom = wkb.loads(geometry_wkb)
    return UploadedBoundary(boundary_id, name, name_long, admin_level, _geojson_json(geom),
                            _geojson_json(box(*geom.bounds))).json()


def _compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _geojson_json(geom: Polygon | MultiPolygon) -> bytes:
    """`_compact_json(_geojson_mapping(geom))`, rendered `RENDER_COORDINATES` at a time: one
    json.dumps call holds the GIL throughout (0.3 s for a 200,000-vertex boundary), and the API's
    event loop needs it every few milliseconds."""
    def ring(coords: Any) -> bytes:
        points = numpy.asarray(coords)  # one copy in C (iterating shapely 1.8's coords holds the GIL too)
        return b"[" + b",".join(_compact_json(points[i:i + RENDER_COORDINATES].tolist())[1:-1]
                                for i in range(0, len(points), RENDER_COORDINATES)) + b"]"

    def polygon(poly: Polygon) -> bytes:
        return b"[" + b",".join(ring(r.coords) for r in (poly.exterior, *poly.interiors)) + b"]"

    if isinstance(geom, Polygon):
        return b'{"type":"Polygon","coordinates":' + polygon(geom) + b"}"
    return b'{"type":"MultiPolygon","coordinates":[' + b",".join(polygon(p) for p in geom.geoms) + b"]}"


def _prepare_upload(payload: bytes, max_vertices: int, max_parts: int, part_max_vertices: int) -> PreparedUpload:
    """Parse, check and repair an uploaded GeoJSON boundary. Cheap structural limits first
    (nesting, vertices, parts), then the geometry work.

    Runs in a child process with a time and memory budget (see `BoundaryStore.add_geojson`).
    """
    try:
        obj = json.loads(payload)
    except RecursionError:
        raise InvalidBoundary(f"JSON nested more than {MAX_JSON_DEPTH} levels deep; GeoJSON needs at most 8") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidBoundary(f"malformed JSON: {exc}") from None
    if _json_depth(obj) > MAX_JSON_DEPTH:
        raise InvalidBoundary(f"JSON nested more than {MAX_JSON_DEPTH} levels deep; GeoJSON needs at most 8")
    geoms = _geometries_from_geojson(obj)
    vertices = sum(_vertex_count(g) for g in geoms)
    if vertices > max_vertices:
        raise PayloadTooLarge(
            f"boundary has {vertices} vertices; at most {max_vertices} are accepted: simplify it first")
    parts = sum(len(_polygons(g)) for g in geoms)
    if parts > max_parts:
        raise PayloadTooLarge(
            f"boundary has {parts} polygon parts; at most {max_parts} are accepted: dissolve or simplify it first")
    try:
        if len(geoms) > 1:
            cleaned = [_clean_geometry(g, f"features[{i}] geometry")[0] for i, g in enumerate(geoms)]
            geom = _as_multipolygon(_polygons(unary_union(cleaned)))
        else:
            geom = _clean_geometry(geoms[0])[0]
        geom = _normalised(geom)
        return PreparedUpload(wkb=geom.wkb, parts=_part_wkbs(geom, part_max_vertices),
                              geometry_json=_geojson_json(geom), envelope_json=_geojson_json(box(*geom.bounds)))
    except InvalidBoundary:
        raise
    except Exception:  # GEOS gave up on the topology; its own text names neither place nor cause
        raise InvalidBoundary(
            "the boundary's geometry could not be processed (its edges cross in a way GEOS cannot"
            " resolve): fix it in a GIS (e.g. QGIS 'Fix geometries') and upload it again") from None


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        suggestion = slugify(name) if isinstance(name, str) else ""
        hint = f" (e.g. {suggestion!r})" if suggestion else ""
        raise InvalidBoundary(
            f"invalid boundary name {name!r}: use 1-128 lower-case ASCII letters, digits, '_' or '-',"
            f" starting with a letter or digit{hint}")


def _unique_name(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    n = 2
    while True:
        suffix = f"_{n}"
        candidate = base[:NAME_MAX_LENGTH - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
        n += 1


def _geojson_mapping(geom: Polygon | MultiPolygon) -> dict[str, Any]:
    """GeoJSON dict with lists (not tuples), so it compares equal after a JSON round trip."""
    def rings(poly: Polygon) -> list[list[list[float]]]:
        return [[list(c) for c in ring.coords] for ring in (poly.exterior, *poly.interiors)]

    if isinstance(geom, Polygon):
        return {"type": "Polygon", "coordinates": rings(geom)}
    return {"type": "MultiPolygon", "coordinates": [rings(p) for p in geom.geoms]}


def _check_crs(obj: dict[str, Any], where: str) -> None:
    crs = obj.get("crs")
    if crs is None:
        return
    name = crs.get("properties", {}).get("name") if isinstance(crs, dict) else None
    if not isinstance(name, str) or not _WGS84_CRS_NAME.search(name.strip().upper()):
        shown = name if isinstance(name, str) else json.dumps(crs)[:200]
        raise InvalidBoundary(
            f"{where} declares crs {shown!r}; only EPSG:4326 (longitude/latitude, WGS 84) is accepted:"
            " reproject the boundary first")


_POLYGON_TYPES = ("Polygon", "MultiPolygon")
_GEOJSON_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "GeometryCollection")


def _shape(geometry: Any, where: str) -> BaseGeometry:
    if geometry is None:
        raise InvalidBoundary(f"{where} has no geometry (empty)")
    if not isinstance(geometry, dict) or "type" not in geometry:
        raise InvalidBoundary(f"{where}: not a GeoJSON geometry object")
    kind = geometry["type"]
    if kind not in _POLYGON_TYPES:
        if kind in _GEOJSON_TYPES:
            raise InvalidBoundary(
                f"{where} is a {kind}; a boundary must be a Polygon or MultiPolygon")
        raise InvalidBoundary(f"{where}: not GeoJSON (unknown geometry type {kind!r})")
    if not geometry.get("coordinates"):
        raise InvalidBoundary(f"{where} is empty")
    try:
        return shape(geometry)
    except Exception as exc:  # shapely raises ValueError, TypeError, IndexError... on bad coordinates
        raise InvalidBoundary(f"{where} has malformed coordinates: {exc}") from None


def _geometries_from_geojson(obj: Any) -> list[BaseGeometry]:
    """Shapely polygons from a GeoJSON geometry, Feature or FeatureCollection."""
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise InvalidBoundary(
            "not GeoJSON: expected an object with a 'type' member (Polygon, MultiPolygon, Feature"
            " or FeatureCollection)")
    _check_crs(obj, "the GeoJSON")
    kind = obj["type"]
    if kind == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise InvalidBoundary("not GeoJSON: a FeatureCollection needs a 'features' list")
        if not features:
            raise InvalidBoundary("the FeatureCollection is empty")
        geoms = []
        for i, feature in enumerate(features):
            if not isinstance(feature, dict) or feature.get("type") != "Feature":
                raise InvalidBoundary(f"not GeoJSON: features[{i}] is not a Feature")
            _check_crs(feature, f"features[{i}]")
            geoms.append(_shape(feature.get("geometry"), f"features[{i}] geometry"))
        return geoms
    if kind == "Feature":
        return [_shape(obj.get("geometry"), "the Feature's geometry")]
    return [_shape(obj, "the geometry")]


# The name index is read from this covering index instead of the table (whose rows hold the geometries).
_SEARCH_INDEX = ("CREATE INDEX IF NOT EXISTS boundaries_search ON boundaries"
                 " (search_name, search_name_long, name, name_long, admin_level, id)")
_FIELD_END, _ROW_END = "\x1f", "\x1e"  # separators in the name index's texts; control characters no name holds


class _NameIndex:
    """Every boundary's names in memory, ordered by name, for list and name search without SQL.

    Name search scanned 4,788 rows with `instr` in 2-4 ms; here each searched column is one long
    string searched with `str.find` (C speed), and a hit's offset gives its row (bisect).
    """

    def __init__(self, rows: list[tuple[int, str, str, int, str, str]]) -> None:
        self.rows = sorted(rows, key=lambda r: r[1])  # id, name, name_long, admin_level, search_name, search_name_long
        self._folded, self._folded_starts = self._joined([f"{r[4]}{_FIELD_END}{r[5]}" for r in self.rows])
        self._names, self._name_starts = self._joined([r[1] for r in self.rows])
        # Type-ahead repeats queries; the cache goes with the index, which any change replaces.
        self._ranked = lru_cache(maxsize=4096)(self._rank_matches)

    @staticmethod
    def _joined(texts: list[str]) -> tuple[str, list[int]]:
        starts, offset = [], 0
        for text in texts:
            starts.append(offset)
            offset += len(text) + 1
        return _ROW_END.join(texts) + _ROW_END, starts

    @staticmethod
    def _rows_containing(text: str, joined: str, starts: list[int]) -> set[int]:
        found: set[int] = set()
        if _FIELD_END in text or _ROW_END in text:  # would match across fields
            return found
        at = joined.find(text)
        while at >= 0:
            row = bisect.bisect_right(starts, at) - 1
            found.add(row)
            at = joined.find(text, starts[row + 1] if row + 1 < len(starts) else len(joined))
        return found

    def summaries(self, rows: Iterable[int] | None = None) -> list[dict[str, Any]]:
        chosen = self.rows if rows is None else (self.rows[i] for i in rows)
        return [{"id": r[0], "name": r[1], "name_long": r[2]} for r in chosen]

    def search(self, query: str, slug: str) -> list[dict[str, Any]]:
        """Rows whose folded names contain `query` or whose name contains `slug`: exact matches
        first, then prefixes, then the rest; ties by admin level, then name."""
        return self.summaries(self._ranked(query, slug))

    def _rank_matches(self, query: str, slug: str) -> tuple[int, ...]:
        hits = (self._rows_containing(query, self._folded, self._folded_starts)
                | self._rows_containing(slug, self._names, self._name_starts))

        def rank(i: int) -> tuple[int, int, str]:
            _, name, _, admin_level, folded, folded_long = self.rows[i]
            if query in (folded, folded_long) or name == slug:
                first = 0
            elif folded.startswith(query) or folded_long.startswith(query) or name.startswith(slug):
                first = 1
            else:
                first = 2
            return first, admin_level, name

        return tuple(sorted(hits, key=rank))


class _ConnectionHolder:
    """One thread's database (a weak-referenceable wrapper around its connection)."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db


class BoundaryStore:
    """Boundaries in a SpatiaLite database; safe to share between threads."""

    def __init__(self, path: Path, *, max_vertices: int = DEFAULT_MAX_VERTICES,
                 max_bytes: int = DEFAULT_MAX_BYTES, part_max_vertices: int = PART_MAX_VERTICES,
                 max_parts: int = DEFAULT_MAX_PARTS, check_seconds: float = DEFAULT_CHECK_SECONDS,
                 check_memory_bytes: int = DEFAULT_CHECK_MEMORY_BYTES) -> None:
        """Open (creating if needed) the database at `path`. The limits apply to `add_geojson`."""
        self.path = Path(path)
        self.max_vertices = max_vertices
        self.max_bytes = max_bytes
        self.part_max_vertices = part_max_vertices
        self.max_parts = max_parts
        self.check_seconds = check_seconds
        self.check_memory_bytes = check_memory_bytes
        self._upload_limiter: anyio.CapacityLimiter | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._holders: weakref.WeakSet[_ConnectionHolder] = weakref.WeakSet()
        # The name index and the database version it was read at; `_watcher` only reads that
        # version: PRAGMA data_version changes when any other connection (thread or process) commits.
        self._names_lock = threading.Lock()
        self._watcher: sqlite3.Connection | None = None
        self._name_index_at: tuple[int, _NameIndex] | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._create_schema()

    # -- connections and schema ----------------------------------------------------------------

    def _db(self) -> sqlite_utils.Database:
        holder = getattr(self._local, "holder", None)
        if holder is None:
            conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA synchronous = NORMAL")
            holder = _ConnectionHolder(sqlite_utils.Database(conn))
            holder.db.init_spatialite()
            # The connection closes when its thread ends (holder collected) or on close().
            weakref.finalize(holder, conn.close)
            self._local.holder = holder
            with self._lock:
                self._holders.add(holder)
        return holder.db

    def _conn(self) -> sqlite3.Connection:
        return self._db().conn

    def close(self) -> None:
        """Close every connection this store opened (in any thread)."""
        with self._lock:
            for holder in list(self._holders):
                holder.db.conn.close()
            self._holders = weakref.WeakSet()
            self._local = threading.local()
        with self._names_lock:
            if self._watcher is not None:
                self._watcher.close()
            self._watcher, self._name_index_at = None, None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _create_schema(self) -> None:
        db = self._db()
        db.conn.execute("PRAGMA journal_mode = WAL")
        if "boundaries" in db.table_names() and "boundary_parts" in db.table_names():
            db.conn.execute(_SEARCH_INDEX)
            return
        with self._transaction() as conn:
            tables = db.table_names()
            if "boundaries" not in tables:
                conn.execute(
                    "CREATE TABLE boundaries (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
                    " name_long TEXT NOT NULL, admin_level INTEGER NOT NULL,"
                    " search_name TEXT NOT NULL, search_name_long TEXT NOT NULL)")
                db["boundaries"].add_geometry_column("geometry", "MULTIPOLYGON", srid=4326, not_null=True)
                db["boundaries"].create_spatial_index("geometry")
            if "boundary_parts" not in tables:
                conn.execute(
                    "CREATE TABLE boundary_parts (id INTEGER PRIMARY KEY,"
                    " boundary_id INTEGER NOT NULL REFERENCES boundaries(id))")
                db["boundary_parts"].add_geometry_column("geometry", "POLYGON", srid=4326, not_null=True)
                db["boundary_parts"].create_spatial_index("geometry")
                conn.execute("CREATE INDEX boundary_parts_boundary_id ON boundary_parts (boundary_id)")
            conn.execute(_SEARCH_INDEX)

    # -- queries --------------------------------------------------------------------------------

    def count(self) -> int:
        """Number of boundaries."""
        return self._conn().execute("SELECT count(*) FROM boundaries").fetchone()[0]

    def _names(self) -> _NameIndex:
        """The name index, read again when the database changed since it was read (about 10 ms
        for 4,788 boundaries); otherwise one PRAGMA, a few microseconds."""
        with self._names_lock:
            if self._watcher is None:
                self._watcher = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
            version = self._watcher.execute("PRAGMA data_version").fetchone()[0]
            if self._name_index_at is None or self._name_index_at[0] != version:
                # Read after the version: a commit in between is seen again at the next call.
                rows = self._conn().execute(
                    "SELECT id, name, name_long, admin_level, search_name, search_name_long"
                    " FROM boundaries INDEXED BY boundaries_search").fetchall()
                self._name_index_at = (version, _NameIndex(rows))
            return self._name_index_at[1]

    def list(self) -> list[dict[str, Any]]:
        """All boundaries as `{id, name, name_long}`, ordered by name."""
        return self._names().summaries()

    def names(self) -> set[str]:
        """Every boundary name."""
        return {r[0] for r in self._conn().execute("SELECT name FROM boundaries")}

    def search_name(self, text: str) -> list[dict[str, Any]]:
        """Boundaries whose name or long name contains `text` (case- and accent-insensitive).

        Exact matches first, then prefix matches, then the rest; ties by admin level, then name.
        """
        query = _fold(text)
        if not query:
            raise InvalidRequest("name to search for must not be empty")
        return self._names().search(query, slugify(text) or query)

    def search_point(self, latitude: float, longitude: float) -> list[dict[str, Any]]:
        """Boundaries containing the point (points on an edge count), by admin level then name."""
        try:
            lat, lon = float(latitude), float(longitude)
        except (TypeError, ValueError):
            raise InvalidRequest(f"latitude and longitude must be numbers, got {latitude!r}, {longitude!r}") from None
        if not -90 <= lat <= 90:
            raise InvalidRequest(f"latitude {latitude!r} is outside [-90, 90]")
        if not -180 <= lon <= 180:
            raise InvalidRequest(f"longitude {longitude!r} is outside [-180, 180]")
        rows = self._conn().execute(
            """
            SELECT b.id, b.name, b.name_long FROM boundaries AS b WHERE b.id IN (
                SELECT p.boundary_id FROM boundary_parts AS p
                WHERE p.id IN (SELECT pkid FROM idx_boundary_parts_geometry
                               WHERE xmin <= :x AND xmax >= :x AND ymin <= :y AND ymax >= :y)
                  AND ST_Intersects(p.geometry, MakePoint(:x, :y, 4326)))
            ORDER BY b.admin_level, b.name
            """, {"x": lon, "y": lat})
        return [{"id": r[0], "name": r[1], "name_long": r[2]} for r in rows]

    def get(self, name: str) -> dict[str, Any]:
        """`{id, name, name_long, admin_level, geometry, envelope}` (GeoJSON dicts); BoundaryNotFound."""
        row = self._row(name)
        geom = wkb.loads(row[4])
        return {
            "id": row[0], "name": row[1], "name_long": row[2], "admin_level": row[3],
            "geometry": _geojson_mapping(geom),
            "envelope": _geojson_mapping(box(*geom.bounds)),
        }

    def get_json(self, name: str) -> bytes:
        """`get` as the API's JSON answer. A large boundary is rendered in a child process: in a
        thread of the server it held the GIL its event loop needs (liveness waited 0.2-0.3 s
        while a 200,000-vertex boundary was rendered)."""
        row = self._row(name)
        if len(row[4]) < RENDER_IN_CHILD_BYTES:
            return _boundary_json(*row)
        try:
            return run_bounded(_boundary_json, *row, seconds=self.check_seconds, memory_bytes=self.check_memory_bytes)
        except BudgetExceeded as exc:
            raise PayloadTooLarge(f"boundary {name} is too large to send as GeoJSON ({exc})") from None

    def _row(self, name: str) -> tuple[int, str, str, int, bytes]:
        row = self._conn().execute(
            "SELECT id, name, name_long, admin_level, AsBinary(geometry) FROM boundaries WHERE name = ?",
            (name,)).fetchone()
        if row is None:
            raise BoundaryNotFound(name)
        return row[0], row[1], row[2], row[3], bytes(row[4])

    def get_geometry(self, name: str) -> MultiPolygon:
        """The boundary's MultiPolygon as a shapely geometry; BoundaryNotFound."""
        row = self._conn().execute(
            "SELECT AsBinary(geometry) FROM boundaries WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise BoundaryNotFound(name)
        return wkb.loads(bytes(row[0]))

    # -- writes ---------------------------------------------------------------------------------

    def _parts(self, geom: MultiPolygon) -> list[bytes]:
        return _part_wkbs(geom, self.part_max_vertices)

    def _write(self, conn: sqlite3.Connection, name: str, name_long: str, admin_level: int,
               geom: MultiPolygon, parts: list[bytes], existing_id: int | None = None) -> int:
        values = (name, name_long, int(admin_level), _fold(name), _fold(name_long), geom.wkb)
        if existing_id is None:
            cursor = conn.execute(
                "INSERT INTO boundaries (name, name_long, admin_level, search_name, search_name_long,"
                " geometry) VALUES (?, ?, ?, ?, ?, GeomFromWKB(?, 4326))", values)
            boundary_id = cursor.lastrowid
        else:
            conn.execute(
                "UPDATE boundaries SET name = ?, name_long = ?, admin_level = ?, search_name = ?,"
                " search_name_long = ?, geometry = GeomFromWKB(?, 4326) WHERE id = ?",
                values + (existing_id,))
            conn.execute("DELETE FROM boundary_parts WHERE boundary_id = ?", (existing_id,))
            boundary_id = existing_id
        conn.executemany(
            "INSERT INTO boundary_parts (boundary_id, geometry) VALUES (?, GeomFromWKB(?, 4326))",
            ((boundary_id, part) for part in parts))
        return boundary_id

    def add(self, *, name: str, name_long: str, admin_level: int,
            geometry: BaseGeometry | dict[str, Any], replace: bool = False) -> dict[str, Any]:
        """Add (or with `replace`, overwrite) a boundary; geometry in EPSG:4326. Returns `get(name)`."""
        _check_name(name)
        if isinstance(geometry, dict):
            geometry = _shape(geometry, "geometry")
        geom, _ = _clean_geometry(geometry)
        self._insert(name, name_long, admin_level, geom, self._parts(geom), replace=replace)
        return self.get(name)

    def _insert(self, name: str, name_long: str, admin_level: int, geom: MultiPolygon, parts: list[bytes],
                *, replace: bool = False) -> int:
        """Write one boundary and its pieces in one transaction; its id. BoundaryExists."""
        with self._transaction() as conn:
            row = conn.execute("SELECT id FROM boundaries WHERE name = ?", (name,)).fetchone()
            if row is not None and not replace:
                raise BoundaryExists(name)
            return self._write(conn, name, name_long or name, admin_level, geom, parts, row[0] if row else None)

    def add_geojson(self, payload: bytes | str | dict[str, Any], *, name: str | None = None,
                    name_long: str | None = None, max_vertices: int | None = None,
                    max_bytes: int | None = None) -> tuple[UploadedBoundary, bool]:
        """Add a custom boundary from GeoJSON (Polygon/MultiPolygon geometry, Feature, or FeatureCollection).

        Returns (the boundary, created). The same polygon uploaded twice (with no name, or the same
        name) returns the existing boundary with created=False. Parsing, validation and repair run
        in a child process within `check_seconds` and `check_memory_bytes`: a boundary too costly
        to check is refused with PayloadTooLarge, and this process stays responsive.
        """
        max_vertices = self.max_vertices if max_vertices is None else max_vertices
        max_bytes = self.max_bytes if max_bytes is None else max_bytes
        if isinstance(payload, (bytes, bytearray, str)):
            payload = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
            if len(payload) > max_bytes:
                raise PayloadTooLarge(
                    f"boundary GeoJSON is {len(payload)} bytes; at most {max_bytes} bytes are accepted")
        else:
            payload = json.dumps(payload).encode()
        if name is not None:
            _check_name(name)
        try:
            prepared = run_bounded(
                _prepare_upload, payload, max_vertices, self.max_parts, self.part_max_vertices,
                seconds=self.check_seconds, memory_bytes=self.check_memory_bytes)
        except BudgetExceeded as exc:
            spent = (f"more than {self.check_seconds:g} s" if exc.kind == "time"
                     else f"more than {self.check_memory_bytes // 2**20} MB of memory")
            raise PayloadTooLarge(
                f"checking this boundary took {spent} (the limit): it is too complex, e.g. many"
                " overlapping or self-crossing parts; dissolve or simplify it (e.g. QGIS 'Fix geometries',"
                " then 'Dissolve') and upload it again") from None
        name = name or "custom_" + hashlib.sha1(prepared.wkb).hexdigest()[:12]
        for _attempt in range(2):
            row = self._conn().execute(
                "SELECT id, name_long, admin_level, AsBinary(geometry) FROM boundaries WHERE name = ?",
                (name,)).fetchone()
            if row is not None:
                # Both sides are normalised: the same polygon has the same WKB.
                if wkb.loads(bytes(row[3])).wkb != prepared.wkb:
                    raise BoundaryExists(name)
                boundary_id, name_long, admin_level, created = row[0], row[1], row[2], False
            else:
                name_long, admin_level, created = name_long or name, CUSTOM_ADMIN_LEVEL, True
                try:
                    boundary_id = self._insert(name, name_long, admin_level, wkb.loads(prepared.wkb), prepared.parts)
                except BoundaryExists:
                    continue  # another request added it in between: compare with that one
            return UploadedBoundary(boundary_id, name, name_long, admin_level,
                                    prepared.geometry_json, prepared.envelope_json), created
        raise BoundaryExists(name)

    async def add_geojson_async(self, payload: bytes | str | dict[str, Any], **options: Any) -> tuple[UploadedBoundary, bool]:
        """`add_geojson` from the event loop: on a worker thread, `UPLOAD_CHECKS_AT_ONCE` at a time.
        Waiting uploads hold no thread, so the threads serving other requests stay free."""
        if self._upload_limiter is None:  # created in the running event loop
            self._upload_limiter = anyio.CapacityLimiter(UPLOAD_CHECKS_AT_ONCE)
        return await anyio.to_thread.run_sync(partial(self.add_geojson, payload, **options),
                                              limiter=self._upload_limiter)

    # -- bulk loading ---------------------------------------------------------------------------

    def load_file(self, path: Path | str, *, layer: str | None = None, name_column: str,
                  long_name_column: str | None = None, admin_level: int = 0,
                  name_prefix_column: str | None = None) -> LoadReport:
        """Load every polygon feature of a GeoJSON/GeoPackage/Shapefile layer (any CRS) as a boundary.

        Names are `slugify(name_column)` (prefixed with `slugify(name_prefix_column) + "_"` if
        given), made unique with `_2`, `_3`...; long names come from `long_name_column` (default:
        the name column).
        """
        columns = [c for c in (name_column, long_name_column, name_prefix_column) if c]

        def label(props: dict[str, Any]) -> tuple[str, str, str] | None:
            text = props.get(name_column)
            if text is None or not str(text).strip():
                return None
            text = str(text).strip()
            long_text = props.get(long_name_column) if long_name_column else None
            long_text = str(long_text).strip() if long_text not in (None, "") else text
            prefix = slugify(props.get(name_prefix_column) or "") if name_prefix_column else ""
            return text, long_text, prefix

        return self._load(Path(path), layer, columns, label, admin_level)

    def seed_natural_earth(self, world_map_gpkg: Path | str) -> LoadReport:
        """Load Natural Earth countries (admin 0) and states/provinces (admin 1) from QGIS's world map.

        Countries are named `slugify(NAME)` (e.g. `kenya`), provinces `<country>_<province>`
        (e.g. `kenya_nairobi`), with long name "Province, Country".
        """
        import fiona

        path = Path(world_map_gpkg)
        with fiona.open(path, layer="countries") as src:
            props = src.schema["properties"]
        long_column = "NAME_LONG" if "NAME_LONG" in props else None
        report = self.load_file(path, layer="countries", name_column="NAME",
                                long_name_column=long_column, admin_level=0)
        # Country slug by ISO code, so provinces share their country's slug.
        country_slugs: dict[str, str] = {}
        with fiona.open(path, layer="countries") as src:
            for feature in src:
                p = feature["properties"]
                slug = slugify(p.get("NAME") or "")
                for code_column in ("ISO_A3", "WB_A3", "ADM0_A3"):
                    code = p.get(code_column)
                    if slug and code and code != "-99":
                        country_slugs.setdefault(code, slug)

        def label(p: dict[str, Any]) -> tuple[str, str, str] | None:
            text = (p.get("name") or "").strip()
            if not text:
                return None
            admin = (p.get("admin") or "").strip()
            prefix = country_slugs.get(p.get("adm0_a3") or "") or slugify(admin)
            return text, f"{text}, {admin}" if admin else text, prefix

        report.extend(self._load(path, "states_provinces", ["name", "admin", "adm0_a3"], label, 1))
        return report

    def _load(self, path: Path, layer: str | None, columns: list[str],
              label: Callable[[dict[str, Any]], tuple[str, str, str] | None],
              admin_level: int) -> LoadReport:
        import fiona
        from fiona.transform import transform_geom

        report = LoadReport()
        if not path.exists():
            raise InvalidBoundary(f"file not found: {path}")
        try:
            layers = fiona.listlayers(path)
        except Exception as exc:
            raise InvalidBoundary(f"cannot read {path}: {exc}") from None
        if layer is not None and layer not in layers:
            raise InvalidBoundary(
                f"layer {layer!r} not found in {path.name}; available layers: {', '.join(layers)}")
        layer_name = layer or layers[0]
        taken = self.names()
        rows: list[tuple[str, str, MultiPolygon, list[bytes]]] = []
        with fiona.open(path, layer=layer_name) as src:
            available = list(src.schema["properties"])
            missing = [c for c in columns if c not in available]
            if missing:
                raise InvalidBoundary(
                    f"column {missing[0]!r} not found in layer {layer_name!r} of {path.name};"
                    f" available columns: {', '.join(available)}")
            crs_wkt = src.crs_wkt
            if not crs_wkt:
                report.messages.append(f"{path.name}: no CRS declared, assuming EPSG:4326")
            is_wgs84 = not crs_wkt or (src.crs and src.crs.to_epsg() == 4326)
            for index, feature in enumerate(src):
                where = f"feature {index}"
                names = label(dict(feature["properties"]))
                if names is None:
                    report.skipped += 1
                    report.messages.append(f"{where}: empty name, skipped")
                    continue
                text, long_text, prefix = names
                where = f"feature {index} ({text})"
                geometry = feature["geometry"]
                if geometry is None:
                    report.skipped += 1
                    report.messages.append(f"{where}: no geometry, skipped")
                    continue
                try:
                    if not is_wgs84:
                        geometry = transform_geom(src.crs_wkt, "EPSG:4326", geometry)
                    geom, note = _clean_geometry(shape(geometry))
                except InvalidBoundary as exc:
                    report.skipped += 1
                    report.messages.append(f"{where}: {exc.detail}, skipped")
                    continue
                except Exception as exc:  # unreadable coordinates, failed reprojection
                    report.skipped += 1
                    report.messages.append(f"{where}: unusable geometry ({exc}), skipped")
                    continue
                base = slugify(text)
                if not base:
                    base = "boundary_" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]
                    report.messages.append(f"{where}: no ASCII letters in name, named {base!r}")
                if prefix:
                    base = f"{prefix}_{base}"[:NAME_MAX_LENGTH].rstrip("_")
                slug = _unique_name(base, taken)
                taken.add(slug)
                if note:
                    report.messages.append(f"{where}: {note}")
                rows.append((slug, long_text, geom, self._parts(geom)))
        with self._transaction() as conn:
            for slug, long_text, geom, parts in rows:
                self._write(conn, slug, long_text, admin_level, geom, parts)
        report.loaded += len(rows)
        return report


def open_store(settings: "Settings") -> BoundaryStore:
    """The boundary store configured by `settings` (not seeded: see `seed_natural_earth`)."""
    return BoundaryStore(settings.boundaries_db, max_vertices=settings.max_upload_vertices,
                         max_bytes=settings.max_upload_bytes, max_parts=settings.max_upload_parts,
                         check_seconds=settings.upload_check_seconds,
                         check_memory_bytes=settings.upload_check_memory_mb * 2**20)
