"""natural_earth_vector (zipped shapefile, lines cut at the polygon) and gri_osm (GeoPackage file
source with roads and rail layers, exploded LineStrings, fixed schema) end-to-end against generated
sources laid out like their origins, served by the loopback origin server.

The reference is computed independently with `ogr2ogr -clipsrc` (GDAL's own clipper, plus
`-explodecollections` for gri_osm, as PostGIS `ST_Dump` did): same feature count and the same
total length within 1e-9 relative."""
from __future__ import annotations

import random
import subprocess
import zipfile
from pathlib import Path

import fiona
import pytest
from fiona.crs import from_epsg
from shapely.geometry import shape

from processors.builtin.gri_osm import SCHEMA, SOURCE_LAYERS, GriOsmRoadsAndRail
from processors.builtin.natural_earth_vector import NaturalEarthVector
from processors.errors import SourceUnavailable
from processors.fetch import mirror_url
from processors.registry import ProcessorRegistry
from sources import OriginServer
from test_catalogue import BOUNDARY, POLYGON, make_context

NE_SCHEMA = {"scalerank": "int", "featurecla": "str", "type": "str", "name": "str", "length_km": "float", "continent": "str"}


def random_lines(rng: random.Random, n: int, multi_every: int = 0):
    """Random zig-zag lines across the test polygon's neighbourhood (some multi-part).

    x increases along every part, so no line crosses itself: GEOS nodes self-crossing lines when
    intersecting (ogr2ogr splits them into more pieces), while a line lying inside the polygon is
    written whole by our clipper, which would make the piece counts differ for that reason alone."""
    for i in range(n):
        parts = []
        for _ in range(2 if multi_every and i % multi_every == 0 else 1):
            x, y = rng.uniform(-70, 60), rng.uniform(-50, 70)
            coords = [(x, y)]
            for _ in range(rng.randint(1, 6)):
                x, y = x + rng.uniform(0.5, 9), y + rng.uniform(-9, 9)
                coords.append((x, y))
            parts.append(coords)
        if len(parts) == 1:
            yield i, {"type": "LineString", "coordinates": parts[0]}
        else:
            yield i, {"type": "MultiLineString", "coordinates": parts}


def write_ne_roads_zip(path: Path, n: int = 400) -> None:
    rng = random.Random(11)
    folder = path.parent / "ne_10m_roads_src"
    folder.mkdir(parents=True, exist_ok=True)
    shp = folder / "ne_10m_roads.shp"
    with fiona.open(shp, "w", driver="ESRI Shapefile", crs=from_epsg(4326),
                    schema={"geometry": "LineString", "properties": NE_SCHEMA}) as dst:
        for i, geom in random_lines(rng, n, multi_every=7):
            dst.write({"geometry": geom, "properties": {
                "scalerank": rng.randint(3, 10), "featurecla": "Road", "type": rng.choice(["Major Highway", "Secondary Highway"]),
                "name": f"Road {i}", "length_km": rng.uniform(1, 900), "continent": "Testland"}})
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member in sorted(folder.iterdir()):
            zf.write(member, member.name)


def write_gri_gpkg(path: Path, n_roads: int = 500, n_rail: int = 150) -> None:
    rng = random.Random(5)
    path.parent.mkdir(parents=True, exist_ok=True)
    for layer, n, subsector in (("roads", n_roads, "road"), ("rail", n_rail, "rail")):
        with fiona.open(path, "w", driver="GPKG", layer=layer, crs=from_epsg(4326),
                        schema={"geometry": "LineString", "properties": SCHEMA}) as dst:
            batch = []
            for i, geom in random_lines(rng, n):
                batch.append({"geometry": geom, "properties": {
                    "asset_id": float(i), "osm_way_id": str(10_000 + i), "asset_type": rng.choice(["trunk", "primary", "railway"]),
                    "paved": rng.random() < 0.7, "material": rng.choice(["asphalt", "gravel", None]), "lanes": rng.randint(1, 4),
                    "_asset_type": f"{subsector}_paved", "rehab_cost_USD_per_km": rng.uniform(1e4, 1e6), "sector": "transport",
                    "subsector": subsector, "tag_bridge": None, "bridge": rng.random() < 0.05,
                    "wkt": shape(geom).wkt}})
            dst.writerecords(batch)


def ogr2ogr_clip(source: Path, layer: str | None, out: Path, explode: bool = False) -> tuple[int, float]:
    """Count and total length of `ogr2ogr -clipsrc <polygon>` (GDAL's clipper, independent of ours)."""
    cmd = ["ogr2ogr", "-f", "GPKG", str(out), str(source)] + ([layer] if layer else [])
    subprocess.run(cmd + ["-clipsrc", POLYGON.wkt, "-nln", "ref"], check=True, capture_output=True)
    if explode:  # a second pass: ogr2ogr explodes *before* clipping, ST_Dump explodes the clip result
        exploded = out.with_name(out.stem + "-exploded.gpkg")
        subprocess.run(["ogr2ogr", "-f", "GPKG", str(exploded), str(out), "ref", "-explodecollections", "-unsetFid"],
                       check=True, capture_output=True)
        out = exploded
    with fiona.open(out, layer="ref") as src:
        geoms = [shape(f["geometry"]) for f in src]
    return len(geoms), sum(g.length for g in geoms)


def read_output(path: Path):
    with fiona.open(path) as src:
        return src.schema, src.crs.to_epsg(), src.name, [(shape(f["geometry"]), dict(f["properties"])) for f in src]


@pytest.mark.parametrize("cls", [NaturalEarthVector, GriOsmRoadsAndRail], ids=lambda c: c.full_name())
def test_metadata_is_complete(cls):
    meta = cls.metadata
    for field in ("description", "dataset", "author", "origin_url", "title", "title_long", "summary", "citation"):
        assert getattr(meta, field), field
    assert "Test Processor" not in meta.description
    assert meta.license.name and meta.license.path.startswith("https://") and meta.license.title
    assert meta.formats == ("GeoPackage",)
    assert cls.full_name() in ProcessorRegistry.discover().names()


def test_natural_earth_roads_clipped_like_ogr2ogr_and_fetched_once(tmp_path):
    root = tmp_path / "mirror"
    zip_path = Path(mirror_url(NaturalEarthVector.source_url, str(root)))
    write_ne_roads_zip(zip_path)
    with OriginServer(root) as server:
        for run in ("first", "second"):
            ctx, reports = make_context(tmp_path, server.url, run=run)
            out = NaturalEarthVector().generate(BOUNDARY, ctx)
            assert out.files == ["natural_earth_vector-version_1-testland.gpkg"] and out.format == "GPKG"
            assert sorted(p.name for p in ctx.output_dir.iterdir()) == out.files
            assert reports[-1][0] == 100
    assert list(server.requests.values()) == [1]  # the zip was fetched once for both runs
    schema, epsg, layer, features = read_output(ctx.output_dir / out.files[0])
    assert epsg == 4326 and layer == "ne_10m_roads" and schema["geometry"] == "MultiLineString"
    assert list(schema["properties"]) == list(NE_SCHEMA)
    src_shp = next((ctx.source_dir).rglob("ne_10m_roads.shp"))
    count, length = ogr2ogr_clip(src_shp, None, tmp_path / "ref.gpkg")
    assert 0 < len(features) == count
    assert sum(g.length for g, _ in features) == pytest.approx(length, rel=1e-9)
    assert all(POLYGON.buffer(1e-9).covers(g) for g, _ in features)  # cut at the polygon, not kept whole
    assert out.extra["feature_count"] == count


def test_gri_osm_roads_and_rail_from_a_file_source(tmp_path):
    root = tmp_path / "mirror"
    gpkg = Path(mirror_url(GriOsmRoadsAndRail.source_url, str(root)))
    write_gri_gpkg(gpkg)
    with OriginServer(root) as server:
        ctx, reports = make_context(tmp_path, server.url)
        out = GriOsmRoadsAndRail().generate(BOUNDARY, ctx)
    assert out.files == ["gri_osm-roads_and_rail_version_1-testland.gpkg"]
    assert list(server.requests) == ["/global.infrastructureresilience.org/extract/gri_osm/roads_and_rail_version_1/gri_osm_road_and_rail.gpkg"]
    schema, epsg, layer, features = read_output(ctx.output_dir / out.files[0])
    assert epsg == 4326 and layer == "gri_osm_road_and_rail"
    assert schema["geometry"] == "LineString"
    assert list(schema["properties"]) == list(SCHEMA)
    assert {g.geom_type for g, _ in features} == {"LineString"}
    ref_count = ref_length = 0
    for layer_name in SOURCE_LAYERS:
        c, l = ogr2ogr_clip(gpkg, layer_name, tmp_path / f"ref-{layer_name}.gpkg", explode=True)
        ref_count, ref_length = ref_count + c, ref_length + l
    assert 0 < len(features) == ref_count
    assert sum(g.length for g, _ in features) == pytest.approx(ref_length, rel=1e-9)
    assert {p["subsector"] for _, p in features} == {"road", "rail"}
    assert all(isinstance(p["paved"], bool) and isinstance(p["lanes"], int) for _, p in features)


def test_gri_osm_missing_properties_are_null_and_extra_dropped(tmp_path):
    root = tmp_path / "mirror"
    gpkg = Path(mirror_url(GriOsmRoadsAndRail.source_url, str(root)))
    gpkg.parent.mkdir(parents=True)
    for layer in SOURCE_LAYERS:
        with fiona.open(gpkg, "w", driver="GPKG", layer=layer, crs=from_epsg(4326),
                        schema={"geometry": "LineString", "properties": {"osm_way_id": "str", "highway": "str"}}) as dst:
            dst.write({"geometry": {"type": "LineString", "coordinates": [(0, 0), (5, 5)]},
                       "properties": {"osm_way_id": f"{layer}-1", "highway": "x"}})
    ctx, _ = make_context(tmp_path, str(root))
    out = GriOsmRoadsAndRail().generate(BOUNDARY, ctx)
    schema, _, _, features = read_output(ctx.output_dir / out.files[0])
    assert list(schema["properties"]) == list(SCHEMA)
    assert sorted(p["osm_way_id"] for _, p in features) == ["rail-1", "roads-1"]
    assert all(p["asset_type"] is None and p["lanes"] is None for _, p in features)


def test_gri_osm_without_a_configured_source_names_the_url(tmp_path):
    ctx, _ = make_context(tmp_path, str(tmp_path / "empty-mirror"))
    with pytest.raises(SourceUnavailable, match="global.infrastructureresilience.org/extract/gri_osm"):
        GriOsmRoadsAndRail().generate(BOUNDARY, ctx)
    assert not any(ctx.output_dir.iterdir())
