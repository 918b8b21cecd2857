"""The `autopkg` command line as real subprocesses: loading boundaries, and driving a running backend."""
from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import AUTOPKG, ROOT, free_port, module_backend

TEST = "test_processor.version_1"
FAIL = "test_fail_processor.version_1"


def autopkg(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(AUTOPKG + list(args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def web_mercator(lon: float, lat: float) -> list[float]:
    """EPSG:4326 -> EPSG:3857 (spherical Mercator), so the loader has to reproject."""
    r = 6378137.0
    return [r * math.radians(lon), r * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))]


def polygon_3857(*lonlats: tuple[float, float]) -> dict:
    ring = [web_mercator(*p) for p in lonlats]
    return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


@pytest.fixture
def boundaries_geojson(tmp_path) -> Path:
    """One valid square, one bow-tie (self-intersecting) and one nameless feature, in EPSG:3857,
    in the South Atlantic where no seeded boundary lies."""
    features = [
        {"type": "Feature", "properties": {"NAME": "Testland", "ISO": "TST"},
         "geometry": polygon_3857((-30, -30), (-29, -30), (-29, -29), (-30, -29))},
        {"type": "Feature", "properties": {"NAME": "Bowtie Island", "ISO": "BOW"},
         "geometry": polygon_3857((-28, -30), (-27, -29), (-27, -30), (-28, -29))},
        {"type": "Feature", "properties": {"NAME": "", "ISO": "NON"},
         "geometry": polygon_3857((-26, -30), (-25, -30), (-25, -29), (-26, -29))},
    ]
    path = tmp_path / "boundaries.geojson"
    path.write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}},
        "features": features,
    }))
    return path


# -- boundaries load (no server) -------------------------------------------------------------------

def test_boundaries_load_reprojects_repairs_and_skips_nameless(backend_env, boundaries_geojson):
    result = autopkg("boundaries", "load", str(boundaries_geojson), "--name-column", "NAME", "--admin-level", "2", env=backend_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded 2, skipped 1"
    assert "feature 2: empty name, skipped" in result.stderr
    assert re.search(r"feature 1 \(Bowtie Island\): repaired invalid geometry", result.stderr)

    from backend.boundaries import BoundaryStore

    store = BoundaryStore(Path(backend_env["CCGAUTOPKG_DATA_DIR"]) / "boundaries.db")
    try:
        testland = store.get("testland")
        assert testland["admin_level"] == 2 and testland["name_long"] == "Testland"
        assert store.get_geometry("testland").bounds == pytest.approx((-30, -30, -29, -29), abs=1e-6)
        bowtie = store.get_geometry("bowtie_island")
        assert bowtie.is_valid and len(bowtie.geoms) == 2
        assert bowtie.bounds == pytest.approx((-28, -30, -27, -29), abs=1e-6)
        assert [b["name"] for b in store.search_point(-29.5, -29.5)] == ["testland"]
    finally:
        store.close()


def test_boundaries_load_reads_a_geopackage_in_web_mercator(backend_env, tmp_path):
    fiona = pytest.importorskip("fiona")
    path = tmp_path / "regions.gpkg"
    schema = {"geometry": "Polygon", "properties": {"label": "str"}}
    with fiona.open(path, "w", driver="GPKG", crs="EPSG:3857", schema=schema, layer="regions") as dst:
        dst.write({"type": "Feature", "properties": {"label": "Mercatoria"}, "geometry": polygon_3857((20, -5), (21, -5), (21, -4), (20, -4))})

    result = autopkg("boundaries", "load", str(path), "--name-column", "label", "--admin-level", "2", env=backend_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded 1, skipped 0"
    from backend.boundaries import BoundaryStore

    store = BoundaryStore(Path(backend_env["CCGAUTOPKG_DATA_DIR"]) / "boundaries.db")
    try:
        assert store.get_geometry("mercatoria").bounds == pytest.approx((20, -5, 21, -4), abs=1e-6)
    finally:
        store.close()


def test_boundaries_load_missing_column_names_the_available_ones(backend_env, boundaries_geojson):
    result = autopkg("boundaries", "load", str(boundaries_geojson), "--name-column", "NOPE", env=backend_env)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert re.search(r"^autopkg: column 'NOPE' not found .*available columns: NAME, ISO$", result.stderr, re.M), result.stderr


def test_boundaries_load_missing_file_is_a_clear_error(backend_env, tmp_path):
    missing = tmp_path / "nowhere.geojson"
    result = autopkg("boundaries", "load", str(missing), "--name-column", "NAME", env=backend_env)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"autopkg: file not found: {missing}" in result.stderr


# -- settings --------------------------------------------------------------------------------------

def test_settings_lists_every_variable(backend_env):
    from backend.settings import PREFIX, Settings

    result = autopkg("settings", env=backend_env)

    assert result.returncode == 0, result.stderr
    listed = re.findall(r"^(CCGAUTOPKG_\w+)=", result.stdout, re.M)
    expected = [PREFIX + f.name.upper() for f in dataclasses.fields(Settings)]
    assert listed == expected
    # every CCGAUTOPKG_ variable the settings module mentions is among them
    source = (ROOT / "backend" / "settings.py").read_text()
    declared = {PREFIX + name.upper() for name in re.findall(r"^    (\w+): [\w\[\], ]+ = setting\(", source, re.M)}
    assert declared == set(expected)
    assert "CCGAUTOPKG_WORKERS=\n" in result.stdout  # default: the number of cores


# -- against a running backend ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_backend(tmp_path_factory, seeded_boundaries_db):
    """One `autopkg serve` for this module (like `served`, shared to keep the module fast)."""
    backend = module_backend(tmp_path_factory, seeded_boundaries_db, "cli")
    yield backend
    backend.stop()


def test_boundaries_search_by_name_prints_exact_match_first(cli_backend):
    result = autopkg("boundaries", "search", "gambia", "--url", cli_backend.url, env=cli_backend.env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "gambia\tGambia"


def test_boundaries_search_by_point_prints_kenya(cli_backend):
    result = autopkg("boundaries", "search", "--latitude", "-1.29", "--longitude", "36.82", "--url", cli_backend.url, env=cli_backend.env)
    assert result.returncode == 0, result.stderr
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["kenya", "kenya_nairobi"]


def test_boundaries_search_without_name_or_point_is_refused(cli_backend):
    result = autopkg("boundaries", "search", "--url", cli_backend.url, env=cli_backend.env)
    assert result.returncode != 0
    assert "give a NAME, or --latitude and --longitude" in result.stderr


def test_processors_lists_test_processor(cli_backend):
    result = autopkg("processors", "--url", cli_backend.url, env=cli_backend.env)
    assert result.returncode == 0, result.stderr
    names = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert TEST in names and FAIL in names and "natural_earth_admin1.version_1" in names
    assert any(line.startswith(f"{TEST}\t") and line.endswith("\tCC-BY-4.0") for line in result.stdout.splitlines())


def test_jobs_submit_wait_shows_progress_and_the_package_appears(cli_backend):
    url, env = cli_backend.url, cli_backend.env
    result = autopkg("jobs", "submit", "--boundary", "gambia", "--processor", TEST, "--wait", "--url", url, env=env)

    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", job_id), result.stdout
    bars = [b for b in result.stderr.splitlines() if b.startswith("[")]  # "\r"-separated updates
    assert bars, result.stderr
    assert re.match(r"\[#{30}\] 100\.0% ", bars[-1]) and f"{TEST}=SUCCESS" in bars[-1]

    status = autopkg("jobs", "status", job_id, "--url", url, env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["job_group_status"] == "COMPLETE"

    listing = autopkg("packages", "--url", url, env=env)
    assert listing.returncode == 0, listing.stderr
    assert "gambia" in [line.split("\t")[0] for line in listing.stdout.splitlines()]

    shown = autopkg("packages", "gambia", "--url", url, env=env)
    assert shown.returncode == 0, shown.stderr
    package = json.loads(shown.stdout)
    assert package["boundary_name"] == "gambia"
    assert [r["name"] for r in package["datapackage"]["resources"]] == ["test_processor-version_1"]


def test_jobs_submit_wait_with_failing_processor_exits_1_and_names_the_failure(cli_backend):
    result = autopkg("jobs", "submit", "--boundary", "gambia", "--processor", FAIL, "--wait", "--url", cli_backend.url, env=cli_backend.env)

    assert result.returncode == 1
    assert re.fullmatch(r"[0-9a-f]{32}", result.stdout.strip())
    assert f"{FAIL}: FAILURE" in result.stderr
    assert "test-fail-processor failed as expected" in result.stderr


def test_jobs_submit_unknown_boundary_exits_2_with_the_api_message(cli_backend):
    result = autopkg("jobs", "submit", "--boundary", "atlantis", "--processor", TEST, "--url", cli_backend.url, env=cli_backend.env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Requested boundary atlantis could not be found" in result.stderr and "HTTP 400" in result.stderr
    assert "Traceback" not in result.stderr


def test_packages_unknown_boundary_exits_2(cli_backend):
    result = autopkg("packages", "atlantis", "--url", cli_backend.url, env=cli_backend.env)
    assert result.returncode == 2
    assert "Package atlantis not found" in result.stderr


@pytest.mark.parametrize("args", [["processors"], ["packages"], ["boundaries", "search", "gambia"],
                                  ["jobs", "submit", "--boundary", "gambia", "--processor", TEST]])
def test_no_backend_listening_is_a_clear_error(backend_env, args):
    url = f"http://127.0.0.1:{free_port()}"
    result = autopkg(*args, "--url", url, env=backend_env)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"autopkg: cannot reach {url}: Connection refused" in result.stderr


def test_url_defaults_to_ccgautopkg_url(cli_backend):
    result = autopkg("boundaries", "search", "gambia", env={**cli_backend.env, "CCGAUTOPKG_URL": cli_backend.url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "gambia\tGambia"
