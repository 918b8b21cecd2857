"""Run inside a real QGIS (`qgis --code docs/screenshot_qgis.py`) by `make screenshot`.

The plugin is enabled in the profile; this script docks its panel at QGIS's default width
(298 px), chooses the boundary named in CCGAUTOPKG_SCREENSHOT_BOUNDARY, loads that boundary's
package through the panel, waits until the layers are in (styled, one visible per dataset,
dimension groups in the layer tree) and saves the main window to CCGAUTOPKG_SCREENSHOT_OUT.
"""
import os
import time

from qgis.PyQt.QtCore import Qt, QTimer
from qgis.utils import iface, plugins

BOUNDARY = os.environ.get("CCGAUTOPKG_SCREENSHOT_BOUNDARY", "tanzania")
OUT = os.environ["CCGAUTOPKG_SCREENSHOT_OUT"]
DOCK_WIDTH = 298  # QGIS's default dock width
DEADLINE = time.monotonic() + 240


def finish(code: int) -> None:
    os._exit(code)  # QApplication.quit() aborts in this QGIS build; nothing to save


def start() -> None:
    plugin = plugins.get("ccg_autopkg")
    if plugin is None or plugin.dock is None or not plugin.dock.connected:
        if time.monotonic() > DEADLINE:
            print("screenshot: the ccg_autopkg plugin did not load or connect", flush=True)
            finish(1)
        if plugin is not None and plugin.dock is not None and not plugin.dock.isVisible():
            plugin.toggle_action.setChecked(True)
        QTimer.singleShot(500, start)
        return
    main = iface.mainWindow()
    main.showMaximized()
    dock = plugin.dock
    dock.raise_()
    main.resizeDocks([dock], [DOCK_WIDTH], Qt.Horizontal)
    dock.package_loaded.connect(lambda report: QTimer.singleShot(5000, lambda: save(dock)))
    dock.slices_asked.connect(lambda dialog: QTimer.singleShot(1500, dialog.accept))  # every slice
    dock.choose_boundary({"name": BOUNDARY, "name_long": BOUNDARY.title()})
    dock.set_checked_processors(["storm.global_mosaics_version_1", "wri_aqueduct.version_2", "natural_earth_admin1.version_1"])
    dock.ui.tabs.setCurrentWidget(dock.ui.datasetsTab)
    dock.load_package(BOUNDARY)
    QTimer.singleShot(int((DEADLINE - time.monotonic()) * 1000), lambda: (print("screenshot: no package loaded", flush=True), finish(1)))


def save(dock) -> None:
    print(f"screenshot: panel {dock.width()} px wide", flush=True)
    ok = iface.mainWindow().grab().save(OUT)
    print(f"screenshot: saved {OUT}" if ok else f"screenshot: could not write {OUT}", flush=True)
    finish(0 if ok else 1)


QTimer.singleShot(1000, start)
