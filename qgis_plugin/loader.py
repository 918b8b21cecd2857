"""Loading a data package into the project.

`DownloadPackageTask` fetches the package's files over HTTP into a local cache folder in a
worker thread (a `QgsTask`; `QgsBlockingNetworkRequest` is fine there), skipping files already
cached with the same sha256. `add_package_layers` then runs on the GUI thread (from the task's
`finished()`): one group per boundary, one sub-group per dataset, one layer per file, layer
metadata from the datapackage resource, and no duplicates when loaded twice.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from qgis.core import (
    Qgis,
    QgsAbstractMetadataBase,
    QgsApplication,
    QgsBlockingNetworkRequest,
    QgsColorRampShader,
    QgsGradientColorRamp,
    QgsFeedback,
    QgsLayerMetadata,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsMessageLog,
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
from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtNetwork import QNetworkRequest

from .__about__ import PLUGIN_NAME, SETTINGS_PREFIX

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


def package_files(package: dict[str, Any], absolute: Callable[[str], str]) -> list[PackageFile]:
    """The files of a `GET /v1/packages/{boundary}` answer with absolute URLs."""
    files = []
    for dataset in package.get("datasets", []):
        for f in dataset.get("files", []):
            files.append(PackageFile(dataset=dataset["name"], path=f["path"], uri=absolute(f["uri"]), sha256=f.get("sha256") or "", bytes=f.get("bytes")))
    return files


class DownloadPackageTask(QgsTask):
    """Download the files of one package into `cache_root/<boundary>/<path>` (cancellable)."""

    def __init__(self, boundary_name: str, files: list[PackageFile], cache_root: Path,
                 on_done: Callable[[bool, DownloadResult], None]):
        super().__init__(f"{PLUGIN_NAME}: download package {boundary_name}", QgsTask.CanCancel)
        self.boundary_name = boundary_name
        self.target = Path(cache_root) / boundary_name
        self.result = DownloadResult(files=files)
        self.on_done = on_done
        self._feedback = QgsFeedback()

    def cancel(self) -> None:
        self._feedback.cancel()
        super().cancel()

    def run(self) -> bool:  # worker thread: no widgets here
        try:
            total = sum(f.bytes or 1 for f in self.result.files) or 1
            done = 0
            for f in self.result.files:
                if self.isCanceled():
                    self.result.error = "cancelled"
                    return False
                local = (self.target / f.path).resolve()
                if self.target.resolve() not in local.parents:
                    raise ValueError(f"unsafe path in package: {f.path!r}")
                if not (local.is_file() and f.sha256 and sha256_of(local) == f.sha256):
                    self._download(f, local)
                    f.downloaded = True
                    self.result.downloaded += 1
                else:
                    self.result.cached += 1
                f.local_path = local
                done += f.bytes or 1
                self.setProgress(100.0 * done / total)
            return True
        except Exception as exc:  # reported in finished(); an exception must not leave run()
            self.result.error = str(exc) or exc.__class__.__name__
            return False

    def _download(self, f: PackageFile, local: Path) -> None:
        request = QgsBlockingNetworkRequest()
        code = request.get(QNetworkRequest(QUrl(f.uri)), True, self._feedback)
        if self.isCanceled():
            raise RuntimeError("cancelled")
        if code != QgsBlockingNetworkRequest.NoError:
            raise RuntimeError(f"download of {f.uri} failed: {request.errorMessage()}")
        content = bytes(request.reply().content())
        digest = hashlib.sha256(content).hexdigest()
        if f.sha256 and digest != f.sha256:
            raise RuntimeError(f"download of {f.uri}: sha256 {digest} does not match the package's {f.sha256}")
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            os.replace(tmp, local)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

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


def add_package_layers(package: dict[str, Any], files: list[PackageFile], project: QgsProject | None = None) -> LoadReport:
    """Add the package's files to the project under `<boundary title>/<dataset title>`.

    Layers whose file is already in the dataset's group are not added again; files QGIS cannot
    open are reported in `failed` and left out of the project.
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
    for failure in report.failed:
        QgsMessageLog.logMessage(f"{package.get('boundary_name')}: {failure}", PLUGIN_NAME, Qgis.Warning)
    return report
