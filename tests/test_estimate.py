"""Size estimates (`Processor.estimate`) against the real outputs of the same runs, and the
`GET /v1/processors/{name}/{version}/estimate` route.

Every estimate must be within a factor of 2 of the bytes actually written (and give the exact file
count), for the catalogue tests' boundary (`testland`) on the catalogue tests' generated sources,
and for real country outlines (Kenya, Gambia, Fiji across the antimeridian) on larger generated
grids. Two ways are checked: from declared metadata before anything is downloaded (no request
reaches the origin), and from the cached source after a run."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import fiona
import pytest
from shapely.geometry import box, mapping, shape

from processors.base import Boundary
from processors.builtin.gri_osm import GriOsmRoadsAndRail
from processors.builtin.gridfinder import Gridfinder
from processors.builtin.isimp_drought import IsimipDrought
from processors.builtin.jrc_ghsl import JrcGhslBuiltC, JrcGhslPopulation
from processors.builtin.natural_earth_admin1 import DEFAULT_WORLD_MAP_GPKG, NaturalEarthAdmin1
from processors.builtin.natural_earth_raster import NaturalEarthRaster
from processors.builtin.natural_earth_vector import NaturalEarthVector
from processors.builtin.storm import StormGlobalMosaics
from processors.builtin.wri_aqueduct import WriAqueduct
from processors.builtin.wri_powerplants import WriPowerplants
from processors.estimate import RasterGrid
from processors.fetch import mirror_url
from sources import MOLLWEIDE_X, MOLLWEIDE_Y, OriginServer, synthetic_raster
from test_catalogue import BOUNDARY, WORLD, build_mirror, make_context
from test_catalogue_osm import write_gri_gpkg, write_ne_roads_zip
from test_catalogue_vectors import write_grid, write_powerplants_zip

MOLLWEIDE = (-MOLLWEIDE_X, -MOLLWEIDE_Y, MOLLWEIDE_X, MOLLWEIDE_Y)


def country(name: str) -> Boundary:
    with fiona.open(DEFAULT_WORLD_MAP_GPKG, layer="countries") as src:
        geom = next(shape(f["geometry"]) for f in src if f["properties"]["NAME"] == name)
    return Boundary(name=name.lower(), name_long=name, geometry=mapping(geom), envelope=mapping(box(*geom.bounds)))


def output_bytes(ctx) -> int:
    return sum(p.stat().st_size for p in ctx.output_dir.iterdir())


def assert_close(estimate: dict, ctx, files: list[str], label: str) -> None:
    actual = output_bytes(ctx)
    assert estimate["files"] == len(files), (label, estimate)
    assert actual / 2 <= estimate["bytes"] <= actual * 2, f"{label}: estimated {estimate['bytes']} B, wrote {actual} B ({estimate['method']})"
    assert estimate["method"]
    print(f"ESTIMATE {label}: estimated {estimate['bytes']} B, actual {actual} B, ratio {estimate['bytes'] / actual:.2f}")


RASTERS = [
    (NaturalEarthRaster, dict(rgb=True, width=360, height=180), RasterGrid("EPSG:4326", WORLD, 360, 180, "uint8", 3)),
    (StormGlobalMosaics, {}, RasterGrid("EPSG:4326", WORLD, 40, 20, "int16")),
    (WriAqueduct, {}, RasterGrid("EPSG:4326", WORLD, 40, 20, "int16")),
    (IsimipDrought, {}, RasterGrid("EPSG:4326", WORLD, 40, 20, "int16")),
    (JrcGhslPopulation, dict(crs="ESRI:54009", bounds=MOLLWEIDE, width=72, height=36), RasterGrid("ESRI:54009", MOLLWEIDE, 72, 36, "int16")),
    (JrcGhslBuiltC, dict(crs="ESRI:54009", bounds=MOLLWEIDE, width=72, height=36), RasterGrid("ESRI:54009", MOLLWEIDE, 72, 36, "int16")),
]


@pytest.mark.parametrize("cls, tif_kwargs, grid", RASTERS, ids=lambda v: v.full_name() if isinstance(v, type) else "")
def test_raster_estimates_declared_then_cached(tmp_path, raster_mirror, cls, tif_kwargs, grid):
    root, made = raster_mirror(cls, **tif_kwargs)
    sources = tuple(replace(s, member_sha1=hashlib.sha1(made[s.part or s.filename].read_bytes()).hexdigest()
                            if s.member_sha1 else None) for s in cls.raster_sources())
    # 0.1: the compressed/raw ratio of the generated ramps (see test_raster_estimate_for_countries...)
    synthetic = type(cls.__name__, (cls,), {"sources": sources, "grid": grid, "compression_ratio": 0.1})
    with OriginServer(root) as server:
        ctx, _ = make_context(tmp_path, server.url)
        declared = synthetic().estimate(BOUNDARY, ctx)
        assert sum(server.requests.values()) == 0  # no download for an estimate
        assert "declared" in declared["method"]
        out = synthetic().generate(BOUNDARY, ctx)
    cached = synthetic().estimate(BOUNDARY, ctx)
    assert "cached" in cached["method"]
    assert_close(declared, ctx, out.files, f"{cls.full_name()} declared")
    assert_close(cached, ctx, out.files, f"{cls.full_name()} cached")


@pytest.mark.parametrize("name", ["Kenya", "Gambia", "Fiji"])
def test_raster_estimate_for_countries_on_a_finer_grid(tmp_path, name):
    """A 0.05-degree Int16 world (7200x3600): windows of 100-200 pixels a side, two outputs for
    Fiji. The generated ramps compress to about 0.07 of their raw size (measured: Kenya 3,791 B
    for a 160x200 window), declared here as 0.1."""
    boundary = country(name)
    tif = synthetic_raster(tmp_path / "src.tif", width=7200, height=3600, holes=False)

    class One(StormGlobalMosaics):
        sources = StormGlobalMosaics.sources[:1]
        compression_ratio = 0.1  # the generated ramps (values mod 20000) under DEFLATE + predictor

    ctx, _ = make_context(tmp_path, str(tmp_path / "mirror"))
    target = Path(mirror_url(One.sources[0].url, str(tmp_path / "mirror")))
    target.parent.mkdir(parents=True, exist_ok=True)
    tif.rename(target)
    ctx.sources.fetch(One.sources[0].url)  # fetched before
    estimate = One().estimate(boundary, ctx)
    out = One().generate(boundary, ctx)
    assert_close(estimate, ctx, out.files, name)
    assert (len(out.files) == 2) == (name == "Fiji")


def test_vector_estimates_declared_then_cached(tmp_path):
    root = tmp_path / "mirror"
    write_ne_roads_zip(Path(mirror_url(NaturalEarthVector.source_url, str(root))), n=3000)
    write_gri_gpkg(Path(mirror_url(GriOsmRoadsAndRail.source_url, str(root))), n_roads=3000, n_rail=800)
    with OriginServer(root) as server:
        for cls in (NaturalEarthVector, GriOsmRoadsAndRail):
            ctx, _ = make_context(tmp_path, server.url, run=cls.name, source_dir=tmp_path / "sources" / cls.name)
            declared = cls().estimate(BOUNDARY, ctx)
            assert declared["files"] == 1 and declared["bytes"] > 0 and "declared" in declared["method"]
            out = cls().generate(BOUNDARY, ctx)
            cached = cls().estimate(BOUNDARY, ctx)
            assert "cached" in cached["method"]
            assert_close(cached, ctx, out.files, cls.full_name())
        assert sum(server.requests.values()) == 2  # only the runs downloaded


def test_gridfinder_and_powerplants_estimates(tmp_path):
    root = tmp_path / "mirror"
    build_mirror(root, Gridfinder)
    write_grid(Path(mirror_url(Gridfinder.grid_url, str(root))), n=2000)
    zip_path = Path(mirror_url(WriPowerplants.source_url, str(root)))
    write_powerplants_zip(zip_path, n=3000)

    class Synthetic(WriPowerplants):
        source_sha1 = hashlib.sha1(zip_path.read_bytes()).hexdigest()

    for cls in (Gridfinder, Synthetic):
        ctx, _ = make_context(tmp_path, str(root), run=cls.name, source_dir=tmp_path / "sources" / cls.name)
        out = cls().generate(BOUNDARY, ctx)
        assert_close(cls().estimate(BOUNDARY, ctx), ctx, out.files, cls.full_name())


@pytest.mark.parametrize("name", ["Kenya", "Gambia"])
def test_natural_earth_admin1_estimate_on_real_data(tmp_path, name):
    boundary = country(name)
    ctx, _ = make_context(tmp_path, str(tmp_path))
    estimate = NaturalEarthAdmin1().estimate(boundary, ctx)
    out = NaturalEarthAdmin1().generate(boundary, ctx)
    assert_close(estimate, ctx, out.files, name)


def test_estimate_route(shared_served):
    body = shared_served.get("/v1/processors/natural_earth_admin1/version_1/estimate", params={"boundary_name": "kenya"}).json()
    assert body["processor"] == "natural_earth_admin1.version_1" and body["boundary_name"] == "kenya"
    assert body["files"] == 1 and 100_000 < body["bytes"] < 2_000_000 and "vector" in body["method"]
    storm = shared_served.get("/v1/processors/storm/global_mosaics_version_1/estimate", params={"boundary_name": "kenya"}).json()
    assert storm["files"] == 140 and storm["bytes"] > 140 * 1300 and "declared" in storm["method"]
    test = shared_served.get("/v1/processors/test_processor/version_1/estimate", params={"boundary_name": "gambia"}).json()
    assert (test["bytes"], test["files"]) == (4, 1)
    bad = shared_served.get("/v1/processors/storm/global_mosaics_version_1/estimate", params={"boundary_name": "atlantis"})
    assert bad.status_code == 400 and "atlantis" in bad.json()["detail"]
    missing = shared_served.get("/v1/processors/nope/version_1/estimate", params={"boundary_name": "kenya"})
    assert missing.status_code == 404
    assert "/v1/processors/{name}/{version}/estimate" in shared_served.get("/openapi.json").json()["paths"]
