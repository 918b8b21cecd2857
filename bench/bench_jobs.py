"""Job overhead end to end: an empty processor through HTTP -> Huey -> package -> COMPLETE.

Runs a real `autopkg serve` (2 embedded workers) on loopback in a temporary data folder and
times, per job, POST /v1/jobs until GET /v1/jobs reports COMPLETE (polled every 2 ms), with
`test_processor` set to run for 0 s: what is left is the service's own cost. Also times the
HTTP round trip of boundary searches by name and by point.
Usage: .venv/bin/python bench/bench_jobs.py [--jobs N]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import free_port  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="autopkg-bench-"))
    cached = ROOT / "bench/cache/boundaries.db"
    if cached.exists():
        shutil.copy(cached, data_dir / "boundaries.db")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, CCGAUTOPKG_DATA_DIR=str(data_dir), CCGAUTOPKG_INCLUDE_TEST_PROCESSORS="1",
               CCGAUTOPKG_TEST_PROCESSOR_SECONDS="0", PYTHONPATH=str(ROOT))
    server = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve", "--port", str(port), "--workers", "2"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    session = requests.Session()
    try:
        started = time.monotonic()
        while True:
            try:
                if session.get(url + "/v1/readiness", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if server.poll() is not None or time.monotonic() - started > 300:
                raise SystemExit("backend did not start")
            time.sleep(0.05)
        startup = time.monotonic() - started
        boundaries = [b["name"] for b in session.get(url + "/v1/boundaries").json()]
        random.seed(1)
        chosen = random.sample(boundaries, args.jobs)
        latencies = []
        for name in chosen:
            t0 = time.perf_counter()
            job_id = session.post(url + "/v1/jobs", json={"boundary_name": name, "processors": ["test_processor.version_1"]}).json()["job_id"]
            while session.get(f"{url}/v1/jobs/{job_id}").json()["job_group_status"] != "COMPLETE":
                time.sleep(0.002)
            latencies.append((time.perf_counter() - t0) * 1000)
        by_name, by_point = [], []
        for _ in range(300):
            t0 = time.perf_counter()
            session.get(url + "/v1/boundaries/search", params={"name": random.choice(["ken", "gambia", "rio", "north", "sao"])})
            by_name.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            session.get(url + "/v1/boundaries/search", params={"latitude": random.uniform(-60, 70), "longitude": random.uniform(-180, 180)})
            by_point.append((time.perf_counter() - t0) * 1000)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"\n## Job overhead and HTTP search latency (autopkg serve, 2 workers, loopback)\n")
    print(f"backend start to ready: {startup:.1f} s (boundary seeding included when no cache)\n")
    print("| measurement | n | p50 ms | p90 ms | max ms |\n|---|---|---|---|---|")
    for label, values in (("empty-processor job, submit to COMPLETE", latencies),
                          ("GET /v1/boundaries/search?name=", by_name),
                          ("GET /v1/boundaries/search?latitude=&longitude=", by_point)):
        print(f"| {label} | {len(values)} | {statistics.median(values):.1f} | {percentile(values, 90):.1f} | {max(values):.1f} |")


if __name__ == "__main__":
    main()
