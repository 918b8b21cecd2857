"""The job queue in-process on Huey's MemoryHuey (immediate mode): follow, takeover, staleness."""
from __future__ import annotations

import datetime
import shutil
import threading
import time

import pytest
from huey import MemoryHuey

from backend.boundaries import BoundaryStore
from backend.jobs import JobQueue
from backend.packages import PackageStore
from backend.settings import Settings
from processors.registry import ProcessorRegistry

TEST = "test_processor.version_1"
ADMIN1 = "natural_earth_admin1.version_1"


@pytest.fixture
def fresh_queue(tmp_path, seeded_boundaries_db) -> JobQueue:
    shutil.copy(seeded_boundaries_db, tmp_path / "boundaries.db")
    settings = Settings(data_dir=tmp_path, test_processor_seconds=0.0, heartbeat_timeout=1.0)
    return JobQueue(
        settings=settings,
        boundaries=BoundaryStore(settings.boundaries_db),
        packages=PackageStore(settings.localfs_storage_backend_root),
        registry=ProcessorRegistry.discover(include_test_processors=True),
        huey=MemoryHuey("test", immediate=True),
    )


def states(queue: JobQueue, job_id: str) -> dict[str, str]:
    return {p["processor_name"]: p["job_status"] for p in queue.status(job_id)["job_group_processors"]}


def test_immediate_mode_runs_the_whole_dag_in_process(fresh_queue):
    job_id = fresh_queue.submit(boundary_name="gambia", processors=[TEST, ADMIN1])
    assert states(fresh_queue, job_id) == {TEST: "SUCCESS", ADMIN1: "SUCCESS"}
    provenance = fresh_queue.packages.read_provenance("gambia")
    assert [e["job_id"] for e in provenance.values()] == [job_id]


def test_follower_reports_the_running_jobs_outcome(fresh_queue):
    fresh_queue.huey.immediate = False  # enqueue only; the test drives the task (switches storage, so first)
    owner = "a" * 32
    fresh_queue._put(f"running:gambia:{TEST}", {"job_id": owner})
    fresh_queue._put(f"job:{owner}:{TEST}", {"job_status": "EXECUTING", "percent": 40.0, "step": "clipping", "heartbeat": time.time()})
    job_id = fresh_queue.submit(boundary_name="gambia", processors=[TEST])
    runner = threading.Thread(target=fresh_queue._run_processor, args=(job_id, TEST))
    runner.start()
    deadline = time.monotonic() + 5
    while fresh_queue._record(job_id, TEST).get("followed_job_id") != owner:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert "following job" in fresh_queue.status(job_id)["job_group_processors"][0]["job_progress"]["current_task"]
    fresh_queue._put(f"job:{owner}:{TEST}", {"job_status": "SUCCESS", "percent": 100.0, "step": "done", "result": {"resource": "r"}, "heartbeat": time.time()})
    runner.join(5)
    (entry,) = fresh_queue.status(job_id)["job_group_processors"]
    assert entry["job_status"] == "SUCCESS"
    assert entry["job_result"] == {"resource": "r", "followed_job_id": owner}


def test_follower_takes_over_when_the_running_worker_died(fresh_queue):
    fresh_queue.huey.immediate = False
    owner = "b" * 32
    fresh_queue._put(f"running:gambia:{TEST}", {"job_id": owner})
    fresh_queue._put(f"job:{owner}:{TEST}", {"job_status": "EXECUTING", "percent": 10.0, "heartbeat": time.time() - 30})
    job_id = fresh_queue.submit(boundary_name="gambia", processors=[TEST])
    fresh_queue._run_processor(job_id, TEST)
    (entry,) = fresh_queue.status(job_id)["job_group_processors"]
    assert entry["job_status"] == "SUCCESS" and entry["followed_job_id"] is None  # ran here itself
    assert fresh_queue.packages.has_dataset("gambia", fresh_queue.registry.get(TEST))


def test_executing_without_heartbeat_is_reported_as_failure(fresh_queue):
    fresh_queue.huey.immediate = False
    job_id = fresh_queue.submit(boundary_name="gambia", processors=[TEST])
    beat = time.time() - 5
    fresh_queue._update(job_id, TEST, job_status="EXECUTING", worker={"host": "h", "pid": 1}, heartbeat=beat)
    (entry,) = fresh_queue.status(job_id)["job_group_processors"]
    assert entry["job_status"] == "FAILURE"
    since = datetime.datetime.fromtimestamp(beat, datetime.timezone.utc).isoformat(timespec="seconds")
    assert entry["job_result"]["failed"] == (
        f"worker pid 1 on h stopped while running (no heartbeat since {since}); resubmit the job")


def test_cancel_before_start_revokes_every_processor(fresh_queue):
    fresh_queue.huey.immediate = False
    job_id = fresh_queue.submit(boundary_name="gambia", processors=[TEST, ADMIN1])
    assert fresh_queue.cancel(job_id)["job_group_status"] == "COMPLETE"
    fresh_queue._run_processor(job_id, TEST)
    assert states(fresh_queue, job_id) == {TEST: "REVOKED", ADMIN1: "REVOKED"}
    assert not fresh_queue.packages.has_dataset("gambia", fresh_queue.registry.get(TEST))
