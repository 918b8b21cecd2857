"""The SQLite queue storage wakes idle workers when a task is enqueued (backend/queue_storage.py).

Each test gives the waiting side a read timeout far longer than the test waits, so a task that
arrives in time can only have been delivered by the wake-up, not by the fallback poll.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from huey.consumer import Consumer

from backend.jobs import make_huey
from backend.queue_storage import WakingSqliteHuey, WakingSqliteStorage
from backend.settings import Settings

LONG = 120.0  # the waiting side's read timeout: never reached in these tests
PATIENCE = 30.0  # how long a test waits for the state it expects


def _dequeue_in_thread(storage: WakingSqliteStorage) -> tuple[threading.Thread, list]:
    got: list = []

    def wait_for_a_task() -> None:
        while not got:
            data = storage.dequeue()
            if data is not None:
                got.append((bytes(data), time.monotonic()))

    thread = threading.Thread(target=wait_for_a_task, daemon=True)
    thread.start()
    return thread, got


def test_the_default_sqlite_queue_blocks_in_dequeue_like_redis(tmp_path):
    huey = make_huey(Settings.from_env({"CCGAUTOPKG_DATA_DIR": str(tmp_path)}))
    assert isinstance(huey.storage, WakingSqliteStorage) and huey.storage.blocking
    assert Path(huey.storage.wake_path).is_fifo()


def test_an_idle_dequeue_wakes_when_another_process_enqueues(tmp_path):
    db = str(tmp_path / "huey.db")
    waiting = WakingSqliteStorage("q", filename=db, read_timeout=LONG)
    thread, got = _dequeue_in_thread(waiting)
    start = time.monotonic()
    # the API's side: another process, its own storage object and connection
    subprocess.run([sys.executable, "-c", "import sys; from backend.queue_storage import WakingSqliteStorage; "
                    "WakingSqliteStorage('q', filename=sys.argv[1]).enqueue(b'task one')", db],
                   check=True, cwd=Path(__file__).resolve().parents[1])
    thread.join(PATIENCE)
    assert got and got[0][0] == b"task one"
    assert got[0][1] - start < PATIENCE < LONG  # delivered by the wake-up, not the fallback poll


def test_a_group_of_tasks_wakes_as_many_idle_workers(tmp_path):
    db = str(tmp_path / "huey.db")
    workers = [WakingSqliteStorage("q", filename=db, read_timeout=LONG) for _ in range(2)]
    waits = [_dequeue_in_thread(w) for w in workers]
    enqueuer = WakingSqliteStorage("q", filename=db)
    enqueuer.enqueue(b"first")
    enqueuer.enqueue(b"second")
    for thread, _ in waits:
        thread.join(PATIENCE)
    assert sorted(got[0][0] for _, got in waits if got) == [b"first", b"second"]


def test_a_real_consumer_runs_a_task_enqueued_while_it_idles(tmp_path):
    huey = WakingSqliteHuey("q", filename=str(tmp_path / "huey.db"), read_timeout=LONG)
    ran = threading.Event()
    task = huey.task()(ran.set)
    consumer = Consumer(huey, workers=1, worker_type="thread", periodic=False, max_delay=LONG)
    consumer.start()
    try:
        task()
        assert ran.wait(PATIENCE)
    finally:
        consumer.stop_flag.set()
        huey.storage.wake_one()  # the idle worker sees the stop now, not after LONG
        consumer.stop(graceful=True)


def test_a_planted_file_or_link_at_the_wake_path_is_never_written_and_tasks_still_run(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    for planted in ("link", "file"):
        data_dir = tmp_path / planted
        data_dir.mkdir()
        db = data_dir / "huey.db"
        wake = Path(f"{db}.wake")
        if planted == "link":
            wake.symlink_to(outside)
        else:
            wake.write_text("")
        storage = WakingSqliteStorage("q", filename=str(db), read_timeout=0.05)
        storage.enqueue(b"task")
        assert bytes(storage.dequeue()) == b"task"
        assert storage.dequeue() is None  # polls (read_timeout) instead of waiting on the FIFO
        assert outside.read_text() == "keep me"
        assert wake.is_symlink() if planted == "link" else wake.read_bytes() == b""
