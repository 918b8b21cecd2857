"""datapackage.json resources: tamper-evident for frictionless, and the extension the QGIS plugin
reads (`synthetic`, `dimensions`, `files[]` with label, dimension values, CRS, format, empty)."""
from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest
from frictionless import validate

from backend.packages import PackageStore
from processors.builtin.storm import StormGlobalMosaics
from processors.catalogue import RasterCatalogueProcessor
from processors.registry import ProcessorRegistry
from test_catalogue import BOUNDARY, build_mirror, make_context
from test_packages import install, make_processor, run_processor

PACKAGE = {"name": BOUNDARY.name, "name_long": BOUNDARY.name_long}


class ThreeStorms(StormGlobalMosaics):
    """Three of STORM's files: two return periods of one model and one of another."""

    sources = tuple(s for s in StormGlobalMosaics.sources
                    if (s.dimensions["model"], s.dimensions["return_period"]) in
                    {("constant", "10"), ("constant", "100"), ("HadGEM3-GC31-HM", "100")})


@pytest.fixture(scope="module")
def storm_package(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("storm")
    build_mirror(tmp / "mirror", ThreeStorms)
    ctx, _ = make_context(tmp, str(tmp / "mirror"))
    out = ThreeStorms().generate(BOUNDARY, ctx)
    store = PackageStore(tmp / "packages")
    resource = store.install_dataset(PACKAGE, ThreeStorms, out, ctx.output_dir)
    return store.root / BOUNDARY.name, resource


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _errors(folder: Path) -> list[list[str]]:
    return validate(str(folder / "datapackage.json")).flatten(["type", "note"])


def test_a_flipped_byte_in_one_geotiff_of_a_multi_file_resource_fails_validation(storm_package):
    folder, resource = storm_package
    assert len(resource["path"]) == 3 and resource["hash"].startswith("sha256:")
    assert _errors(folder) == []
    victim = folder / resource["path"][1]
    size = victim.stat().st_size
    original = victim.read_bytes()
    _flip_one_byte(victim)
    try:
        assert victim.stat().st_size == size  # same size: `bytes` alone cannot see it
        errors = _errors(folder)
        assert errors and {e[0] for e in errors} == {"hash-count"}, errors
    finally:
        victim.write_bytes(original)
    assert _errors(folder) == []


def test_a_flipped_byte_in_a_single_file_resource_fails_validation(tmp_path):
    store = PackageStore(tmp_path / "packages")
    work = tmp_path / "work"
    work.mkdir()
    resource = install(store, make_processor("roads", payload=b"x" * 4096), work)
    folder = store.root / "gambia"
    assert _errors(folder) == []
    _flip_one_byte(folder / resource["path"][0])
    assert [e[0] for e in _errors(folder)] == ["hash-count"]


def test_files_describe_each_path_with_label_dimensions_crs_format_and_codec(storm_package):
    folder, resource = storm_package
    assert [f["path"] for f in resource["files"]] == resource["path"]
    assert [d["name"] for d in resource["dimensions"]] == ["model", "return_period"]
    rp = resource["dimensions"][1]
    assert rp["title"] == "Return period" and rp["unit"] == "years" and rp["default"] == "100" and "10000" in rp["values"]
    by_dims = {(f["dimensions"]["model"], f["dimensions"]["return_period"]): f for f in resource["files"]}
    assert set(by_dims) == {("constant", "10"), ("constant", "100"), ("HadGEM3-GC31-HM", "100")}
    hadgem = by_dims[("HadGEM3-GC31-HM", "100")]
    assert hadgem["label"] == "100-year return period — HadGEM3-GC31-HM, 2050 RCP8.5"
    assert {f["crs"] for f in resource["files"]} == {"EPSG:4326"} and "crs" not in resource
    assert {f["format"] for f in resource["files"]} == {"GTiff"}
    assert {f["compression"] for f in resource["files"]} == {"ZSTD"}  # the codec, read back from each file
    assert not any(f["empty"] for f in resource["files"])
    assert resource["synthetic"] is False
    package = json.loads((folder / "datapackage.json").read_text())
    assert package["synthetic"] is False
    defaults = {d["name"]: d["default"] for d in resource["dimensions"]}
    (default_file,) = [f for f in resource["files"] if f["dimensions"] == defaults]
    assert default_file["label"] == "100-year return period — present climate"


REGISTRY = ProcessorRegistry.discover()
MULTI_FILE = [c for c in map(REGISTRY.get, REGISTRY.names())
              if issubclass(c, RasterCatalogueProcessor) and c.total_expected_files() > 1]


@pytest.mark.parametrize("cls", MULTI_FILE, ids=lambda c: c.full_name())
def test_multi_file_processors_place_every_file_on_their_dimensions(cls):
    """Every source has a value on every dimension, no two share all values, labels are unique,
    and exactly one file is the default slice (gridfinder's is its grid lines, not a raster)."""
    dimensions = {d.name: d for d in cls.dimensions}
    sources = cls.raster_sources()
    placed = [dict(s.dimensions) for s in sources]
    if cls.full_name() == "gridfinder.version_1":
        placed.append({"layer": "grid"})
    for values in placed:
        assert set(values) == set(dimensions), values
        assert all(value in dimensions[key].values for key, value in values.items()), values
    assert len({tuple(sorted(v.items())) for v in placed}) == len(placed)
    assert all(s.label for s in sources) and len({s.label for s in sources}) == len(sources)
    defaults = {name: d.default for name, d in dimensions.items()}
    assert placed.count(defaults) == 1
    for d in dimensions.values():  # every declared value is used by some file
        assert set(d.values) == {v[d.name] for v in placed}, d.name


def test_storm_aqueduct_and_isimip_default_slices():
    def default_source(name):
        cls = REGISTRY.get(name)
        defaults = {d.name: d.default for d in cls.dimensions}
        return next(s for s in cls.raster_sources() if dict(s.dimensions) == defaults)

    assert default_source("storm.global_mosaics_version_1").filename == "STORM_FIXED_RETURN_PERIODS_constant_100_YR_RP.tif"
    assert default_source("wri_aqueduct.version_2").filename == "inunriver_historical_000000000WATCH_1980_rp00100.tif"
    isimip = default_source("isimp_drought.version_1")
    assert isimip.dimensions["scenario"] == "historical" and isimip.dimensions["variable"] == "drought"
    aqueduct = REGISTRY.get("wri_aqueduct.version_2")
    coastal = next(s for s in aqueduct.raster_sources() if s.filename == "inuncoast_rcp4p5_wtsub_2030_rp0001_5.tif")
    assert coastal.dimensions == {"hazard": "inuncoast", "scenario": "rcp4p5", "year": "2030", "model": "wtsub",
                                  "return_period": "1.5"}
    assert list(itertools.islice((s.dimensions["return_period"] for s in aqueduct.raster_sources()), 3)) == ["2", "5", "10"]


def test_pages_link_dois_and_sources_and_use_decimal_sizes(storm_package):
    folder, resource = storm_package
    license_page = (folder / "license.html").read_text()
    assert '<a href="https://doi.org/10.5281/zenodo.7438145">' in license_page  # citation DOI
    assert '<a href="https://doi.org/10.4121/12705164.v3">' in license_page
    assert f'<a href="{resource["sources"][0]["path"]}">' in license_page  # source link
    dataset_page = (folder / "datasets/storm/global_mosaics_version_1/index.html").read_text()
    assert "100-year return period — HadGEM3-GC31-HM, 2050 RCP8.5" in dataset_page and "EPSG:4326" in dataset_page
    from backend.html import _size

    assert [_size(n) for n in (999, 1234, 12_345_678, 2_500_000_000)] == ["999 B", "1.2 KB", "12 MB", "2.5 GB"]
    assert "SYNTHETIC" not in (folder / "index.html").read_text()


def test_synthetic_resources_put_a_banner_on_every_page(tmp_path):
    store = PackageStore(tmp_path / "packages")
    work = tmp_path / "work"
    work.mkdir()
    processor = make_processor("stand_in")
    output, out = run_processor(processor, work)
    store.install_dataset({"name": "gambia", "name_long": "Gambia"}, processor, replace(output, synthetic=True), out)
    folder = store.root / "gambia"
    for page in ("index.html", "license.html", "version.html", "datasets/stand_in/version_1/index.html",
                 "datasets/stand_in/version_1/license.html"):
        assert '<p class="synthetic">SYNTHETIC DATA' in (folder / page).read_text(), page
    package = store.read_datapackage("gambia")
    assert package["synthetic"] is True and package["resources"][0]["synthetic"] is True


def test_a_boundary_in_several_parts_adds_a_part_dimension_with_one_default_file(tmp_path):
    from test_estimate import country

    class OneStorm(StormGlobalMosaics):
        sources = ThreeStorms.sources[1:2]

    build_mirror(tmp_path / "mirror", OneStorm, width=1440, height=720)
    ctx, _ = make_context(tmp_path, str(tmp_path / "mirror"))
    france = country("France")
    out = OneStorm().generate(france, ctx)
    resource = PackageStore(tmp_path / "packages").install_dataset(
        {"name": france.name, "name_long": france.name_long}, OneStorm, out, ctx.output_dir)
    part = resource["dimensions"][-1]
    assert part["name"] == "part" and part["values"][:2] == ["part1", "part2"] and part["default"] == "part1"
    defaults = {d["name"]: d["default"] for d in resource["dimensions"]}
    (default_file,) = [f for f in resource["files"] if f["dimensions"] == defaults]
    assert default_file["path"].endswith("-france-part1.tif") and default_file["label"].endswith("(part 1)")
