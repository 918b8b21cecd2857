"""Huey's SQLite queue storage, with idle workers woken the moment a task is enqueued.

Huey's `SqliteStorage` is polled: an idle worker sleeps between two looks at the task table, so
every hop of a job (POST -> boundary setup -> processors -> provenance) waited up to the poll
interval (0.1 s: a tenth of a 140-file STORM job). `RedisStorage` blocks in BRPOP instead and
wakes at once. This storage does the same on one machine: each enqueue writes one byte into a
FIFO beside the database (`<huey.db>.wake`), and an idle worker's `dequeue` waits on that FIFO
(`select`) for at most `read_timeout` seconds before it looks at the table again. A worker takes
one byte per wake-up, so a group of N tasks wakes N idle workers. A lost byte (no worker
running, a full pipe) costs at most `read_timeout`, the old poll interval, which also bounds
how long a stopping worker waits; idle, a worker still looks at the table `1 / read_timeout`
times a second, as before.

The FIFO is opened without following links and used only if it is one: anything else at that
path (a planted file or link) is never written, and the workers fall back to polling.
"""
from __future__ import annotations

import contextlib
import logging
import os
import select
import stat
import time

from huey.api import Huey
from huey.storage import SqliteStorage

log = logging.getLogger(__name__)

#: Longest wait of an idle worker before it looks at the task table again (Huey's own poll
#: interval was this `max_delay`).
READ_TIMEOUT = 0.1
_NO_FOLLOW = os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


class WakingSqliteStorage(SqliteStorage):
    """`SqliteStorage` whose `dequeue` blocks (like Redis's BRPOP) until a task is enqueued or
    `read_timeout` passes. `blocking = True` tells Huey's worker loop not to sleep on its own."""

    blocking = True

    def __init__(self, name: str = "huey", filename: str = "huey.db", read_timeout: float = READ_TIMEOUT, **kwargs):
        super().__init__(name, filename=filename, **kwargs)
        self.read_timeout = read_timeout
        self.wake_path = f"{filename}.wake"
        self._reader: tuple[int, int | None] | None = None  # (pid, fd): each worker process opens its own
        try:
            os.mkfifo(self.wake_path, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:  # a file system without FIFOs: workers poll
            log.warning("no wake-up FIFO at %s (%s): idle workers poll every %g s", self.wake_path, exc, read_timeout)

    def enqueue(self, data, priority=None) -> None:
        super().enqueue(data, priority)
        self.wake_one()

    def dequeue(self):
        fd = self._wake_fd()  # open before looking: a task enqueued after the look leaves its byte
        data = super().dequeue()
        if data is not None:
            return data
        if fd is None:
            time.sleep(self.read_timeout)  # Huey's own poll, without the FIFO
        elif select.select([fd], [], [], self.read_timeout)[0]:
            with contextlib.suppress(BlockingIOError):  # another worker took this wake-up
                os.read(fd, 1)
        return super().dequeue()

    def close(self):
        closed = super().close()
        if self._reader is not None and self._reader[0] == os.getpid() and self._reader[1] is not None:
            os.close(self._reader[1])
        self._reader = None
        return closed

    def wake_one(self) -> None:
        """One byte into the FIFO: wakes one idle worker (or the next to wait)."""
        try:
            fd = os.open(self.wake_path, os.O_WRONLY | _NO_FOLLOW)
        except OSError:  # ENXIO: no worker runs; ENOENT/ELOOP: no FIFO there (see the module doc)
            return
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.write(fd, b"\0")
        except OSError:  # EAGAIN: the pipe is full of wake-ups already
            pass
        finally:
            os.close(fd)

    def _wake_fd(self) -> int | None:
        """This process's read end of the FIFO, opened read-write so that it never reads as
        closed (EOF) when no writer has it open; None when the path holds no FIFO."""
        if self._reader is None or self._reader[0] != os.getpid():
            fd = None
            try:
                fd = os.open(self.wake_path, os.O_RDWR | _NO_FOLLOW)
                if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                    log.warning("%s is not a FIFO: idle workers poll every %g s", self.wake_path, self.read_timeout)
                    os.close(fd)
                    fd = None
            except OSError as exc:
                log.warning("cannot open the wake-up FIFO %s (%s): idle workers poll every %g s",
                            self.wake_path, exc, self.read_timeout)
            self._reader = (os.getpid(), fd)
        return self._reader[1]


class WakingSqliteHuey(Huey):
    """`SqliteHuey` on `WakingSqliteStorage`."""

    storage_class = WakingSqliteStorage
