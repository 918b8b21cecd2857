"""Workers as separate processes: restarts, a worker killed mid-job, Redis scale-out."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.jobs import make_huey
from backend.settings import Settings
from tests.conftest import ROOT, free_port, parent_pid, processor_states, wait_session_ended

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
    assert {parent_pid(pid) for pid in pids} == {w.proc.pid for w in workers}


# `autopkg` with a stop signal sent to itself right after its first fork (`serve`: the worker child;
# `worker`: Huey's scheduler): the moment a stop used to be lost. Python runs a signal that arrives
# during fork() in its after-fork hooks, which drop a KeyboardInterrupt, and Huey installed its
# handlers only after forking; `serve` then waited for a worker that would never stop.
STOP_AT_FIRST_FORK = """
import os, signal, sys
from backend import cli
sent = []
def stop_once():
    if not sent:
        sent.append(True)
        os.kill(os.getpid(), int(os.environ["STOP_SIGNAL"]))
os.register_at_fork(after_in_parent=stop_once)
sys.exit(cli.main(sys.argv[1:]))
"""


def _stopped_at_first_fork(env: dict[str, str], args: list[str], sig: signal.Signals, log: Path) -> subprocess.Popen:
    """Run `autopkg ARGS` that stops itself with `sig` right after its first fork; wait until it
    and every process it started have exited (its session is empty) and return it."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", STOP_AT_FIRST_FORK, *args], env={**env, "STOP_SIGNAL": str(int(sig))},
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"still running {STOP_TIMEOUT} s after {sig.name}:\n{log.read_text()}") from None
    wait_session_ended(proc.pid, STOP_TIMEOUT, lambda: log.read_text())
    return proc


#: How long a stop may take: the worker child of `serve` is a fresh interpreter still importing.
STOP_TIMEOUT = 20


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_worker_stopped_while_forking_its_workers_exits_and_leaves_none(backend_env, tmp_path, sig):
    proc = _stopped_at_first_fork(backend_env, ["worker", "--workers", "2"], sig, tmp_path / "worker.log")
    output = (tmp_path / "worker.log").read_text()
    assert proc.returncode == 0, output
    assert f"Received {sig.name}" in output and "Consumer exiting." in output
    assert "Traceback" not in output and "Exception ignored" not in output


def test_serve_stopped_while_starting_its_worker_process_exits_and_leaves_none(backend_env, tmp_path):
    port = free_port()
    proc = _stopped_at_first_fork(backend_env, ["serve", "--port", str(port), "--workers", "2"], signal.SIGINT,
                                  tmp_path / "serve.log")
    output = (tmp_path / "serve.log").read_text()
    assert proc.returncode == 130, output  # stopped before the server ran: nothing was served
    assert "Exception ignored" not in output and "Uvicorn running" not in output
