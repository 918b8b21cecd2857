"""Many jobs at once on real worker processes: identical submissions run once, and concurrent
jobs over many boundaries lose no datapackage or provenance entry, on SQLite and on Redis."""
from __future__ import annotations

import json
import os

import pytest

from tests.conftest import processor_states

TEST = "test_processor.version_1"
BOUNDARIES = ["gambia", "senegal", "togo", "benin", "rwanda", "burundi", "malawi", "uganda", "zambia", "ghana"]
# Bounded for `make test`; `make soak` raises them to 20 identical submissions and 30 jobs over 10 boundaries.
IDENTICAL = int(os.environ.get("CCGAUTOPKG_SOAK_IDENTICAL", "8"))
JOBS = int(os.environ.get("CCGAUTOPKG_SOAK_JOBS", "10"))
SPREAD = min(len(BOUNDARIES), max(1, JOBS // 3))


def test_identical_submissions_run_once(backend):
    backend.serve(workers=2)
    jobs = [backend.submit("gambia", [TEST]) for _ in range(IDENTICAL)]
    outcomes = [backend.wait_job(job_id, timeout=120)["job_group_processors"][0] for job_id in jobs]
    assert {o["job_status"] for o in outcomes} <= {"SUCCESS", "SKIPPED"}
    ran = [o for o in outcomes if o["job_status"] == "SUCCESS" and not o["followed_job_id"]]
    assert len(ran) == 1, [(o["job_status"], o["followed_job_id"]) for o in outcomes]
    followed = sum(1 for o in outcomes if o["followed_job_id"])
    print(f"\n{IDENTICAL} identical submissions: {len(ran)} ran, {followed} followed it, {IDENTICAL - len(ran) - followed} skipped (dataset there)")
    provenance = json.loads((backend.data_dir / "packages/gambia/provenance.json").read_text())
    assert {e["job_id"] for e in provenance.values()} == set(jobs)


@pytest.mark.parametrize("queue", ["sqlite", "redis"])
def test_concurrent_jobs_over_many_boundaries_lose_no_entry(backend, request, queue):
    if queue == "redis":
        backend.env["CCGAUTOPKG_HUEY_URL"] = request.getfixturevalue("redis_url")
    backend.env["CCGAUTOPKG_TEST_PROCESSOR_SECONDS"] = "0.2"
    backend.serve(workers=0)
    workers = [backend.worker(workers=2), backend.worker(workers=2)]
    for worker in workers:
        worker.wait_output("Huey consumer started")
    jobs = {backend.submit(BOUNDARIES[i % SPREAD], [TEST]): BOUNDARIES[i % SPREAD] for i in range(JOBS)}
    for job_id in jobs:
        assert set(processor_states(backend.wait_job(job_id, timeout=180)).values()) <= {"SUCCESS", "SKIPPED"}
    for boundary in set(jobs.values()):
        package = json.loads((backend.data_dir / f"packages/{boundary}/datapackage.json").read_text())
        assert [r["name"] for r in package["resources"]] == ["test_processor-version_1"]
        provenance = json.loads((backend.data_dir / f"packages/{boundary}/provenance.json").read_text())
        assert {e["job_id"] for e in provenance.values()} == {j for j, b in jobs.items() if b == boundary}
    print(f"\n{JOBS} jobs over {SPREAD} boundaries on {queue} with two worker processes: 0 lost entries")
