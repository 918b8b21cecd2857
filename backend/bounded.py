"""Run one function call in a child process with a time and memory budget.

Untrusted input (an uploaded polygon) can make GEOS take minutes and gigabytes. In a child the
cost is capped (address-space limit, CPU limit, then SIGKILL at the deadline) and the caller only
waits on a pipe, so the server and its other requests keep running. Children are forked from a
forkserver (a fresh single-threaded interpreter with the modules preloaded), never from the
multi-threaded server process, and start in milliseconds.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import resource
from typing import Any, Callable

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["backend.boundaries"])


class BudgetExceeded(Exception):
    """The call ran out of time (`kind` "time") or memory (`kind` "memory") and was stopped."""

    def __init__(self, kind: str, limit: float) -> None:
        super().__init__(f"{kind} budget of {limit:g} exceeded")
        self.kind, self.limit = kind, limit


def _address_space() -> int:
    """Bytes of virtual memory this process maps now (VmSize)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


class _AllocationFailures(logging.Handler):
    """Notes C++ allocation failures: shapely logs GEOS's `std::bad_alloc` and then raises a
    generic error ("Failed to evaluate ..."), which alone would not say that memory ran out."""

    seen = False

    def emit(self, record: logging.LogRecord) -> None:
        if "bad_alloc" in record.getMessage():
            self.seen = True


def _child(conn, func: Callable[..., Any], args: tuple, seconds: float, memory_bytes: int) -> None:
    limit = _address_space() + memory_bytes  # on top of the interpreter and preloaded libraries
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cpu = math.ceil(seconds) + 1  # a backstop should the parent be gone and not kill us
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    allocation_failures = _AllocationFailures()
    logging.getLogger().addHandler(allocation_failures)
    try:
        answer: tuple[str, Any] = ("ok", func(*args))
    except MemoryError:
        answer = ("memory", None)
    except Exception as exc:  # handed to the caller, who decides what it means
        answer = ("memory", None) if allocation_failures.seen else ("error", exc)
    try:
        conn.send(answer)
    except MemoryError:
        conn.send(("memory", None))
    except Exception as exc:  # an unpicklable exception: keep its text
        conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
    conn.close()


def run_bounded(func: Callable[..., Any], *args: Any, seconds: float, memory_bytes: int) -> Any:
    """`func(*args)` in a child process: its result, or the exception it raised.

    Raises `BudgetExceeded("time")` when no answer came within `seconds` (the child is killed) and
    `BudgetExceeded("memory")` when the child ran out of its `memory_bytes` or died without an
    answer. `func` must be importable (module level) and its arguments and result picklable.
    """
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(target=_child, args=(sender, func, args, seconds, memory_bytes), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(seconds):
            raise BudgetExceeded("time", seconds)
        try:
            status, value = receiver.recv()
        except EOFError:  # killed (an allocation that aborted, RLIMIT_CPU) before answering
            raise BudgetExceeded("memory", memory_bytes) from None
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        receiver.close()
    if status == "memory":
        raise BudgetExceeded("memory", memory_bytes)
    if status == "error":
        raise value
    return value
