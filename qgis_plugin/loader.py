"""Fetching a data package's files.

`fetch_package` makes a package's files available locally from a worker thread (a `QgsTask`
such as `DownloadPackageTask`, or a processing algorithm): the backend's own file when its package
root is on this machine and the sha256 matches, else the download cache when it holds the same
sha256, else a streamed download into the cache. `layers` then turns them into a layer structure.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from qgis.core import QgsFeedback, QgsNetworkAccessManager, QgsTask
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QEventLoop, QTimer, QUrl
from qgis.PyQt.QtNetwork import QNetworkAccessManager, QNetworkReply, QNetworkRequest

from .__about__ import PLUGIN_NAME
from .api.backend_client import error_message
from .layers import BuiltLayers, Selection, build_layers, plan_package
from .settings import settings

FETCH_SHARE = 50.0  # task progress: fetching the files up to 50 %, opening them the rest


def cache_dir() -> Path:
    """The download cache (setting `ccg_autopkg/cache_dir`, default under the QGIS profile)."""
    return settings.cache_dir


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class PackageFile:
    dataset: str  # resource name, e.g. natural_earth_admin1-version_1
    path: str  # relative to the package folder
    uri: str  # absolute URL
    sha256: str
    bytes: Optional[int] = None
    local_path: Optional[Path] = None
    downloaded: bool = False


@dataclass
class DownloadResult:
    files: list[PackageFile] = field(default_factory=list)
    error: str = ""
    downloaded: int = 0
    cached: int = 0
    local: int = 0  # used in place from the backend's package root on this machine
    outline: Optional[Path] = None  # boundary.geojson for the outline layer
    outline_error: str = ""
    folder: Optional[Path] = None  # the local package folder (cache, or the backend's own folder)


def package_files(package: dict[str, Any], absolute: Callable[[str], str]) -> list[PackageFile]:
    """The files of a `GET /v1/packages/{boundary}` answer with absolute URLs."""
    files = []
    for dataset in package.get("datasets", []):
        for f in dataset.get("files", []):
            files.append(PackageFile(dataset=dataset["name"], path=f["path"], uri=absolute(f["uri"]), sha256=f.get("sha256") or "", bytes=f.get("bytes")))
    return files


# -- fetching (any thread: a QgsTask's run() or a processing algorithm) -------------------------
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
OUTLINE_FILE = "boundary.geojson"
CANCEL_CHECK_MS = 100
READ_BUFFER_BYTES = 1 << 20  # at most this much of a download waits in memory
Progress = Callable[[float], None]


def _backend_default_package_roots() -> list[Path]:
    """Where a backend on this machine keeps its packages (its environment variables and defaults)."""
    roots = []
    if os.environ.get("CCGAUTOPKG_LOCALFS_STORAGE_BACKEND_ROOT"):
        roots.append(Path(os.environ["CCGAUTOPKG_LOCALFS_STORAGE_BACKEND_ROOT"]))
    if os.environ.get("CCGAUTOPKG_DATA_DIR"):
        roots.append(Path(os.environ["CCGAUTOPKG_DATA_DIR"]) / "packages")
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    roots.append(Path(base) / "ccg-autopkg" / "packages")
    return roots


def local_package_roots(base_url: str) -> list[Path]:
    """Package roots on this machine whose files may be used in place of a download.

    Setting `ccg_autopkg/use_local_packages` (default true) switches this off; setting
    `ccg_autopkg/local_package_root` names the root explicitly (e.g. shared storage mounted here).
    Without it, and only for a backend on loopback, the backend's own defaults are tried
    (`CCGAUTOPKG_LOCALFS_STORAGE_BACKEND_ROOT`, `CCGAUTOPKG_DATA_DIR/packages`, the per-user data
    folder). A local file is only ever used when its size and sha256 match the package's.
    """
    if not settings.use_local_packages:
        return []
    explicit = settings.local_package_root
    if explicit:
        return [Path(explicit)] if Path(explicit).is_dir() else []
    if QUrl(base_url).host().lower() not in LOOPBACK_HOSTS:
        return []
    seen, roots = set(), []
    for root in _backend_default_package_roots():
        if root.is_dir() and root.resolve() not in seen:
            seen.add(root.resolve())
            roots.append(root)
    return roots


def _inside(root: Path, relative: str) -> Optional[Path]:
    path = (root / relative).resolve()
    return path if root.resolve() in path.parents else None


def find_local_copy(boundary_name: str, f: PackageFile, roots: list[Path]) -> Optional[Path]:
    """The package's own file on this machine (a file:// URI or under a local package root),
    when it exists with the same size and sha256; else None."""
    if not f.sha256:
        return None  # nothing to check a local file against: download it
    candidates = []
    if f.uri.startswith("file://"):
        candidates.append(Path(QUrl(f.uri).toLocalFile()))
    for root in roots:
        path = _inside(Path(root), f"{boundary_name}/{f.path}")
        if path is not None:
            candidates.append(path)
    for path in candidates:
        try:
            if not path.is_file() or (f.bytes is not None and path.stat().st_size != f.bytes):
                continue
            if sha256_of(path) == f.sha256:
                return path
        except OSError:
            continue
    return None


def stream_download(url: str, local: Path, sha256: str = "", feedback: Optional[QgsFeedback] = None,
                    on_bytes: Optional[Callable[[int, int], None]] = None,
                    headers: Optional[dict[bytes, bytes]] = None) -> None:
    """GET `url` into `local`, writing chunks to a `.part-` file as they arrive (never the whole
    file in memory), checking the sha256, then renaming into place.

    Runs a local event loop in the calling thread: meant for worker threads (QgsTask, processing).
    Cancellation: `feedback.isCanceled()` is checked at least every 100 ms and aborts the reply.

    Each download has its own `QNetworkAccessManager` (QGIS's proxy), deleted with its reply
    before returning, and only C++ slots are connected (Python reads between loop turns). QGIS
    3.22's per-thread `QgsNetworkAccessManager` in reused thread-pool threads, with replies deleted
    later and its HTTP disk cache shared by all threads, gave "QNetworkReply has been deleted",
    double frees and crashes after a few hundred downloads (tests/plugin/many_downloads.py).
    """
    local.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=".part-")
    handle = os.fdopen(fd, "wb")
    digest = hashlib.sha256()
    error_body = bytearray()
    received = 0
    request = QNetworkRequest(QUrl(url))
    request.setAttribute(QNetworkRequest.CacheLoadControlAttribute, QNetworkRequest.AlwaysNetwork)
    request.setAttribute(QNetworkRequest.CacheSaveControlAttribute, False)
    request.setAttribute(QNetworkRequest.FollowRedirectsAttribute, True)
    for key, value in (headers or {}).items():  # e.g. Authorization: Bearer <token>
        request.setRawHeader(key, value)
    if hasattr(request, "setTransferTimeout"):
        request.setTransferTimeout(60000)  # no byte for a minute: give up
    loop = QEventLoop()
    wake = QTimer()
    wake.setInterval(CANCEL_CHECK_MS)
    wake.timeout.connect(loop.quit)
    manager = QNetworkAccessManager()
    manager.setProxy(QgsNetworkAccessManager.instance().proxy())
    reply = manager.get(request)
    reply.setReadBufferSize(READ_BUFFER_BYTES)  # back-pressure: Qt stops reading the socket when full
    reply.readyRead.connect(loop.quit)
    reply.finished.connect(loop.quit)
    try:
        wake.start()
        while True:
            finished = reply.isFinished()  # before reading: nothing may arrive after the last read
            data = bytes(reply.readAll())
            if data:
                status = reply.attribute(QNetworkRequest.HttpStatusCodeAttribute)
                if status is not None and status >= 400:
                    error_body.extend(data[: max(0, 65536 - len(error_body))])
                else:
                    handle.write(data)
                    digest.update(data)
                    received += len(data)
                    if on_bytes is not None:  # per chunk: Qt's downloadProgress may come only at the end
                        total = reply.header(QNetworkRequest.ContentLengthHeader)
                        on_bytes(received, int(total) if total is not None else -1)
            if finished:
                break
            if feedback is not None and feedback.isCanceled():
                reply.abort()
                continue
            loop.exec_()
        wake.stop()
        handle.close()
        status = reply.attribute(QNetworkRequest.HttpStatusCodeAttribute)
        if feedback is not None and feedback.isCanceled():
            raise RuntimeError("cancelled")
        if reply.error() != QNetworkReply.NoError or status is None or status >= 400:
            raise RuntimeError(f"download of {url} failed: {error_message(status, bytes(error_body), reply.errorString())}")
        got = digest.hexdigest()
        if sha256 and got != sha256:
            raise RuntimeError(f"download of {url}: sha256 {got} does not match the package's {sha256}")
        os.replace(tmp, local)
    except BaseException:
        if not handle.closed:
            handle.close()
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        wake.stop()
        sip.delete(reply)
        sip.delete(manager)


def fetch_boundary_outline(client, boundary_name: str, target: Path) -> Path:
    """`GET /v1/boundaries/{name}` written as a one-feature GeoJSON file (for the outline layer)."""
    boundary = client.boundary(boundary_name)
    feature = {"type": "Feature", "properties": {"name": boundary.get("name"), "name_long": boundary.get("name_long")}, "geometry": boundary["geometry"]}
    document = json.dumps({"type": "FeatureCollection", "name": f"{boundary_name} boundary", "features": [feature]})
    path = target / OUTLINE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (path.is_file() and path.read_text(encoding="utf-8") == document):
        tmp = path.with_name(f".part-{OUTLINE_FILE}")
        tmp.write_text(document, encoding="utf-8")
        os.replace(tmp, path)
    return path


def fetch_package(boundary_name: str, files: list[PackageFile], cache_root: Path, *,
                  feedback: Optional[QgsFeedback] = None, progress: Optional[Progress] = None,
                  local_roots: Optional[list[Path]] = None, client=None,
                  headers: Optional[dict[bytes, bytes]] = None) -> DownloadResult:
    """Make every file of a package available locally (worker thread; raises on failure).

    Per file: the package's own copy on this machine when one matches (`find_local_copy`), else the
    cache `cache_root/<boundary>/<path>` when it holds the same sha256, else a streamed download
    into the cache. With a `blocking_client.BlockingClient`, the boundary outline is fetched too.
    """
    result = DownloadResult(files=files)
    target = Path(cache_root) / boundary_name
    total = sum(f.bytes or 1 for f in files) or 1
    done = 0

    def cancelled() -> bool:
        return feedback is not None and feedback.isCanceled()

    for f in files:
        if cancelled():
            raise RuntimeError("cancelled")
        local = _inside(target, f.path)
        if local is None:
            raise ValueError(f"unsafe path in package: {f.path!r}")
        own = find_local_copy(boundary_name, f, local_roots or [])
        if own is not None:
            f.local_path = own
            result.local += 1
        elif local.is_file() and f.sha256 and sha256_of(local) == f.sha256:
            f.local_path = local
            result.cached += 1
        else:
            start = done

            def on_bytes(received: int, _total: int, start=start) -> None:
                if progress is not None:
                    progress(100.0 * min(start + received, total) / total)

            # the token goes only to the backend itself, not to other hosts a package may link to
            same_origin = client is None or f.uri.startswith(client.base_url.rstrip("/") + "/")
            stream_download(f.uri, local, f.sha256, feedback, on_bytes, headers if same_origin else None)
            f.local_path = local
            f.downloaded = True
            result.downloaded += 1
        done += f.bytes or 1
        if progress is not None:
            progress(100.0 * done / total)
    if client is not None:
        try:
            result.outline = fetch_boundary_outline(client, boundary_name, target)
        except Exception as exc:  # the package is still usable without its outline
            if cancelled():
                raise RuntimeError("cancelled") from None
            result.outline_error = str(exc)
    result.folder = target
    if files and result.local == len(files):  # everything used in place: that package folder
        own = Path(str(files[0].local_path)[: -len(files[0].path)].rstrip("/\\"))
        if own.is_dir():
            result.folder = own
    return result


class DownloadPackageTask(QgsTask):
    """Fetch the files of one package (see `fetch_package`) and open them as styled layers
    (`layers.build_layers`) in a cancellable background task; `on_done(ok, result, built)` runs on
    the GUI thread, which then only inserts the layers (`layers.LayerInserter`)."""

    def __init__(self, package: dict[str, Any], files: list[PackageFile], cache_root: Path,
                 on_done: Callable[[bool, DownloadResult, Optional[BuiltLayers]], None], *, base_url: str = "",
                 local_roots: Optional[list[Path]] = None, token: str = "",
                 selection: Optional[Selection] = None, skip: frozenset[str] = frozenset()):
        boundary_name = package["boundary_name"]
        super().__init__(f"{PLUGIN_NAME}: load package {boundary_name}", QgsTask.CanCancel)
        self.token = token
        self.package = package
        self.selection = selection
        self.skip = skip
        self.built: Optional[BuiltLayers] = None
        self.boundary_name = boundary_name
        self.cache_root = Path(cache_root)
        self.target = self.cache_root / boundary_name
        self.files = files
        self.base_url = base_url
        self.local_roots = list(local_roots or [])
        self.result = DownloadResult(files=files)
        self.on_done = on_done
        self._feedback = QgsFeedback()

    def cancel(self) -> None:
        self._feedback.cancel()
        super().cancel()

    def run(self) -> bool:  # worker thread: no widgets here
        try:
            from .api.blocking_client import BlockingClient

            from .auth import bearer_header

            client = BlockingClient(self.base_url, self._feedback, token=self.token) if self.base_url else None
            authorization = bearer_header(self.token)
            self.result = fetch_package(self.boundary_name, self.files, self.cache_root, feedback=self._feedback,
                                        progress=lambda percent: self.setProgress(FETCH_SHARE * percent / 100.0),
                                        local_roots=self.local_roots, client=client,
                                        headers={b"Authorization": authorization} if authorization else None)
            plans = plan_package(self.package, self.result.files, selection=self.selection, outline=self.result.outline is not None)
            self.built = build_layers(self.package, plans, skip=self.skip, outline=self.result.outline, feedback=self._feedback,
                                      progress=lambda percent: self.setProgress(FETCH_SHARE + (100.0 - FETCH_SHARE) * percent / 100.0))
            return True
        except Exception as exc:  # reported in finished(); an exception must not leave run()
            self.result.error = "cancelled" if self.isCanceled() else (str(exc) or exc.__class__.__name__)
            return False

    def finished(self, ok: bool) -> None:  # GUI thread
        if not ok and not self.result.error:
            self.result.error = "cancelled" if self.isCanceled() else "download failed"
        self.on_done(ok, self.result, self.built if ok else None)
