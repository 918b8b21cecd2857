"""Shared fixtures: real backend processes on loopback, a seeded boundary database, helpers."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
AUTOPKG = [sys.executable, "-m", "backend.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def seeded_boundaries_db(request) -> Path:
    """Natural Earth countries and states/provinces, seeded once and kept in pytest's cache folder:
    `make test` runs the plugin tests in a second pytest process, which reuses it. Its name is a
    hash of what the seed depends on (the boundary store's code, the world map, fiona, shapely,
    SQLite).
    Tests get copies."""
    import hashlib
    import sqlite3

    import fiona
    import shapely

    from backend import boundaries
    from backend.settings import Settings

    world_map = Path(Settings().world_map_gpkg)
    inputs = (f"{world_map.stat().st_size} {world_map.stat().st_mtime_ns} {fiona.__version__} {shapely.__version__}"
              f" {sqlite3.sqlite_version}")
    key = hashlib.sha256(Path(boundaries.__file__).read_bytes() + inputs.encode()).hexdigest()[:16]
    folder = request.config.cache.mkdir("seeded-boundaries")
    path = folder / f"{key}.db"
    if not path.exists():
        for stale in folder.iterdir():  # seeded by other code or inputs
            stale.unlink()
        seeding = folder / f"{key}.{os.getpid()}.seeding"
        store = boundaries.BoundaryStore(seeding)
        store.seed_natural_earth(world_map)
        store.close()
        os.replace(seeding, path)
    return path


@pytest.fixture(scope="session")
def raster_mirror(tmp_path_factory):
    """`raster_mirror(cls, **tif_kwargs)` -> (root, made): `test_catalogue.build_mirror` run once per
    session for each class and set of options, so tests that only serve and read the generated
    sources (Aqueduct's 379, ISIMIP's 245, STORM's 140) share them instead of building them again."""
    from test_catalogue import build_mirror

    built: dict = {}

    def get(cls, **tif_kwargs):
        key = (cls, tuple(sorted(tif_kwargs.items())))
        if key not in built:
            root = tmp_path_factory.mktemp(cls.name) / "mirror"
            built[key] = (root, build_mirror(root, cls, **tif_kwargs))
        return built[key]

    return get


class BackendProcess:
    """`autopkg serve` or `autopkg worker` as a real subprocess."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "BackendProcess":
        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen(AUTOPKG + self.args, env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float = 60) -> None:
        """Wait until the process has logged `text` (e.g. its consumer's start-up line)."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{text!r} not logged (exit code {self.proc.poll()}):\n{self.output()}")
            time.sleep(0.05)


class Backend:
    """A data folder plus the processes serving it; `url` is the API's base URL."""

    def __init__(self, data_dir: Path, env: dict[str, str]):
        self.data_dir, self.env = data_dir, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[BackendProcess] = []

    def serve(self, *, workers: int = 2, wait: bool = True) -> BackendProcess:
        proc = BackendProcess(["serve", "--port", str(self.port), "--workers", str(workers)], self.env, self.data_dir / f"serve-{len(self.processes)}.log").start()
        self.processes.append(proc)
        if wait:
            self.wait_ready(proc)
        return proc

    def worker(self, *, workers: int = 1) -> BackendProcess:
        proc = BackendProcess(["worker", "--workers", str(workers)], self.env, self.data_dir / f"worker-{len(self.processes)}.log").start()
        self.processes.append(proc)
        return proc

    def wait_ready(self, proc: BackendProcess, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.proc.poll() is not None:
                raise RuntimeError(f"backend exited with {proc.proc.returncode}:\n{proc.output()}")
            try:
                if requests.get(self.url + "/v1/readiness", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"backend not ready after {timeout} s:\n{proc.output()}")

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=30, **kwargs)

    def delete(self, path: str, **kwargs) -> requests.Response:
        return requests.delete(self.url + path, timeout=30, **kwargs)

    def submit(self, boundary: str, processors: list[str]) -> str:
        response = self.post("/v1/jobs", json={"boundary_name": boundary, "processors": processors})
        assert response.status_code == 202, response.text
        return response.json()["job_id"]

    def wait_job(self, job_id: str, timeout: float = 60, until=lambda s: s["job_group_status"] == "COMPLETE") -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get(f"/v1/jobs/{job_id}").json()
            if until(status):
                return status
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} not done after {timeout} s: {status}\n" + "\n".join(p.output() for p in self.processes))

    def wait_provenance(self, boundary: str, job_id: str, timeout: float = 30) -> dict:
        """The provenance entry of `job_id` (written after the job reports COMPLETE)."""
        path = self.data_dir / "packages" / boundary / "provenance.json"
        deadline = time.monotonic() + timeout
        while True:
            entries = json.loads(path.read_text()) if path.is_file() else {}
            found = [e for e in entries.values() if e.get("job_id") == job_id]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no provenance for job {job_id} after {timeout} s: {entries}")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()


def parent_pid(pid: int) -> int:
    """From /proc/<pid>/stat: "pid (comm) state ppid ..."."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def session_processes(sid: int) -> list[int]:
    """The processes (not zombies) of session `sid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def wait_session_ended(sid: int, timeout: float, output=lambda: "") -> None:
    """Wait until no process of session `sid` is left (a stopped `autopkg` and all it started);
    kill what is left and fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while session_processes(sid):
        if time.monotonic() > deadline:
            os.killpg(sid, signal.SIGKILL)
            raise AssertionError(f"processes of session {sid} outlived its leader:\n{output()}")
        time.sleep(0.05)


def processor_states(status: dict) -> dict[str, str]:
    return {p["processor_name"]: p["job_status"] for p in status["job_group_processors"]}


def seeded_data_dir(data_dir: Path, seeded_boundaries_db: Path) -> Path:
    """`data_dir`, made, holding a copy of the seeded boundaries."""
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(seeded_boundaries_db, data_dir / "boundaries.db")
    return data_dir


def isolated_env(data_dir: Path, seeded_boundaries_db: Path) -> dict[str, str]:
    """Environment of a backend in its own data folder (a copy of the seeded boundaries), with
    the test processors and none of the caller's CCGAUTOPKG_ settings."""
    seeded_data_dir(data_dir, seeded_boundaries_db)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCGAUTOPKG_")}
    env.update(
        CCGAUTOPKG_DATA_DIR=str(data_dir),
        CCGAUTOPKG_INCLUDE_TEST_PROCESSORS="true",
        CCGAUTOPKG_TEST_PROCESSOR_SECONDS="0.5",
        # One API process: the suite starts dozens of servers. The session's shared server and
        # test_api's own test run the default (several).
        CCGAUTOPKG_API_PROCESSES="1",
        PYTHONPATH=str(ROOT),
    )
    return env


def module_backend(tmp_path_factory, seeded_boundaries_db: Path, name: str, *, workers: int = 2) -> Backend:
    """A running `autopkg serve` shared by one test module (the caller stops it); `workers=0`: API only."""
    data_dir = tmp_path_factory.mktemp(name) / "data"
    backend = Backend(data_dir, isolated_env(data_dir, seeded_boundaries_db))
    backend.serve(workers=workers)
    return backend


@pytest.fixture
def backend_env(tmp_path, seeded_boundaries_db) -> dict[str, str]:
    return isolated_env(tmp_path / "data", seeded_boundaries_db)


@pytest.fixture
def backend(backend_env) -> Iterator[Backend]:
    """A data folder; the test starts `serve` / `worker` processes as it needs."""
    b = Backend(Path(backend_env["CCGAUTOPKG_DATA_DIR"]), backend_env)
    yield b
    b.stop()


@pytest.fixture
def served(backend) -> Backend:
    """A running `autopkg serve` (API + 2 embedded workers)."""
    backend.serve()
    return backend


@pytest.fixture(scope="session")
def shared_served(tmp_path_factory, seeded_boundaries_db) -> Iterator[Backend]:
    """One `autopkg serve` for the whole session, for tests that only read or whose requests are
    refused: nothing they do changes what the next test sees. Tests that run jobs, upload
    boundaries or change settings use `served` / `backend` (their own data folder)."""
    data_dir = tmp_path_factory.mktemp("shared") / "data"
    b = Backend(data_dir, isolated_env(data_dir, seeded_boundaries_db))
    del b.env["CCGAUTOPKG_API_PROCESSES"]  # the default: several API processes on one port
    b.serve()
    yield b
    b.stop()


@pytest.fixture
def redis_url(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait()
