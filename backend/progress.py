"""How `autopkg jobs submit --wait` shows a job: compact progress that fits 80 columns, then a summary."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import TextIO

from backend.contract import JobState
from backend.schemas import JobGroupStatus, JobStatus

WIDTH = 80
BAR = 20
PRINT_EVERY_PERCENT = 10  # without a terminal: a line per state change and per 10 % of a processor


def _bar(percent: float) -> str:
    filled = int(BAR * percent / 100)
    return "[" + "#" * filled + "." * (BAR - filled) + "]"


def _fit(text: str, width: int = WIDTH - 1) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _done(status: JobGroupStatus) -> int:
    return sum(p.job_status in (JobState.SUCCESS, JobState.FAILURE, JobState.SKIPPED, JobState.REVOKED)
               for p in status.job_group_processors)


@dataclass
class JobProgressView:
    """On a terminal, one line redrawn in place; otherwise (logs, pipes) a line per change."""

    out: TextIO
    terminal: bool
    _seen: dict[str, tuple[str, int]] = field(default_factory=dict)
    _drawn: bool = False

    def update(self, status: JobGroupStatus) -> None:
        if self.terminal:
            self.out.write("\r" + self.line(status) + "\x1b[K")
            self._drawn = True
        else:
            for p in status.job_group_processors:
                mark = (p.job_status, int(p.job_progress.percent // PRINT_EVERY_PERCENT) if p.job_progress else 0)
                if self._seen.get(p.processor_name) != mark:
                    self._seen[p.processor_name] = mark
                    self.out.write(self.processor_line(p) + "\n")
        self.out.flush()

    def line(self, status: JobGroupStatus) -> str:
        """`[#####...............]  25%  1/4 done  storm.global_mosaics_version_1: clipping`"""
        running = next((p for p in status.job_group_processors if p.job_status == JobState.EXECUTING), None)
        text = (f"{_bar(status.job_group_percent)} {status.job_group_percent_complete:3d}%  "
                f"{_done(status)}/{len(status.job_group_processors)} done")
        if running is not None:
            text += f"  {running.processor_name}: {running.job_progress.current_task if running.job_progress else ''}"
        return _fit(text)

    @staticmethod
    def processor_line(p: JobStatus) -> str:
        percent = p.job_progress.percent_complete if p.job_progress else 0
        task = p.job_progress.current_task if p.job_progress else ""
        return _fit(f"{percent:3d}%  {p.job_status:<9}  {p.processor_name}  {task}")

    def finish(self, status: JobGroupStatus, package_url: str) -> None:
        """The summary: counts, each processor's outcome (the reason when it did not succeed), the package."""
        if self._drawn:
            self.out.write("\n")
        counts: dict[str, int] = {}
        for p in status.job_group_processors:
            counts[p.job_status] = counts.get(p.job_status, 0) + 1
        self.out.write(f"Job {status.job_id} complete: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "\n")
        for p in status.job_group_processors:
            self.out.write(textwrap.fill(f"{p.processor_name}: {p.job_status} {outcome(p)}".rstrip(), WIDTH,
                                         initial_indent="  ", subsequent_indent="    ") + "\n")
        self.out.write(f"Package: {package_url}\n")
        self.out.flush()


def outcome(p: JobStatus) -> str:
    """A processor's result in a few words."""
    result = p.job_result or {}
    for key in ("failed", "revoked", "skipped"):
        if key in result:
            return f"- {result[key]}"
    if "paths" in result:
        followed = f", made by job {p.followed_job_id}" if p.followed_job_id else ""
        return f"- {count(len(result['paths']), 'file')}, {human_bytes(result.get('bytes') or 0)}{followed}"
    return ""


def human_bytes(size: float) -> str:
    if size < 1000:
        return f"{size:.0f} B"
    for unit in ("kB", "MB"):
        size /= 1000
        if size < 1000:
            return f"{size:.1f} {unit}"
    return f"{size / 1000:.1f} GB"


def count(n: int | None, word: str) -> str:
    """`1 file`, `3 files`, `? files` when unknown."""
    return f"{'?' if n is None else n} {word}{'' if n == 1 else 's'}"
