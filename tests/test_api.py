"""The HTTP API of a real `autopkg serve` subprocess, driven only through HTTP."""
from __future__ import annotations

import http.client
import json
import os
import time
from pathlib import Path

import pytest
from frictionless import validate

from backend.cli import SERVE_WORKER_NICENESS
from tests.conftest import parent_pid, processor_states, session_processes, wait_session_ended

TEST = "test_processor.version_1"
FAIL = "test_fail_processor.version_1"
ADMIN1 = "natural_earth_admin1.version_1"


def test_health_openapi_and_redoc_are_served(shared_served):
    assert shared_served.get("/v1/liveness").json() == {"status": "alive"}
    ready = shared_served.get("/v1/readiness").json()
    assert ready["checks"] == {"database": "ok", "queue": "ok", "storage": "ok"}
    paths = shared_served.get("/openapi.json").json()["paths"]
    assert "/v1/jobs/{job_id}" in paths and "/v1/boundaries/search" in paths
    assert "redoc" in shared_served.get("/redoc").text.lower()


def test_boundary_search_by_name_is_case_insensitive_and_exact_match_first(shared_served):
    results = shared_served.get("/v1/boundaries/search", params={"name": "GAMBIA"}).json()
    assert results[0] == {"id": results[0]["id"], "name": "gambia", "name_long": "Gambia"}
    assert any(r["name"] == "gambia_banjul" for r in results)


def test_boundary_search_by_point_finds_country_and_province(shared_served):
    names = [r["name"] for r in shared_served.get("/v1/boundaries/search", params={"latitude": -1.29, "longitude": 36.82}).json()]
    assert names == ["kenya", "kenya_nairobi"]
    assert shared_served.get("/v1/boundaries/search", params={"latitude": -30.0, "longitude": -20.0}).json() == []


def test_boundary_detail_has_multipolygon_and_envelope(shared_served):
    body = shared_served.get("/v1/boundaries/gambia").json()
    assert body["geometry"]["type"] == "MultiPolygon"
    assert body["envelope"]["type"] == "Polygon"
    assert body["admin_level"] == "0" and body["name_long"] == "Gambia"


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("/v1/boundaries/atlantis", 404, "Requested boundary atlantis could not be found"),
        ("/v1/boundaries/search", 400, "Search must include name or valid latitude, longitude coordinates"),
        ("/v1/boundaries/search?latitude=95&longitude=0", 400, "latitude"),
        ("/v1/processors/nope", 404, "no such processor: nope"),
        ("/v1/processors/test_processor/version_9", 404, "no such processor version: test_processor.version_9"),
        ("/v1/packages/atlantis", 404, "Package atlantis not found"),
        ("/v1/jobs/0123456789abcdef0123456789abcdef", 404, "Job not found: 0123456789abcdef0123456789abcdef"),
        ("/v1/jobs/not-a-job", 404, "Job not found: not-a-job"),
    ],
)
def test_bad_reads_get_json_errors(shared_served, path, status, message):
    response = shared_served.get(path)
    assert response.status_code == status
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"boundary_name": "atlantis", "processors": [TEST]}, "Requested boundary atlantis could not be found"),
        ({"boundary_name": "gambia", "processors": ["nope.version_1"]}, "Invalid processor.version: nope.version_1"),
        ({"boundary_name": "gambia", "processors": []}, "no processors requested"),
    ],
)
def test_bad_job_requests_are_400_with_reason(shared_served, body, message):
    response = shared_served.post("/v1/jobs", json=body)
    assert response.status_code == 400
    assert response.json()["detail"] == message


def test_malformed_job_request_is_422(shared_served):
    response = shared_served.post("/v1/jobs", data="{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "detail" in response.json()


def test_processors_list_the_test_processors(shared_served):
    """(The exact metadata shape is a conformance test, tests/test_conformance_v1.py.)"""
    names = {v["name"] for d in shared_served.get("/v1/processors").json() for v in d["versions"]}
    assert {TEST, FAIL, ADMIN1} <= names


def test_job_runs_to_success_with_progress_and_a_valid_package(served):
    job_id = served.submit("gambia", [TEST, ADMIN1])
    seen = served.wait_job(job_id, until=lambda s: any(p["job_status"] == "EXECUTING" for p in s["job_group_processors"]))
    assert (seen["job_group_status"], seen["job_group_state"]) == ("PENDING", "EXECUTING")
    status = served.wait_job(job_id)
    assert processor_states(status) == {TEST: "SUCCESS", ADMIN1: "SUCCESS"}
    assert (status["job_group_percent_complete"], status["job_group_percent"], status["job_group_state"]) == (100, 100.0, "COMPLETE")

    package = served.get("/v1/packages/gambia").json()
    assert {d["name"] for d in package["datasets"]} == {"test_processor-version_1", "natural_earth_admin1-version_1"}
    root = served.data_dir / "packages" / "gambia"
    report = validate(str(root / "datapackage.json"))
    assert report.valid, report.flatten(["type", "note"])
    for resource in package["datapackage"]["resources"]:
        assert len(resource["path"]) == len(resource["hashes"]) and isinstance(resource["bytes"], int)
        assert set(resource["license"]) == {"name", "path", "title"}
    gpkg = root / "datasets/natural_earth_admin1/version_1/data/natural_earth_admin1-version_1-gambia.gpkg"
    assert gpkg.is_file()
    for page in ("index.html", "license.html", "version.html", "datasets/natural_earth_admin1/version_1/index.html", "datasets/natural_earth_admin1/version_1/license.html"):
        assert served.get(f"/packages/gambia/{page}").status_code == 200
    entry = served.wait_provenance("gambia", job_id)
    assert set(entry["processors"]) == {TEST, ADMIN1}
    assert len(json.loads((root / "provenance.json").read_text())) == 1
    # The processors ran in worker processes that yield the CPU to the API (serve's own process).
    api = served.processes[0].proc.pid
    for processor in entry["processors"].values():
        niceness = min(19, os.getpriority(os.PRIO_PROCESS, api) + SERVE_WORKER_NICENESS)
        assert os.getpriority(os.PRIO_PROCESS, processor["worker"]["pid"]) == niceness
    # Provenance of sources and software: QGIS's world map, read as a local source, real data.
    (source,) = entry["processors"][ADMIN1]["job_result"]["sources"]
    assert source["url"].startswith("file://") and source["url"].endswith("world_map.gpkg")
    assert source["bytes"] > 0 and len(source["sha256"]) == 64 and source["retrieved"] and source["synthetic"] is False
    assert {"ccg_autopkg", "gdal", "proj"} <= set(entry["software"]) and entry["synthetic"] is False


def test_failing_processor_does_not_fail_the_others(served):
    status = served.wait_job(served.submit("gambia", [FAIL, TEST]))
    assert status["job_group_status"] == "COMPLETE"
    assert processor_states(status) == {FAIL: "FAILURE", TEST: "SUCCESS"}
    failed = next(p for p in status["job_group_processors"] if p["processor_name"] == FAIL)
    assert "test-fail-processor failed as expected" in failed["job_result"]["failed"]


def test_dataset_already_in_package_is_skipped_at_once(served):
    served.wait_job(served.submit("gambia", [TEST]))
    response = served.get(f"/v1/jobs/{served.submit('gambia', [TEST])}")
    assert processor_states(response.json()) == {TEST: "SKIPPED"}


def test_a_second_submission_follows_the_running_one(backend):
    """The second job arrives while the first is producing the dataset: it must follow (mirror
    the first's progress and outcome), never run the processor a second time."""
    backend.env["CCGAUTOPKG_TEST_PROCESSOR_SECONDS"] = "3"
    backend.serve(workers=2)
    first = backend.submit("senegal", [TEST])
    # Its first progress step: the run started, so it holds the dataset's lock (EXECUTING is set
    # just before the lock is taken; a second job queued then could take it first).
    backend.wait_job(first, until=lambda s: s["job_group_processors"][0]["job_progress"]["current_task"] == "waiting")
    second = backend.submit("senegal", [TEST])
    following = backend.wait_job(second, until=lambda s: s["job_group_processors"][0]["followed_job_id"] is not None)
    (entry,) = following["job_group_processors"]
    assert entry["followed_job_id"] == first and entry["job_status"] == "EXECUTING"
    assert entry["job_progress"]["current_task"].startswith(f"following job {first}")
    a, b = backend.wait_job(first), backend.wait_job(second)
    assert processor_states(a) == processor_states(b) == {TEST: "SUCCESS"}
    (ran,), (followed,) = a["job_group_processors"], b["job_group_processors"]
    assert ran["followed_job_id"] is None
    assert followed["followed_job_id"] == first and followed["job_result"]["followed_job_id"] == first
    assert followed["job_result"]["paths"] == ran["job_result"]["paths"]
    assert backend.wait_provenance("senegal", second)["processors"][TEST]["followed_job_id"] == first


def test_cancel_stops_running_and_pending_processors(backend):
    backend.env["CCGAUTOPKG_TEST_PROCESSOR_SECONDS"] = "30"
    backend.serve(workers=1)
    job_id = backend.submit("kenya", [TEST, ADMIN1])
    backend.wait_job(job_id, until=lambda s: "EXECUTING" in processor_states(s).values())
    response = backend.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200 and response.json()["job_group_cancelled"] is True
    status = backend.wait_job(job_id, timeout=10)
    assert set(processor_states(status).values()) == {"REVOKED"}
    assert not (backend.data_dir / "packages/kenya/datasets/test_processor").exists()
    assert backend.delete("/v1/jobs/0123456789abcdef0123456789abcdef").status_code == 404


def test_package_files_support_range_and_refuse_escapes(served):
    served.wait_job(served.submit("gambia", [TEST]))
    path = "/packages/gambia/datasets/test_processor/version_1/data/test_processor-version_1-gambia.tif"
    whole = served.get(path)
    assert whole.content == b"test" and whole.headers["accept-ranges"] == "bytes"
    part = served.get(path, headers={"Range": "bytes=1-2"})
    assert part.status_code == 206 and part.content == b"es"
    assert part.headers["content-range"] == "bytes 1-2/4"
    for escape in ("/packages/../boundaries.db", "/packages/%2e%2e/boundaries.db", "/packages/gambia/.lock", "/packages/gambia/..%2f..%2fhuey.db", "/packages/%00"):
        response = served.get(escape)
        assert response.status_code in (400, 404), escape
        assert b"SQLite" not in response.content


def test_custom_boundary_upload_then_job(served):
    square = {"type": "Polygon", "coordinates": [[[36.7, -1.4], [36.9, -1.4], [36.9, -1.2], [36.7, -1.2], [36.7, -1.4]]]}
    created = served.post("/v1/boundaries", json=square, params={"name_long": "Nairobi square"})
    assert created.status_code == 201
    name = created.json()["name"]
    assert served.post("/v1/boundaries", json=square).status_code == 200
    status = served.wait_job(served.submit(name, [ADMIN1]))
    assert processor_states(status) == {ADMIN1: "SUCCESS"}
    # Empty is a result: a boundary in the ocean, with no state or province, gets an empty layer.
    ocean = {"type": "Polygon", "coordinates": [[[-30, -35], [-25, -35], [-25, -30], [-30, -30], [-30, -35]]]}
    name = served.post("/v1/boundaries", json=ocean, params={"name_long": "South Atlantic"}).json()["name"]
    status = served.wait_job(served.submit(name, [ADMIN1]))
    assert processor_states(status) == {ADMIN1: "SUCCESS"}
    (resource,) = served.get(f"/v1/packages/{name}").json()["datapackage"]["resources"]
    assert resource["files"][0]["empty"] is True and "the layer is empty" in resource["description"]


@pytest.mark.parametrize(
    "payload, status, message",
    [
        (b"{not json", 400, "JSON"),
        (json.dumps({"type": "Point", "coordinates": [0, 0]}).encode(), 400, "Point"),
        (json.dumps({"type": "Polygon", "coordinates": []}).encode(), 400, "empty"),
        (json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [500000, 0], [500000, 500000], [0, 0]]]}).encode(), 400, "EPSG:4326"),
        (json.dumps({"type": "Polygon", "crs": {"type": "name", "properties": {"name": "EPSG:3857"}}, "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}).encode(), 400, "EPSG:3857"),
        (b" " * 17_000_000, 413, "limit"),
    ],
)
def test_bad_boundary_uploads_are_rejected_with_reason(shared_served, payload, status, message):
    response = shared_served.post("/v1/boundaries", data=payload, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_api_token_guards_data_and_jobs_but_not_health(backend):
    backend.env["CCGAUTOPKG_API_TOKEN"] = "s3cret"
    backend.serve(workers=1)
    assert backend.get("/v1/readiness").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        response = backend.get("/v1/boundaries/search", params={"name": "gambia"}, headers=headers)
        assert response.status_code == 401
        assert response.json()["detail"] == "missing or wrong API token (Authorization: Bearer <token>)"
    assert backend.get("/packages/gambia/index.html").status_code == 401
    ok = backend.get("/v1/boundaries/search", params={"name": "gambia"}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()[0]["name"] == "gambia"

    from backend.client import Client, ClientError

    assert Client(backend.url, token="s3cret").search_boundaries(name="kenya")[0].name == "kenya"
    with pytest.raises(ClientError) as error:
        Client(backend.url).processors()
    assert error.value.status_code == 401


def test_jobs_list_filters_by_boundary_and_state_and_replace_runs_again(served):
    first = served.wait_job(served.submit("gambia", [TEST]))
    other = served.submit("senegal", [TEST])
    listed = served.get("/v1/jobs", params={"boundary_name": "gambia"}).json()
    assert [j["job_id"] for j in listed] == [first["job_id"]]
    assert served.get("/v1/jobs").json()[0]["job_id"] == other  # newest first
    served.wait_job(other)
    assert served.get("/v1/jobs", params={"state": "EXECUTING"}).json() == []
    assert {j["job_id"] for j in served.get("/v1/jobs", params={"state": "COMPLETE"}).json()} == {first["job_id"], other}
    assert served.get("/v1/jobs", params={"state": "RUNNING"}).status_code == 422

    data = served.data_dir / "packages/gambia/datasets/test_processor/version_1/data/test_processor-version_1-gambia.tif"
    before = data.stat().st_ino
    assert processor_states(served.wait_job(served.submit("gambia", [TEST]))) == {TEST: "SKIPPED"}
    response = served.post("/v1/jobs", json={"boundary_name": "gambia", "processors": [TEST], "replace": True})
    rerun = served.wait_job(response.json()["job_id"])
    assert processor_states(rerun) == {TEST: "SUCCESS"} and rerun["replace"] is True
    assert data.stat().st_ino != before  # a new file was swapped in
    resources = json.loads((served.data_dir / "packages/gambia/datapackage.json").read_text())["resources"]
    assert [r["name"] for r in resources] == ["test_processor-version_1"]


def test_delete_package_refused_while_a_job_for_it_is_unfinished(backend):
    backend.env["CCGAUTOPKG_TEST_PROCESSOR_SECONDS"] = "30"
    backend.serve(workers=1)
    job_id = backend.submit("kenya", [TEST])
    backend.wait_job(job_id, until=lambda s: s["job_group_state"] == "EXECUTING")
    busy = backend.delete("/v1/packages/kenya")
    assert busy.status_code == 409 and job_id in busy.json()["detail"]
    backend.delete(f"/v1/jobs/{job_id}")
    backend.wait_job(job_id, timeout=20)  # COMPLETE once its provenance entry is written
    assert backend.get("/v1/packages/kenya").status_code == 404  # folder there, no dataset in it
    deleted = backend.delete("/v1/packages/kenya")
    assert deleted.status_code == 200 and deleted.json() == {"boundary_name": "kenya", "deleted": True}
    assert not (backend.data_dir / "packages/kenya").exists()
    assert backend.delete("/v1/packages/kenya").json() == {"detail": "Package kenya not found"}
    assert [p["boundary_name"] for p in backend.get("/v1/packages").json()] == []


def test_api_processes_share_the_port_and_what_each_is_told(backend):
    """`serve` with two API processes on one port (its own and a spawned one): what one of them is
    told (an upload, a job) the other answers about at once, since it lives in the database and
    the queue's storage; a stop ends them all."""
    backend.env["CCGAUTOPKG_API_PROCESSES"] = "2"
    serve = backend.serve(workers=0)
    api = [serve.proc.pid, *(pid for pid in session_processes(serve.proc.pid) if parent_pid(pid) == serve.proc.pid
                             and b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes())]
    assert len(api) == 2
    first, second = _a_connection_to_each(backend.port, api)
    square = {"type": "Polygon", "coordinates": [[[36.7, -1.4], [36.9, -1.4], [36.9, -1.2], [36.7, -1.2], [36.7, -1.4]]]}
    status, created = _request(first, "POST", "/v1/boundaries?name=nairobi_square", square)
    assert status == 201
    assert created["name"] in [b["name"] for b in _request(second, "GET", "/v1/boundaries/search?name=nairobi_sq")[1]]
    assert created["name"] in [b["name"] for b in _request(second, "GET", "/v1/boundaries/search?latitude=-1.3&longitude=36.8")[1]]
    status, job = _request(second, "POST", "/v1/jobs", {"boundary_name": "nairobi_square", "processors": [TEST]})
    assert status == 202
    status, body = _request(first, "GET", f"/v1/jobs/{job['job_id']}")
    assert status == 200 and body["job_group_state"] == "PENDING"  # no worker: it waits in the queue
    first.close(), second.close()
    serve.stop()
    wait_session_ended(serve.proc.pid, 20, serve.output)


def test_a_second_serve_on_the_port_is_refused_until_the_first_ends(backend):
    """The API sockets share the port (SO_REUSEPORT), so the kernel alone would let a second
    `serve` of the same user bind it too and take part of the first one's connections."""
    first = backend.serve(workers=0)
    second = backend.serve(workers=0, wait=False)
    assert second.proc.wait(60) == 2
    assert f"port {backend.port} is already served by another `autopkg serve` on this machine" in second.output()
    assert backend.get("/v1/liveness").status_code == 200
    first.kill()  # the claim ends with the process, even killed
    backend.serve(workers=0)
    assert backend.get("/v1/liveness").status_code == 200


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"content-type": "application/json"} if body is not None else {})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def _a_connection_to_each(port: int, pids: list[int], timeout: float = 60) -> list[http.client.HTTPConnection]:
    """A keep-alive connection answered by each of the processes `pids` (in that order): new
    connections until each process has accepted one (its socket is among its open files); a
    spawned API process joins the port once it has started."""
    owned: dict[int, http.client.HTTPConnection] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        assert _request(conn, "GET", "/v1/liveness")[0] == 200  # answered: accepted by one of them
        inode = _socket_inode(port, conn.sock.getsockname()[1])
        owner = next(pid for pid in pids if f"socket:[{inode}]" in _open_files(pid))
        if owner in owned:
            conn.close()
            time.sleep(0.02)
        else:
            owned[owner] = conn
        if len(owned) == len(pids):
            return [owned[pid] for pid in pids]
    raise AssertionError(f"after {timeout} s, connections were all accepted by {list(owned)} of {pids}")


def _socket_inode(server_port: int, client_port: int) -> str:
    """The inode of the server's end of the loopback connection from `client_port`."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == server_port and int(fields[2].split(":")[1], 16) == client_port:
            return fields[9]
    raise AssertionError(f"no connection from port {client_port} to {server_port}")


def _open_files(pid: int) -> set[str]:
    files = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            files.add(os.readlink(fd))
        except OSError:
            continue  # closed meanwhile
    return files
