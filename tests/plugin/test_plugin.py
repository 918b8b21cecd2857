"""The QGIS plugin in a real (headless) QGIS against a real backend subprocess on loopback."""
from __future__ import annotations

import configparser
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
    QgsSettings,
    QgsVectorLayer,
)
from qgis.gui import QgsDockWidget, QgsMapMouseEvent, QgsRubberBand
from qgis.PyQt.QtCore import QEvent, QPoint, Qt, QTimer
from qgis.PyQt.QtWidgets import QAction, QApplication, QCheckBox, QLabel, QLineEdit, QPushButton, QToolBar

from tests.plugin.conftest import messages

ROOT = Path(__file__).resolve().parents[2]
NAIROBI = QgsPointXY(36.82, -1.29)  # lon, lat


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flush_deletes() -> None:
    QApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    QApplication.processEvents()


def rubber_bands(canvas) -> list:
    return [i for i in canvas.scene().items() if isinstance(i, QgsRubberBand)]


# -- shell ---------------------------------------------------------------------------------------

def test_about_reads_top_level_metadata():
    from qgis_plugin import __about__

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "metadata.txt", encoding="utf-8")
    assert __about__.__version__ == parser["general"]["version"]
    assert __about__.__title__ == "CCG AutoPackaging"
    assert not (ROOT / "qgis_plugin" / "metadata.txt").exists(), "metadata.txt has one source: the top level"
    assert __about__.metadata_path() == ROOT / "metadata.txt"
    assert Path(__about__.ICON_PATH).is_file()


def test_about_prefers_metadata_inside_the_plugin_folder(tmp_path):
    """Installed from the zip (or a dev link), metadata.txt sits in the plugin folder itself."""
    folder = tmp_path / "ccg_autopkg"
    shutil.copytree(ROOT / "qgis_plugin", folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "metadata.txt").write_text((ROOT / "metadata.txt").read_text().replace("version=", "version=9.9.9-", 1))
    code = "import ccg_autopkg.__about__ as a; print(a.metadata_path(), a.__version__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == str(folder / "metadata.txt") and out[1].startswith("9.9.9-")


def test_load_and_unload_twice_leave_nothing_behind(qgis_iface, qgis_new_project, plugin_settings, monkeypatch):
    """Entries in the Plugins menu and the plugins toolbar (no menu or toolbar of its own), an
    options page, Help and About; unload() takes back exactly those."""
    import qgis_plugin

    main = qgis_iface.mainWindow()
    canvas = qgis_iface.mapCanvas()
    menu, toolbar, factories = [], [], []
    monkeypatch.setattr(qgis_iface, "addPluginToMenu", lambda name, action: menu.append((name, action)), raising=False)
    monkeypatch.setattr(qgis_iface, "removePluginMenu", lambda name, action: menu.remove((name, action)), raising=False)
    monkeypatch.setattr(qgis_iface, "addToolBarIcon", toolbar.append, raising=False)
    monkeypatch.setattr(qgis_iface, "removeToolBarIcon", toolbar.remove, raising=False)
    monkeypatch.setattr(qgis_iface, "registerOptionsWidgetFactory", factories.append, raising=False)
    monkeypatch.setattr(qgis_iface, "unregisterOptionsWidgetFactory", factories.remove, raising=False)
    before_menus = list(main.menuBar().actions())
    before_toolbars = main.findChildren(QToolBar)
    before_bands = len(rubber_bands(canvas))
    before_tool = canvas.mapTool()
    for _ in range(2):
        plugin = qgis_plugin.classFactory(qgis_iface)
        plugin.initGui()
        assert {name for name, _a in menu} == {"CCG AutoPackaging"}
        assert [a.text() for _n, a in menu] == ["CCG AutoPackaging panel", "Pick boundary on map", "Load package of the chosen boundary",
                                                "Options…", "Help", "About CCG AutoPackaging"]
        assert toolbar == [plugin.toggle_action] and not plugin.toggle_action.icon().isNull()
        assert len(factories) == 1 and factories[0].title() == "CCG AutoPackaging"
        assert list(main.menuBar().actions()) == before_menus, "no top-level menu of its own"
        assert main.findChildren(QToolBar) == before_toolbars, "no toolbar row of its own"
        assert len(main.findChildren(QgsDockWidget, "CcgAutoPackagingDock")) == 1
        plugin.toggle_action.setChecked(True)  # shows the dock (tries to connect: nothing listens, fine)
        assert not plugin.dock.isHidden()
        plugin.toggle_action.setChecked(False)
        plugin._pick_on_map()  # the map tool is active while the plugin is loaded
        assert canvas.mapTool() is plugin.dock.map_tool
        plugin.unload()
        flush_deletes()
        assert menu == [] and toolbar == [] and factories == []
        assert main.findChildren(QgsDockWidget, "CcgAutoPackagingDock") == []
        assert [a for a in main.findChildren(QAction) if a.objectName().startswith("CcgAutoPackaging")] == []
        assert canvas.mapTool() is before_tool
        assert len(rubber_bands(canvas)) == before_bands
        assert plugin.actions == [] and plugin.dock is None


DEFAULT_DOCK_WIDTH = 298  # QGIS's default width of a right-hand dock


def test_panel_fits_the_default_dock_width(plugin, qtbot):
    """Nothing cut off at 298 px: every tab's labels, buttons and the tab bar fit, no scroll bar."""
    dock = plugin.dock
    dock.setFloating(True)
    dock.resize(DEFAULT_DOCK_WIDTH, 900)
    dock.show()
    dock.ui.startBackendButton.setVisible(True)  # the widest state of the status row
    assert dock.minimumSizeHint().width() <= DEFAULT_DOCK_WIDTH, dock.minimumSizeHint().width()
    tabs = dock.ui.tabs
    assert tabs.tabBar().sizeHint().width() <= tabs.width(), "every tab title shown"
    for index in range(tabs.count()):
        tabs.setCurrentIndex(index)
        QApplication.processEvents()
        for widget in dock.findChildren((QPushButton, QCheckBox, QLabel, QLineEdit)):
            if not widget.isVisible():
                continue
            assert widget.width() >= widget.minimumSizeHint().width(), f"{widget.objectName()} cut off on tab {tabs.tabText(index)}"
            right = widget.mapTo(dock, widget.rect().topRight()).x()
            assert right <= dock.width(), f"{widget.objectName()} beyond the panel's edge"
    assert dock.width() == DEFAULT_DOCK_WIDTH


def test_metadata_declares_the_processing_provider():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "metadata.txt", encoding="utf-8")
    assert parser["general"]["hasProcessingProvider"] == "yes"


def test_calm_start_without_a_backend(qgis_iface, plugin, plugin_settings, message_bar, qtbot):
    """Shown at start with nothing listening: a status line and "Start local backend", no error."""
    dock = plugin.dock
    qgis_iface.mainWindow().addDockWidget(Qt.RightDockWidgetArea, dock)  # as QGIS does
    qgis_iface.mainWindow().show()
    plugin_settings.setValue("ccg_autopkg/backend_url", f"http://127.0.0.1:{free_port()}")
    with qtbot.waitSignal(dock.connection_changed, timeout=15000):
        plugin.toggle_action.setChecked(True)
    assert messages(message_bar, Qgis.Critical, Qgis.Warning) == []
    assert dock.ui.stateLabel.text().startswith("No backend running at http://127.0.0.1:")
    assert dock.ui.startBackendButton.isVisibleTo(dock)


# -- backend down / errors ---------------------------------------------------------------------

def test_backend_down_gives_a_clear_message(plugin, message_bar, qtbot):
    dock = plugin.dock
    QgsSettings().setValue("ccg_autopkg/backend_url", f"http://127.0.0.1:{free_port()}")
    with qtbot.waitSignal(dock.connection_changed, timeout=15000) as signal:
        dock.connect_backend()
    assert signal.args == [False]
    critical = messages(message_bar, Qgis.Critical)
    assert len(critical) == 1
    assert "Cannot reach the backend at http://127.0.0.1:" in critical[0]
    assert "refused" in critical[0].lower()
    assert dock.ui.stateLabel.text().startswith("No backend running at")
    # nothing chosen: a warning, no request, no exception
    dock.create_package()
    assert any("choose a boundary first" in m for m in messages(message_bar, Qgis.Warning))


def test_backend_errors_show_the_backend_detail(dock, message_bar, qtbot):
    with qtbot.waitSignal(dock.error_reported, timeout=10000) as signal:
        dock.choose_boundary({"name": "atlantis", "name_long": "Atlantis"})
    assert "Requested boundary atlantis could not be found" in signal.args[0]
    dock.set_checked_processors(["test_processor.version_1"])
    with qtbot.waitSignal(dock.error_reported, timeout=10000) as signal:
        dock.create_package()
    assert "atlantis" in signal.args[0] and "Create package" in signal.args[0]
    assert len(messages(message_bar, Qgis.Critical)) == 2
    assert dock.ui.createButton.isEnabled()


# -- boundaries --------------------------------------------------------------------------------

def test_name_search_is_debounced_and_fills_the_list(dock, qtbot):
    calls = []
    original = dock.client.search_name
    dock.client.search_name = lambda *a, **k: (calls.append(a[0]), original(*a, **k))[1]
    with qtbot.waitSignal(dock.boundaries_listed, timeout=10000) as signal:
        qtbot.keyClicks(dock.ui.searchEdit, "gamb")
    assert calls == ["gamb"], "typing fast sends one search after the pause"
    names = [b["name"] for b in signal.args[0]]
    assert "gambia" in names and "gambia_banjul" in names
    texts = [dock.ui.boundaryList.item(r).text() for r in range(dock.ui.boundaryList.count())]
    assert "Gambia  (gambia)" in texts
    # choosing an item fetches the polygon, draws it and zooms to it
    item = dock.ui.boundaryList.findItems("Gambia  (gambia)", Qt.MatchExactly)[0]
    with qtbot.waitSignal(dock.boundary_chosen, timeout=10000) as chosen:
        dock.ui.boundaryList.itemClicked.emit(item)
    assert chosen.args[0]["name"] == "gambia"
    assert dock.rubber_band.numberOfVertices() > 10
    extent = dock.canvas.extent()
    assert extent.contains(QgsPointXY(-15.3, 13.4)) and extent.width() < 10


def test_map_click_finds_kenya(dock, qtbot):
    canvas = dock.canvas
    crs_3857 = QgsCoordinateReferenceSystem("EPSG:3857")
    canvas.setDestinationCrs(crs_3857)
    to_map = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"), crs_3857, QgsProject.instance())
    centre = to_map.transform(NAIROBI)
    # a small extent: the offscreen canvas renders at a few dozen pixels, keep a pixel a few metres
    canvas.setExtent(QgsRectangle(centre.x() - 2e3, centre.y() - 2e3, centre.x() + 2e3, centre.y() + 2e3))
    dock.ui.pickButton.setChecked(True)
    assert canvas.mapTool() is dock.map_tool
    pixel = canvas.getCoordinateTransform().transform(centre)
    event = QgsMapMouseEvent(canvas, QEvent.MouseButtonRelease, QPoint(int(pixel.x()), int(pixel.y())), Qt.LeftButton)
    picked = []
    dock.map_tool.picked.connect(lambda lon, lat: picked.append((lon, lat)))
    with qtbot.waitSignal(dock.boundary_chosen, timeout=10000) as chosen:
        dock.map_tool.canvasReleaseEvent(event)
    (lon, lat), = picked
    assert abs(lon - NAIROBI.x()) < 0.01 and abs(lat - NAIROBI.y()) < 0.01, "click converted to EPSG:4326"
    assert chosen.args[0]["name"] == "kenya"
    listed = [dock.ui.boundaryList.item(r).data(Qt.UserRole)["name"] for r in range(dock.ui.boundaryList.count())]
    assert listed == ["kenya", "kenya_nairobi"]
    assert dock.boundary["name"] == "kenya"
    assert dock.rubber_band.numberOfVertices() > 10
    assert canvas.extent().contains(centre)
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:4326"))


# -- processors ----------------------------------------------------------------------------------

def test_processors_list_filter_and_details(dock):
    items = [dock.ui.processorList.item(r) for r in range(dock.ui.processorList.count())]
    names = [i.data(Qt.UserRole) for i in items]
    assert {"natural_earth_admin1.version_1", "test_processor.version_1", "test_fail_processor.version_1"} <= set(names)
    ne = items[names.index("natural_earth_admin1.version_1")]
    assert ne.text() == "Natural Earth Admin 1 States and Provinces — version_1 — Natural-Earth"
    assert ne.flags() & Qt.ItemIsUserCheckable and ne.checkState() == Qt.Unchecked
    dock.ui.processorFilter.setText("admin1")
    assert [i.data(Qt.UserRole) for i in items if not i.isHidden()] == ["natural_earth_admin1.version_1"]
    dock.ui.processorFilter.setText("")
    assert not any(i.isHidden() for i in items)
    dock.ui.processorList.setCurrentItem(ne)
    details = dock.ui.detailsBrowser.toHtml()
    assert "Natural Earth. Free vector and raster map data" in details  # citation
    assert "https://www.naturalearthdata.com/about/terms-of-use/" in details  # licence link
    assert "naturalearthdata.com/downloads/10m-cultural-vectors" in details  # origin


# -- jobs and packages --------------------------------------------------------------------------

def test_create_package_progress_and_load_into_project(dock, served, message_bar, plugin_settings, qtbot, tmp_path):
    with qtbot.waitSignal(dock.boundary_chosen, timeout=10000):
        dock.choose_boundary({"name": "gambia", "name_long": "Gambia"})
    dock.set_checked_processors(["test_processor.version_1", "natural_earth_admin1.version_1"])
    updates = []
    dock.job_updated.connect(lambda s: updates.append(s))
    # the GUI event loop keeps turning during submit, polling, download and loading
    ticks = [time.monotonic()]
    heartbeat = QTimer()
    heartbeat.timeout.connect(lambda: ticks.append(time.monotonic()))
    heartbeat.start(50)
    with qtbot.waitSignal(dock.package_loaded, timeout=60000) as loaded:
        dock.ui.createButton.click()
    heartbeat.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(gaps) > 5 and max(gaps) < 1.0, f"GUI event loop blocked for {max(gaps):.2f} s"
    # progress arrived while the job ran, and the final state is shown
    assert len(updates) >= 2
    assert updates[0]["job_group_status"] in ("PENDING", "EXECUTING")
    assert updates[-1]["job_group_status"] == "COMPLETE"
    assert any(p["job_status"] == "EXECUTING" for u in updates for p in u["job_group_processors"])
    assert dock.processor_state("natural_earth_admin1.version_1") == ("SUCCESS", 100)
    assert dock.processor_state("test_processor.version_1") == ("SUCCESS", 100)
    assert dock.ui.overallProgress.value() == 100
    assert not dock.ui.cancelButton.isEnabled() and dock.ui.createButton.isEnabled()

    report = loaded.args[0]
    project = QgsProject.instance()
    group = project.layerTreeRoot().findGroup("Gambia")
    assert group is not None and report.group is group
    sub = group.findGroup("Natural Earth Admin 1 States and Provinces")
    assert sub is not None
    layers = [n.layer() for n in sub.findLayers()]
    assert len(layers) == 1 and report.added == layers
    layer = layers[0]
    assert isinstance(layer, QgsVectorLayer) and layer.isValid()
    assert layer.featureCount() == 6
    # drawn as its style spec says (processors/styles.py via the resource's `style`): outlines
    assert report.added[0] is layer and layer.renderer().type() == "singleSymbol"
    assert layer.renderer().symbol().color().alpha() == 0 and layer.renderer().symbol().symbolLayer(0).strokeColor().name() == "#1b4f72"
    assert layer.id() in project.mapLayers()
    # the boundary outline on top of the group: no fill, an outline, the boundary's polygon
    outline = report.outline
    assert outline is not None and outline.isValid() and group.children()[0].layer() is outline
    assert outline.name() == "Gambia boundary" and outline.featureCount() == 1
    fill = outline.renderer().symbol().symbolLayer(0)
    assert fill.brushStyle() == Qt.NoBrush and fill.strokeWidth() == 0.8
    assert outline.extent().contains(QgsPointXY(-15.3, 13.4)) and outline.extent().width() < 5
    # the canvas on the package, no rubber band left over the data
    assert dock.canvas.extent().contains(QgsPointXY(-15.3, 13.4)) and dock.canvas.extent().width() < 10
    assert dock.rubber_band.numberOfVertices() == 0
    # the file came over HTTP into the cache folder, checked against its sha256
    cache = Path(plugin_settings.value("ccg_autopkg/cache_dir"))
    local = cache / "gambia/datasets/natural_earth_admin1/version_1/data/natural_earth_admin1-version_1-gambia.gpkg"
    assert local.is_file() and layer.source().startswith(str(local))
    meta = layer.metadata()
    assert meta.title() == "Natural Earth Admin 1 States and Provinces"
    assert "clipped to Gambia" in meta.abstract()
    assert any("Natural Earth Terms of Use" in lic for lic in meta.licenses())
    assert meta.rights()[0] == "Natural Earth. Free vector and raster map data @ naturalearthdata.com."
    assert any(link.url.startswith("https://www.naturalearthdata.com/downloads/") for link in meta.links())
    # test_processor writes a 4-byte placeholder .tif: reported, not added as a broken layer
    assert len(report.failed) == 1 and "test_processor-version_1-gambia.tif" in report.failed[0]
    assert all(lyr.isValid() for lyr in project.mapLayers().values())
    assert any("could not be loaded" in m for m in messages(message_bar, Qgis.Warning))
    assert any("2 of 2 dataset(s) ready" in m for m in messages(message_bar, Qgis.Success))

    # loading again: no duplicates, files taken from the cache
    with qtbot.waitSignal(dock.package_loaded, timeout=30000) as again:
        dock.ui.loadButton.click()
    assert again.args[0].added == [] and again.args[0].existing == layers
    assert len(project.mapLayers()) == 2  # the dataset layer and the boundary outline
    assert len(project.layerTreeRoot().findGroup("Gambia").findLayers()) == 2
    assert again.args[0].outline is report.outline
    assert "from cache" in dock.ui.jobLabel.text() and "0 downloaded" in dock.ui.jobLabel.text()


def test_cancel_shows_revoked(backend, backend_env, plugin, qtbot):
    backend_env["CCGAUTOPKG_TEST_PROCESSOR_SECONDS"] = "20"
    backend.serve(workers=1)
    dock = plugin.dock
    QgsSettings().setValue("ccg_autopkg/backend_url", backend.url)
    with qtbot.waitSignal(dock.processors_listed, timeout=20000):
        dock.connect_backend()
    with qtbot.waitSignal(dock.boundary_chosen, timeout=10000):
        dock.choose_boundary({"name": "kenya", "name_long": "Kenya"})
    # two slow processors on one worker: one runs, the other waits
    dock.set_checked_processors(["test_processor.version_1", "test_fail_processor.version_1"])
    with qtbot.waitSignal(dock.job_updated, timeout=10000):
        dock.create_package()
    assert dock.ui.cancelButton.isEnabled()
    with qtbot.waitSignal(dock.job_finished, timeout=30000) as finished:
        dock.ui.cancelButton.click()
    status = finished.args[0]
    assert status["job_group_cancelled"] is True
    states = {p["processor_name"]: p["job_status"] for p in status["job_group_processors"]}
    assert set(states.values()) == {"REVOKED"}, states
    # shown as cancelled, not as done: no 100 % anywhere
    for name in ("test_processor.version_1", "test_fail_processor.version_1"):
        state, percent = dock.processor_state(name)
        assert state == "CANCELLED" and percent < 100
    assert dock.ui.overallProgress.value() < 100 and dock.ui.overallProgress.format().startswith("Cancelled")
    assert "(cancelled)" in dock.ui.jobLabel.text()


def test_raster_layer_styled_with_metadata_and_no_duplicates(qgis_new_project, tmp_path):
    """Layer loading on its own: a real single-band GeoTIFF gets a stretched colour ramp with
    nodata transparent; its dataset sub-group and metadata come from the datapackage."""
    import numpy as np
    from osgeo import gdal, osr

    from qgis_plugin.layers import add_package_layers
    from qgis_plugin.loader import PackageFile

    tif = tmp_path / "flood-version_1-gambia.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(tif), 20, 10, 1, gdal.GDT_Float32)
    ds.SetGeoTransform((-16.8, 0.05, 0, 13.8, 0, -0.05))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    ds.SetProjection(srs.ExportToWkt())
    data = np.linspace(0.5, 4.5, 200, dtype="float32").reshape(10, 20)
    data[0, 0] = -9999
    ds.GetRasterBand(1).WriteArray(data)
    ds.GetRasterBand(1).SetNoDataValue(-9999)
    ds = None
    resource = {"name": "flood-version_1", "title": "River flooding", "description": "Flood depth", "path": ["datasets/flood/version_1/data/" + tif.name],
                "license": {"name": "CC-BY-4.0", "path": "https://creativecommons.org/licenses/by/4.0/", "title": "CC BY 4.0"},
                "sources": [{"title": "Aqueduct", "path": "https://example.org/aqueduct"}], "citation": "Someone et al. (2020)", "author": "WRI"}
    package = {"boundary_name": "gambia", "datapackage": {"name": "gambia", "title": "Gambia", "resources": [resource]}}
    files = [PackageFile(dataset="flood-version_1", path=resource["path"][0], uri="", sha256="", local_path=tif)]
    report = add_package_layers(package, files)
    (layer,) = report.added
    assert layer.isValid() and layer.renderer().type() == "singlebandpseudocolor"
    # stretched on the statistics of the valid pixels: the nodata pixel (value 0.5) is left out
    assert abs(layer.renderer().classificationMin() - float(data[0, 1])) < 1e-6
    assert abs(layer.renderer().classificationMax() - 4.5) < 1e-6
    assert layer.dataProvider().useSourceNoDataValue(1)
    assert layer.metadata().rights()[0] == "Someone et al. (2020)"
    assert [l.url for l in layer.metadata().links()] == ["https://example.org/aqueduct", "https://creativecommons.org/licenses/by/4.0/"]
    assert QgsProject.instance().layerTreeRoot().findGroup("Gambia").findGroup("River flooding").findLayers()[0].layer() is layer
    again = add_package_layers(package, files)
    assert again.added == [] and again.existing == [layer]


def test_backend_dying_mid_job_is_reported(backend, backend_env, plugin, message_bar, qtbot):
    backend_env["CCGAUTOPKG_TEST_PROCESSOR_SECONDS"] = "20"
    serve = backend.serve(workers=1)
    dock = plugin.dock
    QgsSettings().setValue("ccg_autopkg/backend_url", backend.url)
    with qtbot.waitSignal(dock.processors_listed, timeout=20000):
        dock.connect_backend()
    with qtbot.waitSignal(dock.boundary_chosen, timeout=10000):
        dock.choose_boundary({"name": "kenya", "name_long": "Kenya"})
    dock.set_checked_processors(["test_processor.version_1"])
    with qtbot.waitSignal(dock.job_updated, timeout=10000):
        dock.create_package()
    serve.kill()
    with qtbot.waitSignal(dock.error_reported, timeout=15000) as signal:
        pass
    assert signal.args[0].startswith(f"Following job {dock.job_id}: ")
    assert "refused" in signal.args[0].lower()
    assert not dock.poll_timer.isActive() and dock.ui.createButton.isEnabled() and not dock.ui.cancelButton.isEnabled()
    assert len(messages(message_bar, Qgis.Critical)) == 1
