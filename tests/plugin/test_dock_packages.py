"""Dock: "use selected polygon(s)", the packages list, local package roots; the streamed download."""
from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
from qgis.PyQt.QtCore import Qt
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeedback,
    QgsGeometry,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)

from tests.plugin.conftest import messages

NE = "natural_earth_admin1.version_1"
NE_FILE = "datasets/natural_earth_admin1/version_1/data/natural_earth_admin1-version_1-{b}.gpkg"


def squares_3857(rects: list[QgsRectangle]) -> QgsVectorLayer:
    layer = QgsVectorLayer("Polygon?crs=EPSG:3857", "areas", "memory")
    to_3857 = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"), QgsCoordinateReferenceSystem("EPSG:3857"), QgsProject.instance())
    feats = []
    for rect in rects:
        geometry = QgsGeometry.fromRect(rect)
        geometry.transform(to_3857)
        f = QgsFeature()
        f.setGeometry(geometry)
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    QgsProject.instance().addMapLayer(layer)
    return layer


# -- use selected polygon(s) -----------------------------------------------------------------------

def test_use_selected_polygons_uploads_dissolved_wgs84_and_chooses_it(dock, served, qgis_iface, qtbot):
    # two touching squares selected (dissolved into one rectangle), a third one not selected
    layer = squares_3857([QgsRectangle(36.6, -1.5, 36.8, -1.1), QgsRectangle(36.8, -1.5, 37.0, -1.1), QgsRectangle(38, 0, 38.5, 0.5)])
    ids = [f.id() for f in layer.getFeatures()]
    layer.selectByIds(ids[:2])
    qgis_iface.setActiveLayer(layer)
    with qtbot.waitSignal(dock.boundary_chosen, timeout=10000) as chosen:
        dock.ui.selectedButton.click()
    boundary = chosen.args[0]
    assert boundary["name"].startswith("custom_") and dock.boundary["name"] == boundary["name"]
    stored = served.get(f"/v1/boundaries/{boundary['name']}").json()
    from qgis_plugin.gui.dock import geojson_to_wkt

    geometry = QgsGeometry.fromWkt(geojson_to_wkt(stored["geometry"]))
    assert geometry.area() == pytest.approx(0.16, rel=1e-6)  # the two selected squares, in degrees
    box = geometry.boundingBox()
    assert box.xMinimum() == pytest.approx(36.6) and box.xMaximum() == pytest.approx(37.0)
    assert len(geometry.asGeometryCollection()) == 1, "dissolved into one polygon"
    assert dock.rubber_band.numberOfVertices() >= 4
    assert dock.ui.boundaryList.count() == 1 and dock.ui.boundaryList.currentItem().data(256)["name"] == boundary["name"]
    assert dock.ui.selectedButton.isEnabled()
    # the same selection again: the backend answers the existing boundary (200), same name
    with qtbot.waitSignal(dock.boundary_chosen, timeout=10000) as again:
        dock.use_selected_polygons()
    assert again.args[0]["name"] == boundary["name"]


def test_use_selected_polygons_without_a_usable_selection_says_why(plugin, qgis_iface, message_bar):
    dock = plugin.dock
    requests = []
    dock.client.upload_boundary = lambda *a, **k: requests.append(a)
    qgis_iface.setActiveLayer(squares_3857([]))  # a polygon layer with nothing selected
    dock.use_selected_polygons()
    points = QgsVectorLayer("Point?crs=EPSG:4326", "points", "memory")
    QgsProject.instance().addMapLayer(points)
    qgis_iface.setActiveLayer(points)
    dock.use_selected_polygons()
    warnings = messages(message_bar, Qgis.Warning)
    assert any("select one or more polygons of 'areas'" in m for m in warnings)
    assert any("'points' is not a polygon layer" in m for m in warnings)
    assert requests == [] and messages(message_bar, Qgis.Critical) == []


# -- packages list -------------------------------------------------------------------------------

def test_packages_list_shows_datasets_and_loads_the_selected_one(dock, served, qtbot):
    served.wait_job(served.submit("gambia", [NE]))
    with qtbot.waitSignal(dock.packages_listed, timeout=10000) as listed:
        dock.ui.refreshPackagesButton.click()
    assert [p["boundary_name"] for p in listed.args[0]] == ["gambia"]
    tree = dock.ui.packagesTree
    assert tree.topLevelItemCount() == 1
    top = tree.topLevelItem(0)
    assert top.text(0) == "Gambia (gambia)" and top.text(1) == "1"
    assert [top.child(i).text(0) for i in range(top.childCount())] == ["Natural Earth Admin 1 States and Provinces"]
    assert not dock.ui.loadPackageButton.isEnabled()
    top.child(0).setSelected(True)  # a dataset row selects its package
    assert dock.selected_package() == "gambia" and dock.ui.loadPackageButton.isEnabled()
    with qtbot.waitSignal(dock.package_loaded, timeout=30000) as loaded:
        dock.ui.loadPackageButton.click()
    report = loaded.args[0]
    assert len(report.added) == 1 and report.added[0].isValid() and report.outline is not None
    assert QgsProject.instance().layerTreeRoot().findGroup("Gambia") is report.group


def test_load_without_selected_package_warns(plugin, message_bar):
    plugin.dock.load_selected_package()
    assert any("select a package in the list first" in m for m in messages(message_bar, Qgis.Warning))


# -- local package roots ---------------------------------------------------------------------------

def test_local_package_root_is_used_in_place(dock, served, plugin_settings, qtbot):
    served.wait_job(served.submit("gambia", [NE]))
    root = served.data_dir / "packages"
    plugin_settings.setValue("ccg_autopkg/use_local_packages", True)
    plugin_settings.setValue("ccg_autopkg/local_package_root", str(root))
    with qtbot.waitSignal(dock.package_loaded, timeout=30000) as loaded:
        dock.load_package("gambia")
    (layer,) = loaded.args[0].added
    own = root / "gambia" / NE_FILE.format(b="gambia")
    assert layer.source().split("|")[0] == str(own.resolve())
    assert "1 used in place" in dock.ui.jobLabel.text() and "0 downloaded" in dock.ui.jobLabel.text()
    cache = Path(plugin_settings.value("ccg_autopkg/cache_dir"))
    assert not (cache / "gambia" / NE_FILE.format(b="gambia")).exists()
    assert (cache / "gambia" / "boundary.geojson").is_file()  # the outline still comes from the API


def test_local_roots_auto_detected_for_a_loopback_backend_only(plugin_settings, monkeypatch, tmp_path):
    from qgis_plugin.loader import PackageFile, find_local_copy, local_package_roots

    data = tmp_path / "data"
    (data / "packages" / "b" / "d").mkdir(parents=True)
    content = b"0123456789"
    (data / "packages" / "b" / "d" / "f.bin").write_bytes(content)
    monkeypatch.setenv("CCGAUTOPKG_DATA_DIR", str(data))
    monkeypatch.delenv("CCGAUTOPKG_LOCALFS_STORAGE_BACKEND_ROOT", raising=False)
    assert local_package_roots("http://127.0.0.1:8000") == []  # switched off by the fixture
    plugin_settings.setValue("ccg_autopkg/use_local_packages", True)
    assert data / "packages" in local_package_roots("http://127.0.0.1:8000")
    assert local_package_roots("http://packages.example.org") == []
    good = PackageFile(dataset="d", path="d/f.bin", uri="", sha256=hashlib.sha256(content).hexdigest(), bytes=10)
    assert find_local_copy("b", good, [data / "packages"]) == (data / "packages/b/d/f.bin").resolve()
    changed = PackageFile(dataset="d", path="d/f.bin", uri="", sha256=hashlib.sha256(b"other").hexdigest(), bytes=10)
    assert find_local_copy("b", changed, [data / "packages"]) is None, "a different hash is never used"
    escaping = PackageFile(dataset="d", path="../../../etc/passwd", uri="", sha256=good.sha256)
    assert find_local_copy("b", escaping, [data / "packages"]) is None
    file_uri = PackageFile(dataset="d", path="x", uri=(data / "packages/b/d/f.bin").as_uri(), sha256=good.sha256, bytes=10)
    assert find_local_copy("b", file_uri, []) == data / "packages/b/d/f.bin"


# -- streamed download -------------------------------------------------------------------------------

@pytest.fixture
def file_server(tmp_path):
    """A loopback HTTP server for tmp_path/www (the threaded standard-library one)."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(www), **k)

        def log_message(self, *_a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_stream_download_writes_chunks_checks_hash_and_cleans_up(file_server, tmp_path):
    from qgis_plugin.loader import stream_download

    www, url = file_server
    payload = (bytes(range(256)) * 4096) * 8  # 8 MiB
    (www / "big.bin").write_bytes(payload)
    target = tmp_path / "out" / "big.bin"
    seen = []
    stream_download(f"{url}/big.bin", target, hashlib.sha256(payload).hexdigest(), QgsFeedback(), lambda r, t: seen.append(r))
    assert target.read_bytes() == payload
    assert len(seen) > 2 and seen[-1] == len(payload), "progress arrived chunk by chunk"
    with pytest.raises(RuntimeError, match="does not match"):
        stream_download(f"{url}/big.bin", tmp_path / "out" / "bad.bin", "0" * 64)
    with pytest.raises(RuntimeError, match="404"):
        stream_download(f"{url}/missing.bin", tmp_path / "out" / "missing.bin")
    cancelled = QgsFeedback()
    cancelled.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        stream_download(f"{url}/big.bin", tmp_path / "out" / "cancelled.bin", "", cancelled)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["big.bin"], "no .part files left behind"


def test_many_small_files_many_loads_without_deleted_replies(file_server, tmp_path):
    """The intermittent `QNetworkReply has been deleted` (and the crashes behind it): replies were
    deleted later, by whichever event loop of a reused thread-pool thread ran next, and written to
    QGIS's shared HTTP disk cache from worker threads. 200 files × 6 loads failed on every run."""
    import subprocess
    import sys

    www, url = file_server
    for i in range(200):
        (www / f"{i}.txt").write_bytes(f"file {i}\n".encode() * (1 + i % 7))
    script = Path(__file__).with_name("many_downloads.py")
    run = subprocess.run([sys.executable, str(script), url, "200", "6", str(tmp_path / "cache")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"rc {run.returncode}\n{run.stdout}\n{run.stderr[-3000:]}"
    assert run.stdout.count(", '', 200)]") == 6, run.stdout


# -- submitting and following ------------------------------------------------------------------------

def test_create_needs_a_boundary_and_datasets_and_asks_before_a_big_package(dock, served, qtbot):
    assert not dock.ui.createButton.isEnabled() and "Choose a boundary" in dock.ui.summaryLabel.text()
    with qtbot.waitSignal(dock.size_hints_ready, timeout=30000):
        dock.choose_boundary({"name": "gambia", "name_long": "Gambia"})
    assert not dock.ui.createButton.isEnabled() and "tick the datasets" in dock.ui.summaryLabel.text()
    dock.set_checked_processors([NE])
    assert dock.ui.createButton.isEnabled()
    assert dock.ui.summaryLabel.text().startswith("Gambia: 1 dataset(s), ~") and "1 layer(s)" in dock.ui.summaryLabel.text()
    # a big one: asked first; "no" submits nothing
    big = "storm.global_mosaics_version_1"
    assert dock.estimates[big]["files"] == 140
    dock.set_checked_processors([NE, big])
    assert "141 layer(s)" in dock.ui.summaryLabel.text()
    asked = []
    dock.confirm = lambda question: asked.append(question) or False
    dock.create_package()
    assert asked and "141 layer(s)" in asked[0] and dock.job_id is None


def test_choices_remembered_search_results_and_unusable_packages(dock, served, plugin, qgis_iface, qtbot, message_bar):
    import qgis_plugin

    # "nothing found" is said; a failed search leaves no stale results
    with qtbot.waitSignal(dock.boundaries_listed, timeout=10000):
        dock.ui.searchEdit.setText("zzzzqq")
        dock.run_search()
    assert dock.ui.boundaryList.count() == 1 and dock.ui.boundaryList.item(0).text() == "No boundary matches “zzzzqq”"
    with qtbot.waitSignal(dock.boundaries_listed, timeout=10000):
        dock.ui.searchEdit.setText("gamb")
        dock.run_search()
    assert dock.ui.boundaryList.count() > 1
    dock.client.base_url = "http://127.0.0.1:9"  # nothing listens: the search fails
    with qtbot.waitSignal(dock.error_reported, timeout=10000):
        dock.ui.searchEdit.setText("keny")
        dock.run_search()
    assert dock.ui.boundaryList.count() == 0
    dock.client.base_url = served.url

    # a package folder without any dataset (a cancelled first job) is not offered for loading
    empty = Path(served.data_dir) / "packages" / "atlantis"
    empty.mkdir(parents=True)
    (empty / "datapackage.json").write_text('{"name": "atlantis", "resources": []}')
    with qtbot.waitSignal(dock.packages_listed, timeout=10000):
        dock.refresh_packages()
    names = [dock.ui.packagesTree.topLevelItem(i).data(0, Qt.UserRole) for i in range(dock.ui.packagesTree.topLevelItemCount())]
    assert "atlantis" not in names

    # boundary and ticked datasets come back in the next session
    with qtbot.waitSignal(dock.boundary_chosen, timeout=10000):
        dock.choose_boundary({"name": "gambia", "name_long": "Gambia"})
    dock.set_checked_processors([NE])
    plugin.unload()
    again = qgis_plugin.classFactory(qgis_iface)
    again.initGui()
    try:
        assert again.dock.boundary["name"] == "gambia" and "Gambia" in again.dock.ui.boundaryLabel.text()
        with qtbot.waitSignal(again.dock.processors_listed, timeout=20000):
            again.dock.connect_backend()
        assert again.dock.checked_processors() == [NE] and again.dock.ui.createButton.isEnabled()
    finally:
        again.unload()
        plugin.dock = None  # the fixture's unload() has nothing left to do
