"""Black-box conformance of `/v1` with the predecessor service (nismod/irv-autopkg).

Written from the predecessor's routers, schemas and helpers (`api/`) and its integration tests
(`tests/api/integration/`, the jobs router as of the last version that ran jobs), against a real
`autopkg serve` over HTTP. One test is one expectation, so `pytest tests/test_conformance_v1.py`
counts them. Where this project deliberately differs (README "Differences from the
predecessor"), the test asserts the documented behaviour and says so in its name.
"""
from __future__ import annotations

import json
import shutil
import time
import uuid

import pytest
import requests

from tests.conftest import module_backend

TEST = "test_processor.version_1"
FAIL = "test_fail_processor.version_1"
# The predecessor's integration test expects exactly this for the test processor.
EXPECTED_PROCESSOR_VERSION = {
    "name": "test_processor.version_1",
    "description": "A test processor for nightlights",
    "version": "version_1",
    "data_author": "Nightlights Author",
    "data_title": "",
    "data_title_long": "",
    "data_summary": "",
    "data_citation": "",
    "data_license": {
        "name": "CC-BY-4.0",
        "path": "https://creativecommons.org/licenses/by/4.0/",
        "title": "Creative Commons Attribution 4.0",
    },
    "data_origin_url": "http://url",
    "data_formats": ["GeoTIFF"],
}
VERSION_KEYS = set(EXPECTED_PROCESSOR_VERSION) | {"status", "uri"}
JOB_STATES = {"PENDING", "SUCCESS", "FAILURE", "EXECUTING", "RETRY", "SKIPPED", "REVOKED"}


@pytest.fixture(scope="module")
def api(tmp_path_factory, seeded_boundaries_db):
    backend = module_backend(tmp_path_factory, seeded_boundaries_db, "conformance")
    yield backend
    backend.stop()


def get(api, path, **params):
    return requests.get(api.url + path, params=params, timeout=30)


def post_job(api, body):
    return requests.post(api.url + "/v1/jobs", json=body, timeout=30)


# -- probes ------------------------------------------------------------------------------------------

def test_liveness_is_alive(api):
    response = get(api, "/v1/liveness")
    assert response.status_code == 200 and response.json()["status"] == "alive"


def test_readiness_is_ready(api):
    response = get(api, "/v1/readiness")
    assert response.status_code == 200 and response.json()["status"] == "ready"


# -- boundaries ----------------------------------------------------------------------------------

def test_boundary_list_is_summaries_without_geometry(api):
    body = get(api, "/v1/boundaries").json()
    assert body and all({"name", "name_long"} <= set(b) and "geometry" not in b for b in body)


def test_boundary_detail_has_name_and_multipolygon(api):
    body = get(api, "/v1/boundaries/gambia").json()
    assert body["name"] == "gambia"
    assert body["geometry"]["type"] == "MultiPolygon" and "coordinates" in body["geometry"]


def test_boundary_detail_envelope_is_polygon(api):
    assert get(api, "/v1/boundaries/gambia").json()["envelope"]["type"] == "Polygon"


def test_boundary_detail_admin_level_is_a_string(api):
    assert isinstance(get(api, "/v1/boundaries/gambia").json()["admin_level"], str)


def test_unknown_boundary_is_404(api):
    assert get(api, "/v1/boundaries/lkjhasdklfj").status_code == 404


def test_unknown_boundary_message(api):
    assert get(api, "/v1/boundaries/lkjhasdklfj").json() == {"detail": "Requested boundary lkjhasdklfj could not be found"}


def test_search_by_name_finds_substring_summaries(api):
    body = get(api, "/v1/boundaries/search", name="mbi").json()
    assert {"mozambique", "gambia", "zambia"} <= {b["name"] for b in body}
    assert all("geometry" not in b for b in body)


def test_search_by_name_nothing_found_is_empty_list(api):
    response = get(api, "/v1/boundaries/search", name="kjhasdlfkhjasdf")
    assert response.status_code == 200 and response.json() == []


def test_search_by_coordinates(api):
    assert "algeria" in [b["name"] for b in get(api, "/v1/boundaries/search", latitude=28.2, longitude=3.2).json()]


def test_search_by_coordinates_with_zero_longitude(api):
    assert "algeria" in [b["name"] for b in get(api, "/v1/boundaries/search", latitude=28.2, longitude=0.0).json()]


def test_search_by_coordinates_nothing_found_is_empty_list(api):
    response = get(api, "/v1/boundaries/search", latitude=-30.0, longitude=-20.0)
    assert response.status_code == 200 and response.json() == []


def test_difference_search_out_of_range_latitude_is_400(api):
    assert get(api, "/v1/boundaries/search", latitude=128.2, longitude=113.2).status_code == 400


def test_search_without_name_or_coordinates_is_400_with_message(api):
    response = get(api, "/v1/boundaries/search")
    assert response.status_code == 400
    assert response.json() == {"detail": "Search must include name or valid latitude, longitude coordinates"}


# -- processors ----------------------------------------------------------------------------------

def test_processor_list_includes_test_processor(api):
    response = get(api, "/v1/processors")
    assert response.status_code == 200 and "test_processor" in [p["name"] for p in response.json()]


def test_processor_list_versions_have_status_and_uri(api):
    versions = [v for p in get(api, "/v1/processors").json() for v in p["versions"]]
    assert versions and all(VERSION_KEYS <= set(v) and v["status"] == "" and v["uri"] == "" for v in versions)


def test_processor_list_version_types(api):
    for p in get(api, "/v1/processors").json():
        for v in p["versions"]:
            assert isinstance(v["data_license"], dict) and all(isinstance(f, str) for f in v["data_formats"])


def test_unknown_processor_is_404(api):
    assert get(api, "/v1/processors/noexist").status_code == 404


def test_unknown_processor_message(api):
    assert get(api, "/v1/processors/noexist").json() == {"detail": "no such processor: noexist"}


def test_unknown_processor_version_is_404(api):
    assert get(api, "/v1/processors/test_processor/noexist").status_code == 404


def test_unknown_processor_version_message(api):
    assert get(api, "/v1/processors/test_processor/noexist").json() == {"detail": "no such processor version: test_processor.noexist"}


def test_processor_by_name(api):
    body = get(api, "/v1/processors/test_processor").json()
    assert body["name"] == "test_processor" and len(body["versions"]) == 1
    assert body["versions"][0] == EXPECTED_PROCESSOR_VERSION


def test_processor_version(api):
    assert get(api, "/v1/processors/test_processor/version_1").json() == EXPECTED_PROCESSOR_VERSION


# -- packages (trees laid out on disk as the predecessor's tests do) --------------------------------

def datapackage(name: str, datasets: list[str]) -> dict:
    license_ = {"name": "ODbL-1.0", "path": "https://opendefinition.org/licenses/odc-odbl", "title": "Open Data Commons Open Database License 1.0"}
    return {"name": name, "title": name, "licenses": [license_], "resources": [
        {"name": d, "version": "version_1", "path": ["data.gpkg"], "description": "desc", "format": "GEOPKG",
         "hashes": ["d7bbfe3d26e2142ee24458df087ed154194fe5de"], "bytes": 22786048, "license": license_, "sources": ["a url"]}
        for d in datasets]}


@pytest.fixture
def tree(api):
    """Package folders written straight into the package root, removed afterwards."""
    root = api.data_dir / "packages"
    made = []

    def make(package: str, datasets: dict[str, str]) -> None:
        folder = root / package
        shutil.rmtree(folder, ignore_errors=True)
        for dataset, version in datasets.items():
            (folder / "datasets" / dataset / version).mkdir(parents=True)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "datapackage.json").write_text(json.dumps(datapackage(package, list(datasets))))
        made.append(folder)

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


def test_package_list_has_the_packages_on_disk(api, tree):
    tree("gambia", {"osm_roads": "20221201"})
    tree("zambia", {"osm_roads": "20230401"})
    assert {"gambia", "zambia"} <= {p["boundary_name"] for p in get(api, "/v1/packages").json()}


def test_package_list_uri_is_the_package_folder(api, tree):
    tree("zambia", {"osm_roads": "20230401"})
    (entry,) = [p for p in get(api, "/v1/packages").json() if p["boundary_name"] == "zambia"]
    assert entry["uri"].endswith("/zambia/")


def test_unknown_package_is_404_with_message(api):
    response = get(api, "/v1/packages/noexist")
    assert response.status_code == 404 and response.json() == {"detail": "Package noexist not found"}


def test_package_without_known_datasets_is_404_with_message(api, tree):
    tree("gambia", {"noexist": "version_1"})
    response = get(api, "/v1/packages/gambia")
    assert response.status_code == 404
    assert response.json() == {"detail": "Package gambia has no existing or executing datasets"}


@pytest.fixture
def gambia_package(api, tree):
    tree("gambia", {"natural_earth_raster": "version_1", "osm_roads": "20221201"})
    response = get(api, "/v1/packages/gambia")
    assert response.status_code == 200, response.text
    return response.json()


def test_package_lists_its_processor_versions(gambia_package):
    assert gambia_package["boundary_name"] == "gambia"
    names = [f"{p['name']}.{v['version']}" for p in gambia_package["processors"] for v in p["versions"]]
    assert names == ["natural_earth_raster.version_1"]


def test_package_processor_version_uri_is_the_dataset_version_folder(gambia_package):
    (version,) = gambia_package["processors"][0]["versions"]
    assert version["uri"].endswith("/gambia/datasets/natural_earth_raster/version_1/")
    assert VERSION_KEYS <= set(version)


def test_package_nests_its_datapackage(gambia_package):
    resources = gambia_package["datapackage"]["resources"]
    assert resources
    for r in resources:
        assert isinstance(r["path"], list) and isinstance(r["hashes"], list) and len(r["path"]) == len(r["hashes"])
        assert isinstance(r["bytes"], int) and {"name", "path", "title"} <= set(r["license"])


def test_package_has_its_full_boundary(gambia_package):
    boundary = gambia_package["boundary"]
    assert boundary["name"] == "gambia" and boundary["geometry"]["type"] == "MultiPolygon"
    assert boundary["envelope"]["type"] == "Polygon" and isinstance(boundary["admin_level"], str)


def test_package_uri_is_the_package_folder(gambia_package):
    assert gambia_package["uri"].endswith("/gambia/")


# -- jobs ----------------------------------------------------------------------------------------

def test_difference_unknown_job_is_404_with_message(api):
    job_id = uuid.uuid4().hex
    response = get(api, f"/v1/jobs/{job_id}")
    assert response.status_code == 404 and response.json() == {"detail": f"Job not found: {job_id}"}


def test_submit_unknown_boundary_is_400_with_message(api):
    response = post_job(api, {"boundary_name": "noexist", "processors": ["natural_earth_raster.version_1"]})
    assert response.status_code == 400 and response.json() == {"detail": "Requested boundary noexist could not be found"}


def test_submit_unknown_processor_is_400_with_message(api):
    response = post_job(api, {"boundary_name": "gambia", "processors": ["noexist.version_1"]})
    assert response.status_code == 400 and response.json() == {"detail": "Invalid processor.version: noexist.version_1"}


def test_submit_duplicate_processors_is_422(api):
    body = {"boundary_name": "gambia", "processors": ["natural_earth_raster.version_1"] * 2}
    assert post_job(api, body).status_code == 422


def test_submit_duplicate_processors_message(api):
    body = {"boundary_name": "gambia", "processors": ["natural_earth_raster.version_1"] * 2}
    assert post_job(api, body).json()["detail"][0]["msg"] == "duplicate processors not allowed"


def poll(api, job_id: str, timeout: float = 60) -> list[dict]:
    """The predecessor's client loop: poll while the group is PENDING; every answer seen."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(get(api, f"/v1/jobs/{job_id}").json())
        if seen[-1].get("job_group_status") != "PENDING":
            return seen
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still PENDING after {timeout} s")


@pytest.fixture(scope="module")
def ghana_job(api):
    response = post_job(api, {"boundary_name": "ghana", "processors": [TEST]})
    return response, poll(api, response.json()["job_id"])


def test_submit_is_202_with_job_id(ghana_job):
    response, _ = ghana_job
    assert response.status_code == 202 and set(response.json()) >= {"job_id"}


def test_job_processor_entries_carry_the_job_id(ghana_job):
    response, seen = ghana_job
    assert all(s["job_group_processors"][0]["job_id"] == response.json()["job_id"] for s in seen)


def test_job_group_is_pending_until_complete(ghana_job):
    _, seen = ghana_job
    assert {s["job_group_status"] for s in seen[:-1]} <= {"PENDING"} and seen[-1]["job_group_status"] == "COMPLETE"


def test_job_group_percent_is_an_int(ghana_job):
    _, seen = ghana_job
    assert all(type(s["job_group_percent_complete"]) is int for s in seen) and seen[-1]["job_group_percent_complete"] == 100


def test_job_progress_percent_is_an_int(ghana_job):
    _, seen = ghana_job
    progress = [p["job_progress"] for s in seen for p in s["job_group_processors"] if p.get("job_progress")]
    assert all(type(p["percent_complete"]) is int for p in progress)


def test_job_states_are_the_predecessors(ghana_job):
    _, seen = ghana_job
    assert {p["job_status"] for s in seen for p in s["job_group_processors"]} <= JOB_STATES


def test_job_builds_the_package(api, ghana_job):
    api.wait_provenance("ghana", ghana_job[0].json()["job_id"])  # written just after COMPLETE
    folder = api.data_dir / "packages" / "ghana"
    assert all((folder / doc).is_file() for doc in ("index.html", "license.html", "version.html", "provenance.json", "datapackage.json"))
    assert (folder / "datasets" / "test_processor" / "version_1").is_dir()


def test_failing_job_completes_with_failure(api):
    seen = poll(api, post_job(api, {"boundary_name": "zimbabwe", "processors": [FAIL]}).json()["job_id"])
    assert seen[-1]["job_group_status"] == "COMPLETE"
    assert seen[-1]["job_group_processors"][0]["job_status"] == "FAILURE"


@pytest.fixture(scope="module")
def duplicate_jobs(api):
    responses = [post_job(api, {"boundary_name": "zambia", "processors": [TEST]}) for _ in range(8)]
    return responses, [poll(api, r.json()["job_id"])[-1] for r in responses]


def test_duplicate_submissions_are_all_accepted(duplicate_jobs):
    responses, _ = duplicate_jobs
    assert [r.status_code for r in responses] == [202] * 8


def test_duplicate_submissions_all_complete(duplicate_jobs):
    _, finals = duplicate_jobs
    assert [s["job_group_status"] for s in finals] == ["COMPLETE"] * 8


def test_difference_duplicate_submissions_run_the_processor_once(api, duplicate_jobs):
    """The predecessor reports the others as SKIPPED; here they follow the running one and report
    its outcome, so every one is SUCCESS and all but one name the job they followed."""
    _, finals = duplicate_jobs
    entries = [s["job_group_processors"][0] for s in finals]
    assert all(e["job_status"] in ("SUCCESS", "SKIPPED") for e in entries)
    assert len([e for e in entries if e["job_status"] == "SUCCESS" and not e.get("followed_job_id")]) == 1
    assert sorted(p.name for p in (api.data_dir / "packages" / "zambia" / "datasets").iterdir()) == ["test_processor"]


# -- the typed contract ----------------------------------------------------------------------------

def test_openapi_gives_every_json_route_a_response_schema(api):
    """Every route but the package files answers JSON described by a schema, and the bearer
    scheme and the boundary upload body are declared."""
    spec = get(api, "/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/packages/"):
                continue
            for code, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                assert schema, f"{method.upper()} {path} {code} has no response schema"
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    upload = spec["paths"]["/v1/boundaries"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert upload == {"$ref": "#/components/schemas/BoundaryUpload"}
    assert {"Polygon", "MultiPolygon", "Feature", "FeatureCollection"} <= set(spec["components"]["schemas"])
