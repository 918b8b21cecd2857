"""The `autopkg` command line: loading boundaries and settings as real subprocesses, and driving a
running backend in-process (`main([...])`)."""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import subprocess
from pathlib import Path

import pytest
import requests

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


# -- against a running backend, in-process ---------------------------------------------------------

@pytest.fixture(scope="module")
def cli_backend(tmp_path_factory, seeded_boundaries_db):
    """One `autopkg serve` for this module (like `served`, shared to keep the module fast)."""
    backend = module_backend(tmp_path_factory, seeded_boundaries_db, "cli")
    yield backend
    backend.stop()


@pytest.fixture
def run(cli_backend, capsys, monkeypatch):
    """`autopkg ARGS` in this process against the module's backend, found through CCGAUTOPKG_URL."""
    from backend.cli import main

    for name in [n for n in os.environ if n.startswith("CCGAUTOPKG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CCGAUTOPKG_URL", cli_backend.url)

    def autopkg_main(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return autopkg_main


def test_server_url_from_ccgautopkg_url_else_host_and_port():
    from backend.cli import server_url

    assert server_url({"CCGAUTOPKG_URL": "http://example.org:1", "CCGAUTOPKG_PORT": "9"}) == "http://example.org:1"
    assert server_url({}) == "http://127.0.0.1:8000"
    assert server_url({"CCGAUTOPKG_HOST": "0.0.0.0", "CCGAUTOPKG_PORT": "8123"}) == "http://127.0.0.1:8123"
    assert server_url({"CCGAUTOPKG_HOST": "::1", "CCGAUTOPKG_PORT": "8123"}) == "http://[::1]:8123"


def test_the_port_the_server_reads_is_where_the_cli_looks(run, cli_backend, monkeypatch):
    monkeypatch.delenv("CCGAUTOPKG_URL")
    monkeypatch.setenv("CCGAUTOPKG_PORT", str(cli_backend.port))
    code, out, err = run("processors")
    assert code == 0, err
    assert TEST in [line.split("\t")[0] for line in out.splitlines()]


def test_boundaries_search_by_name_prints_exact_match_first(run):
    code, out, err = run("boundaries", "search", "gambia")
    assert code == 0, err
    assert out.splitlines()[0] == "gambia\tGambia"


def test_boundaries_search_by_point_prints_kenya(run):
    code, out, err = run("boundaries", "search", "--latitude", "-1.29", "--longitude", "36.82")
    assert code == 0, err
    assert [line.split("\t")[0] for line in out.splitlines()] == ["kenya", "kenya_nairobi"]


def test_boundaries_search_without_a_match_says_so(run):
    assert run("boundaries", "search", "atlantis") == (1, "", "autopkg: no boundary matches 'atlantis'\n")


def test_boundaries_search_without_name_or_point_is_refused(run):
    with pytest.raises(SystemExit, match="give a NAME, or --latitude and --longitude"):
        run("boundaries", "search")


def test_processors_lists_test_processor(run):
    code, out, err = run("processors")
    assert code == 0, err
    names = [line.split("\t")[0] for line in out.splitlines()]
    assert TEST in names and FAIL in names and "natural_earth_admin1.version_1" in names
    assert any(line.startswith(f"{TEST}\t") and line.endswith("\tCC-BY-4.0") for line in out.splitlines())


def test_jobs_submit_by_long_name_waits_with_compact_progress_and_ends_with_the_package(run, cli_backend):
    code, out, err = run("jobs", "submit", "--boundary", "South Sudan", "--processor", TEST.upper(), "--wait")

    assert code == 0, err
    job_id = out.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", job_id), out
    lines = err.splitlines()
    assert lines and all(len(line) <= 80 for line in lines), err
    assert re.fullmatch(rf"100%  SUCCESS    {TEST}  done", lines[-4]), err  # last progress line, no terminal
    assert lines[-3:] == [f"Job {job_id} complete: 1 SUCCESS", f"  {TEST}: SUCCESS - 1 file, 4 B",
                          f"Package: {cli_backend.url}/packages/s_sudan/"]
    assert requests.get(lines[-1].split(" ", 1)[1], timeout=10).status_code == 200

    code, out, _ = run("jobs", "status", job_id)
    assert code == 0 and json.loads(out)["job_group_status"] == "COMPLETE"
    code, out, _ = run("packages")
    assert f"s_sudan\t{cli_backend.url}/packages/s_sudan/" in out.splitlines()
    code, out, _ = run("packages", "s. sudan", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)["datapackage"]["resources"]] == ["test_processor-version_1"]
    code, out, _ = run("packages", "s_sudan")
    assert out.splitlines() == [f"s_sudan\t{cli_backend.url}/packages/s_sudan/", f"  {TEST}\tnightlights",
                                "    datasets/test_processor/version_1/data/test_processor-version_1-s_sudan.tif\t4 B"]
    code, out, _ = run("jobs", "list", "--boundary", "south sudan", "--state", "COMPLETE")
    assert code == 0 and [line.split("\t")[0] for line in out.splitlines()] == [job_id]

    code, out, err = run("jobs", "submit", "--boundary", "s_sudan", "--processor", TEST, "--replace", "--wait")
    assert code == 0 and f"  {TEST}: SUCCESS - 1 file, 4 B" in err.splitlines()
    assert run("packages", "s_sudan", "--delete")[0] == 0
    assert "s_sudan" not in run("packages")[1]


def test_jobs_submit_wait_with_failing_processor_exits_1_and_names_the_failure(run):
    code, out, err = run("jobs", "submit", "--boundary", "gambia", "--processor", FAIL, "--wait")

    assert code == 1
    assert re.fullmatch(r"[0-9a-f]{32}", out.strip())
    summary = " ".join(err.split("complete: 1 FAILURE")[1].split())
    assert f"{FAIL}: FAILURE - ProcessorError - test-fail-processor failed as expected" in summary, err


def test_ctrl_c_while_waiting_says_the_job_goes_on(run, cli_backend, monkeypatch):
    def interrupt(*_):
        raise KeyboardInterrupt  # what Ctrl-C raises in the polling loop

    monkeypatch.setattr("backend.progress.JobProgressView.update", interrupt)
    code, out, err = run("jobs", "submit", "--boundary", "senegal", "--processor", TEST, "--wait")

    job_id = out.strip()
    assert code == 130
    assert f"stopped waiting; job {job_id} goes on in the backend" in err
    assert f"cancel it: autopkg jobs cancel {job_id}" in err and "Traceback" not in err
    assert cli_backend.wait_job(job_id)["job_group_processors"][0]["job_status"] == "SUCCESS"


@pytest.mark.parametrize("args, message", [
    (["--boundary", "gambai", "--processor", TEST], "autopkg: unknown boundary 'gambai'; did you mean: gambia (Gambia)"),
    (["--boundary", "atlantis", "--processor", TEST], "autopkg: unknown boundary 'atlantis'; no boundary name is like it"),
    (["--boundary", "gambia", "--processor", "test_processor.version_9"],
     "autopkg: unknown version 'version_9' of test_processor; valid: test_processor.version_1"),
    (["--boundary", "gambia", "--processor", "natural_earth_admin"],
     "autopkg: unknown processor 'natural_earth_admin'; did you mean: natural_earth_admin1"),
])
def test_jobs_submit_says_what_was_meant(run, args, message):
    code, out, err = run("jobs", "submit", *args)
    assert (code, out) == (2, "")
    assert err.startswith(message), err


def test_estimate_prints_each_processor_and_the_total(run):
    code, out, err = run("estimate", "--boundary", "Gambia", "--processor", TEST, "--processor", "natural_earth_admin1.version_1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{TEST}\t1 file\t4 B\tfixed: the test processor writes a 4-byte file"
    assert lines[1].startswith("natural_earth_admin1.version_1\t1 file\t") and lines[2].startswith("total for gambia\t2 files\t")


def test_packages_unknown_boundary_exits_2(run):
    code, _, err = run("packages", "atlantis")
    assert code == 2 and err.startswith("autopkg: unknown boundary 'atlantis'")


def test_progress_on_a_terminal_is_one_line_that_fits_80_columns():
    from backend.progress import JobProgressView
    from backend.schemas import JobGroupStatus

    long_name = "a_processor_with_a_very_long_dataset_name.global_mosaics_version_1"
    entry = {"job_id": "0" * 32, "processor_name": long_name, "job_status": "EXECUTING", "job_result": None,
             "job_progress": {"percent_complete": 42, "percent": 42.5, "current_task": "clipping tile 17 of 140 " * 3}}
    status = JobGroupStatus.model_validate({
        "job_id": "0" * 32, "boundary_name": "kenya", "job_group_status": "PENDING", "job_group_state": "EXECUTING",
        "job_group_percent_complete": 21, "job_group_percent": 21.25, "job_group_cancelled": False,
        "job_group_processors": [entry, {**entry, "processor_name": "test_processor.version_1", "job_status": "PENDING"}]})
    out = io.StringIO()
    view = JobProgressView(out, terminal=True)
    view.update(status)
    view.update(status)
    assert out.getvalue().count("\r") == 2 and "\n" not in out.getvalue()
    line = out.getvalue().split("\r")[-1].removesuffix("\x1b[K")
    assert len(line) <= 79 and line.startswith("[####................]  21%  0/2 done  a_processor_with")


@pytest.mark.parametrize("args", [["processors"], ["packages"], ["boundaries", "search", "gambia"],
                                  ["jobs", "submit", "--boundary", "gambia", "--processor", TEST]])
def test_no_backend_listening_is_a_clear_error_without_warnings(backend_env, args):
    url = f"http://127.0.0.1:{free_port()}"
    result = autopkg(*args, "--url", url, env=backend_env)

    assert result.returncode == 2
    assert result.stderr == f"autopkg: cannot reach {url}: Connection refused\n"
