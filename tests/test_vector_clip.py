"""processors.vector.clip_vector_to_gpkg on small synthetic GeoPackages written with fiona.

The boundary is two 10x10 degree squares, A (0..10) and B (20..30), so that features lying between
them pass the bounding-box filter but must be dropped by the polygon test.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import fiona
import pytest
from fiona.transform import transform_geom
from osgeo import ogr
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box, mapping, shape

from processors.errors import Cancelled, SourceUnavailable
from processors.vector import VectorClipResult, clip_vector_to_gpkg, output_geometry_type

PROPERTIES = {"name": "str", "value": "int", "ratio": "float"}

BOUNDARY = MultiPolygon([box(0, 0, 10, 10), box(20, 0, 30, 10)])

LINES = {
    "inside": LineString([(1, 1), (5, 5), (2, 8)]),
    "crossing": LineString([(-5, 5), (15, 5)]),  # -> (0,5)-(10,5)
    "in_and_out": LineString([(2, 5), (2, 15), (8, 15), (8, 5)]),  # -> two pieces
    "both_squares": LineString([(5, 2), (25, 2)]),  # -> (5..10) and (20..25)
    "between": LineString([(12, 2), (18, 8)]),  # in the bbox, outside the polygon
    "outside": LineString([(40, 40), (50, 50)]),
    "touching": LineString([(10, 12), (12, 10), (10, 10)]),  # ends on the corner of A
    "on_edge": LineString([(0, 2), (0, 6)]),  # lies on A's boundary: covered
}
LINES_KEPT = {"inside", "crossing", "in_and_out", "both_squares", "on_edge"}

POLYGONS = {
    "inside": box(1, 1, 3, 3),
    "crossing": box(8, 8, 12, 12),  # -> box(8, 8, 10, 10)
    "both_squares": box(5, 4, 25, 6),  # -> two parts
    "between": box(12, 2, 18, 8),
    "outside": box(40, 40, 50, 50),
    "shares_edge": box(10, 3, 12, 5),  # touches A along x=10 only
    "equal": box(20, 0, 30, 10),  # equal to square B: covered
    # crosses x=10 between y=2..4 and touches it between y=6..8: intersection is Polygon + LineString
    "cross_and_touch": Polygon([(9, 2), (12, 2), (12, 8), (10, 8), (10, 6), (11, 6), (11, 4), (9, 4)]),
}
POLYGONS_KEPT = {"inside", "crossing", "both_squares", "equal", "cross_and_touch"}


def write_source(path: Path, geometry_type: str, features: dict, crs: str = "EPSG:4326", layer="data"):
    schema = {"geometry": geometry_type, "properties": PROPERTIES}
    with fiona.open(path, "w", driver="GPKG", schema=schema, crs=crs, layer=layer) as dst:
        for i, (name, geom) in enumerate(features.items()):
            dst.write({"geometry": mapping(geom), "properties": {"name": name, "value": i, "ratio": i / 3}})
    return path


def read(path: Path, layer=None):
    with fiona.open(path, layer=layer) as src:
        return {f.properties["name"]: f for f in src}


def write_geojson(path: Path, geom) -> Path:
    feature = {"type": "Feature", "properties": {}, "geometry": mapping(geom)}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def ogr2ogr_clip(tmp_path: Path, source: Path, boundary) -> Path:
    """The independent reference: GDAL's own `ogr2ogr -clipsrc`."""
    ref = tmp_path / "ref.gpkg"
    clip = write_geojson(tmp_path / "boundary.geojson", boundary)
    subprocess.run(["ogr2ogr", "-f", "GPKG", str(ref), str(source), "-clipsrc", str(clip)], check=True,
                   capture_output=True)
    return ref


def total(path: Path, measure: str, layer=None) -> tuple[int, float]:
    with fiona.open(path, layer=layer) as src:
        geoms = [shape(f.geometry) for f in src]
    return len(geoms), sum(getattr(g, measure) for g in geoms)


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master")}


@pytest.fixture
def lines_src(tmp_path):
    return write_source(tmp_path / "lines.gpkg", "LineString", LINES)


@pytest.fixture
def polygons_src(tmp_path):
    return write_source(tmp_path / "polygons.gpkg", "Polygon", POLYGONS)


def test_lines_keep_features_that_cross_or_lie_inside_the_polygon(lines_src, tmp_path):
    result = clip_vector_to_gpkg(lines_src, layer="data", boundary=BOUNDARY, destination=tmp_path / "out.gpkg")
    assert isinstance(result, VectorClipResult)
    assert set(read(result.path)) == LINES_KEPT
    assert result.feature_count == len(LINES_KEPT)
    assert (result.kept_whole, result.clipped) == (2, 3)
    assert result.candidates < len(LINES)  # the bbox filter left "outside" out
    assert result.geometry_type == "MultiLineString"


def test_features_inside_are_written_with_identical_coordinates(lines_src, polygons_src, tmp_path):
    lines = read(clip_vector_to_gpkg(lines_src, layer="data", boundary=BOUNDARY,
                                     destination=tmp_path / "l.gpkg").path)
    assert lines["inside"].geometry.type == "MultiLineString"
    assert lines["inside"].geometry.coordinates == [list(LINES["inside"].coords)]
    polygons = read(clip_vector_to_gpkg(polygons_src, layer="data", boundary=BOUNDARY,
                                        destination=tmp_path / "p.gpkg").path)
    source = read(polygons_src)
    assert polygons["inside"].geometry.coordinates == [source["inside"].geometry.coordinates]


def test_crossing_features_are_clipped_to_the_polygon(lines_src, polygons_src, tmp_path):
    lines = read(clip_vector_to_gpkg(lines_src, layer="data", boundary=BOUNDARY,
                                     destination=tmp_path / "l.gpkg").path)
    crossing = shape(lines["crossing"].geometry)
    assert crossing.length == pytest.approx(10) and crossing.bounds == (0, 5, 10, 5)
    in_and_out = shape(lines["in_and_out"].geometry)
    assert len(in_and_out.geoms) == 2 and in_and_out.length == pytest.approx(10)
    assert shape(lines["both_squares"].geometry).length == pytest.approx(10)

    polygons = read(clip_vector_to_gpkg(polygons_src, layer="data", boundary=BOUNDARY,
                                        destination=tmp_path / "p.gpkg").path)
    assert shape(polygons["crossing"].geometry).equals(box(8, 8, 10, 10))
    both = shape(polygons["both_squares"].geometry)
    assert both.geom_type == "MultiPolygon" and len(both.geoms) == 2
    assert both.equals(MultiPolygon([box(5, 4, 10, 6), box(20, 4, 25, 6)]))
    for feature in polygons.values():
        assert BOUNDARY.buffer(1e-9).contains(shape(feature.geometry))


def test_geometry_collections_are_reduced_to_the_layer_dimension(polygons_src, tmp_path):
    assert POLYGONS["cross_and_touch"].intersection(box(0, 0, 10, 10)).geom_type == "GeometryCollection"
    polygons = read(clip_vector_to_gpkg(polygons_src, layer="data", boundary=BOUNDARY,
                                        destination=tmp_path / "p.gpkg").path)
    clipped = shape(polygons["cross_and_touch"].geometry)
    assert clipped.geom_type == "MultiPolygon" and clipped.equals(MultiPolygon([box(9, 2, 10, 4)]))


def test_point_layers_stay_points_and_keep_points_on_the_boundary(tmp_path):
    points = {"inside": Point(5, 5), "on_edge": Point(10, 5), "between": Point(15, 5), "outside": Point(50, 50)}
    src = write_source(tmp_path / "points.gpkg", "Point", points)
    for keep_whole in (False, True):
        result = clip_vector_to_gpkg(src, layer="data", boundary=BOUNDARY, keep_whole=keep_whole,
                                     destination=tmp_path / f"out{keep_whole}.gpkg")
        assert result.geometry_type == "Point"
        out = read(result.path)
        assert set(out) == {"inside", "on_edge"}
        assert out["inside"].geometry.type == "Point" and out["inside"].geometry.coordinates == (5.0, 5.0)


def test_polygons_outside_or_only_sharing_an_edge_are_dropped(polygons_src, tmp_path):
    result = clip_vector_to_gpkg(polygons_src, layer="data", boundary=BOUNDARY, destination=tmp_path / "p.gpkg")
    assert set(read(result.path)) == POLYGONS_KEPT
    assert result.geometry_type == "MultiPolygon"
    with fiona.open(result.path) as out:
        assert out.schema["geometry"] == "MultiPolygon"
        assert {f.geometry.type for f in out} == {"MultiPolygon"}


def test_attribute_schema_values_and_crs_are_preserved(polygons_src, tmp_path):
    result = clip_vector_to_gpkg(polygons_src, layer="data", boundary=BOUNDARY, destination=tmp_path / "p.gpkg")
    with fiona.open(polygons_src) as src, fiona.open(result.path) as out:
        assert out.schema["properties"] == src.schema["properties"]
        assert out.crs.to_epsg() == 4326 and result.crs == "EPSG:4326"
        assert out.name == "data" == result.layer
    out_features, src_features = read(result.path), read(polygons_src)
    for name, feature in out_features.items():
        assert dict(feature.properties) == dict(src_features[name].properties)


def test_output_layer_name_can_be_chosen(polygons_src, tmp_path):
    result = clip_vector_to_gpkg(polygons_src, layer="data", boundary=BOUNDARY,
                                 destination=tmp_path / "p.gpkg", output_layer="clipped")
    assert fiona.listlayers(result.path) == ["clipped"]


def test_output_has_a_spatial_index(polygons_src, tmp_path):
    result = clip_vector_to_gpkg(polygons_src, layer="data", boundary=BOUNDARY, destination=tmp_path / "p.gpkg")
    assert "rtree_data_geom" in tables(result.path)
    with sqlite3.connect(result.path) as db:  # one node, the root, holds the box of every feature
        assert db.execute("SELECT rtreecheck('rtree_data_geom')").fetchone() == ("ok",)
        assert db.execute("SELECT id FROM rtree_data_geom ORDER BY id").fetchall() == db.execute(
            "SELECT fid FROM data ORDER BY fid").fetchall()
        assert len(db.execute("SELECT * FROM rtree_data_geom_node").fetchall()) == 1
    if shutil.which("ogrinfo"):
        info = subprocess.run(["ogrinfo", "-ro", "-sql", "SELECT HasSpatialIndex('data', 'geom')",
                               str(result.path)], capture_output=True, text=True, check=True).stdout
        assert "= 1" in info


def test_no_matching_feature_still_writes_an_empty_layer_with_the_schema(polygons_src, tmp_path):
    far_away = box(-100, -60, -90, -50)
    result = clip_vector_to_gpkg(polygons_src, layer="data", boundary=far_away, destination=tmp_path / "e.gpkg")
    assert result.feature_count == 0 and result.bounds is None
    with sqlite3.connect(result.path) as db:  # an empty spatial index, maintained by GDAL's triggers
        assert db.execute("SELECT rtreecheck('rtree_data_geom')").fetchone() == ("ok",)
        assert ("rtree_data_geom_insert",) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    with fiona.open(result.path, layer="data") as out:
        assert len(out) == 0
        assert out.schema == {"geometry": "MultiPolygon", "properties": read_schema(polygons_src)}
        assert out.crs.to_epsg() == 4326


def read_schema(path):
    with fiona.open(path) as src:
        return src.schema["properties"]


def test_keep_whole_writes_intersecting_features_unclipped(polygons_src, lines_src, tmp_path):
    result = clip_vector_to_gpkg(polygons_src, layer="data", boundary=BOUNDARY,
                                 destination=tmp_path / "p.gpkg", keep_whole=True)
    out, src = read(result.path), read(polygons_src)
    assert set(out) == POLYGONS_KEPT  # the edge-sharing neighbour is still left out
    assert result.clipped == 0 and result.kept_whole == len(POLYGONS_KEPT)
    for name, feature in out.items():
        assert feature.geometry.coordinates == [src[name].geometry.coordinates]
    lines = read(clip_vector_to_gpkg(lines_src, layer="data", boundary=BOUNDARY,
                                     destination=tmp_path / "l.gpkg", keep_whole=True).path)
    assert set(lines) == LINES_KEPT
    assert lines["crossing"].geometry.coordinates == [list(LINES["crossing"].coords)]


def test_boundary_is_reprojected_into_a_projected_source_crs(tmp_path):
    projected = {name: shape(transform_geom("EPSG:4326", "EPSG:3857", mapping(g))) for name, g in POLYGONS.items()}
    src = write_source(tmp_path / "mercator.gpkg", "Polygon", projected, crs="EPSG:3857")
    result = clip_vector_to_gpkg(src, layer="data", boundary=BOUNDARY, destination=tmp_path / "m.gpkg")
    assert result.crs == "EPSG:3857"
    out = read(result.path)
    assert set(out) == POLYGONS_KEPT
    with fiona.open(result.path) as dst:
        assert dst.crs.to_epsg() == 3857
    # Web Mercator keeps lon/lat-aligned boxes aligned: the clipped square is square B's corner.
    expected = shape(transform_geom("EPSG:4326", "EPSG:3857", mapping(box(8, 8, 10, 10))))
    clipped = shape(out["crossing"].geometry)
    assert clipped.symmetric_difference(expected).area / expected.area < 1e-9
    assert out["inside"].geometry.coordinates == [read(src)["inside"].geometry.coordinates]


def test_check_cancelled_stops_and_leaves_no_destination_file(tmp_path):
    many = {f"line{i}": LineString([(i % 10, 0.5), (i % 10 + 5, 9.5)]) for i in range(2000)}
    src = write_source(tmp_path / "many.gpkg", "LineString", many)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    calls = []

    def check_cancelled():
        calls.append(1)
        if len(calls) > 10:  # past the counting pass, in the middle of writing
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        clip_vector_to_gpkg(src, layer="data", boundary=BOUNDARY, destination=out_dir / "x.gpkg",
                            check_cancelled=check_cancelled)
    assert list(out_dir.iterdir()) == []  # neither the destination nor a temporary file


def test_progress_is_reported_from_0_to_100_increasing(lines_src, tmp_path):
    seen = []
    clip_vector_to_gpkg(lines_src, layer="data", boundary=BOUNDARY, destination=tmp_path / "l.gpkg",
                        progress=lambda percent, step: seen.append((percent, step)))
    percents = [p for p, _ in seen]
    assert percents[0] == 0 and percents[-1] == 100
    assert percents == sorted(percents)
    assert all(isinstance(step, str) and step for _, step in seen)


def test_existing_destination_is_replaced(polygons_src, tmp_path):
    dest = tmp_path / "p.gpkg"
    clip_vector_to_gpkg(polygons_src, layer="data", boundary=box(40, 40, 50, 50), destination=dest)
    result = clip_vector_to_gpkg(polygons_src, layer="data", boundary=BOUNDARY, destination=dest)
    assert set(read(dest)) == POLYGONS_KEPT and result.feature_count == len(POLYGONS_KEPT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.gpkg", "polygons.gpkg"]


def test_missing_source_or_layer_is_source_unavailable(polygons_src, tmp_path):
    missing = tmp_path / "nope.gpkg"
    with pytest.raises(SourceUnavailable, match="nope.gpkg"):
        clip_vector_to_gpkg(missing, layer=None, boundary=BOUNDARY, destination=tmp_path / "o.gpkg")
    with pytest.raises(SourceUnavailable, match="no_such_layer"):
        clip_vector_to_gpkg(polygons_src, layer="no_such_layer", boundary=BOUNDARY, destination=tmp_path / "o.gpkg")
    assert not (tmp_path / "o.gpkg").exists()


def test_layer_without_geometry_is_source_unavailable(tmp_path):
    attributes = tmp_path / "attributes.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(attributes))  # an attributes-only table
    table = ds.CreateLayer("table", geom_type=ogr.wkbNone)
    table.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    row = ogr.Feature(table.GetLayerDefn())
    row.SetField("name", "x")
    table.CreateFeature(row)
    ds = table = row = None
    with pytest.raises(SourceUnavailable, match="'table' of .*attributes.gpkg has no geometry column"):
        clip_vector_to_gpkg(attributes, layer="table", boundary=BOUNDARY, destination=tmp_path / "o.gpkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attributes.gpkg"]


def test_output_geometry_type_promotes_lines_and_polygons_to_multi():
    assert output_geometry_type("Polygon") == "MultiPolygon"
    assert output_geometry_type("MultiPolygon") == "MultiPolygon"
    assert output_geometry_type("3D LineString") == "3D MultiLineString"
    assert output_geometry_type("Point") == "Point"
    assert output_geometry_type("Unknown") == "Unknown"


@pytest.mark.skipif(shutil.which("ogr2ogr") is None, reason="gdal-bin not installed")
@pytest.mark.parametrize(
    "kind, geometry_type, features, measure",
    [("lines", "LineString", LINES, "length"), ("polygons", "Polygon", POLYGONS, "area")],
)
def test_matches_ogr2ogr_clipsrc_counts_and_measures(tmp_path, kind, geometry_type, features, measure):
    src = write_source(tmp_path / f"{kind}.gpkg", geometry_type, features)
    ours = clip_vector_to_gpkg(src, layer="data", boundary=BOUNDARY, destination=tmp_path / "ours.gpkg").path
    ref = ogr2ogr_clip(tmp_path, src, BOUNDARY)
    n_ours, m_ours = total(ours, measure)
    n_ref, m_ref = total(ref, measure)
    assert n_ours == n_ref
    assert m_ours == pytest.approx(m_ref, rel=1e-9)


@pytest.mark.skipif(shutil.which("ogr2ogr") is None, reason="gdal-bin not installed")
def test_matches_ogr2ogr_clipsrc_for_a_projected_source(tmp_path):
    projected = {name: shape(transform_geom("EPSG:4326", "EPSG:3857", mapping(g))) for name, g in POLYGONS.items()}
    src = write_source(tmp_path / "mercator.gpkg", "Polygon", projected, crs="EPSG:3857")
    ours = clip_vector_to_gpkg(src, layer="data", boundary=BOUNDARY, destination=tmp_path / "ours.gpkg").path
    # GDAL 3.6's ogr2ogr does not reproject -clipsrc: it must be given in the source CRS.
    ref = ogr2ogr_clip(tmp_path, src, shape(transform_geom("EPSG:4326", "EPSG:3857", mapping(BOUNDARY))))
    n_ours, a_ours = total(ours, "area")
    n_ref, a_ref = total(ref, "area")
    assert n_ours == n_ref == len(POLYGONS_KEPT)
    assert a_ours == pytest.approx(a_ref, rel=1e-9)


def test_clip_slivers_are_dropped_never_written_as_their_own_rows(tmp_path):
    """A piece of 1e-13 degrees left by the cut (like gri_osm's OSM way 1001700 in Kenya) is not
    a row: a line that only grazes the boundary is dropped, a line with a long piece and a
    sliver gives one row (explode) holding the long piece only, and a degenerate line inside
    (zero length, kept whole) is no row either."""
    features = {
        "grazing": LineString([(10 - 1e-13, 5), (15, 5)]),
        "long_and_sliver": LineString([(5, 5), (10.5, 5), (10.5, 6), (10 - 1e-12, 6), (10.5, 6.5)]),
        "ordinary": LineString([(5, 2), (15, 2)]),
        "degenerate_inside": LineString([(5, 5), (5 + 1e-13, 5)]),  # inside, kept whole: still no row
    }
    source = write_source(tmp_path / "src.gpkg", "LineString", features)
    result = clip_vector_to_gpkg(source, layer="data", boundary=BOUNDARY, destination=tmp_path / "out.gpkg",
                                 explode=True)
    with fiona.open(result.path) as src:
        rows = [(f.properties["name"], shape(f.geometry).length) for f in src]
    assert sorted(name for name, _ in rows) == ["long_and_sliver", "ordinary"]
    assert all(length > 1 for _, length in rows)
