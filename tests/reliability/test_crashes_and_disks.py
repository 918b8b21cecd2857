"""kill -9 at each step of a job, then a restart; a full and a read-only disk under the package
root and under the processing folder. After each: valid JSON listing only complete datasets, no
partial or orphan files, FAILURE with a reason or completion, the provenance entry, and a
re-submitted job that succeeds."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from huey import SqliteHuey

from backend.boundaries import BoundaryStore
from backend.jobs import JobQueue
from backend.packages import PackageStore
from backend.settings import Settings
from processors.registry import ProcessorRegistry
from tests.conftest import processor_states, seeded_data_dir
from tests.reliability.local_queue import ADMIN1, RASTER, TEST, files_under, states


def durable_queue(data_dir: Path, **settings) -> JobQueue:
    """A queue whose records outlive its process (SQLite), running tasks as they are enqueued."""
    config = Settings(data_dir=data_dir, test_processor_seconds=0.0, heartbeat_timeout=60.0, **settings)
    return JobQueue(settings=config, boundaries=BoundaryStore(config.boundaries_db),
                    packages=PackageStore(config.localfs_storage_backend_root),
                    registry=ProcessorRegistry.discover(include_test_processors=True),
                    huey=SqliteHuey("reliability", filename=str(config.huey_db), immediate=True,
                                    immediate_use_memory=False))


def assert_consistent(queue: JobQueue, boundary: str, job_id: str) -> dict:
    """The package and the processing folder as a user may find them; the job's final status."""
    status = queue.status(job_id)
    assert status["job_group_status"] == "COMPLETE", status
    for entry in status["job_group_processors"]:
        assert entry["job_status"] in ("SUCCESS", "FAILURE", "SKIPPED"), entry
        if entry["job_status"] == "FAILURE":
            assert entry["job_result"]["failed"], entry
    folder = queue.packages.root / boundary
    package = json.loads((folder / "datapackage.json").read_text()) if (folder / "datapackage.json").exists() else {"resources": []}
    listed = set()
    for resource in package["resources"]:
        for path in resource["path"]:
            assert (folder / path).is_file(), path
            listed.add(str(Path(path).parents[1]))
    on_disk = {str(p.relative_to(folder)) for p in folder.glob("datasets/*/*")}
    assert on_disk == listed, "dataset folders not listed in datapackage.json (or staging/trash left)"
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert files_under(queue.settings.localfs_processing_backend_root / "tmp") == []
    assert not list((queue.settings.localfs_processing_backend_root / "tmp").glob("*"))
    provenance = json.loads((folder / "provenance.json").read_text())
    (entry,) = [e for e in provenance.values() if e["job_id"] == job_id]
    assert {n: p["job_status"] for n, p in entry["processors"].items()} == states(queue, job_id)
    return status


# Where the worker process is killed: before or after a call of (module, attribute).
KILL_POINTS = {
    "boundary setup, package folder made, before its pages": ("backend.packages", "PackageStore._write_package_pages", "before"),
    "dataset lock taken, before the run starts": ("backend.jobs", "JobQueue._execute", "before"),
    "download, after its first chunk": ("processors.fetch", "Hasher.update", "after"),
    "raster write, before its COG is written": ("processors.raster", "_cog_from_memory", "before"),
    "vector write, before its file is synced and renamed": ("processors.vector", "_fsync", "before"),
    "processing done, before the install": ("backend.packages", "PackageStore.install_dataset", "before"),
    "staging filled, before the rename": ("backend.packages", "_swap_in", "before"),
    "provenance written, before datapackage.json": ("backend.packages", "PackageStore._update_datapackage", "before"),
    "datapackage.json written, before the pages": ("backend.packages", "PackageStore._update_datapackage", "after"),
    "every processor done, before the job's provenance": ("backend.jobs", "JobQueue._provenance", "before"),
}


def _run_and_die(data_dir: Path, where: tuple[str, str, str], processors: list[str], job_file: Path, mirror: str) -> None:
    """In a forked child: run a job and SIGKILL this process when it reaches `where`."""
    import importlib

    owner = importlib.import_module(where[0])
    *path, name = where[1].split(".")
    for part in path:
        owner = getattr(owner, part)

    original = getattr(owner, name)

    def die(*args, **kwargs):
        if where[2] == "after":
            original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(owner, name, die)
    queue = durable_queue(data_dir, source_mirror=mirror)
    original_setup = queue.setup_task

    def remember(job_id):  # the id reaches the test before the job runs (and the kill)
        job_file.write_text(job_id)
        return original_setup(job_id)

    queue.setup_task = remember
    queue.submit(boundary_name="gambia", processors=processors)
    os._exit(0)  # not reached when the kill point is on the path


def killed_job(tmp_path: Path, seeded_boundaries_db: Path, mirror: str, point: str, processor: str) -> tuple[Path, str]:
    """(data folder, job id) of a job whose worker was killed (SIGKILL) at `point`."""
    data_dir = seeded_data_dir(tmp_path / "data", seeded_boundaries_db)
    job_file = tmp_path / "job_id"
    child = multiprocessing.get_context("fork").Process(
        target=_run_and_die, args=(data_dir, KILL_POINTS[point], [processor], job_file, mirror))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    return data_dir, job_file.read_text()


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_at_each_step_then_restart(tmp_path, seeded_boundaries_db, raster_mirror, point):
    from processors.builtin.natural_earth_raster import NaturalEarthRaster

    mirror = str(raster_mirror(NaturalEarthRaster, rgb=True, width=360, height=180)[0])
    processor = {"processors.vector": ADMIN1, "processors.raster": RASTER, "processors.fetch": RASTER}.get(KILL_POINTS[point][0], TEST)
    data_dir, job_id = killed_job(tmp_path, seeded_boundaries_db, mirror, point, processor)

    restarted = durable_queue(data_dir, source_mirror=mirror)
    restarted.clean_start()
    assert restarted.huey.get(f"running:gambia:{processor}", peek=True) is None  # no lock outlives its worker
    status = assert_consistent(restarted, "gambia", job_id)
    (outcome,) = status["job_group_processors"]
    print(f"\nkilled at '{point}': {outcome['job_status']} {outcome['job_result'].get('failed', '')}")
    installed = point in ("datapackage.json written, before the pages", "every processor done, before the job's provenance")
    assert states(restarted, job_id) == {processor: "SUCCESS" if installed else "FAILURE"}
    if not installed:
        assert "stopped while running" in json.dumps(status)
    retry = restarted.submit(boundary_name="gambia", processors=[processor])
    assert states(restarted, retry)[processor] in ("SUCCESS", "SKIPPED")
    assert_consistent(restarted, "gambia", retry)
    assert [r["processor"] for r in restarted.packages.read_datapackage("gambia")["resources"]] == [processor]


def test_a_dataset_lock_whose_worker_died_is_taken_over_by_another_worker_without_a_restart(tmp_path, seeded_boundaries_db):
    data_dir, job_id = killed_job(tmp_path, seeded_boundaries_db, "", "dataset lock taken, before the run starts", TEST)
    other_worker = durable_queue(data_dir)  # no clean start: the lock of the dead worker is still there
    assert other_worker.huey.get(f"running:gambia:{TEST}", peek=True)["job_id"] == job_id
    retries = []
    submitting = threading.Thread(target=lambda: retries.append(other_worker.submit(boundary_name="gambia", processors=[TEST])),
                                  daemon=True)
    submitting.start()
    submitting.join(60)  # a lock that outlived its worker would make the retry follow it forever
    assert not submitting.is_alive() and states(other_worker, retries[0]) == {TEST: "SUCCESS"}
    assert states(other_worker, job_id) == {TEST: "FAILURE"}
    assert other_worker.huey.get(f"running:gambia:{TEST}", peek=True) is None


# -- full and read-only disks: a real small file system (tmpfs), not a mock -------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")


@contextmanager
def small_disk(path: Path, size: str = "4m"):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(folder: Path) -> Path:
    """Fill the file system under `folder` to the last byte."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler


@needs_root
@pytest.mark.parametrize("which", ["package root", "processing folder"])
def test_a_full_disk_fails_the_job_naming_the_folder_and_loses_nothing(tmp_path, seeded_boundaries_db, which):
    data_dir = seeded_data_dir(tmp_path / "data", seeded_boundaries_db)
    queue = durable_queue(data_dir)
    first = queue.submit(boundary_name="gambia", processors=[TEST])  # a package to keep intact
    assert states(queue, first) == {TEST: "SUCCESS"}
    before = (queue.packages.root / "gambia" / "datapackage.json").read_text()
    mount = queue.packages.root / "gambia" / "datasets" if which == "package root" else queue.settings.localfs_processing_backend_root
    saved = tmp_path / "saved"
    subprocess.run(["cp", "-a", str(mount), str(saved)], check=True)
    with small_disk(mount):
        subprocess.run(["cp", "-a", f"{saved}/.", str(mount)], check=True)
        filler = fill(mount)
        job_id = queue.submit(boundary_name="gambia", processors=[ADMIN1])
        (entry,) = queue.status(job_id)["job_group_processors"]
        assert entry["job_status"] == "FAILURE"
        label = "the package root" if which == "package root" else "the processing folder"
        assert entry["job_result"]["failed"].startswith(label), entry
        assert "is full (no space left on device)" in entry["job_result"]["failed"]
        assert (queue.packages.root / "gambia" / "datapackage.json").read_text() == before
        filler.unlink()
        status = assert_consistent(queue, "gambia", job_id)
        assert status["job_group_status"] == "COMPLETE"
        retry = queue.submit(boundary_name="gambia", processors=[ADMIN1])
        assert states(queue, retry) == {ADMIN1: "SUCCESS"}
        assert_consistent(queue, "gambia", retry)


@needs_root
@pytest.mark.parametrize("which", ["package root", "processing folder"])
def test_a_read_only_root_fails_the_job_naming_it_and_completes_once_writable(tmp_path, seeded_boundaries_db, which):
    data_dir = seeded_data_dir(tmp_path / "data", seeded_boundaries_db)
    queue = durable_queue(data_dir)
    mount = queue.packages.root if which == "package root" else queue.settings.localfs_processing_backend_root
    with small_disk(mount):
        first = queue.submit(boundary_name="gambia", processors=[TEST])
        assert states(queue, first) == {TEST: "SUCCESS"}
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        job_id = queue.submit(boundary_name="gambia", processors=[ADMIN1])
        status = queue.status(job_id)
        (entry,) = status["job_group_processors"]
        assert entry["job_status"] == "FAILURE"
        assert f"the {which} ({mount}) is read-only" in entry["job_result"]["failed"], entry
        # Its provenance entry goes into the package: only a read-only package root holds it up.
        assert status["job_group_state"] == ("EXECUTING" if which == "package root" else "COMPLETE")
        subprocess.run(["mount", "-o", "remount,rw", str(mount)], check=True)
        assert_consistent(queue, "gambia", job_id)
        retry = queue.submit(boundary_name="gambia", processors=[ADMIN1])
        assert states(queue, retry) == {ADMIN1: "SUCCESS"}
        assert_consistent(queue, "gambia", retry)


def test_kill_9_of_the_api_with_queued_jobs_then_restart(backend):
    api = backend.serve(workers=0)
    jobs = [backend.submit(boundary, ["test_processor.version_1"]) for boundary in ("gambia", "senegal", "togo")]
    api.kill()  # SIGKILL, the jobs still queued
    backend.serve(workers=2)
    for job_id in jobs:
        status = backend.wait_job(job_id, timeout=60)
        assert processor_states(status) == {"test_processor.version_1": "SUCCESS"}
    for job_id, boundary in zip(jobs, ("gambia", "senegal", "togo")):
        provenance = json.loads((backend.data_dir / f"packages/{boundary}/provenance.json").read_text())
        assert [e["job_id"] for e in provenance.values()] == [job_id]


def test_a_worker_start_removes_empty_part_files_and_keeps_resumable_ones(tmp_path, seeded_boundaries_db):
    data_dir = seeded_data_dir(tmp_path / "data", seeded_boundaries_db)
    queue = durable_queue(data_dir)
    cache = queue.settings.localfs_processing_backend_root / "storm" / "version_1" / "source_data"
    cache.mkdir(parents=True)
    (cache / "stalled.tif.part").write_bytes(b"")
    (cache / "resumable.tif.part").write_bytes(b"first megabyte")
    done = queue.clean_start()
    assert [p.name for p in cache.iterdir() if p.suffix == ".part"] == ["resumable.tif.part"]
    assert done == [f"removed empty download {cache / 'stalled.tif.part'}"]
