"""The job queue in-process on Huey's MemoryHuey (immediate mode): follow, takeover, staleness."""
from __future__ import annotations

import datetime
import threading
import time

import pytest

from backend.jobs import JobQueue, worker_identity
from tests.reliability.local_queue import ADMIN1, TEST, make_queue, states


@pytest.fixture
def fresh_queue(tmp_path, seeded_boundaries_db) -> JobQueue:
    return make_queue(tmp_path, seeded_boundaries_db)


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


def test_status_from_reads_leaves_recording_a_finished_job_to_status(fresh_queue):
    """The API answers polls with `status_from_reads` on its event loop: it never writes, so for a
    job whose processors all finished before its provenance entry it answers None."""
    fresh_queue.huey.immediate = False
    job_id = fresh_queue.submit(boundary_name="gambia", processors=[TEST])
    assert fresh_queue.status_from_reads(job_id)["job_group_state"] == "PENDING"
    fresh_queue._produce(job_id, TEST)  # the run, then its worker died before the job's provenance
    assert fresh_queue.status_from_reads(job_id) is None
    assert not fresh_queue._get(f"job:{job_id}").get("provenance_recorded")
    (entry,) = fresh_queue.packages.read_provenance("gambia").values()
    assert "finished" not in entry  # the dataset's entry only, not yet the job's
    assert fresh_queue.status(job_id)["job_group_state"] == "COMPLETE"
    (entry,) = fresh_queue.packages.read_provenance("gambia").values()
    assert entry["job_id"] == job_id and entry["finished"] and fresh_queue._get(f"job:{job_id}")["provenance_recorded"]
    assert fresh_queue.status_from_reads(job_id) == fresh_queue.status(job_id)


def test_the_last_processor_task_records_the_jobs_provenance_without_the_provenance_task(fresh_queue):
    fresh_queue.huey.immediate = False  # enqueue only: the test runs the processor tasks, not the chord
    job_id = fresh_queue.submit(boundary_name="gambia", processors=[TEST, ADMIN1])
    fresh_queue._run_processor(job_id, TEST)
    assert not fresh_queue._get(f"job:{job_id}").get("provenance_recorded")  # ADMIN1 still pending
    assert "finished" not in fresh_queue.packages.read_provenance("gambia")[_key(fresh_queue, job_id)]
    fresh_queue._run_processor(job_id, ADMIN1)
    assert fresh_queue._get(f"job:{job_id}")["provenance_recorded"]
    entry = fresh_queue.packages.read_provenance("gambia")[_key(fresh_queue, job_id)]
    assert entry["finished"] and set(entry["processors"]) == {TEST, ADMIN1}
    assert fresh_queue.status_from_reads(job_id)["job_group_state"] == "COMPLETE"


def _key(queue: JobQueue, job_id: str) -> str:
    return f"{queue._get(f'job:{job_id}')['created']} {job_id}"


def test_a_boundary_setup_without_heartbeat_fails_its_pending_processors_for_good(fresh_queue):
    fresh_queue.huey.immediate = False
    job_id = fresh_queue.submit(boundary_name="gambia", processors=[TEST])
    beat = time.time() - 5
    fresh_queue._put(f"setup:{job_id}", {"worker": {"host": "h", "pid": 1}, "heartbeat": beat})
    assert fresh_queue.status_from_reads(job_id) is None  # failing them is a write: `status` does it
    (entry,) = fresh_queue.status(job_id)["job_group_processors"]
    since = datetime.datetime.fromtimestamp(beat, datetime.timezone.utc).isoformat(timespec="seconds")
    assert entry["job_status"] == "FAILURE" and entry["job_result"]["failed"] == (
        f"boundary setup - worker pid 1 on h stopped while running it (no heartbeat since {since}); resubmit the job")
    fresh_queue._run_processor(job_id, TEST)  # queued just before the setup's worker died: it does not run
    assert fresh_queue.status(job_id)["job_group_processors"][0]["job_result"] == entry["job_result"]
    assert not fresh_queue.packages.has_dataset("gambia", fresh_queue.registry.get(TEST))


def test_cancel_before_start_revokes_every_processor(fresh_queue):
    fresh_queue.huey.immediate = False
    job_id = fresh_queue.submit(boundary_name="gambia", processors=[TEST, ADMIN1])
    assert fresh_queue.cancel(job_id)["job_group_status"] == "COMPLETE"
    fresh_queue._run_processor(job_id, TEST)
    assert states(fresh_queue, job_id) == {TEST: "REVOKED", ADMIN1: "REVOKED"}
    assert not fresh_queue.packages.has_dataset("gambia", fresh_queue.registry.get(TEST))


def test_finished_job_records_expire_after_the_retention_and_unfinished_ones_stay(fresh_queue):
    from backend.errors import JobNotFound

    finished = fresh_queue.submit(boundary_name="gambia", processors=[TEST])
    assert fresh_queue.status(finished)["job_group_state"] == "COMPLETE"
    unfinished = fresh_queue.submit(boundary_name="senegal", processors=[TEST])
    # still running in a live worker (this process), as far as the records say
    fresh_queue._put(f"job:{unfinished}:{TEST}", {"job_status": "EXECUTING", "percent": 40.0, "step": "clipping",
                                                  "heartbeat": time.time(), "worker": worker_identity()})
    recorded = fresh_queue._get(f"job:{finished}")["created"]
    created = datetime.datetime.fromisoformat(recorded)

    assert fresh_queue.expire_finished_jobs(now=created + datetime.timedelta(days=29)) == []
    removed = fresh_queue.expire_finished_jobs(now=created + datetime.timedelta(days=31))
    assert removed == [f"removed the record of job {finished} (created {recorded})"]
    with pytest.raises(JobNotFound):
        fresh_queue.status(finished)
    assert fresh_queue._get(f"job:{finished}:{TEST}") is None
    assert fresh_queue.status(unfinished)["job_group_state"] == "EXECUTING", "an unfinished job is kept whatever its age"
    assert [j["job_id"] for j in fresh_queue.jobs()] == [unfinished]
    assert fresh_queue.packages.read_provenance("gambia"), "the package keeps its provenance"


def test_retention_zero_keeps_every_record(fresh_queue):
    object.__setattr__(fresh_queue.settings, "job_retention_days", 0.0)
    job_id = fresh_queue.submit(boundary_name="gambia", processors=[TEST])
    assert fresh_queue.expire_finished_jobs(now=datetime.datetime(2100, 1, 1, tzinfo=datetime.timezone.utc)) == []
    assert fresh_queue.status(job_id)["job_group_state"] == "COMPLETE"
