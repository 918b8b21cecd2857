"""NaturalEarthAdmin1 on the real Natural Earth world map that QGIS installs."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import fiona
import pytest
from shapely.geometry import MultiPolygon, Point, box, mapping, shape

from processors.base import Boundary, ProcessorContext
from processors.builtin.natural_earth_admin1 import DEFAULT_WORLD_MAP_GPKG, NaturalEarthAdmin1
from processors.errors import SourceUnavailable
from processors.registry import ProcessorRegistry
from processors.vector import clip_vector_to_gpkg

pytestmark = pytest.mark.skipif(not DEFAULT_WORLD_MAP_GPKG.is_file(), reason="QGIS world_map.gpkg not installed")
needs_ogr2ogr = pytest.mark.skipif(shutil.which("ogr2ogr") is None, reason="gdal-bin not installed")

KENYA_PROVINCES = {"Central", "Coast", "Eastern", "Nairobi", "North-Eastern", "Nyanza", "Rift Valley", "Western"}


def make_boundary(name: str, geom) -> Boundary:
    if geom.geom_type == "Polygon":
        geom = MultiPolygon([geom])
    return Boundary(name=name, name_long=name.title(), geometry=mapping(geom), envelope=mapping(box(*geom.bounds)))


@pytest.fixture(scope="module")
def kenya_shape():
    with fiona.open(DEFAULT_WORLD_MAP_GPKG, layer="countries") as countries:
        (feature,) = [f for f in countries if f.properties["NAME"] == "Kenya"]
        return shape(feature.geometry)


@pytest.fixture
def kenya(kenya_shape) -> Boundary:
    return make_boundary("kenya", kenya_shape)


@pytest.fixture
def context(tmp_path) -> ProcessorContext:
    dirs = {}
    for name in ("output_dir", "processing_dir", "source_dir"):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
    return ProcessorContext(**dirs, world_map_gpkg=DEFAULT_WORLD_MAP_GPKG)


def read_names(path: Path) -> list[str]:
    with fiona.open(path) as src:
        return [f.properties["name"] for f in src]


def count_and_area(path: Path) -> tuple[int, float]:
    with fiona.open(path) as src:
        geoms = [shape(f.geometry) for f in src]
    return len(geoms), sum(g.area for g in geoms)


def ogr2ogr_clip(tmp_path: Path, boundary_geom) -> Path:
    clip = tmp_path / "clip.geojson"
    clip.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": mapping(boundary_geom)}]}))
    ref = tmp_path / "ref.gpkg"
    subprocess.run(["ogr2ogr", "-f", "GPKG", str(ref), str(DEFAULT_WORLD_MAP_GPKG), "states_provinces",
                    "-clipsrc", str(clip)], check=True, capture_output=True)
    return ref


def test_metadata_and_registration():
    assert NaturalEarthAdmin1.full_name() == "natural_earth_admin1.version_1"
    described = NaturalEarthAdmin1.describe()
    assert described["data_license"]["name"] == "Natural-Earth"
    assert described["data_formats"] == ["GeoPackage"]
    assert described["data_citation"] and described["data_summary"] and described["data_title_long"]
    assert "natural_earth_admin1.version_1" in ProcessorRegistry.discover().names()


def test_kenya_writes_its_eight_provinces_into_the_output_dir(kenya, context):
    output = NaturalEarthAdmin1().generate(kenya, context)
    assert output.files == ["natural_earth_admin1-version_1-kenya.gpkg"]
    assert output.format == "GPKG" and output.description
    path = context.output_dir / output.files[0]
    assert sorted(read_names(path)) == sorted(KENYA_PROVINCES)
    with fiona.open(path) as out, fiona.open(DEFAULT_WORLD_MAP_GPKG, layer="states_provinces") as src:
        assert out.crs.to_epsg() == 4326
        assert out.schema["properties"] == src.schema["properties"]
        assert out.schema["geometry"] == "MultiPolygon"
    assert list(context.processing_dir.iterdir()) == []  # moved out of the scratch folder
    assert [p.name for p in context.output_dir.iterdir()] == output.files


@needs_ogr2ogr
def test_kenya_matches_ogr2ogr_clipsrc(kenya, kenya_shape, context, tmp_path):
    output = NaturalEarthAdmin1().generate(kenya, context)
    n_ours, area_ours = count_and_area(context.output_dir / output.files[0])
    n_ref, area_ref = count_and_area(ogr2ogr_clip(tmp_path, kenya_shape))
    assert n_ours == n_ref == len(KENYA_PROVINCES)
    assert area_ours == pytest.approx(area_ref, rel=1e-9)


@needs_ogr2ogr
def test_a_boundary_cutting_through_provinces_matches_ogr2ogr_clipsrc(tmp_path):
    # A 1.5 degree disc around Nairobi holds Nairobi and Central whole and cuts through Rift Valley,
    # Eastern and Tanzania's Arusha.
    disc = Point(36.82, -1.29).buffer(1.5, 64)
    result = clip_vector_to_gpkg(DEFAULT_WORLD_MAP_GPKG, layer="states_provinces", boundary=disc,
                                 destination=tmp_path / "ours.gpkg")
    assert (result.kept_whole, result.clipped) == (2, 3)
    assert sorted(read_names(result.path)) == ["Arusha", "Central", "Eastern", "Nairobi", "Rift Valley"]
    n_ours, area_ours = count_and_area(result.path)
    n_ref, area_ref = count_and_area(ogr2ogr_clip(tmp_path, disc))
    assert n_ours == n_ref
    assert area_ours == pytest.approx(area_ref, rel=1e-9)
    assert area_ours == pytest.approx(disc.area, rel=1e-3)  # all land: the provinces tile the disc


def test_missing_source_is_source_unavailable_naming_the_path(kenya, context, tmp_path):
    missing = tmp_path / "elsewhere" / "world_map.gpkg"
    context.world_map_gpkg = missing
    with pytest.raises(SourceUnavailable, match=str(missing)):
        NaturalEarthAdmin1().generate(kenya, context)


def test_unreadable_source_is_source_unavailable_naming_the_path(kenya, context, tmp_path):
    broken = tmp_path / "world_map.gpkg"
    broken.write_text("not a geopackage")
    context.world_map_gpkg = broken
    with pytest.raises(SourceUnavailable, match=str(broken)):
        NaturalEarthAdmin1().generate(kenya, context)
    assert list(context.output_dir.iterdir()) == []


def test_boundary_in_the_ocean_is_an_empty_layer_with_the_schema(context):
    ocean = make_boundary("south_atlantic", box(-30, -35, -25, -30))
    out = NaturalEarthAdmin1().generate(ocean, context)
    (name,) = out.files
    assert out.details[0].empty and "the layer is empty" in out.description
    with fiona.open(context.output_dir / name) as layer, fiona.open(DEFAULT_WORLD_MAP_GPKG, layer="states_provinces") as src:
        assert len(layer) == 0 and layer.name == "states_provinces"
        assert list(layer.schema["properties"]) == list(src.schema["properties"])
    assert list(context.processing_dir.iterdir()) == []


def test_progress_reports_increasing_percents_up_to_100(kenya, context):
    seen = []
    context.report = lambda percent, step: seen.append((percent, step))
    NaturalEarthAdmin1().generate(kenya, context)
    percents = [p for p, _ in seen]
    assert len(percents) >= 3
    assert percents == sorted(percents)
    assert percents[0] == 0 and percents[-1] == 100


def test_cancellation_stops_the_run_without_output(kenya, context):
    from processors.errors import Cancelled

    context.is_cancelled = lambda: True
    with pytest.raises(Cancelled):
        NaturalEarthAdmin1().generate(kenya, context)
    assert list(context.output_dir.iterdir()) == []
