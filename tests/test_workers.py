"""Workers as separate processes: restarts, a worker killed mid-job, Redis scale-out."""
from __future__ import annotations

from pathlib import Path

from backend.jobs import make_huey
from backend.settings import Settings
from tests.conftest import processor_states

TEST = "test_processor.version_1"
FAIL = "test_fail_processor.version_1"
ADMIN1 = "natural_earth_admin1.version_1"


def test_jobs_queued_while_backend_is_down_run_after_restart(backend):
    api_only = backend.serve(workers=0)
    job_id = backend.submit("gambia", [TEST, ADMIN1])
    # No consumer: the job's first task waits in the queue's storage and nothing has started.
    assert make_huey(Settings.from_env(backend.env)).pending_count() == 1
    status = backend.get(f"/v1/jobs/{job_id}").json()
    assert status["job_group_state"] == "PENDING"
    assert {p["job_progress"]["current_task"] for p in status["job_group_processors"]} == {"queued"}
    api_only.stop()
    backend.serve(workers=2)
    status = backend.wait_job(job_id)
    assert processor_states(status) == {TEST: "SUCCESS", ADMIN1: "SUCCESS"}


def test_worker_killed_mid_job_is_reported_and_leaves_no_partial_dataset(backend):
    backend.env.update(CCGAUTOPKG_TEST_PROCESSOR_SECONDS="30", CCGAUTOPKG_HEARTBEAT_TIMEOUT="2")
    backend.serve(workers=0)
    worker = backend.worker(workers=1)
    job_id = backend.submit("gambia", [TEST])
    backend.wait_job(job_id, until=lambda s: processor_states(s)[TEST] == "EXECUTING")
    worker.kill()
    status = backend.wait_job(job_id, timeout=15)
    (entry,) = status["job_group_processors"]
    assert entry["job_status"] == "FAILURE"
    assert "stopped while running" in entry["job_result"]["failed"]
    assert not (backend.data_dir / "packages/gambia/datasets/test_processor").exists()

    backend.env["CCGAUTOPKG_TEST_PROCESSOR_SECONDS"] = "0.2"
    backend.worker(workers=1)
    retry = backend.wait_job(backend.submit("gambia", [TEST]), timeout=30)
    assert processor_states(retry) == {TEST: "SUCCESS"}


def test_one_job_runs_on_two_worker_processes_sharing_redis(backend, redis_url):
    backend.env.update(CCGAUTOPKG_HUEY_URL=redis_url, CCGAUTOPKG_TEST_PROCESSOR_SECONDS="1.5")
    backend.serve(workers=0)
    workers = [backend.worker(workers=1), backend.worker(workers=1)]
    for worker in workers:  # both consumers polling before the job arrives
        worker.wait_output("Huey consumer started")
    job_id = backend.submit("kenya", [TEST, FAIL, ADMIN1])
    status = backend.wait_job(job_id, timeout=60)
    assert processor_states(status) == {TEST: "SUCCESS", FAIL: "FAILURE", ADMIN1: "SUCCESS"}
    entry = backend.wait_provenance("kenya", job_id)
    # each processor ran in a worker process forked by one of the two `autopkg worker`s, and both took part
    pids = {p["worker"]["pid"] for p in entry["processors"].values()}
    assert {_parent_pid(pid) for pid in pids} == {w.proc.pid for w in workers}


def _parent_pid(pid: int) -> int:
    """From /proc/<pid>/stat: "pid (comm) state ppid ..."."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
