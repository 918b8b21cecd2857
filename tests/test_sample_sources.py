"""The offline sample mirror (`processors.samples`): built once, then every built-in processor's
`generate()` runs for Kenya with the mirror folder as `source_mirror` and writes its outputs."""
from __future__ import annotations

import json
import time
from pathlib import Path

import fiona
import pytest
import rasterio

from backend.packages import PackageStore
from processors.builtin.natural_earth_admin1 import DEFAULT_WORLD_MAP_GPKG
from processors.fetch import mirror_url
from processors.outputs import file_facts
from processors.registry import ProcessorRegistry
from processors.samples import SYNTHETIC_MANIFEST, build_sample_mirror
from test_catalogue import make_context
from test_estimate import country

pytestmark = pytest.mark.skipif(not DEFAULT_WORLD_MAP_GPKG.is_file(), reason="QGIS world_map.gpkg not installed")
REGISTRY = ProcessorRegistry.discover()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    folder = tmp_path_factory.mktemp("samples")
    started = time.monotonic()
    report = build_sample_mirror(folder, world_map_gpkg=DEFAULT_WORLD_MAP_GPKG)
    report["measured_seconds"] = time.monotonic() - started
    return folder, report


def test_mirror_is_small_quick_and_marked_synthetic(mirror):
    folder, report = mirror
    assert report["bytes"] < 200e6 and report["measured_seconds"] < 60
    assert set(report["datasets"]) == set(REGISTRY.names())
    assert report["datasets"]["natural_earth_admin1.version_1"].startswith("real")
    manifest = json.loads((folder / SYNTHETIC_MANIFEST).read_text())
    assert len(manifest["files"]) == report["files"]
    storm = next(u for u in manifest["files"] if "STORM_FIXED_RETURN_PERIODS_constant_10_YR_RP" in u)
    path = Path(mirror_url(storm, str(folder)))
    assert (path.parent / "SYNTHETIC.txt").is_file()
    with rasterio.open(path) as ds:
        assert "SYNTHETIC" in ds.tags()["SYNTHETIC"]
    gri = next(u for u in manifest["files"] if u.endswith("gri_osm_road_and_rail.gpkg"))
    from osgeo import gdal

    ds = gdal.OpenEx(mirror_url(gri, str(folder)))
    assert "SYNTHETIC" in ds.GetMetadataItem("SYNTHETIC")
    # STORM, Aqueduct, ISIMIP (245 in one zip), GHS-BUILT-C, GHS-POP, NE2, gridfinder (2 tifs + grid), NE roads, GRI, plants
    assert len(manifest["files"]) == 140 + 379 + 1 + 2 + 1 + 1 + 3 + 1 + 1 + 1


@pytest.mark.parametrize("name", REGISTRY.names())
def test_every_processor_runs_for_kenya_offline(mirror, tmp_path, name):
    folder, _ = mirror
    cls = REGISTRY.get(name)
    ctx, reports = make_context(tmp_path, str(folder))
    out = cls().generate(country("Kenya"), ctx)
    assert out.files and sorted(p.name for p in ctx.output_dir.iterdir()) == sorted(out.files)
    assert all(f.endswith("-kenya.tif") or f.endswith("-kenya.gpkg") for f in out.files)
    expected = getattr(cls, "total_expected_files", lambda: 1)()
    assert len(out.files) == expected
    crs = {}
    for f in out.files:
        path = ctx.output_dir / f
        if f.endswith(".gpkg"):
            with fiona.open(path) as src:
                assert len(src) > 0, f
                crs[f] = src.crs.to_string()
        else:
            with rasterio.open(path) as ds:
                assert ds.width > 0 and ds.height > 0
                crs[f] = ds.crs.to_string()
    # The package declares each file's own CRS (read independently above), none for the resource.
    store = PackageStore(tmp_path / "packages")
    resource = store.install_dataset({"name": "kenya", "name_long": "Kenya"}, cls, out, ctx.output_dir)
    assert "crs" not in resource
    assert {f["path"].rsplit("/", 1)[1]: f["crs"] for f in resource["files"]} == crs
    if name == "gridfinder.version_1":
        assert crs["gridfinder-version_1-lv-kenya.tif"] == "ESRI:54009"
    # Synthetic origin carried through: every output file, the resource, the package, the page.
    real = name == "natural_earth_admin1.version_1"
    for f in out.files:
        assert file_facts(store.root / "kenya" / resource["path"][out.files.index(f)]).synthetic is not real, f
    assert resource["synthetic"] is not real
    assert store.read_datapackage("kenya")["synthetic"] is not real
    assert ("SYNTHETIC" in (store.root / "kenya" / "index.html").read_text()) is not real
    assert all(r.synthetic is not real for r in ctx.sources.records)
