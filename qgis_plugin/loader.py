"""Loading a data package into the project.

`fetch_package` makes a package's files available locally from a worker thread (a `QgsTask`
such as `DownloadPackageTask`, or a processing algorithm): the backend's own file when its package
root is on this machine and the sha256 matches, else the download cache when it holds the same
sha256, else a streamed download into the cache. `add_package_layers` then runs on the GUI thread (from the task's
`finished()`): one group per boundary, one sub-group per dataset, one layer per file, layer
metadata from the datapackage resource, and no duplicates when loaded twice.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from qgis.core import (
    Qgis,
    QgsAbstractMetadataBase,
    QgsApplication,
    QgsColorRampShader,
    QgsGradientColorRamp,
    QgsFeedback,
    QgsFillSymbol,
    QgsLayerMetadata,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsMessageLog,
    QgsNetworkAccessManager,
    QgsProject,
    QgsRasterBandStats,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSettings,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsStyle,
    QgsSymbol,
    QgsTask,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QEventLoop, QTimer, QUrl
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtNetwork import QNetworkReply, QNetworkRequest

from .__about__ import PLUGIN_NAME, SETTINGS_PREFIX
from .backend_client import error_message

RASTER_EXTENSIONS = {".tif", ".tiff", ".vrt", ".nc", ".asc", ".img", ".jp2"}
VECTOR_EXTENSIONS = {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".csv", ".parquet"}
CACHE_SETTING = f"{SETTINGS_PREFIX}/cache_dir"


def default_cache_dir() -> Path:
    return Path(QgsApplication.qgisSettingsDirPath()) / "ccg_autopkg_cache"


def cache_dir() -> Path:
    """The download cache: setting `ccg_autopkg/cache_dir`, default under the QGIS profile."""
    configured = QgsSettings().value(CACHE_SETTING, "", type=str)
    return Path(configured) if configured else default_cache_dir()


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
LOCAL_ROOT_SETTING = f"{SETTINGS_PREFIX}/local_package_root"
USE_LOCAL_SETTING = f"{SETTINGS_PREFIX}/use_local_packages"
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
    settings = QgsSettings()
    if not settings.value(USE_LOCAL_SETTING, True, type=bool):
        return []
    explicit = settings.value(LOCAL_ROOT_SETTING, "", type=str)
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

    Runs a local event loop in the calling thread with that thread's `QgsNetworkAccessManager`
    (QGIS keeps one per thread): meant for worker threads (QgsTask, processing). Cancellation:
    `feedback.isCanceled()` is checked every 100 ms and aborts the reply.
    """
    local.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=".part-")
    handle = os.fdopen(fd, "wb")
    digest = hashlib.sha256()
    error_body = bytearray()
    received = [0]
    request = QNetworkRequest(QUrl(url))
    request.setAttribute(QNetworkRequest.CacheLoadControlAttribute, QNetworkRequest.AlwaysNetwork)
    request.setAttribute(QNetworkRequest.FollowRedirectsAttribute, True)
    for key, value in (headers or {}).items():  # e.g. Authorization: Bearer <token>
        request.setRawHeader(key, value)
    if hasattr(request, "setTransferTimeout"):
        request.setTransferTimeout(60000)  # no byte for a minute: give up
    loop = QEventLoop()
    reply = QgsNetworkAccessManager.instance().get(request)
    reply.setReadBufferSize(READ_BUFFER_BYTES)  # back-pressure: Qt stops reading the socket when full

    def read() -> None:
        data = bytes(reply.readAll())
        if not data:
            return
        status = reply.attribute(QNetworkRequest.HttpStatusCodeAttribute)
        if status is not None and status >= 400:
            if len(error_body) < 65536:
                error_body.extend(data[:65536])
            return
        handle.write(data)
        digest.update(data)
        received[0] += len(data)
        if on_bytes is not None:  # per chunk: Qt's downloadProgress may come only at the end
            total = reply.header(QNetworkRequest.ContentLengthHeader)
            on_bytes(received[0], int(total) if total is not None else -1)

    def check_cancel() -> None:
        if feedback is not None and feedback.isCanceled() and reply.isRunning():
            reply.abort()

    timer = QTimer()
    timer.setInterval(CANCEL_CHECK_MS)
    timer.timeout.connect(check_cancel)
    reply.readyRead.connect(read)
    reply.finished.connect(loop.quit)
    try:
        timer.start()
        if not reply.isFinished():
            loop.exec_()
        timer.stop()
        read()  # whatever arrived with the final chunk
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
        timer.stop()
        reply.deleteLater()


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
    """Fetch the files of one package (see `fetch_package`) in a cancellable background task."""

    def __init__(self, boundary_name: str, files: list[PackageFile], cache_root: Path,
                 on_done: Callable[[bool, DownloadResult], None], *, base_url: str = "",
                 local_roots: Optional[list[Path]] = None, token: str = ""):
        super().__init__(f"{PLUGIN_NAME}: download package {boundary_name}", QgsTask.CanCancel)
        self.token = token
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
            from .blocking_client import BlockingClient

            from .auth import bearer_header

            client = BlockingClient(self.base_url, self._feedback, token=self.token) if self.base_url else None
            authorization = bearer_header(self.token)
            self.result = fetch_package(self.boundary_name, self.files, self.cache_root, feedback=self._feedback,
                                        progress=self.setProgress, local_roots=self.local_roots, client=client,
                                        headers={b"Authorization": authorization} if authorization else None)
            return True
        except Exception as exc:  # reported in finished(); an exception must not leave run()
            self.result.error = "cancelled" if self.isCanceled() else (str(exc) or exc.__class__.__name__)
            return False

    def finished(self, ok: bool) -> None:  # GUI thread
        if not ok and not self.result.error:
            self.result.error = "cancelled" if self.isCanceled() else "download failed"
        self.on_done(ok, self.result)

# -- styles ------------------------------------------------------------------------------------
RAMP_NAME = "Viridis"
STATS_SAMPLE = 250_000  # pixels sampled for the stretch: quick on the GUI thread even for big rasters
FILL = QColor(46, 134, 171, 90)
STROKE = QColor(27, 79, 114)


def style_raster(layer: QgsRasterLayer) -> None:
    """Single-band rasters: a continuous colour ramp stretched on the band's (sampled) min/max,
    nodata transparent. Multi-band rasters keep QGIS's default (RGB) renderer."""
    provider = layer.dataProvider()
    if layer.bandCount() != 1 or provider is None:
        return
    provider.setUseSourceNoDataValue(1, True)
    stats = provider.bandStatistics(1, QgsRasterBandStats.Min | QgsRasterBandStats.Max, layer.extent(), STATS_SAMPLE)
    low, high = stats.minimumValue, stats.maximumValue
    if not (low == low and high == high):  # NaN: an all-nodata raster
        return
    if high <= low:
        high = low + 1
    ramp = QgsStyle.defaultStyle().colorRamp(RAMP_NAME) or QgsGradientColorRamp(QColor(68, 1, 84), QColor(253, 231, 37))
    function = QgsColorRampShader(low, high, ramp, QgsColorRampShader.Interpolated)
    function.classifyColorRamp(5)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(function)
    renderer = QgsSingleBandPseudoColorRenderer(provider, 1, shader)
    renderer.setClassificationMin(low)
    renderer.setClassificationMax(high)
    layer.setRenderer(renderer)


def style_vector(layer: QgsVectorLayer) -> None:
    """A readable single symbol by geometry type: translucent fill, lines, small markers."""
    geometry_type = layer.geometryType()
    if geometry_type not in (QgsWkbTypes.PointGeometry, QgsWkbTypes.LineGeometry, QgsWkbTypes.PolygonGeometry):
        return
    symbol = QgsSymbol.defaultSymbol(geometry_type)
    if symbol is None:
        return
    if geometry_type == QgsWkbTypes.PolygonGeometry:
        symbol.setColor(FILL)
        layer_symbol = symbol.symbolLayer(0)
        if hasattr(layer_symbol, "setStrokeColor"):
            layer_symbol.setStrokeColor(STROKE)
            layer_symbol.setStrokeWidth(0.4)
    elif geometry_type == QgsWkbTypes.LineGeometry:
        symbol.setColor(STROKE)
        symbol.setWidth(0.6)
    else:
        symbol.setColor(STROKE)
        symbol.setSize(2.4)
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))


def style_layer(layer: QgsMapLayer) -> None:
    if isinstance(layer, QgsRasterLayer):
        style_raster(layer)
    elif isinstance(layer, QgsVectorLayer):
        style_vector(layer)


# -- layers ------------------------------------------------------------------------------------

def _source_path(source: str) -> str:
    return os.path.normpath(source.split("|", 1)[0])


def _child_group(parent: QgsLayerTreeGroup, name: str, index: int | None = None) -> QgsLayerTreeGroup:
    for child in parent.children():
        if isinstance(child, QgsLayerTreeGroup) and child.name() == name:
            return child
    return parent.insertGroup(index, name) if index is not None else parent.addGroup(name)


def layer_metadata(resource: dict[str, Any], package: dict[str, Any]) -> QgsLayerMetadata:
    """QGIS layer metadata from a datapackage resource."""
    meta = QgsLayerMetadata()
    meta.setIdentifier(resource.get("name", ""))
    meta.setParentIdentifier(package.get("name", ""))
    meta.setTitle(resource.get("title") or resource.get("name", ""))
    meta.setAbstract(resource.get("description", ""))
    meta.setType("dataset")
    licenses = resource.get("licenses") or ([resource["license"]] if resource.get("license") else [])
    meta.setLicenses([" ".join(x for x in (lic.get("title") or lic.get("name", ""), f"<{lic['path']}>" if lic.get("path") else "") if x) for lic in licenses])
    rights = [resource["citation"]] if resource.get("citation") else []
    if resource.get("author"):
        rights.append(f"Author: {resource['author']}")
    meta.setRights(rights)
    keywords = [k for k in (resource.get("processor"), package.get("name")) if k]
    if keywords:
        meta.addKeywords("ccg_autopkg", keywords)
    for source in resource.get("sources", []):
        if source.get("path"):
            meta.addLink(QgsAbstractMetadataBase.Link(source.get("title") or "source", "WWW:LINK", source["path"]))
    for lic in licenses:
        if lic.get("path"):
            meta.addLink(QgsAbstractMetadataBase.Link(f"Licence: {lic.get('title') or lic.get('name')}", "WWW:LINK", lic["path"]))
    return meta


def make_layer(path: Path, name: str, resource: dict[str, Any]) -> QgsMapLayer:
    suffix = path.suffix.lower()
    if suffix in RASTER_EXTENSIONS:
        return QgsRasterLayer(str(path), name, "gdal")
    source = str(path)
    if suffix == ".gpkg" and resource.get("layer"):
        source += f"|layername={resource['layer']}"
    layer = QgsVectorLayer(source, name, "ogr")
    if not layer.isValid() and suffix not in VECTOR_EXTENSIONS:
        raster = QgsRasterLayer(str(path), name, "gdal")
        if raster.isValid():
            return raster
    return layer


@dataclass
class LoadReport:
    added: list[QgsMapLayer] = field(default_factory=list)
    existing: list[QgsMapLayer] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "file: reason"
    group: Optional[QgsLayerTreeGroup] = None
    outline: Optional[QgsVectorLayer] = None  # the boundary outline on top of the group


def style_outline(layer: QgsVectorLayer) -> None:
    """No fill, a bold outline: the boundary stays readable on top of every dataset."""
    symbol = QgsFillSymbol.createSimple({"style": "no", "outline_style": "solid", "outline_color": "230,60,30,255", "outline_width": "0.8"})
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))


def add_outline_layer(group: QgsLayerTreeGroup, outline: Path, title: str, project: QgsProject) -> Optional[QgsVectorLayer]:
    """The boundary outline (a GeoJSON file) as the first layer of `group`, once."""
    wanted = os.path.normpath(str(outline))
    for node in group.findLayers():
        if node.layer() is not None and _source_path(node.layer().source()) == wanted:
            if group.children().index(node) != 0:  # keep it on top
                clone = node.clone()
                group.insertChildNode(0, clone)
                group.removeChildNode(node)
                return clone.layer()
            return node.layer()
    layer = QgsVectorLayer(str(outline), f"{title} boundary", "ogr")
    if not layer.isValid():
        QgsMessageLog.logMessage(f"boundary outline {outline} cannot be opened", PLUGIN_NAME, Qgis.Warning)
        return None
    style_outline(layer)
    project.addMapLayer(layer, False)
    group.insertLayer(0, layer)
    return layer


def add_package_layers(package: dict[str, Any], files: list[PackageFile], project: QgsProject | None = None,
                       outline: Optional[Path] = None) -> LoadReport:
    """Add the package's files to the project under `<boundary title>/<dataset title>`.

    Layers whose file is already in the dataset's group are not added again; files QGIS cannot
    open are reported in `failed` and left out of the project. With `outline` (a GeoJSON file of
    the boundary), the boundary outline is the group's first layer.
    """
    project = project or QgsProject.instance()
    datapackage = package.get("datapackage") or {}
    resources = {r.get("name"): r for r in datapackage.get("resources", [])}
    root = project.layerTreeRoot()
    group = _child_group(root, datapackage.get("title") or package.get("boundary_name", "package"), 0)
    report = LoadReport(group=group)
    for f in files:
        if f.local_path is None:
            report.failed.append(f"{f.path}: not downloaded")
            continue
        resource = resources.get(f.dataset, {"name": f.dataset})
        sub = _child_group(group, resource.get("title") or f.dataset)
        wanted = os.path.normpath(str(f.local_path))
        existing = [n.layer() for n in sub.findLayers() if n.layer() is not None and _source_path(n.layer().source()) == wanted]
        if existing:
            report.existing.extend(existing)
            continue
        layer = make_layer(f.local_path, Path(f.path).stem, resource)
        if not layer.isValid():
            error = (layer.error().summary() if layer.error() else "").strip().rstrip(":").strip()
            report.failed.append(f"{Path(f.path).name}: QGIS cannot open it{(' (' + error + ')') if error else ''}")
            continue
        style_layer(layer)
        layer.setMetadata(layer_metadata(resource, datapackage))
        if resource.get("author") and hasattr(layer, "setAttribution"):
            layer.setAttribution(resource["author"])
        layer.setAbstract(resource.get("description", ""))
        project.addMapLayer(layer, False)
        sub.addLayer(layer)
        report.added.append(layer)
    for sub in list(group.children()):  # no empty dataset groups from files that failed
        if isinstance(sub, QgsLayerTreeGroup) and not sub.children():
            group.removeChildNode(sub)
    if not group.children():
        root.removeChildNode(group)
        report.group = None
    elif outline is not None:
        report.outline = add_outline_layer(group, Path(outline), datapackage.get("title") or package.get("boundary_name", ""), project)
    for failure in report.failed:
        QgsMessageLog.logMessage(f"{package.get('boundary_name')}: {failure}", PLUGIN_NAME, Qgis.Warning)
    return report
