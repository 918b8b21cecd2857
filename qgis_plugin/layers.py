"""From a data package's files to a layer structure in the project, without freezing QGIS.

Three steps, each on the thread it belongs to:

1. `plan_package` (any thread, plain data): which files become layers, in which group, under which
   name, and which one is visible. A datapackage resource may declare `dimensions` (e.g. climate
   model × return period) and `files[]` with a human `label` and the file's own `dimensions`; then
   the dataset's layers sit in collapsed sub-groups per dimension value (all dimensions but the last,
   which varies inside the innermost group), named by label. Only the *default slice* of a dataset
   (the file whose dimensions all equal their `default`) is visible, and at most `MAX_VISIBLE`
   layers of a package are (the boundary outline included). Without those keys every file sits in
   the dataset group, named after the file, the first one visible.
2. `build_layers` (a worker thread: `QgsTask.run()` or a processing algorithm): opening the files
   (GDAL/OGR), styling and metadata, then `moveToThread` to the GUI thread. Opening hundreds of
   rasters takes seconds; none of it happens on the GUI thread.
3. `LayerInserter` (GUI thread): adds the built layers to the project and layer tree in small
   slices of at most `SLICE_MS` each, yielding to the event loop between slices; hidden layers are
   inserted unchecked, so the canvas never renders them.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsLayerTreeGroup,
    QgsLayerTreeLayer,
    QgsMapLayer,
    QgsMessageLog,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QObject, QTimer, pyqtSignal

from .__about__ import PLUGIN_NAME
from .styles import apply_style, layer_metadata, style_outline

RASTER_EXTENSIONS = {".tif", ".tiff", ".vrt", ".nc", ".asc", ".img", ".jp2"}
VECTOR_EXTENSIONS = {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".csv", ".parquet"}
MAX_VISIBLE = 5  # visible layers of one package, its boundary outline included
SLICE_MS = 25  # GUI-thread work per event-loop turn while inserting layers
EXPANDED_MAX_CHILDREN = 12  # a dataset group with more direct children starts collapsed
SYNTHETIC_NOTE = ("SYNTHETIC: made from synthetic stand-ins for the real sources (offline sample mirror); "
                  "the values are NOT real data.")

# -- 1. plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    name: str
    title: str
    unit: str
    values: tuple[str, ...]
    default: Optional[str]

    @classmethod
    def from_resource(cls, entry: dict[str, Any]) -> "Dimension":
        values = tuple(str(v) for v in entry.get("values") or ())
        default = entry.get("default")
        return cls(name=str(entry["name"]), title=str(entry.get("title") or entry["name"]), unit=str(entry.get("unit") or ""),
                   values=values, default=None if default is None else str(default))

    def group_name(self, value: str) -> str:
        """'Return period: 100 years' — what a sub-group of this dimension is called."""
        return f"{self.title}: {value}" + (f" {self.unit}" if self.unit else "")


@dataclass
class PlannedLayer:
    source: Path  # the local file
    path: str  # the file's path in the package (as in the resource's path[])
    label: str  # the layer's name
    groups: tuple[str, ...]  # sub-groups below the dataset group
    dimensions: dict[str, str]
    visible: bool = False


@dataclass
class DatasetPlan:
    name: str  # resource name
    title: str  # the dataset group's name
    resource: dict[str, Any]
    dimensions: list[Dimension]
    layers: list[PlannedLayer] = field(default_factory=list)


# Which slices to load: {resource name: {dimension name: chosen values}}; a dimension left out
# (or a dataset left out) loads every value.
Selection = dict[str, dict[str, set[str]]]


def dataset_dimensions(resource: dict[str, Any]) -> list[Dimension]:
    return [Dimension.from_resource(d) for d in resource.get("dimensions") or [] if isinstance(d, dict) and d.get("name")]


def file_entries(resource: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The resource's `files[]` by path."""
    return {f["path"]: f for f in resource.get("files") or [] if isinstance(f, dict) and f.get("path")}


def is_default_slice(dimensions: list[Dimension], values: dict[str, str]) -> bool:
    return bool(dimensions) and all(d.default is not None and values.get(d.name) == d.default for d in dimensions)


def selected(selection: Optional[Selection], dataset: str, values: dict[str, str]) -> bool:
    """Whether a file (its dimension values) is in the selection; key "*" applies to every dataset,
    for the dimensions it has."""
    selection = selection or {}
    chosen = selection.get(dataset) or {}
    anywhere = {k: v for k, v in (selection.get("*") or {}).items() if k in values}
    return all(values.get(name) in allowed for name, allowed in {**anywhere, **chosen}.items())


def selection_from_text(text: str) -> Optional[Selection]:
    """'return_period=100,1000; model=constant' -> the same choice for every dataset that has
    those dimensions (None: everything). Raises ValueError on a malformed entry."""
    chosen: dict[str, set[str]] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, values = part.partition("=")
        if not sep or not name.strip() or not values.strip():
            raise ValueError(f"{part!r} is not dimension=value[,value…]")
        chosen.setdefault(name.strip(), set()).update(v.strip() for v in values.split(",") if v.strip())
    return {"*": chosen} if chosen else None


def plan_package(package: dict[str, Any], files: list, *, selection: Optional[Selection] = None,
                 max_visible: int = MAX_VISIBLE, outline: bool = True) -> list[DatasetPlan]:
    """The layer structure of a package (`files`: `loader.PackageFile`s with a local path)."""
    datapackage = package.get("datapackage") or {}
    resources = {r.get("name"): r for r in datapackage.get("resources", [])}
    plans: dict[str, DatasetPlan] = {}
    for f in files:
        resource = resources.get(f.dataset, {"name": f.dataset})
        plan = plans.get(f.dataset)
        if plan is None:
            plan = plans[f.dataset] = DatasetPlan(f.dataset, resource.get("title") or f.dataset, resource, dataset_dimensions(resource))
        entry = file_entries(resource).get(f.path, {})
        values = {str(k): str(v) for k, v in (entry.get("dimensions") or {}).items()}
        if not selected(selection, f.dataset, values):
            continue
        # every dimension but the last makes a sub-group; the last one varies inside it
        groups = tuple(d.group_name(values[d.name]) for d in plan.dimensions[:-1] if d.name in values)
        label = entry.get("label") or Path(f.path).stem
        plan.layers.append(PlannedLayer(source=f.local_path, path=f.path, label=str(label), groups=groups, dimensions=values))
    budget = max_visible - (1 if outline else 0)
    for plan in plans.values():
        if not plan.layers or budget <= 0:
            continue
        default = next((p for p in plan.layers if is_default_slice(plan.dimensions, p.dimensions)), plan.layers[0])
        default.visible = True
        budget -= 1
    return [p for p in plans.values() if p.layers]


def layer_count(package: dict[str, Any], selection: Optional[Selection] = None) -> int:
    """How many layers a selection of a package's slices gives (before anything is fetched)."""
    datapackage = package.get("datapackage") or {}
    resources = {r.get("name"): r for r in datapackage.get("resources", [])}
    count = 0
    for dataset in package.get("datasets", []):
        entries = file_entries(resources.get(dataset["name"], {}))
        for f in dataset.get("files", []):
            values = {str(k): str(v) for k, v in (entries.get(f["path"], {}).get("dimensions") or {}).items()}
            count += selected(selection, dataset["name"], values)
    return count


# -- 2. build (worker thread) --------------------------------------------------------------------


def make_layer(path: Path, name: str, resource: dict[str, Any]) -> QgsMapLayer:
    suffix = path.suffix.lower()
    if suffix in RASTER_EXTENSIONS:
        return QgsRasterLayer(str(path), name, "gdal", QgsRasterLayer.LayerOptions(False))
    source = str(path)
    if suffix == ".gpkg" and resource.get("layer"):
        source += f"|layername={resource['layer']}"
    layer = QgsVectorLayer(source, name, "ogr", QgsVectorLayer.LayerOptions(False))
    if not layer.isValid() and suffix not in VECTOR_EXTENSIONS:
        raster = QgsRasterLayer(str(path), name, "gdal", QgsRasterLayer.LayerOptions(False))
        if raster.isValid():
            return raster
    return layer


def describe(layer: QgsMapLayer, resource: dict[str, Any], datapackage: dict[str, Any]) -> None:
    """Metadata, attribution and abstract from the datapackage resource; synthetic data says so."""
    meta = layer_metadata(resource, datapackage)
    abstract = resource.get("description", "")
    if resource.get("synthetic"):
        abstract = f"{SYNTHETIC_NOTE}\n\n{abstract}".strip()
        meta.setAbstract(abstract)
    layer.setMetadata(meta)
    if resource.get("author"):
        layer.setAttribution(resource["author"])
    layer.setAbstract(abstract)


@dataclass
class BuiltLayers:
    """Layers opened off the GUI thread, ready to insert: (dataset plan, planned layer, layer)."""

    package: dict[str, Any]
    layers: list[tuple[DatasetPlan, PlannedLayer, QgsMapLayer]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "file: reason"
    outline: Optional[QgsVectorLayer] = None


def _source_path(source: str) -> str:
    return os.path.normpath(source.split("|", 1)[0])


def existing_sources(project: QgsProject, package: dict[str, Any]) -> set[str]:
    """Files already loaded in the package's group (GUI thread): they are not loaded again."""
    group = project.layerTreeRoot().findGroup(package_title(package))
    if group is None:
        return set()
    return {_source_path(n.layer().source()) for n in group.findLayers() if n.layer() is not None}


def package_title(package: dict[str, Any]) -> str:
    return (package.get("datapackage") or {}).get("title") or package.get("boundary_name", "package")


def build_layers(package: dict[str, Any], plans: list[DatasetPlan], *, skip: set[str] = frozenset(),
                 outline: Optional[Path] = None, feedback=None, progress=None) -> BuiltLayers:
    """Open and style every planned layer (any thread); the layers end up owned by the GUI thread."""
    datapackage = package.get("datapackage") or {}
    built = BuiltLayers(package)
    gui_thread = QgsApplication.instance().thread()
    total = sum(len(p.layers) for p in plans) or 1
    done = 0
    for plan in plans:
        for planned in plan.layers:
            if feedback is not None and feedback.isCanceled():
                raise RuntimeError("cancelled")
            done += 1
            if progress is not None:
                progress(100.0 * done / total)
            if planned.source is None:
                built.failed.append(f"{planned.path}: not downloaded")
                continue
            if os.path.normpath(str(planned.source)) in skip:
                continue
            layer = make_layer(Path(planned.source), planned.label, plan.resource)
            if not layer.isValid():
                error = layer.error()  # summary() of an empty QgsError crashes QGIS 3.22
                error = "" if error.isEmpty() else error.summary().strip().rstrip(":").strip()
                built.failed.append(f"{Path(planned.path).name}: QGIS cannot open it{(' (' + error + ')') if error else ''}")
                continue
            apply_style(layer, plan.resource.get("style"))
            describe(layer, plan.resource, datapackage)
            layer.moveToThread(gui_thread)
            built.layers.append((plan, planned, layer))
    if outline is not None and os.path.normpath(str(outline)) not in skip:
        layer = QgsVectorLayer(str(outline), f"{package_title(package)} boundary", "ogr", QgsVectorLayer.LayerOptions(False))
        if layer.isValid():
            style_outline(layer)
            layer.moveToThread(gui_thread)
            built.outline = layer
        else:
            built.failed.append(f"{Path(outline).name}: the boundary outline cannot be opened")
    return built


# -- 3. insert (GUI thread) ------------------------------------------------------------------------


@dataclass
class LoadReport:
    added: list[QgsMapLayer] = field(default_factory=list)
    existing: list[QgsMapLayer] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "file: reason"
    group: Optional[QgsLayerTreeGroup] = None
    outline: Optional[QgsVectorLayer] = None  # the boundary outline on top of the group
    synthetic: bool = False  # some data came from synthetic stand-ins

    def visible(self) -> list[QgsMapLayer]:
        if self.group is None:
            return []
        return [n.layer() for n in self.group.findLayers() if n.isVisible()]


def _child_group(parent: QgsLayerTreeGroup, name: str, index: int | None = None) -> QgsLayerTreeGroup:
    for child in parent.children():
        if isinstance(child, QgsLayerTreeGroup) and child.name() == name:
            return child
    group = QgsLayerTreeGroup(name)
    parent.insertChildNode(-1 if index is None else index, group)
    return group


class LayerInserter(QObject):
    """Adds `BuiltLayers` to a project's layer tree in slices of at most `SLICE_MS` per event-loop
    turn (`start()`), or all at once (`run_now()`, for callers that block anyway). `finished`
    carries the `LoadReport`."""

    finished = pyqtSignal(object)

    def __init__(self, built: BuiltLayers, project: Optional[QgsProject] = None, parent: Optional[QObject] = None):
        super().__init__(parent)
        self.project = project or QgsProject.instance()
        self.built = built
        self.report = LoadReport(failed=list(built.failed))
        self._steps = self._work()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._slice)
        self.done = False

    def start(self) -> None:
        _running.add(self)  # alive until finished, whoever started it
        self._timer.start()

    def run_now(self) -> LoadReport:
        for _ in self._steps:
            pass
        self._finish()
        return self.report

    def cancel(self) -> None:
        self._timer.stop()
        self._steps.close()
        self._finish()

    def _slice(self) -> None:
        deadline = time.monotonic() + SLICE_MS / 1000.0
        try:
            while time.monotonic() < deadline:
                next(self._steps)
        except StopIteration:
            self._finish()
            return
        self._timer.start()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        for failure in self.report.failed:
            QgsMessageLog.logMessage(f"{self.built.package.get('boundary_name')}: {failure}", PLUGIN_NAME, Qgis.Warning)
        _running.discard(self)
        self.finished.emit(self.report)

    @staticmethod
    def _attach(group: QgsLayerTreeGroup, dataset: QgsLayerTreeGroup) -> None:
        if dataset.parent() is None:
            dataset.setExpanded(len(dataset.children()) <= EXPANDED_MAX_CHILDREN)
            group.addChildNode(dataset)

    def _work(self) -> Iterator[None]:
        """One small step per `next()`: a group, or one layer added to the project and the tree."""
        package = self.built.package
        root = self.project.layerTreeRoot()
        group = _child_group(root, package_title(package), 0)
        self.report.group = group
        self.report.synthetic = bool((package.get("datapackage") or {}).get("synthetic")) or any(
            plan.resource.get("synthetic") for plan, _p, _l in self.built.layers)
        loaded = existing_sources(self.project, package)
        yield
        # A dataset's layers go into a detached group that joins the tree once complete: the layer
        # tree view then lays out one new (collapsed) row instead of hundreds, slice after slice.
        detached: dict[str, QgsLayerTreeGroup] = {}
        for plan, planned, layer in self.built.layers:
            if _source_path(layer.source()) in loaded:  # loaded meanwhile (or built without `skip`)
                layer.deleteLater()
                continue
            dataset = detached.get(plan.name)
            if dataset is None:
                for name, finished in list(detached.items()):
                    self._attach(group, finished)
                    del detached[name]
                    yield
                attached = next((c for c in group.children() if isinstance(c, QgsLayerTreeGroup) and c.name() == plan.title), None)
                dataset = detached[plan.name] = attached or QgsLayerTreeGroup(plan.title)
            parent = dataset
            for name in planned.groups:
                parent = _child_group(parent, name)
                parent.setExpanded(False)
            self.project.addMapLayer(layer, False)
            node = QgsLayerTreeLayer(layer)
            node.setItemVisibilityChecked(planned.visible)
            node.setExpanded(False)
            parent.addChildNode(node)
            self.report.added.append(layer)
            yield
        for finished in detached.values():
            self._attach(group, finished)
            yield
        for node in group.findLayers():  # already in the project from an earlier load
            if node.layer() is not None and node.layer() not in self.report.added and node.layer() is not self.built.outline:
                if _source_path(node.layer().source()).endswith(os.sep + "boundary.geojson"):
                    self.report.outline = node.layer()
                else:
                    self.report.existing.append(node.layer())
        if self.built.outline is not None and _source_path(self.built.outline.source()) in loaded:
            self.built.outline.deleteLater()
            self.built.outline = None
        if self.built.outline is not None:
            self.project.addMapLayer(self.built.outline, False)
            group.insertLayer(0, self.built.outline)
            self.report.outline = self.built.outline
        if not group.children():
            root.removeChildNode(group)
            self.report.group = None


_running: set[LayerInserter] = set()


def add_package_layers(package: dict[str, Any], files: list, project: QgsProject | None = None,
                       outline: Optional[Path] = None, selection: Optional[Selection] = None) -> LoadReport:
    """Plan, build and insert at once on the calling thread (the GUI thread): for scripts and
    callers that block anyway; the dock and the toolbox use the three steps apart."""
    project = project or QgsProject.instance()
    plans = plan_package(package, files, selection=selection, outline=outline is not None)
    built = build_layers(package, plans, skip=existing_sources(project, package), outline=outline)
    return LayerInserter(built, project).run_now()
