"""clip_vector_to_gpkg sorts candidates in bulk (processors.vector._BoundaryGrid) and copies the
features that lie inside with one GDAL call when the source is a GeoPackage: these tests check
that the output is the one the per-feature path (every candidate tested and written one by one,
as before the bulk paths) writes, on real GeoPackages and shapefiles around Kenya's real
boundary (QGIS's world_map.gpkg)."""
from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import threading

import numpy as np
import fiona
import pytest
from osgeo import gdal, ogr
from shapely.geometry import LineString, MultiLineString, Point, box, mapping, shape
from shapely.prepared import prep

import processors.vector as vector
from processors.builtin.natural_earth_admin1 import DEFAULT_WORLD_MAP_GPKG
from processors.errors import Cancelled
from processors.vector import clip_vector_to_gpkg

pytestmark = pytest.mark.skipif(not DEFAULT_WORLD_MAP_GPKG.is_file(), reason="QGIS world_map.gpkg not installed")

PROPERTIES = {"name": "str", "value": "int"}


def country(name: str):
    with fiona.open(DEFAULT_WORLD_MAP_GPKG, layer="countries") as src:
        return next(shape(f.geometry) for f in src if f.properties["NAME"] == name)


@pytest.fixture(scope="module")
def kenya():
    return country("Kenya")


def random_lines(boundary, count: int, seed: int) -> list[LineString]:
    """4-vertex lines of ~0.05 degree steps over the boundary's box and a margin around it."""
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = boundary.bounds
    starts = rng.uniform([minx - 1, miny - 1], [maxx + 1, maxy + 1], size=(count, 2))
    walks = starts[:, None, :] + np.cumsum(rng.normal(0, 0.05, size=(count, 4, 2)), axis=1)
    return [LineString(walk) for walk in walks]


def write_lines(path, lines, *, driver="GPKG", geometry_type="LineString", **options):
    schema = {"geometry": geometry_type, "properties": PROPERTIES}
    wrap = MultiLineString if geometry_type == "MultiLineString" else (lambda line: line)
    with fiona.open(path, "w", driver=driver, schema=schema, crs="EPSG:4326", layer="data", **options) as dst:
        dst.writerecords({"geometry": mapping(wrap([line]) if geometry_type == "MultiLineString" else line),
                          "properties": {"name": f"line{i}", "value": i}} for i, line in enumerate(lines))
    return path


def rows(path) -> dict:
    """{attributes: [(geometry type, coordinates per part) of each row]} of an output GeoPackage
    (explode writes several rows per source feature, in the order of its parts)."""
    out = {}
    with fiona.open(path) as src:
        for feature in src:
            geom = shape(feature.geometry)
            parts = [np.array(ring.coords) for part in getattr(geom, "geoms", [geom])
                     for ring in ([part.exterior, *part.interiors] if part.geom_type == "Polygon" else [part])]
            out.setdefault(tuple(feature.properties.items()), []).append((geom.geom_type, parts))
    return out


def assert_same_output(ours, reference) -> None:
    """Same features, attributes, types and vertices; intersection points may differ by a few
    ulps (the clip piece of a cell depends on which features were tested before)."""
    a, b = rows(ours), rows(reference)
    assert a.keys() == b.keys()
    for k in a:
        assert len(a[k]) == len(b[k]), k
        for (type_a, coords_a), (type_b, coords_b) in zip(a[k], b[k]):
            assert (type_a, len(coords_a)) == (type_b, len(coords_b)), k
            for part_a, part_b in zip(coords_a, coords_b):
                assert part_a.shape == part_b.shape and np.allclose(part_a, part_b, rtol=0, atol=1e-12), k


@pytest.fixture
def per_feature_path(monkeypatch):
    """Every candidate left undecided by the grid: each is tested and written one by one."""

    def undecided(self, envelopes, **_):
        return np.zeros(len(envelopes), bool), np.ones(len(envelopes), bool)

    return lambda: monkeypatch.setattr(vector._BoundaryGrid, "split", undecided)


@pytest.fixture
def copies(monkeypatch):
    """The fid counts given to the copy of the features inside by GDAL (one entry per layer)."""
    calls = []
    original = vector._copy_features

    def spy(src_ds, lyr, fids, *args):
        calls.append(len(fids))
        return original(src_ds, lyr, fids, *args)

    monkeypatch.setattr(vector, "_copy_features", spy)
    return calls


SOURCES = {
    # kind: (fiona driver, file name, layer creation options, copied by GDAL, not one by one)
    "gpkg with R*Tree": ("GPKG", "lines.gpkg", {}, True),
    "gpkg without index": ("GPKG", "lines.gpkg", {"SPATIAL_INDEX": "NO"}, True),
    "shapefile": ("ESRI Shapefile", "lines.shp", {}, False),
}


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("options", [{}, {"keep_whole": True}, {"explode": True, "properties_schema": {"name": "str"}}],
                         ids=["clip", "keep_whole", "explode+schema"])
def test_lines_are_written_as_the_per_feature_path_writes_them(tmp_path, kenya, kind, options, copies,
                                                               per_feature_path):
    driver, filename, creation, copied = SOURCES[kind]
    source = write_lines(tmp_path / filename, random_lines(kenya, 3000, seed=1), driver=driver, **creation)
    layer = "data" if driver == "GPKG" else None
    ours = clip_vector_to_gpkg(source, layer=layer, boundary=kenya, destination=tmp_path / "ours.gpkg", **options)
    assert len(copies) == copied and ours.kept_whole >= sum(copies) > (500 if copied else -1)
    assert ours.candidates > ours.feature_count >= ours.kept_whole > 500
    per_feature_path()
    reference = clip_vector_to_gpkg(source, layer=layer, boundary=kenya, destination=tmp_path / "ref.gpkg",
                                    **options)
    assert (ours.feature_count, ours.kept_whole, ours.clipped) == (
        reference.feature_count, reference.kept_whole, reference.clipped)
    assert ours.bounds == reference.bounds and ours.geometry_type == reference.geometry_type
    assert_same_output(ours.path, reference.path)


def test_multi_part_features_to_explode_are_written_one_by_one(tmp_path, kenya, copies, per_feature_path):
    """Each part is checked for slivers, so inside MultiLineStrings are not copied by GDAL."""
    source = write_lines(tmp_path / "multi.gpkg", random_lines(kenya, 1000, seed=2), geometry_type="MultiLineString")
    ours = clip_vector_to_gpkg(source, layer="data", boundary=kenya, destination=tmp_path / "ours.gpkg", explode=True)
    assert copies == [] and ours.geometry_type == "LineString"
    per_feature_path()
    reference = clip_vector_to_gpkg(source, layer="data", boundary=kenya, destination=tmp_path / "ref.gpkg",
                                    explode=True)
    assert_same_output(ours.path, reference.path)


def test_real_admin1_polygons_are_written_as_the_per_feature_path_writes_them(tmp_path, kenya, copies,
                                                                              per_feature_path):
    kenya_and_a_margin = kenya.buffer(0.5)  # Kenya's provinces whole, its neighbours' clipped
    ours = clip_vector_to_gpkg(DEFAULT_WORLD_MAP_GPKG, layer="states_provinces", boundary=kenya_and_a_margin,
                               destination=tmp_path / "ours.gpkg")
    assert len(copies) == 1 and ours.kept_whole >= copies[0] > 0 and ours.clipped > 0
    per_feature_path()
    reference = clip_vector_to_gpkg(DEFAULT_WORLD_MAP_GPKG, layer="states_provinces", boundary=kenya_and_a_margin,
                                    destination=tmp_path / "ref.gpkg")
    assert (ours.feature_count, ours.kept_whole, ours.clipped, ours.bounds) == (
        reference.feature_count, reference.kept_whole, reference.clipped, reference.bounds)
    assert_same_output(ours.path, reference.path)


def test_a_source_without_random_reads_is_read_once_not_once_per_feature(tmp_path, kenya, monkeypatch):
    gpkg = write_lines(tmp_path / "lines.gpkg", random_lines(kenya, 3000, seed=5))
    gml = tmp_path / "lines.gml"
    gdal.VectorTranslate(str(gml), str(gpkg), format="GML")
    with monkeypatch.context() as patched:  # GML's GetFeature reads the file again on each call
        patched.setattr(ogr.Layer, "GetFeature", lambda *_: pytest.fail("GetFeature on a GML layer"))
        ours = clip_vector_to_gpkg(gml, layer="data", boundary=kenya, destination=tmp_path / "ours.gpkg",
                                   properties_schema=PROPERTIES)  # without GML's gml_id
    from_gpkg = clip_vector_to_gpkg(gpkg, layer="data", boundary=kenya, destination=tmp_path / "gpkg.gpkg")
    assert ours.kept_whole > 500 and ours.clipped > 0
    assert (ours.feature_count, ours.kept_whole, ours.clipped) == (
        from_gpkg.feature_count, from_gpkg.kept_whole, from_gpkg.clipped)
    assert_same_output(ours.path, from_gpkg.path)


@pytest.mark.parametrize("name", ["Kenya", "Indonesia", "Brazil"])
def test_the_grid_calls_inside_or_outside_only_what_is(name):
    """Envelopes of every size, many on the grid's cell edges, against the exact predicates."""
    boundary = country(name)
    grid = vector._BoundaryGrid(boundary, 1024)
    rng = np.random.default_rng(3)
    minx, miny, maxx, maxy = boundary.bounds
    x = rng.uniform(minx - 0.5, maxx + 0.5, 4000)
    y = rng.uniform(miny - 0.5, maxy + 0.5, 4000)
    on_edges = rng.random(4000) < 0.5  # snapped to cell edges, where rounding could bite
    x[on_edges] = grid.x0 + np.round((x[on_edges] - grid.x0) / grid.dx) * grid.dx
    y[on_edges] = grid.y1 - np.round((grid.y1 - y[on_edges]) / grid.dy) * grid.dy
    size = rng.choice([0.0, grid.dx, 0.05, 1.0], 4000)
    envelopes = np.column_stack([x, x + size, y, y + size])
    inside, undecided = grid.split(envelopes, whole_rows_need_extent=False)
    outside = ~inside & ~undecided
    assert inside.sum() > 500 and outside.sum() > 500
    exact = prep(boundary)
    for env in envelopes[inside]:
        assert exact.covers(envelope_shape(env))
    for env in envelopes[outside]:
        assert not exact.intersects(envelope_shape(env))


def envelope_shape(envelope):
    minx, maxx, miny, maxy = envelope
    return Point(minx, miny) if minx == maxx else box(minx, miny, maxx, maxy)


def test_cancelling_during_the_copy_of_the_features_inside_stops_it_and_leaves_nothing(tmp_path, kenya, monkeypatch):
    """The copy runs in a thread of its own (vector._BackgroundCopy); cancellation comes from the
    calling thread between two of its GDAL calls, stops it there, and waits for it to end."""
    inner = kenya.buffer(-0.5)
    lines = [line for line in random_lines(kenya, 8000, seed=4) if inner.contains(line)]
    source = write_lines(tmp_path / "inside.gpkg", lines)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    monkeypatch.setattr(vector, "COPY_CHUNK", 128)  # a check after every GDAL call
    told_to_stop = threading.Event()
    stop = vector._BackgroundCopy.stop
    monkeypatch.setattr(vector._BackgroundCopy, "stop", lambda self: (stop(self), told_to_stop.set()))
    translate_calls = []
    translate = vector.gdal.VectorTranslate

    def counted_translate(*args, **kwargs):
        translate_calls.append(1)
        if len(translate_calls) > 3:  # the 4th call goes on once the copy has been told to stop
            assert told_to_stop.wait(timeout=60)
        return translate(*args, **kwargs)

    monkeypatch.setattr(vector.gdal, "VectorTranslate", counted_translate)

    def check_cancelled():
        if len(translate_calls) >= 3:
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        clip_vector_to_gpkg(source, layer="data", boundary=kenya, destination=out_dir / "x.gpkg",
                            check_cancelled=check_cancelled)
    # stopped in the copy, not after it: after the call in progress when it was told to stop (3rd or 4th)
    assert 3 <= len(translate_calls) <= 4 < len(lines) / 128 - 6
    assert "vector-copy" not in {thread.name for thread in threading.enumerate()}
    assert list(out_dir.iterdir()) == []

def rtree_rows(path) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT id, minx, maxx, miny, maxy FROM rtree_data_geom ORDER BY id").fetchall()


def rtree_triggers(path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'rtree%'"))


def test_the_packed_spatial_index_is_the_one_gdal_builds_and_stays_usable(tmp_path, kenya):
    """The R*Tree is written in one pass at the end (vector._PackedRtree): SQLite finds it
    consistent, it stores the boxes GDAL's own CreateSpatialIndex stores for the same file, with
    the same triggers, bounding-box queries through it find exactly the features that meet the
    box, and it is maintained when the file is edited afterwards."""
    source = write_lines(tmp_path / "lines.gpkg", random_lines(kenya, 8000, seed=6))
    result = clip_vector_to_gpkg(source, layer="data", boundary=kenya, destination=tmp_path / "out.gpkg")
    assert result.feature_count > 52 * 51  # more than two levels of nodes of at most 51 cells
    with contextlib.closing(sqlite3.connect(result.path)) as db:
        assert db.execute("SELECT rtreecheck('rtree_data_geom')").fetchone() == ("ok",)
        (root,), = db.execute("SELECT data FROM rtree_data_geom_node WHERE nodeno = 1")
        assert int.from_bytes(root[:2], "big") == 2  # the depth of the tree
    gdal_built = tmp_path / "gdal-built.gpkg"
    shutil.copy(result.path, gdal_built)
    ds = gdal.OpenEx(str(gdal_built), gdal.OF_VECTOR | gdal.OF_UPDATE)
    for sql in ("SELECT DisableSpatialIndex('data', 'geom')", "SELECT CreateSpatialIndex('data', 'geom')"):
        ds.ReleaseResultSet(ds.ExecuteSQL(sql))
    ds = None
    ours = rtree_rows(result.path)
    assert len(ours) == result.feature_count and ours == rtree_rows(gdal_built)
    assert rtree_triggers(result.path) == rtree_triggers(gdal_built) and len(rtree_triggers(result.path)) == 6

    ds = gdal.OpenEx(str(result.path), gdal.OF_VECTOR | gdal.OF_UPDATE)
    lyr = ds.GetLayer(0)
    geoms = {f.GetFID(): shape(json.loads(f.GetGeometryRef().ExportToJson())) for f in lyr}
    rng = np.random.default_rng(7)
    minx, miny, maxx, maxy = result.bounds
    for x, y, size in zip(rng.uniform(minx, maxx, 20), rng.uniform(miny, maxy, 20), rng.uniform(0.01, 2, 20)):
        window = box(x, y, x + size, y + size)
        lyr.SetSpatialFilterRect(*window.bounds)
        found = {f.GetFID() for f in lyr}
        assert found == {fid for fid, geom in geoms.items() if window.intersects(geom)}
    lyr.SetSpatialFilter(None)
    ds.StartTransaction()
    for fid in list(geoms)[::3]:
        assert lyr.DeleteFeature(fid) == 0
    added = ogr.Feature(lyr.GetLayerDefn())
    added.SetGeometry(ogr.CreateGeometryFromWkt("MULTILINESTRING ((100 50, 101 51))"))
    assert lyr.CreateFeature(added) == 0
    ds.CommitTransaction()
    ds = None
    with contextlib.closing(sqlite3.connect(result.path)) as db:
        assert db.execute("SELECT rtreecheck('rtree_data_geom')").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM data").fetchone() == db.execute(
            "SELECT count(*) FROM rtree_data_geom").fetchone()
        assert db.execute("SELECT id FROM rtree_data_geom WHERE minx >= 100").fetchall() == [(added.GetFID(),)]
