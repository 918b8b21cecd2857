"""`autopkg serve` as a child process of QGIS ("Start local backend").

The command comes from the setting `ccg_autopkg/autopkg_command` (a command line, split like a
shell would, or a JSON list), else `autopkg` on PATH, else `<repo>/.venv/bin/autopkg` when the
plugin is a development link into the repository. The process runs in a `QProcess`; readiness is
polled with asynchronous requests on a `QTimer`; `stop()` terminates it and kills it after a
timeout, all without waiting on the GUI thread.
"""
from __future__ import annotations

import json
import shlex
import shutil
from typing import Optional

from qgis.PyQt.QtCore import QObject, QProcess, QTimer, QUrl, pyqtSignal

from .__about__ import PLUGIN_DIR
from .api.backend_client import BackendClient
from .settings import settings

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
READY_POLL_MS = 250
READY_TIMEOUT_MS = 90_000
KILL_AFTER_MS = 5_000
OUTPUT_TAIL_CHARS = 4000

_stopping: set["LocalBackend"] = set()  # processes being stopped after their owner went away
_kept: set["LocalBackend"] = set()  # left running when the plugin unloaded (a job of theirs was unfinished)


def keep_running(backend: "LocalBackend") -> None:
    """Leave `backend` running after its owner goes away (until QGIS exits)."""
    backend._poll.stop()
    backend._deadline.stop()
    _kept.add(backend)


def is_loopback_url(url: str) -> bool:
    return QUrl(url).host().lower() in LOOPBACK_HOSTS


def url_port(url: str) -> int:
    qurl = QUrl(url)
    return qurl.port(443 if qurl.scheme() == "https" else 80)


def autopkg_command() -> list[str]:
    """The command that runs `autopkg` ([] when none is found)."""
    configured = settings.autopkg_command
    if configured:
        if configured.startswith("["):
            try:
                value = json.loads(configured)
                if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                    return value
            except ValueError:
                pass
        return shlex.split(configured)
    found = shutil.which("autopkg")
    if found:
        return [found]
    repo = PLUGIN_DIR.parent  # PLUGIN_DIR is resolved: a dev link points into the repository
    dev = repo / ".venv" / "bin" / "autopkg"
    if dev.is_file() and (repo / "backend").is_dir():
        return [str(dev)]
    return []


class LocalBackend(QObject):
    """One `autopkg serve --port <port>` child process and its readiness polling."""

    ready = pyqtSignal()
    failed = pyqtSignal(str)  # why it did not come up (with the tail of its output)
    stopped = pyqtSignal()

    def __init__(self, command: list[str], url: str):
        super().__init__()  # no parent: it may outlive the panel while it stops
        self.url = url
        self.command = list(command)
        host = QUrl(url).host()
        self.arguments = self.command[1:] + ["serve", "--port", str(url_port(url))]
        if host in ("127.0.0.1", "localhost"):
            self.arguments += ["--host", "127.0.0.1"]
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.MergedChannels)
        self.process.readyReadStandardOutput.connect(self._read_output)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)
        self.output = ""
        self.is_ready = False
        self._stopping = False
        self._reported = False
        self._probe = BackendClient(url, self)
        self._poll = QTimer(self)
        self._poll.setInterval(READY_POLL_MS)
        self._poll.timeout.connect(self._check_ready)
        self._deadline = QTimer(self)
        self._deadline.setSingleShot(True)
        self._deadline.setInterval(READY_TIMEOUT_MS)
        self._deadline.timeout.connect(lambda: self._fail(f"not ready after {READY_TIMEOUT_MS // 1000} s"))
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.setInterval(KILL_AFTER_MS)
        self._kill_timer.timeout.connect(self._kill)
        self._probing = False

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.process.start(self.command[0], self.arguments)
        self._poll.start()
        self._deadline.start()

    def pid(self) -> int:
        return int(self.process.processId())

    def running(self) -> bool:
        return self.process.state() != QProcess.NotRunning

    def command_line(self) -> str:
        return " ".join(shlex.quote(a) for a in [self.command[0], *self.arguments])

    def stop(self) -> None:
        """Terminate (SIGTERM), kill after `KILL_AFTER_MS`; returns at once."""
        self._stopping = True
        self._poll.stop()
        self._deadline.stop()
        self._probe.close()
        if not self.running():
            self._cleanup()
            return
        _stopping.add(self)  # keep this object (and its QProcess) alive until the child is gone
        self.process.terminate()
        self._kill_timer.start()

    # -- internals ------------------------------------------------------------------------------
    def _kill(self) -> None:
        if self.running():
            self.process.kill()

    def _read_output(self) -> None:
        text = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        self.output = (self.output + text)[-OUTPUT_TAIL_CHARS:]

    def _check_ready(self) -> None:
        if self._probing or self.is_ready or not self.running():
            return
        self._probing = True

        def ok(_data) -> None:
            self._probing = False
            if self._stopping or self.is_ready:
                return
            self.is_ready = True
            self._poll.stop()
            self._deadline.stop()
            self.ready.emit()

        def not_yet(_message: str, _status: Optional[int]) -> None:
            self._probing = False

        self._probe.readiness(on_success=ok, on_error=not_yet)

    def _fail(self, reason: str) -> None:
        if self._reported or self._stopping:
            return
        self._reported = True
        self._poll.stop()
        self._deadline.stop()
        tail = self.output.strip().splitlines()[-8:]
        self.failed.emit(reason + (":\n" + "\n".join(tail) if tail else ""))
        if self.running():
            self.stop()

    def _error(self, error) -> None:
        if error == QProcess.FailedToStart:
            self._fail(f"cannot start {self.command[0]!r}: {self.process.errorString()}")

    def _finished(self, code: int, _status) -> None:
        self._read_output()
        if not self._stopping:
            self._fail(f"`{self.command_line()}` exited with code {code}")
        self._kill_timer.stop()
        self.stopped.emit()
        self._cleanup()

    def _cleanup(self) -> None:
        if self in _stopping:
            _stopping.discard(self)
            self.deleteLater()
