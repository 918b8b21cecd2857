"""Jobs on Huey: boundary setup -> chord(one task per processor) -> provenance.

Job and per-processor state live in the queue's own key-value storage (SQLite or Redis), so
every worker on every machine sharing the queue sees the same state:
  job:<id>                  the request (boundary, processors, created)
  job:<id>:<processor>      status, progress, result, worker, heartbeat of one processor
  setup:<id>                worker and heartbeat of the job's boundary setup while it runs
  cancel:<id>               set when the job is cancelled
  running:<boundary>:<processor>  which job (and worker) is producing that dataset now (put_if_empty lock)
All through Huey's own `put` / `get` / `put_if_empty` / `delete`. No key carries a TTL: Huey's
SQLite storage refuses one and its Redis storage needs Redis 7.4 (Debian has 7.0). Nor is
`lock_task` used: it holds no owner, and a run that finds its dataset being made follows the
owner's outcome. So the lock names its job and worker, and a lock whose worker is gone (its
process on this machine has exited, or no heartbeat for `heartbeat_timeout`) is taken over by the
next run of that dataset, and removed at worker start. A worker that dies running a task is
noticed the same way: its processor, or the boundary setup and so the job's pending processors,
FAILURE with the reason (Huey does not run a killed task again).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from huey import RedisHuey, group
from huey.api import Huey
from huey.storage import SqliteStorage

from backend.boundaries import BoundaryStore
from backend.contract import TERMINAL_STATES, GroupState, GroupStatus, JobState
from backend.errors import BackendError, BoundaryNotFound, InvalidRequest, JobNotFound
from backend.packages import PackageStore, ProvenanceRecord, dataset_result, process_gone, software_versions, utcnow
from backend.queue_storage import WakingSqliteHuey
from backend.settings import Settings
from processors.base import Boundary, Processor, ProcessorContext
from processors.errors import Cancelled, PathOutsideRoot, ProcessorNotFound
from processors.registry import ProcessorRegistry
from processors.safepaths import inside, make_dirs, open_no_follow

log = logging.getLogger(__name__)

_DISK_ERRORS = {errno.ENOSPC: "is full (no space left on device)", errno.EDQUOT: "is over its disk quota",
                errno.EROFS: "is read-only"}
_FULL_DISK_TEXTS = ("No space left on device", "database or disk is full")  # GDAL's and SQLite's words
PENDING, EXECUTING, SUCCESS, FAILURE, SKIPPED, REVOKED = (JobState.PENDING, JobState.EXECUTING, JobState.SUCCESS,
                                                        JobState.FAILURE, JobState.SKIPPED, JobState.REVOKED)
TERMINAL = TERMINAL_STATES
FOLLOW_POLL_SECONDS = 0.2
PROGRESS_WRITE_SECONDS = 0.2


def make_huey(settings: Settings) -> Huey:
    """SQLite in the data folder, or RedisHuey when `huey_url` is a redis:// URL. Idle workers
    wake when a task is enqueued on both: Redis's BRPOP, the SQLite storage's FIFO."""
    if settings.huey_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey("ccg-autopkg", url=settings.huey_url)
    if settings.huey_url:
        raise ValueError(f"CCGAUTOPKG_HUEY_URL={settings.huey_url!r}: expected empty or redis://host:port/db")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return WakingSqliteHuey("ccg-autopkg", filename=str(settings.huey_db))


def worker_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "thread": threading.current_thread().name}


def boundary_for_processors(record: dict[str, Any]) -> Boundary:
    return Boundary(
        name=record["name"],
        name_long=record.get("name_long") or record["name"],
        geometry=record["geometry"],
        envelope=record["envelope"],
        admin_level=record.get("admin_level"),
    )


@dataclass
class JobQueue:
    """Submits, runs, follows and cancels jobs. The same object serves the API and the workers."""

    settings: Settings
    boundaries: BoundaryStore
    packages: PackageStore
    registry: ProcessorRegistry
    huey: Huey

    def __post_init__(self) -> None:
        # The heartbeat thread and the processor both update a record: serialise read-modify-write.
        self._write_lock = threading.Lock()
        self.setup_task = self.huey.task(name="boundary_setup")(self._boundary_setup)
        self.processor_task = self.huey.task(name="run_processor")(self._run_processor)
        self.provenance_task = self.huey.task(name="provenance")(self._provenance)

    # -- state in the queue's storage -------------------------------------------------------
    def _get(self, key: str) -> Any:
        return self.huey.get(key, peek=True)

    def _get_many(self, keys: list[str]) -> dict[str, Any]:
        """The values of those of `keys` that are set, in one read of the queue's storage (a job's
        status reads a record per processor: one SQLite query or Redis HMGET, not one each)."""
        found = self.huey.storage.peek_many(keys)
        return {key: self.huey.serializer.deserialize(value) for key, value in found.items()}

    def _put(self, key: str, value: Any) -> None:
        self.huey.put(key, value)

    def _put_if_empty(self, key: str, value: Any) -> bool:
        return bool(self.huey.put_if_empty(key, value))

    def _delete(self, key: str) -> None:
        self.huey.delete(key)

    def _record(self, job_id: str, processor: str) -> dict[str, Any]:
        return self._get(f"job:{job_id}:{processor}") or {}

    def _update(self, job_id: str, processor: str, **changes: Any) -> dict[str, Any]:
        """Change one processor's record. Only the task running that processor writes it."""
        with self._write_lock:
            record = self._record(job_id, processor)
            record.update(changes)
            self._put(f"job:{job_id}:{processor}", record)
        return record

    def check_storage(self) -> None:
        """A value written to the queue's storage and read back (readiness); raises when it fails."""
        key = f"readiness:{uuid.uuid4().hex}"
        self._put(key, utcnow())
        if self.huey.get(key) is None:  # without peek, Huey's get also removes it
            raise RuntimeError("the queue storage did not return a value just written to it")

    def is_cancelled(self, job_id: str) -> bool:
        return self._get(f"cancel:{job_id}") is not None

    # -- API side -------------------------------------------------------------------------------
    def submit(self, *, boundary_name: str, processors: list[str], replace: bool = False) -> str:
        """Validate and enqueue a job; returns its id. Datasets already packaged are SKIPPED now,
        unless `replace` asks to produce them again."""
        if not processors:
            raise InvalidRequest("no processors requested")
        duplicates = sorted({p for p in processors if processors.count(p) > 1})
        if duplicates:
            raise InvalidRequest(f"duplicate processors in request: {', '.join(duplicates)}")
        try:
            boundary = self.boundaries.get(boundary_name)
        except BoundaryNotFound as exc:
            raise InvalidRequest(exc.detail) from exc
        classes = []
        for name in processors:
            try:
                classes.append(self.registry.get(name))
            except ProcessorNotFound:
                raise InvalidRequest(f"Invalid processor.version: {name}") from None
        job_id = uuid.uuid4().hex
        self._put(f"job:{job_id}", {"job_id": job_id, "boundary_name": boundary["name"], "processors": processors,
                                    "created": utcnow(), "replace": replace})
        for cls in classes:
            if not replace and self.packages.has_dataset(boundary["name"], cls):
                record = {"job_status": SKIPPED, "percent": 100.0, "step": "exists", "result": {"skipped": "dataset already in the package"}}
            else:
                record = {"job_status": PENDING, "percent": 0.0, "step": "queued", "result": None}
            self._put(f"job:{job_id}:{cls.full_name()}", record)
        self.setup_task(job_id)
        return job_id

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop pending work now; running processors stop at their next progress check."""
        self._job(job_id)
        self._put(f"cancel:{job_id}", {"cancelled": utcnow()})
        return self.status(job_id)

    def _job(self, job_id: str) -> dict[str, Any]:
        job = self._get(f"job:{job_id}") if _looks_like_id(job_id) else None
        if job is None:
            raise JobNotFound(job_id)
        return job

    def status(self, job_id: str) -> dict[str, Any]:
        """The predecessor's job-group shape (PENDING until done, whole percents), with the
        richer state and unrounded progress in added fields.

        COMPLETE only once the job's provenance entry is in the package: whoever first sees every
        processor finished (the worker's last task, or this call) records it.
        """
        return self._status(self._job(job_id))

    def status_from_reads(self, job_id: str) -> dict[str, Any] | None:
        """`status` when it only has to read the queue's storage; None when it would write (record
        the job's provenance once every processor finished, or fail the processors of a boundary
        setup whose worker died): call `status`."""
        return self._status(self._job(job_id), record=False)

    @property
    def reads_are_local(self) -> bool:
        """The queue's storage is the SQLite file: a read takes microseconds and never waits for a
        writer (WAL). Redis reads are network round trips."""
        return isinstance(self.huey.storage, SqliteStorage)

    def jobs(self, *, boundary_name: str | None = None, state: str | None = None, limit: int | None = 50) -> list[dict[str, Any]]:
        """Recent jobs, newest first, optionally of one boundary and in one `job_group_state`;
        `limit` None: all of them."""
        found = [job for job in self._all_jobs() if boundary_name in (None, job["boundary_name"])]
        found.sort(key=lambda job: job["created"], reverse=True)
        statuses = []
        for job in found:
            status = self._status(job)
            if state in (None, status["job_group_state"]):
                statuses.append(status)
                if len(statuses) == limit:
                    break
        return statuses

    def _all_jobs(self) -> list[dict[str, Any]]:
        """Every job record in the queue storage."""
        return list(self._scan(lambda key: key.startswith("job:") and _looks_like_id(key[4:])).values())

    def _scan(self, wanted: Callable[[str], bool]) -> dict[str, Any]:
        """The keys `wanted` in the queue storage and their values (Huey has no key scan of its
        own, only its storage's)."""
        return {key: self.huey.serializer.deserialize(value) for key, value in self.huey.storage.result_items().items()
                if wanted(key)}

    def expire_finished_jobs(self, now: dt.datetime | None = None) -> list[str]:
        """Remove the records of COMPLETE jobs created more than `job_retention_days` ago (their
        per-processor records and cancel flag too); unfinished jobs are kept whatever their age."""
        if self.settings.job_retention_days <= 0:
            return []
        cutoff = (now or dt.datetime.now(dt.timezone.utc)) - dt.timedelta(days=self.settings.job_retention_days)
        removed = []
        for job in self._all_jobs():
            if dt.datetime.fromisoformat(job["created"]) >= cutoff:
                continue
            if self._status(job)["job_group_state"] != GroupState.COMPLETE:
                continue
            job_id = job["job_id"]
            for key in [f"job:{job_id}:{name}" for name in job["processors"]] + [f"cancel:{job_id}", f"setup:{job_id}", f"job:{job_id}"]:
                self._delete(key)
            removed.append(f"removed the record of job {job_id} (created {job['created']})")
        return removed

    def _status(self, job: dict[str, Any], *, record: bool = True) -> dict[str, Any] | None:
        job_id = job["job_id"]
        dead_setup = self._dead_setup(job_id)
        if dead_setup is not None:
            if not record:
                return None
            self._fail_setup(job_id, job, dead_setup)
        cancelled = self.is_cancelled(job_id)
        entries = self._entries(job_id, job, cancelled)
        states = {e["job_status"] for e in entries}
        if not record and states <= TERMINAL and not job.get("provenance_recorded"):
            return None
        done = states <= TERMINAL and self._provenance_recorded(job_id, job, entries)
        state = GroupState.COMPLETE if done else (GroupState.PENDING if states == {PENDING} else GroupState.EXECUTING)
        percent = sum(e["job_progress"]["percent"] for e in entries) / len(entries)
        return {
            "job_id": job_id,
            "boundary_name": job["boundary_name"],
            "created": job["created"],
            "replace": job.get("replace", False),
            "job_group_status": GroupStatus.COMPLETE if done else GroupStatus.PENDING,
            "job_group_state": state,
            "job_group_percent_complete": int(percent),
            "job_group_percent": round(percent, 2),
            "job_group_cancelled": cancelled,
            "job_group_processors": entries,
        }

    def _entries(self, job_id: str, job: dict[str, Any], cancelled: bool) -> list[dict[str, Any]]:
        entries = []
        records = self._get_many([f"job:{job_id}:{name}" for name in job["processors"]])
        for name in job["processors"]:
            record = records.get(f"job:{job_id}:{name}") or {}
            state = record.get("job_status", PENDING)
            result = record.get("result")
            if state == PENDING and cancelled:
                state, result = REVOKED, {"revoked": "job cancelled before this processor started"}
            elif state == EXECUTING and self._is_stale(record):
                installed = self._installed_result(job_id, job, name)
                if installed is not None:  # its worker died after the dataset was in the package
                    state, result = SUCCESS, installed
                else:
                    state, result = FAILURE, {"failed": f"worker {_describe_worker(record.get('worker'))} stopped while running (no heartbeat since {_iso(record.get('heartbeat'))}); resubmit the job"}
            percent = 100.0 if state in TERMINAL else float(record.get("percent", 0.0))
            entries.append(
                {
                    "job_id": job_id,
                    "processor_name": name,
                    "job_status": state,
                    "job_progress": {"percent_complete": int(percent), "current_task": record.get("step", ""), "percent": percent},
                    "job_result": result,
                    "worker": record.get("worker"),
                    "followed_job_id": record.get("followed_job_id"),
                }
            )
        return entries

    def _dead_setup(self, job_id: str) -> dict[str, Any] | None:
        """The record of the job's boundary setup when it is running no more but did not finish
        (its worker died: Huey does not run a killed task again), else None."""
        setup = self._get(f"setup:{job_id}")
        return setup if setup is not None and self._is_stale(setup) else None

    def _fail_setup(self, job_id: str, job: dict[str, Any], setup: dict[str, Any]) -> None:
        """The processors a dead boundary setup never queued fail with the reason, recorded, so
        that a processor task queued just before the death does not run after the job was reported."""
        reason = (f"boundary setup - worker {_describe_worker(setup.get('worker'))} stopped while running it "
                  f"(no heartbeat since {_iso(setup.get('heartbeat'))}); resubmit the job")
        for name in job["processors"]:
            if self._record(job_id, name).get("job_status") == PENDING:
                self._update(job_id, name, job_status=FAILURE, result={"failed": reason})
        self._delete(f"setup:{job_id}")

    def _installed_result(self, job_id: str, job: dict[str, Any], processor_name: str) -> dict[str, Any] | None:
        """The result this job recorded with a dataset that is in the package, if it is."""
        try:
            processor = self.registry.get(processor_name)
            recorded = self.packages.read_provenance(job["boundary_name"]).get(_provenance_key(job_id, job), {})
        except (ProcessorNotFound, BackendError, OSError, ValueError):
            return None
        entry = recorded.get("processors", {}).get(processor_name, {})
        if entry.get("job_status") == SUCCESS and self.packages.has_dataset(job["boundary_name"], processor):
            return entry.get("job_result")
        return None

    def _is_stale(self, record: dict[str, Any]) -> bool:
        """The run's worker is gone: its process on this machine has exited, or no heartbeat came
        for `heartbeat_timeout` seconds (a worker on another machine)."""
        if process_gone(record.get("worker") or {}):
            return True
        return time.time() - float(record.get("heartbeat", time.time())) > self.settings.heartbeat_timeout

    def clean_start(self) -> list[str]:
        """At worker start: remove what runs whose worker is gone left behind (scratch folders,
        empty job folders, their dataset locks, half-installed datasets, empty `.part` downloads)
        and record their jobs' provenance. Runs of live workers are left alone. Says what it did."""
        done = []
        processing_root = self.settings.localfs_processing_backend_root
        scratch_root = processing_root / "tmp"
        try:
            inside(processing_root, scratch_root)  # linked elsewhere, this clean-up would delete there
            job_dirs = sorted(scratch_root.iterdir()) if scratch_root.is_dir() else []
        except PathOutsideRoot as exc:
            done.append(f"left scratch alone: {exc}")
            job_dirs = []
        for job_dir in job_dirs:
            if not _looks_like_id(job_dir.name) or job_dir.is_symlink():
                continue
            for run_dir in sorted(job_dir.iterdir()):
                record = self._record(job_dir.name, run_dir.name)
                if record.get("job_status") == EXECUTING and not self._is_stale(record):
                    continue
                shutil.rmtree(run_dir, ignore_errors=True)
                done.append(f"removed scratch {run_dir}")
            if not any(job_dir.iterdir()):
                job_dir.rmdir()
                done.append(f"removed empty job folder {job_dir}")
            job = self._get(f"job:{job_dir.name}")
            if job is not None:
                self.status(job_dir.name)  # records the provenance of a job now finished
        for lock_key, lock in self._scan(lambda key: key.startswith("running:")).items():
            if self._lock_holder_gone(lock_key, lock):
                self._delete(lock_key)
                done.append(f"removed the dataset lock {lock_key} of job {lock.get('job_id')} (its worker is gone)")
        done += [f"removed empty download {part}" for part in remove_stalled_parts(processing_root)]
        return done + self.packages.clean() + self.expire_finished_jobs()

    def _lock_holder_gone(self, lock_key: str, lock: dict[str, Any]) -> bool:
        """The worker holding a dataset lock is gone: its run's heartbeat stopped, or (before the
        run started, or after it ended) the lock's own worker and time say so."""
        run = self._record(lock.get("job_id", ""), lock_key.split(":", 2)[2])
        return self._is_stale(run if run.get("job_status") == EXECUTING else lock)

    # -- worker side ------------------------------------------------------------------------------
    def _boundary_setup(self, job_id: str) -> None:
        job = self._job(job_id)
        running = {"worker": worker_identity(), "heartbeat": time.time()}
        self._put(f"setup:{job_id}", running)
        heartbeat = _Heartbeat(lambda: self._put(f"setup:{job_id}", {**running, "heartbeat": time.time()}),
                               self.settings.heartbeat_timeout / 4)
        try:
            with heartbeat:
                self._set_up(job_id, job)
        finally:
            self._delete(f"setup:{job_id}")

    def _set_up(self, job_id: str, job: dict[str, Any]) -> None:
        """The package folder, then the job's processors queued (or the job finished, when none waits)."""
        waiting = [n for n in job["processors"] if self._record(job_id, n).get("job_status") == PENDING]
        try:
            boundary = self.boundaries.get(job["boundary_name"])
            self.packages.ensure_package(boundary)
        except Exception as exc:  # the whole job fails with the reason, nothing runs
            log.exception("boundary setup failed for job %s", job_id)
            for name in waiting:
                self._update(job_id, name, job_status=FAILURE, result={"failed": f"boundary setup - {self._failure_reason(exc)}"})
            return
        if waiting:
            self.huey.enqueue(group([self.processor_task.s(job_id, n) for n in waiting]).then(self.provenance_task, job_id))
        else:
            self.provenance_task(job_id, [])

    def _run_processor(self, job_id: str, processor_name: str) -> None:
        self._produce(job_id, processor_name)
        # The job's provenance entry as soon as its last processor is done, one queue hop sooner
        # than the chord's provenance task (which then finds it recorded, and stays the guarantee).
        try:
            self._provenance(job_id, [])
        except Exception:
            log.exception("provenance of job %s not recorded by its processor task", job_id)

    def _produce(self, job_id: str, processor_name: str) -> None:
        job = self._job(job_id)
        if self.is_cancelled(job_id):
            self._update(job_id, processor_name, job_status=REVOKED, result={"revoked": "job cancelled before this processor started"})
            return
        if self._record(job_id, processor_name).get("job_status") in TERMINAL:
            return  # failed with its boundary setup's worker (see _fail_setup)
        # EXECUTING from here, with this worker and a heartbeat: a worker that dies before the run
        # proper (looking up the boundary, taking the lock) is noticed like one dying in it.
        self._update(job_id, processor_name, job_status=EXECUTING, step="starting", worker=worker_identity(), heartbeat=time.time())
        processor = self.registry.get(processor_name)
        boundary = self.boundaries.get(job["boundary_name"])
        lock_key = f"running:{boundary['name']}:{processor_name}"
        while True:
            if not job.get("replace") and self.packages.has_dataset(boundary["name"], processor):
                self._update(job_id, processor_name, job_status=SKIPPED, percent=100.0, step="exists", result={"skipped": "dataset already in the package"})
                return
            # heartbeat: when it was taken; once the run starts, its record beats instead.
            if self._put_if_empty(lock_key, {"job_id": job_id, "worker": worker_identity(), "heartbeat": time.time()}):
                break
            owner = (self._get(lock_key) or {}).get("job_id")
            if owner is None:
                continue
            if self._follow(job_id, processor_name, owner, lock_key):
                return
        try:
            self._execute(job_id, processor, boundary)
        finally:
            self._delete(lock_key)

    def _follow(self, job_id: str, processor_name: str, owner: str, lock_key: str) -> bool:
        """Mirror the job already producing this dataset. True when its outcome is ours too;
        False when it went away without a result (cancelled, or its worker died): run it here."""
        self._update(job_id, processor_name, job_status=EXECUTING, followed_job_id=owner, step=f"following job {owner}", heartbeat=time.time(), worker=worker_identity())
        while True:
            if self.is_cancelled(job_id):
                self._update(job_id, processor_name, job_status=REVOKED, result={"revoked": "job cancelled"})
                return True
            theirs = self._record(owner, processor_name)
            state = theirs.get("job_status")
            if state in (SUCCESS, FAILURE):
                result = dict(theirs.get("result") or {}, followed_job_id=owner)
                self._update(job_id, processor_name, job_status=state, percent=100.0, step=theirs.get("step", ""), result=result)
                return True
            lock = self._get(lock_key) or {}
            stale = lock.get("job_id") == owner and self._lock_holder_gone(lock_key, lock)
            if state in (REVOKED, SKIPPED) or stale or lock.get("job_id") != owner:
                if stale:
                    self._delete(lock_key)
                return False
            self._update(job_id, processor_name, percent=float(theirs.get("percent", 0.0)), step=f"following job {owner}: {theirs.get('step', '')}", heartbeat=time.time())
            time.sleep(FOLLOW_POLL_SECONDS)

    def _execute(self, job_id: str, processor: type[Processor], boundary: dict[str, Any]) -> None:
        name = processor.full_name()
        root = self.settings.localfs_processing_backend_root
        scratch = root / "tmp" / job_id / name
        output_dir, work_dir = scratch / "output", scratch / "work"
        started = utcnow()
        # EXECUTING before the scratch folder exists: a clean start keeps the scratch of live runs.
        self._update(job_id, name, job_status=EXECUTING, percent=0.0, step="starting", started=started, worker=worker_identity(), heartbeat=time.time(), followed_job_id=None)
        heartbeat = _Heartbeat(lambda: self._update(job_id, name, heartbeat=time.time()), self.settings.heartbeat_timeout / 4)
        last_write = [0.0]
        last_cancel_check = [0.0, False]

        def report(percent: float, step: str) -> None:
            now = time.monotonic()
            if now - last_write[0] >= PROGRESS_WRITE_SECONDS or percent >= 100:
                last_write[0] = now
                self._update(job_id, name, percent=percent, step=step, heartbeat=time.time())

        def cancelled() -> bool:
            now = time.monotonic()
            if now - last_cancel_check[0] >= PROGRESS_WRITE_SECONDS:
                last_cancel_check[:] = [now, self.is_cancelled(job_id)]
            return bool(last_cancel_check[1])

        context = None
        try:
            for folder in (output_dir, work_dir):
                make_dirs(root, folder)
            context = self.processor_context(processor, output_dir, work_dir, report=report, is_cancelled=cancelled)
            with heartbeat:
                output = processor().generate(boundary_for_processors(boundary), context)
                context.progress(99, "moving outputs into the package")
                job = self._job(job_id)
                record = ProvenanceRecord(key=_provenance_key(job_id, job), job=_provenance_job_fields(job),
                                          details={"worker": worker_identity(), "started": started, "finished": utcnow()},
                                          result={"sources": [r.as_json() for r in context.sources.records]})
                resource = self.packages.install_dataset(boundary, processor, output, output_dir, provenance=record)
            self._update(job_id, name, job_status=SUCCESS, percent=100.0, step="done", finished=utcnow(),
                         result={**dataset_result(resource), **record.result})
        except Cancelled:
            self._update(job_id, name, job_status=REVOKED, finished=utcnow(), result={"revoked": "job cancelled while running"})
        except Exception as exc:
            log.exception("processor %s failed in job %s", name, job_id)
            self._update(job_id, name, job_status=FAILURE, finished=utcnow(), result={"failed": self._failure_reason(exc)})
        finally:
            if context is not None:
                context.sources.close()
            shutil.rmtree(scratch, ignore_errors=True)
            with contextlib.suppress(OSError):  # the job's folder, unless another processor still works in it
                scratch.parent.rmdir()

    def _failure_reason(self, exc: Exception) -> str:
        """What went wrong, naming the folder when a disk is full or read-only."""
        code = getattr(exc, "errno", None)
        if code not in _DISK_ERRORS and any(text in str(exc) for text in _FULL_DISK_TEXTS):
            code = errno.ENOSPC
        if code not in _DISK_ERRORS:
            return f"{type(exc).__name__} - {exc}"
        roots = {"the package root": self.packages.root,
                 "the processing folder": self.settings.localfs_processing_backend_root}
        # A copy names source and destination: the full or read-only side is the one written to.
        filename = getattr(exc, "filename2", None) or getattr(exc, "filename", None)
        where = next((f"{label} ({root})" for label, root in roots.items()
                      if filename and Path(os.path.abspath(filename)).is_relative_to(root)), None)
        if where is None:  # no file named: the root with the least room
            label, root = min(roots.items(), key=lambda item: shutil.disk_usage(item[1]).free)
            where = f"{label} ({root})"
        return f"{where} {_DISK_ERRORS[code]}: make room there and resubmit the job"

    def processor_context(self, processor: type[Processor], output_dir: Path, processing_dir: Path, **callbacks: Any) -> ProcessorContext:
        """The context a processor runs (or estimates) in: the one place where settings reach
        processors (source cache folder and mirror, world map, test timings)."""
        root = self.settings.localfs_processing_backend_root
        source_dir = make_dirs(root, root / processor.name / processor.version / "source_data")
        return ProcessorContext(
            output_dir=output_dir,
            processing_dir=processing_dir,
            source_dir=source_dir,
            source_mirror=self.settings.source_mirror or None,
            world_map_gpkg=self.settings.world_map_gpkg,
            test_processor_seconds=self.settings.test_processor_seconds,
            **callbacks,
        )

    def _provenance(self, job_id: str, _chord_results: list[Any]) -> None:
        """The job's last task: its provenance entry (also written by `status` if this never runs)."""
        job = self._job(job_id)
        self._provenance_recorded(job_id, job, self._entries(job_id, job, self.is_cancelled(job_id)))

    def _provenance_recorded(self, job_id: str, job: dict[str, Any], entries: list[dict[str, Any]]) -> bool:
        """True once every processor is finished and the job's entry is in provenance.json;
        records it if it is not yet. False (and a logged reason) while it cannot be written."""
        if job.get("provenance_recorded"):
            return True
        if not {e["job_status"] for e in entries} <= TERMINAL:
            return False
        entry = {
            **_provenance_job_fields(job),
            "finished": utcnow(),
            "software": software_versions(),
            "synthetic": any((p["job_result"] or {}).get("synthetic", False) for p in entries),
            "processors": {
                p["processor_name"]: {
                    "job_status": p["job_status"],
                    "job_result": p["job_result"],
                    "worker": p["worker"],
                    **({"followed_job_id": p["followed_job_id"]} if p["followed_job_id"] else {}),
                }
                for p in entries
            },
        }
        try:
            self.packages.add_provenance({"name": job["boundary_name"]}, entry, key=_provenance_key(job_id, job))
        except (OSError, BackendError) as exc:
            log.warning("provenance of job %s not recorded yet: %s", job_id, exc)
            return False
        self._put(f"job:{job_id}", {**job, "provenance_recorded": utcnow()})
        return True


def _provenance_key(job_id: str, job: dict[str, Any]) -> str:
    """A job's key in provenance.json: the same whoever writes it, so entries merge, never repeat."""
    return f"{job['created']} {job_id}"


def _provenance_job_fields(job: dict[str, Any]) -> dict[str, Any]:
    return {"job_id": job["job_id"], "boundary_name": job["boundary_name"], "submitted": job["created"]}


def _iso(timestamp: float | None) -> str:
    if timestamp is None:
        return "it started"
    return dt.datetime.fromtimestamp(float(timestamp), dt.timezone.utc).isoformat(timespec="seconds")


def _describe_worker(worker: dict[str, Any] | None) -> str:
    if not worker:
        return "(unknown)"
    return f"pid {worker.get('pid')} on {worker.get('host')}"


def remove_stalled_parts(processing_root: Path) -> list[Path]:
    """Empty `.part` files in the source caches that no download holds (its `.lock` is free):
    a download that stalled before its first byte. Non-empty ones stay: the next fetch resumes them."""
    removed = []
    for part in _part_files(processing_root):
        if part.stat().st_size:
            continue
        lock = part.with_name(part.name[: -len(".part")] + ".lock")
        try:
            handle = open_no_follow(lock, "a+")
        except PathOutsideRoot:  # its lock is a symbolic link: not ours to touch
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being downloaded now
            part.unlink(missing_ok=True)
            removed.append(part)
    return removed


def _part_files(processing_root: Path) -> list[Path]:
    """`.part` files in the source caches (`<processor>/<version>/source_data/`), found without
    following any symbolic link (`os.walk` does not descend into one; linked files are skipped)."""
    found = []
    for folder, subfolders, files in os.walk(processing_root):
        depth = len(Path(folder).relative_to(processing_root).parts)
        if depth == 2:
            subfolders[:] = [name for name in subfolders if name == "source_data"]
        elif depth > 2:
            found += [Path(folder, name) for name in files
                      if name.endswith(".part") and not os.path.islink(os.path.join(folder, name))]
    return sorted(found)


def _looks_like_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)


class _Heartbeat:
    """Calls `beat` every `interval` seconds in a thread while a processor runs, so a worker
    that died (and stopped beating) can be told from one that is busy in a long GDAL call."""

    def __init__(self, beat, interval: float):
        self._beat, self._interval = beat, max(0.5, interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat()
            except Exception:
                log.exception("heartbeat failed")

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
