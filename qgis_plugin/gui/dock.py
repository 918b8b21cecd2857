"""The dock panel: backend connection, boundary choice, datasets, job progress, package loading.

The widgets come from `ui/dock.ui` (loaded at runtime). Every network call is asynchronous
(`BackendClient`), job polling runs on a `QTimer`, downloads run in a `QgsTask`; widgets are
only touched from signal handlers and callbacks on the GUI thread.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Optional

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsMessageLog,
    QgsProject,
    QgsWkbTypes,
)
from qgis.gui import QgsDockWidget, QgsRubberBand
from qgis.PyQt import uic
from qgis.PyQt.QtCore import Qt, QTimer, pyqtSignal
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import QHeaderView, QListWidgetItem, QMessageBox, QProgressBar, QTableWidgetItem, QTreeWidgetItem, QWidget

from ..__about__ import PLUGIN_NAME
from ..auth import auth_unavailable_reason, load_token, stored_authcfg
from ..api.backend_client import BackendClient
from ..api.contract import DONE_STATES, GroupStatus, JobState
from ..geometry import NoPolygonsError, selected_polygons_geojson
from ..layers import SYNTHETIC_NOTE, LayerInserter, LoadReport, existing_sources
from ..loader import DownloadPackageTask, cache_dir, local_package_roots, package_files
from ..local_backend import LocalBackend, autopkg_command, is_loopback_url, keep_running
from ..settings import CONFIRM_BYTES, CONFIRM_LAYERS, settings
from .slices import SliceDialog, has_slices
from .map_tool import WGS84, PickBoundaryMapTool

UI_PATH = Path(__file__).resolve().parent / "ui" / "dock.ui"
SHOWN_STATE = {JobState.REVOKED.value: "CANCELLED"}  # what a user calls a revoked task
SEARCH_DELAY_MS = 300
POLL_INTERVAL_MS = 500
MAX_POLL_ERRORS = 3
BOUNDARY_ROLE = Qt.UserRole
PROCESSOR_ROLE = Qt.UserRole
PACKAGE_ROLE = Qt.UserRole


def geojson_to_wkt(geometry: dict[str, Any]) -> str:
    """WKT of a GeoJSON Polygon or MultiPolygon (what the boundary API returns)."""

    def ring(coords):
        return "(" + ", ".join(f"{c[0]!r} {c[1]!r}" for c in coords) + ")"

    def polygon(rings):
        return "(" + ", ".join(ring(r) for r in rings) + ")"

    kind, coords = geometry.get("type"), geometry.get("coordinates") or []
    if kind == "Polygon":
        return "POLYGON " + polygon(coords)
    if kind == "MultiPolygon":
        return "MULTIPOLYGON (" + ", ".join(polygon(p) for p in coords) + ")"
    raise ValueError(f"unsupported boundary geometry type {kind!r}")


def processor_label(version: dict[str, Any]) -> str:
    title = version.get("data_title") or version.get("name", "").split(".")[0]
    licence = (version.get("data_license") or {}).get("name", "")
    return f"{title} — {version.get('version', '')}" + (f" — {licence}" if licence else "")


def human_size(value: float) -> str:
    """1234567 -> '1.2 MB' (decimal units)."""
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            break
        size /= 1000.0
    if unit == "B":
        return f"{int(size)} B"
    return f"{size:.1f} {unit}" if size < 10 else f"{size:.0f} {unit}"


def size_hint(estimate: Optional[dict[str, Any]]) -> str:
    """'~12 MB, 140 files' from an estimate answer; '' when it gives no size."""
    if not estimate or estimate.get("bytes") is None:
        return ""
    hint = f"~{human_size(estimate['bytes'])}"
    files = estimate.get("files")
    if files is not None:
        hint += f", {files} file{'' if files == 1 else 's'}"
    return hint


def processor_details(version: dict[str, Any], estimate: Optional[dict[str, Any]] = None) -> str:
    """HTML for the details box."""
    e = html.escape
    lic = version.get("data_license") or {}
    parts = [f"<b>{e(version.get('data_title_long') or version.get('data_title') or version.get('name', ''))}</b>"]
    parts.append(f"<p><code>{e(version.get('name', ''))}</code></p>")
    if version.get("description"):
        parts.append(f"<p>{e(version['description'])}</p>")
    if version.get("data_summary"):
        parts.append(f"<p>{e(version['data_summary'])}</p>")
    if version.get("data_author"):
        parts.append(f"<p><b>Author:</b> {e(version['data_author'])}</p>")
    if version.get("data_citation"):
        parts.append(f"<p><b>Citation:</b> {e(version['data_citation'])}</p>")
    if version.get("data_origin_url"):
        url = e(version["data_origin_url"])
        parts.append(f'<p><b>Origin:</b> <a href="{url}">{url}</a></p>')
    if lic:
        name = e(lic.get("title") or lic.get("name", ""))
        parts.append(f'<p><b>Licence:</b> <a href="{e(lic["path"])}">{name}</a></p>' if lic.get("path") else f"<p><b>Licence:</b> {name}</p>")
    if version.get("data_formats"):
        parts.append(f"<p><b>Formats:</b> {e(', '.join(version['data_formats']))}</p>")
    hint = size_hint(estimate)
    if hint:
        parts.append(f"<p><b>Estimated size for {e(str(estimate.get('boundary_name', '')))}:</b> {e(hint)}"
                     + (f"<br/><small>{e(estimate['method'])}</small>" if estimate.get("method") else "") + "</p>")
    return "\n".join(parts)


class CcgDockWidget(QgsDockWidget):
    """The CCG AutoPackaging panel."""

    connection_changed = pyqtSignal(bool)
    boundaries_listed = pyqtSignal(list)
    boundary_chosen = pyqtSignal(dict)  # the full boundary (with geometry), once drawn
    processors_listed = pyqtSignal(list)
    boundary_names_listed = pyqtSignal(list)  # every boundary name of the backend (for Processing's choice list)
    job_updated = pyqtSignal(dict)
    job_finished = pyqtSignal(dict)
    package_loaded = pyqtSignal(object)  # layers.LoadReport
    slices_asked = pyqtSignal(object)  # the SliceDialog, open
    packages_listed = pyqtSignal(list)  # [{boundary_name, uri}], once every package's datasets are shown
    size_hints_ready = pyqtSignal(str, dict)  # boundary name, {processor: estimate} once every estimate settled
    local_backend_changed = pyqtSignal(str)  # "starting", "ready", "failed", "stopped"
    error_reported = pyqtSignal(str)

    def __init__(self, iface, parent: QWidget | None = None):
        super().__init__(PLUGIN_NAME, parent)
        self.setObjectName("CcgAutoPackagingDock")
        self.iface = iface
        self.canvas = iface.mapCanvas()
        self.ui = QWidget()
        uic.loadUi(str(UI_PATH), self.ui)
        self.setWidget(self.ui)  # tabs: it fits QGIS's default 298 px dock width, no scroll bars

        self.client = BackendClient(settings.backend_url, self)
        self.ui.autoLoadCheck.setChecked(settings.auto_load)

        self.connected = False
        self.boundary: Optional[dict[str, Any]] = None
        self.processor_versions: dict[str, dict[str, Any]] = {}
        self.job_id: Optional[str] = None
        self.job_boundary: Optional[str] = None
        self.job_status: Optional[dict[str, Any]] = None
        self.task: Optional[DownloadPackageTask] = None
        self.inserter: Optional[LayerInserter] = None
        self.slice_dialog: Optional[SliceDialog] = None
        self._progress_rows: dict[str, int] = {}
        self._search_seq = 0
        self._polling = False
        self._poll_errors = 0
        self._closed = False
        self._connecting = False
        self.estimates: dict[str, dict[str, Any]] = {}  # processor -> estimate for self.boundary
        self._estimate_seq = 0
        self.local_backend: Optional[LocalBackend] = None
        self._job_started_here = False
        self._restoring = False

        self.rubber_band = QgsRubberBand(self.canvas, QgsWkbTypes.PolygonGeometry)
        self.rubber_band.setStrokeColor(QColor(230, 60, 30))
        self.rubber_band.setFillColor(QColor(230, 60, 30, 40))
        self.rubber_band.setWidth(2)

        self.map_tool = PickBoundaryMapTool(self.canvas)
        self.map_tool.picked.connect(self.search_point)
        self.map_tool.deactivated.connect(lambda: self.ui.pickButton.setChecked(False))

        self.search_timer = QTimer(self)
        self.search_timer.setSingleShot(True)
        self.search_timer.setInterval(SEARCH_DELAY_MS)
        self.search_timer.timeout.connect(self.run_search)

        self.poll_timer = QTimer(self)
        self.poll_timer.setInterval(POLL_INTERVAL_MS)
        self.poll_timer.timeout.connect(self.poll_job)

        ui = self.ui
        ui.connectButton.clicked.connect(lambda: self.connect_backend())
        ui.optionsButton.clicked.connect(lambda: self.iface.showOptionsDialog(self.iface.mainWindow(), PLUGIN_NAME))
        ui.startBackendButton.clicked.connect(self.start_local_backend)
        ui.searchEdit.textEdited.connect(lambda _: self.search_timer.start())
        ui.boundaryList.itemClicked.connect(self._boundary_item_chosen)
        ui.boundaryList.itemActivated.connect(self._boundary_item_chosen)
        ui.pickButton.toggled.connect(self.set_pick_mode)
        ui.processorFilter.textChanged.connect(self.filter_processors)
        ui.processorList.currentItemChanged.connect(self._processor_selected)
        ui.createButton.clicked.connect(self.create_package)
        ui.cancelButton.clicked.connect(self.cancel_job)
        ui.loadButton.clicked.connect(lambda: self.load_package())
        ui.selectedButton.clicked.connect(self.use_selected_polygons)
        ui.refreshPackagesButton.clicked.connect(self.refresh_packages)
        ui.loadPackageButton.clicked.connect(self.load_selected_package)
        ui.packagesTree.itemSelectionChanged.connect(lambda: ui.loadPackageButton.setEnabled(self.selected_package() is not None))
        ui.packagesTree.itemDoubleClicked.connect(lambda *_: self.load_selected_package())
        ui.autoLoadCheck.toggled.connect(lambda on: setattr(settings, "auto_load", on))
        ui.processorList.itemChanged.connect(lambda _item: self._datasets_changed())
        header = ui.progressTable.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.Fixed)
        header.resizeSection(2, 48)
        ui.packagesTree.header().setSectionResizeMode(0, QHeaderView.Stretch)
        ui.packagesTree.header().setStretchLastSection(False)
        ui.packagesTree.header().setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.restore_boundary()
        # shown (by the user, or by QGIS restoring the window state) and not connected: connect
        self.visibilityChanged.connect(self._visibility_changed)

    def _visibility_changed(self, visible: bool) -> None:
        if visible and not self.connected and not self._connecting and not self._closed:
            self.connect_backend(quiet=True)  # at start: a calm status, no error the user did not ask for

    # -- messages -----------------------------------------------------------------------------
    def report_error(self, context: str, message: str, level=Qgis.Critical) -> None:
        """An error for the user: message bar and the QGIS log panel, with the backend's detail."""
        if self._closed:
            return
        text = f"{context}: {message}"
        self.iface.messageBar().pushMessage(PLUGIN_NAME, text, level=level, duration=10)
        QgsMessageLog.logMessage(text, PLUGIN_NAME, level)
        self.error_reported.emit(text)

    def report_info(self, message: str, level=Qgis.Info) -> None:
        if self._closed:
            return
        self.iface.messageBar().pushMessage(PLUGIN_NAME, message, level=level, duration=5)
        QgsMessageLog.logMessage(message, PLUGIN_NAME, level)

    # -- backend connection -----------------------------------------------------------------
    def connect_backend(self, quiet: bool = False) -> None:
        """Connect to the backend of the settings (Settings → Options). `quiet`: nothing running
        there is a status line with "Start local backend", not an error message."""
        self.client.base_url = settings.backend_url
        self.apply_token()
        self.ui.stateLabel.setText(f"Connecting to {self.client.base_url}…")
        self._connecting = True
        self.client.liveness(on_success=self._connected, on_error=lambda m, s: self._connection_failed(m, s, quiet))

    def _connected(self, _data: Any) -> None:
        self._connecting = False
        self.connected = True
        self.ui.startBackendButton.setVisible(False)
        self.ui.connectButton.setText("Reconnect")
        self.ui.stateLabel.setText(f"Connected to {self.client.base_url}")
        self.connection_changed.emit(True)
        self.refresh_processors()
        self.refresh_packages()
        self.client.boundaries(on_success=lambda found: self.boundary_names_listed.emit([b["name"] for b in found or []]),
                               on_error=lambda message, _s: QgsMessageLog.logMessage(f"boundary list: {message}", PLUGIN_NAME, Qgis.Info))

    def _connection_failed(self, message: str, status: Optional[int], quiet: bool = False) -> None:
        self._connecting = False
        self.connected = False
        local = status is None and is_loopback_url(self.client.base_url)
        starting = self.local_backend is not None and self.local_backend.running()
        self.ui.startBackendButton.setVisible(local and not starting)
        self.ui.connectButton.setText("Connect")
        self.connection_changed.emit(False)
        if status is None:
            self.ui.stateLabel.setText(f"No backend running at {self.client.base_url}."
                                       + (" Start one here, or run `autopkg serve`." if local else " Start it with `autopkg serve`."))
        else:
            self.ui.stateLabel.setText(f"Not connected: {message}")
        if quiet:
            QgsMessageLog.logMessage(f"no backend at {self.client.base_url}: {message}", PLUGIN_NAME, Qgis.Info)
            return
        hint = "press “Start local backend”, or start it with `autopkg serve` (or `make run`) and press Connect" if local else \
            "start it with `autopkg serve` (or `make run`) and press Connect"
        self.report_error(f"Cannot reach the backend at {self.client.base_url}", f"{message}. To fix: {hint}.")

    def unauthorized(self, context: str, message: str) -> None:
        """A 401: the backend wants an API token (or another one)."""
        has_token = bool(self.client.token)
        self.ui.stateLabel.setText(
            f"Connected to {self.client.base_url}, but it refuses the requests (HTTP 401): "
            + ("the API token is wrong" if has_token else "it needs an API token")
            + " — set it in Settings → Options → CCG AutoPackaging")
        self.report_error(f"{context}: the backend at {self.client.base_url} needs an API token (HTTP 401)",
                          f"{message}. Enter the token in Settings → Options → {PLUGIN_NAME} and press Connect.")

    def apply_token(self) -> None:
        """The stored token (QGIS authentication database), if any. Reading it may make QGIS ask
        for the master password: the message bar says why first."""
        if auth_unavailable_reason() or not stored_authcfg():
            self.client.token = ""
            return
        if not QgsApplication.authManager().masterPasswordIsSet():
            self.report_info("QGIS will ask for your master password: it unlocks the backend's API token, "
                             "kept encrypted in the QGIS authentication database.")
        self.client.token = load_token()

    # -- local backend ------------------------------------------------------------------------
    def start_local_backend(self) -> None:
        """Start `autopkg serve --port <port of the URL>` as a child process; connect when ready."""
        if self.local_backend is not None and self.local_backend.running():
            return
        url = settings.backend_url
        if not is_loopback_url(url):
            self.report_error("Start local backend", f"{url} is not on this machine", Qgis.Warning)
            return
        command = autopkg_command()
        if not command:
            self.report_error("Start local backend", "`autopkg` was not found: install the backend or set the "
                              "setting ccg_autopkg/autopkg_command to its command line")
            return
        self.client.base_url = url
        self.local_backend = LocalBackend(command, self.client.base_url)
        self.local_backend.ready.connect(self._local_backend_ready)
        self.local_backend.failed.connect(self._local_backend_failed)
        self.ui.startBackendButton.setEnabled(False)
        self.local_backend.start()
        self.ui.stateLabel.setText(f"Starting `{self.local_backend.command_line()}`…")
        QgsMessageLog.logMessage(f"starting local backend: {self.local_backend.command_line()}", PLUGIN_NAME, Qgis.Info)
        self.local_backend_changed.emit("starting")

    def _local_backend_ready(self) -> None:
        if self._closed:
            return
        self.ui.startBackendButton.setEnabled(True)
        self.ui.startBackendButton.setVisible(False)
        self.local_backend_changed.emit("ready")
        self.connect_backend()

    def _local_backend_failed(self, reason: str) -> None:
        if self._closed:
            return
        self.ui.startBackendButton.setEnabled(True)
        self.ui.stateLabel.setText(f"Local backend did not start: {reason.splitlines()[0]}")
        self.report_error("Local backend did not start", reason)
        self.local_backend_changed.emit("failed")

    def stop_local_backend(self) -> None:
        if self.local_backend is not None:
            self.local_backend.stop()
            self.local_backend = None
            self.local_backend_changed.emit("stopped")

    # -- boundaries ---------------------------------------------------------------------------
    def run_search(self) -> None:
        text = self.ui.searchEdit.text().strip()
        self._search_seq += 1
        seq = self._search_seq
        if len(text) < 2:
            self.ui.boundaryList.clear()
            return
        def failed(message: str, _status: Optional[int]) -> None:
            if seq == self._search_seq:
                self.ui.boundaryList.clear()  # no stale results under a failed search
                self.report_error(f"Boundary search {text!r} failed", message)

        self.client.search_name(text, on_success=lambda results: seq == self._search_seq and self.show_boundaries(results, text),
                                on_error=failed)

    def search_point(self, longitude: float, latitude: float) -> None:
        self._search_seq += 1
        seq = self._search_seq

        def found(results: list[dict[str, Any]]) -> None:
            if seq != self._search_seq:
                return
            self.show_boundaries(results)
            if results:
                self.choose_boundary(results[0])
            else:
                self.report_info(f"No boundary at longitude {longitude:.4f}, latitude {latitude:.4f}", Qgis.Warning)

        self.client.search_point(latitude, longitude, on_success=found,
                                 on_error=lambda message, _s: self.report_error("Boundary search at the clicked point failed", message))

    def show_boundaries(self, results: list[dict[str, Any]], query: str = "") -> None:
        self.ui.boundaryList.clear()
        if not results and query:
            item = QListWidgetItem(f"No boundary matches “{query}”")
            item.setFlags(Qt.NoItemFlags)
            self.ui.boundaryList.addItem(item)
        for boundary in results:
            item = QListWidgetItem(f"{boundary.get('name_long') or boundary['name']}  ({boundary['name']})")
            item.setData(BOUNDARY_ROLE, boundary)
            self.ui.boundaryList.addItem(item)
        self.boundaries_listed.emit(results)

    def _boundary_item_chosen(self, item: QListWidgetItem) -> None:
        if item.data(BOUNDARY_ROLE):
            self.choose_boundary(item.data(BOUNDARY_ROLE))

    def choose_boundary(self, boundary: dict[str, Any]) -> None:
        """Make `boundary` ({name, name_long}) the chosen one; fetch its polygon to draw it."""
        self.boundary = dict(boundary)
        for row in range(self.ui.boundaryList.count()):
            item = self.ui.boundaryList.item(row)
            if (item.data(BOUNDARY_ROLE) or {}).get("name") == boundary["name"]:
                self.ui.boundaryList.setCurrentItem(item)
        self.ui.boundaryLabel.setText(f"Chosen: {boundary.get('name_long') or boundary['name']} ({boundary['name']})")
        settings.last_boundary = boundary
        self._datasets_changed()
        self.fetch_estimates()
        self.client.boundary(boundary["name"], on_success=self.draw_boundary,
                             on_error=lambda message, _s: self.report_error(f"Boundary {boundary['name']!r}", message))

    def draw_boundary(self, boundary: dict[str, Any]) -> None:
        if self.boundary is None or boundary.get("name") != self.boundary.get("name"):
            return  # another boundary was chosen meanwhile
        self.boundary = boundary
        try:
            geometry = QgsGeometry.fromWkt(geojson_to_wkt(boundary["geometry"]))
        except (KeyError, ValueError) as exc:
            self.report_error(f"Boundary {boundary.get('name')!r}", f"cannot draw its geometry: {exc}", Qgis.Warning)
            return
        crs = QgsCoordinateReferenceSystem(WGS84)
        self.rubber_band.setToGeometry(geometry, crs)
        destination = self.canvas.mapSettings().destinationCrs()
        extent = geometry.boundingBox()
        if destination.isValid() and destination != crs:
            extent = QgsCoordinateTransform(crs, destination, QgsProject.instance()).transformBoundingBox(extent)
        extent.scale(1.1)
        self.canvas.setExtent(extent)
        self.canvas.refresh()
        self.boundary_chosen.emit(boundary)

    def restore_boundary(self) -> None:
        """The boundary chosen in an earlier session (drawn only when chosen again)."""
        last = settings.last_boundary
        if last:
            self.boundary = last
            self.ui.boundaryLabel.setText(f"Chosen: {last.get('name_long') or last['name']} ({last['name']})")
            self._datasets_changed()

    def _datasets_changed(self) -> None:
        """Create is possible with a boundary and datasets; the summary says what it would give."""
        checked = self.checked_processors()
        self.ui.createButton.setEnabled(bool(self.boundary and checked) and not (self.job_id and self.poll_timer.isActive()))
        self.ui.loadButton.setEnabled(bool(self.boundary))
        if self.processor_versions and not self._restoring:  # not before the list is there to tick
            settings.checked_datasets = checked
        self.ui.summaryLabel.setText(self.submission_summary())

    def submission_summary(self) -> str:
        checked = self.checked_processors()
        if not self.boundary:
            return "Choose a boundary (Boundary tab)"
        if not checked:
            return f"{self.boundary.get('name_long') or self.boundary['name']}: tick the datasets to cut"
        size, files = self.estimated_total(checked)
        known = sum(1 for n in checked if n in self.estimates)
        text = f"{self.boundary.get('name_long') or self.boundary['name']}: {len(checked)} dataset(s)"
        if known:
            text += f", ~{human_size(size)}, {files} layer(s)" + ("" if known == len(checked) else " (some sizes unknown)")
        return text

    def estimated_total(self, names: list[str]) -> tuple[int, int]:
        """(bytes, files) of the estimates known for `names`."""
        known = [self.estimates[n] for n in names if n in self.estimates]
        return sum(int(e.get("bytes") or 0) for e in known), sum(int(e.get("files") or 1) for e in known)

    def set_pick_mode(self, on: bool) -> None:
        if on:
            self.canvas.setMapTool(self.map_tool)
        elif self.canvas.mapTool() is self.map_tool:
            self.canvas.unsetMapTool(self.map_tool)

    def use_selected_polygons(self) -> None:
        """Upload the active layer's selected polygons (dissolved, EPSG:4326) as a custom boundary
        and choose it."""
        try:
            geojson = selected_polygons_geojson(self.iface.activeLayer())
        except NoPolygonsError as exc:
            self.report_error("Use selected polygon(s)", str(exc), Qgis.Warning)
            return
        self.ui.selectedButton.setEnabled(False)
        self.ui.boundaryLabel.setText("Uploading the selected polygon(s)…")

        def uploaded(boundary: dict[str, Any]) -> None:
            self.ui.selectedButton.setEnabled(True)
            self.show_boundaries([{k: boundary.get(k) for k in ("id", "name", "name_long")}])
            self.boundary = {"name": boundary["name"], "name_long": boundary.get("name_long")}
            self.ui.boundaryLabel.setText(f"Chosen: {boundary.get('name_long') or boundary['name']} ({boundary['name']})")
            if self.ui.boundaryList.count():
                self.ui.boundaryList.setCurrentRow(0)
            self.fetch_estimates()
            self.draw_boundary(boundary)

        def failed(message: str, _status: Optional[int]) -> None:
            self.ui.selectedButton.setEnabled(True)
            self.ui.boundaryLabel.setText(f"Upload failed: {message}")
            self.report_error("Upload of the selected polygon(s)", message)

        self.client.upload_boundary(geojson, on_success=uploaded, on_error=failed)

    # -- processors ---------------------------------------------------------------------------
    def refresh_processors(self) -> None:
        def failed(message: str, status: Optional[int]) -> None:
            if status == 401:
                self.unauthorized("Cannot list the datasets", message)
            else:
                self.report_error("Cannot list the datasets", message)

        self.client.processors(on_success=self.show_processors, on_error=failed)

    def show_processors(self, datasets: list[dict[str, Any]]) -> None:
        checked = set(self.checked_processors()) or set(settings.checked_datasets)
        self._restoring = True
        self.ui.processorList.clear()
        self.processor_versions.clear()
        for dataset in datasets:
            for version in dataset.get("versions", []):
                name = version["name"]
                self.processor_versions[name] = version
                item = QListWidgetItem(self._processor_text(name))
                item.setData(PROCESSOR_ROLE, name)
                item.setToolTip(version.get("description", ""))
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Checked if name in checked else Qt.Unchecked)
                self.ui.processorList.addItem(item)
        self._restoring = False
        self._datasets_changed()
        self.filter_processors(self.ui.processorFilter.text())
        self.processors_listed.emit(datasets)
        if self.boundary and self.boundary.get("name") and not self.estimates:
            self.fetch_estimates()

    # -- size hints ---------------------------------------------------------------------------
    def _processor_text(self, name: str) -> str:
        label = processor_label(self.processor_versions.get(name, {"name": name}))
        hint = size_hint(self.estimates.get(name))
        return f"{label} — {hint}" if hint else label

    def _refresh_processor_item(self, name: str) -> None:
        for row in range(self.ui.processorList.count()):
            item = self.ui.processorList.item(row)
            if item.data(PROCESSOR_ROLE) == name:
                item.setText(self._processor_text(name))
                if item is self.ui.processorList.currentItem():
                    self._processor_selected(item)

    def fetch_estimates(self) -> None:
        """Size hints for the chosen boundary: one asynchronous estimate request per listed
        processor; a failed estimate just leaves that processor without a hint."""
        self._estimate_seq += 1
        seq = self._estimate_seq
        previous = list(self.estimates)
        self.estimates = {}
        for name in previous:
            self._refresh_processor_item(name)
        boundary = (self.boundary or {}).get("name")
        names = list(self.processor_versions)
        if not boundary or not names or self._closed:
            return
        pending = set(names)

        def settled(name: str) -> None:
            pending.discard(name)
            if not pending and seq == self._estimate_seq:
                self.size_hints_ready.emit(boundary, dict(self.estimates))

        def got(name: str, estimate: Any) -> None:
            if seq != self._estimate_seq:
                return
            if isinstance(estimate, dict) and estimate.get("bytes") is not None:
                self.estimates[name] = estimate
                self._refresh_processor_item(name)
                self.ui.summaryLabel.setText(self.submission_summary())
            settled(name)

        for name in names:
            self.client.estimate(name, boundary, on_success=lambda data, name=name: got(name, data),
                                 on_error=lambda _m, _s, name=name: seq == self._estimate_seq and settled(name))

    def filter_processors(self, text: str) -> None:
        needle = text.strip().lower()
        for row in range(self.ui.processorList.count()):
            item = self.ui.processorList.item(row)
            version = self.processor_versions.get(item.data(PROCESSOR_ROLE), {})
            haystack = " ".join([item.text(), version.get("name", ""), version.get("description", ""), version.get("data_summary", "")]).lower()
            item.setHidden(bool(needle) and needle not in haystack)

    def _processor_selected(self, current: QListWidgetItem, _previous=None) -> None:
        if current is None:
            self.ui.detailsBrowser.clear()
            return
        name = current.data(PROCESSOR_ROLE)
        self.ui.detailsBrowser.setHtml(processor_details(self.processor_versions.get(name, {}), self.estimates.get(name)))

    def checked_processors(self) -> list[str]:
        items = (self.ui.processorList.item(r) for r in range(self.ui.processorList.count()))
        return [i.data(PROCESSOR_ROLE) for i in items if i.checkState() == Qt.Checked]

    def set_checked_processors(self, names: list[str]) -> None:
        for row in range(self.ui.processorList.count()):
            item = self.ui.processorList.item(row)
            item.setCheckState(Qt.Checked if item.data(PROCESSOR_ROLE) in names else Qt.Unchecked)

    # -- jobs ---------------------------------------------------------------------------------
    def create_package(self) -> None:
        if not self.boundary:
            self.report_error("Create package", "choose a boundary first (search by name or pick on the map)", Qgis.Warning)
            return
        processors = self.checked_processors()
        if not processors:
            self.report_error("Create package", "tick at least one dataset", Qgis.Warning)
            return
        boundary = self.boundary["name"]
        size, files = self.estimated_total(processors)
        if (size > CONFIRM_BYTES or files > CONFIRM_LAYERS) and not self.confirm(
                f"Create a package of {len(processors)} dataset(s) for {self.boundary.get('name_long') or boundary}?\n\n"
                f"Estimated ~{human_size(size)} in {files} layer(s)."):
            return
        self.ui.createButton.setEnabled(False)
        self.ui.jobLabel.setText(f"Submitting {len(processors)} dataset(s) for {boundary}…")

        def failed(message: str, _status: Optional[int]) -> None:
            self._datasets_changed()
            self.ui.jobLabel.setText(f"Not submitted: {message}")
            self.report_error(f"Create package for {boundary!r}", message)

        self.client.submit_job(boundary, processors, on_success=lambda data: self.follow_job(data["job_id"], boundary, processors), on_error=failed)

    def confirm(self, question: str) -> bool:
        """Asked before a large submission (tests replace it)."""
        return QMessageBox.question(self, PLUGIN_NAME, question, QMessageBox.Yes | QMessageBox.No, QMessageBox.No) == QMessageBox.Yes

    def follow_job(self, job_id: str, boundary: str, processors: list[str]) -> None:
        self.job_id, self.job_boundary, self.job_status = job_id, boundary, None
        self._job_started_here = True
        self.ui.overallProgress.setFormat("%p%")
        self._poll_errors = 0
        table = self.ui.progressTable
        table.setRowCount(0)
        self._progress_rows.clear()
        for name in processors:
            self._progress_row(name)
        self.ui.overallProgress.setValue(0)
        self.ui.cancelButton.setEnabled(True)
        self.ui.createButton.setEnabled(False)
        self.ui.jobLabel.setText(f"Job {job_id} for {boundary}: submitted")
        QgsMessageLog.logMessage(f"job {job_id} submitted for {boundary}: {', '.join(processors)}", PLUGIN_NAME, Qgis.Info)
        self.poll_timer.start()
        self.poll_job()

    def _progress_row(self, name: str) -> int:
        if name in self._progress_rows:
            return self._progress_rows[name]
        table = self.ui.progressTable
        row = table.rowCount()
        table.insertRow(row)
        version = self.processor_versions.get(name)
        table.setItem(row, 0, QTableWidgetItem(processor_label(version) if version else name))
        table.setItem(row, 1, QTableWidgetItem(JobState.PENDING.value))
        bar = QProgressBar()
        bar.setRange(0, 100)
        bar.setTextVisible(False)
        table.setCellWidget(row, 2, bar)
        self._progress_rows[name] = row
        return row

    def processor_state(self, name: str) -> tuple[str, int]:
        """(state text, progress percent) shown for one processor of the current job."""
        row = self._progress_rows[name]
        return self.ui.progressTable.item(row, 1).text(), self.ui.progressTable.cellWidget(row, 2).value()

    def poll_job(self) -> None:
        if self._polling or not self.job_id:
            return
        self._polling = True
        job_id = self.job_id
        self.client.job(job_id, on_success=lambda status: self._job_polled(job_id, status), on_error=lambda m, s: self._poll_failed(job_id, m, s))

    def _poll_failed(self, job_id: str, message: str, status: Optional[int]) -> None:
        self._polling = False
        if job_id != self.job_id:
            return
        self._poll_errors += 1
        if status == 404 or self._poll_errors >= MAX_POLL_ERRORS:
            self.poll_timer.stop()
            self._job_started_here = False
            self.ui.cancelButton.setEnabled(False)
            self._datasets_changed()
            self.ui.jobLabel.setText(f"Lost job {job_id}: {message}")
            self.report_error(f"Following job {job_id}", message)

    def _job_polled(self, job_id: str, status: dict[str, Any]) -> None:
        self._polling = False
        if job_id != self.job_id:
            return
        self._poll_errors = 0
        self.show_job(status)

    def show_job(self, status: dict[str, Any]) -> None:
        self.job_status = status
        table = self.ui.progressTable
        for p in status.get("job_group_processors", []):
            row = self._progress_row(p["processor_name"])
            progress = p.get("job_progress") or {}
            state = p.get("job_status", "")
            task = progress.get("current_task") or ""
            table.item(row, 1).setText(SHOWN_STATE.get(state, state))
            result = p.get("job_result") or {}
            table.item(row, 1).setToolTip(str(result.get("failed") or result) if state == JobState.FAILURE else task)
            table.item(row, 0).setToolTip(f"{p['processor_name']}: {task}" if task else p["processor_name"])
            if state not in (JobState.REVOKED, JobState.FAILURE):  # a cancelled or failed task did not get to 100 %
                table.cellWidget(row, 2).setValue(int(round(progress.get("percent_complete") or 0)))
        cancelled = bool(status.get("job_group_cancelled"))
        if cancelled:
            self.ui.overallProgress.setFormat("Cancelled at %p%")
        else:
            self.ui.overallProgress.setValue(int(round(status.get("job_group_percent_complete") or 0)))
        # job_group_state says EXECUTING too; job_group_status has only the predecessor's PENDING/COMPLETE
        group_status = status.get("job_group_state") or status.get("job_group_status", "")
        self.ui.jobLabel.setText(f"Job for {self.job_boundary}: {group_status}{' (cancelled)' if status.get('job_group_cancelled') else ''}")
        self.job_updated.emit(status)
        if group_status == GroupStatus.COMPLETE:
            self.job_complete(status)

    def job_complete(self, status: dict[str, Any]) -> None:
        self.poll_timer.stop()
        self._job_started_here = False
        self.ui.cancelButton.setEnabled(False)
        self._datasets_changed()
        processors = status.get("job_group_processors", [])
        states = {p["processor_name"]: p.get("job_status") for p in processors}
        for p in processors:
            if p.get("job_status") == JobState.FAILURE:
                result = p.get("job_result") or {}
                self.report_error(f"{p['processor_name']} failed", str(result.get("failed") or result))
        if status.get("job_group_cancelled"):
            self.report_info(f"Job for {self.job_boundary} cancelled", Qgis.Warning)
        else:
            done = sum(1 for s in states.values() if s in DONE_STATES)
            self.report_info(f"Package {self.job_boundary}: {done} of {len(states)} dataset(s) ready", Qgis.Success if done == len(states) else Qgis.Warning)
        self.job_finished.emit(status)
        self.refresh_packages()
        if self.ui.autoLoadCheck.isChecked() and any(s in DONE_STATES for s in states.values()):
            self.load_package(self.job_boundary)

    def cancel_job(self) -> None:
        if not self.job_id:
            return
        job_id = self.job_id
        self.ui.cancelButton.setEnabled(False)
        self.ui.jobLabel.setText(f"Cancelling job {job_id}…")
        self.client.cancel_job(job_id, on_success=lambda status: job_id == self.job_id and isinstance(status, dict) and "job_group_processors" in status and self.show_job(status),
                               on_error=lambda message, _s: self.report_error(f"Cancel job {job_id}", message))

    # -- packages -----------------------------------------------------------------------------
    def load_package(self, boundary_name: Optional[str] = None) -> None:
        name = boundary_name or (self.boundary or {}).get("name")
        if not name:
            self.report_error("Load package", "choose a boundary first", Qgis.Warning)
            return
        self.client.package(name, on_success=self.download_package, on_error=lambda message, _s: self.report_error(f"Package {name!r}", message))

    def download_package(self, package: dict[str, Any]) -> None:
        """Load a package; with multi-file datasets, the user first chooses the slices."""
        if self._closed:
            return
        if self.task is not None or self.inserter is not None or self.slice_dialog is not None:
            self.report_error("Load package", "a package is already being loaded", Qgis.Warning)
            return
        if not has_slices(package):
            self._start_loading(package, None)
            return
        self.slice_dialog = SliceDialog(package, self)
        self.slice_dialog.finished.connect(lambda result: self._slices_chosen(package, result))
        self.slice_dialog.open()
        self.slices_asked.emit(self.slice_dialog)

    def _slices_chosen(self, package: dict[str, Any], result: int) -> None:
        dialog, self.slice_dialog = self.slice_dialog, None
        if dialog is None or self._closed:
            return
        dialog.deleteLater()
        if result != dialog.Accepted:
            self.ui.jobLabel.setText(f"Package {package['boundary_name']}: not loaded")
            return
        self._start_loading(package, dialog.selection())

    def _start_loading(self, package: dict[str, Any], selection) -> None:
        files = package_files(package, self.client.url)
        name = package["boundary_name"]
        self.ui.jobLabel.setText(f"Loading package {name} ({len(files)} file(s))…")

        def done(ok: bool, result, built) -> None:
            self.task = None
            if self._closed:
                return
            if not ok:
                self.ui.jobLabel.setText(f"Package {name} not loaded: {result.error}")
                self.report_error(f"Load of package {name!r}", result.error)
                return
            if result.outline_error:
                QgsMessageLog.logMessage(f"boundary outline of {name}: {result.outline_error}", PLUGIN_NAME, Qgis.Warning)
            self.inserter = LayerInserter(built, QgsProject.instance(), self)
            self.inserter.finished.connect(lambda report: self._package_inserted(name, result, report))
            self.inserter.start()

        self.task = DownloadPackageTask(package, files, cache_dir(), done, base_url=self.client.base_url,
                                        local_roots=local_package_roots(self.client.base_url), token=self.client.token,
                                        selection=selection, skip=frozenset(existing_sources(QgsProject.instance(), package)))
        QgsApplication.taskManager().addTask(self.task)

    def _package_inserted(self, name: str, result, report: LoadReport) -> None:
        self.inserter = None
        if self._closed:
            return
        self.ui.jobLabel.setText(
            f"Package {name}: {len(report.added)} layer(s) added, {len(report.existing)} already in the project"
            + (f", {len(report.failed)} not loadable" if report.failed else "")
            + f" ({result.downloaded} downloaded, {result.cached} from cache"
            + (f", {result.local} used in place" if result.local else "") + ")"
        )
        if report.failed:
            self.report_error(f"Package {name!r}", "some files could not be loaded: " + "; ".join(report.failed), Qgis.Warning)
        if report.synthetic:
            self.report_info(f"Package {name}: {SYNTHETIC_NOTE}", Qgis.Warning)
        self.rubber_band.reset(QgsWkbTypes.PolygonGeometry)  # the outline layer shows the boundary now
        self.zoom_to(report)
        self.package_loaded.emit(report)

    def zoom_to(self, report: LoadReport) -> None:
        """The canvas on the package: its boundary outline, else its layers."""
        layers = [report.outline] if report.outline is not None else report.added + report.existing
        extent = None
        destination = self.canvas.mapSettings().destinationCrs()
        for layer in layers:
            box = layer.extent()
            if destination.isValid() and layer.crs().isValid() and layer.crs() != destination:
                box = QgsCoordinateTransform(layer.crs(), destination, QgsProject.instance()).transformBoundingBox(box)
            if extent is None:
                extent = box
            else:
                extent.combineExtentWith(box)
        if extent is not None and not extent.isEmpty():
            extent.scale(1.05)
            self.canvas.setExtent(extent)
            self.canvas.refresh()

    def refresh_packages(self) -> None:
        """List the backend's packages, then each package's datasets (one request per package)."""
        self._packages_seq = getattr(self, "_packages_seq", 0) + 1
        seq = self._packages_seq
        self.client.packages(on_success=lambda packages: seq == self._packages_seq and self.show_packages(packages, seq),
                             on_error=lambda message, status: status != 401 and self.report_error("Cannot list the packages", message))

    def show_packages(self, packages: list[dict[str, Any]], seq: Optional[int] = None) -> None:
        tree = self.ui.packagesTree
        selected = self.selected_package()
        tree.clear()
        pending = {p["boundary_name"] for p in packages}
        if not packages:
            self.packages_listed.emit(packages)
            return
        for entry in packages:
            name = entry["boundary_name"]
            item = QTreeWidgetItem([name, ""])
            item.setData(0, PACKAGE_ROLE, name)
            item.setToolTip(0, self.client.url(entry.get("uri", "")))
            tree.addTopLevelItem(item)
            if name == selected:
                item.setSelected(True)

            def datasets(package: dict[str, Any], item=item, name=name) -> None:
                if seq is not None and seq != self._packages_seq:
                    return
                if not package.get("datasets"):  # a cancelled or failed first job: nothing to load
                    tree.takeTopLevelItem(tree.indexOfTopLevelItem(item))
                    settled(name)
                    return
                title = (package.get("datapackage") or {}).get("title")
                if title:
                    item.setText(0, f"{title} ({name})")
                count = 0
                for dataset in package.get("datasets", []):
                    child = QTreeWidgetItem([dataset.get("title") or dataset["name"], str(len(dataset.get("files", [])))])
                    child.setToolTip(0, dataset["name"])
                    child.setData(0, PACKAGE_ROLE, name)
                    item.addChild(child)
                    count += len(dataset.get("files", []))
                item.setText(1, str(count))
                settled(name)

            def settled(name: str) -> None:
                pending.discard(name)
                if not pending and (seq is None or seq == self._packages_seq):
                    self.packages_listed.emit(packages)

            def no_datasets(_message: str, status: int, item=item, name=name) -> None:
                # the predecessor's rule: a package with no dataset of a known processor is a 404
                if status == 404 and (seq is None or seq == self._packages_seq):
                    tree.takeTopLevelItem(tree.indexOfTopLevelItem(item))
                settled(name)

            self.client.package(name, on_success=datasets, on_error=no_datasets)

    def selected_package(self) -> Optional[str]:
        items = self.ui.packagesTree.selectedItems()
        return items[0].data(0, PACKAGE_ROLE) if items else None

    def load_selected_package(self) -> None:
        name = self.selected_package()
        if not name:
            self.report_error("Load package", "select a package in the list first", Qgis.Warning)
            return
        self.load_package(name)

    # -- life cycle -------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop timers, abort requests and tasks, and remove what this panel put on the canvas."""
        self._closed = True
        if self.local_backend is not None and self._job_started_here and self.job_id:
            # a job is running on the backend this panel started: it keeps running, never killed mid-job
            keep_running(self.local_backend)
            QgsMessageLog.logMessage(f"left the local backend running (pid {self.local_backend.pid()}): job {self.job_id} is unfinished",
                                     PLUGIN_NAME, Qgis.Warning)
            self.local_backend = None
        self.stop_local_backend()
        self.search_timer.stop()
        self.poll_timer.stop()
        self.client.close()
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.inserter is not None:
            self.inserter.cancel()
            self.inserter = None
        if self.slice_dialog is not None:
            self.slice_dialog.reject()
        if self.canvas.mapTool() is self.map_tool:
            self.canvas.unsetMapTool(self.map_tool)
        self.rubber_band.reset(QgsWkbTypes.PolygonGeometry)
        scene = self.canvas.scene()
        if scene is not None and self.rubber_band.scene() is scene:
            scene.removeItem(self.rubber_band)
        self.rubber_band = None
        self.map_tool.deleteLater()
