"""Run inside a real QGIS (`qgis --code docs/screenshot_qgis.py`) by `make screenshot`.

The plugin is enabled in the profile; this script shows its panel, chooses the boundary named in
CCGAUTOPKG_SCREENSHOT_BOUNDARY, loads that boundary's package from the backend, waits for the layers,
zooms to them and saves the main window to CCGAUTOPKG_SCREENSHOT_OUT, then exits.
"""
import os
import time

from qgis.core import QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins

BOUNDARY = os.environ.get("CCGAUTOPKG_SCREENSHOT_BOUNDARY", "kenya")
OUT = os.environ["CCGAUTOPKG_SCREENSHOT_OUT"]
DEADLINE = time.monotonic() + 90


def finish(code: int) -> None:
    os._exit(code)  # QApplication.quit() aborts in this QGIS build; nothing to save


def start() -> None:
    plugin = plugins.get("ccg_autopkg")
    if plugin is None or plugin.dock is None:
        if time.monotonic() > DEADLINE:
            print("screenshot: the ccg_autopkg plugin did not load", flush=True)
            finish(1)
        QTimer.singleShot(500, start)
        return
    iface.mainWindow().showMaximized()
    plugin.dock.show()
    plugin.dock.raise_()
    plugin.dock.ui.searchEdit.setText(BOUNDARY)
    plugin.dock.choose_boundary({"name": BOUNDARY, "name_long": BOUNDARY.title()})
    plugin.dock.load_package(BOUNDARY)
    QTimer.singleShot(500, lambda: wait_for_layers(plugin))


def wait_for_layers(plugin) -> None:
    layers = [l for l in QgsProject.instance().mapLayers().values() if l.isValid()]
    if len(layers) < 1:
        if time.monotonic() > DEADLINE:
            print("screenshot: no layer was loaded", flush=True)
            finish(1)
        QTimer.singleShot(500, lambda: wait_for_layers(plugin))
        return
    extent = None
    for layer in layers:
        e = iface.mapCanvas().mapSettings().layerExtentToOutputExtent(layer, layer.extent())
        extent = e if extent is None else (extent.combineExtentWith(e) or extent)
    iface.mapCanvas().setExtent(extent)
    iface.mapCanvas().refresh()
    QTimer.singleShot(4000, save)


def save() -> None:
    ok = iface.mainWindow().grab().save(OUT)
    print(f"screenshot: saved {OUT}" if ok else f"screenshot: could not write {OUT}", flush=True)
    finish(0 if ok else 1)


QTimer.singleShot(1000, start)
