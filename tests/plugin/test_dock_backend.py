"""Dock: API token in the QGIS auth database, "Start local backend", size hints, and the GUI event
loop during a multi-megabyte package; each against a real backend subprocess."""
from __future__ import annotations

import re
import shlex
import socket
import sys
import time
from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsProject, QgsSettings
from qgis.PyQt.QtCore import Qt, QTimer

from tests.plugin.conftest import messages

ROOT = Path(__file__).resolve().parents[2]
NE = "natural_earth_admin1.version_1"
TOKEN = "s3cret-Token-4-tests-9f2c"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """Running (a zombie, exited but not reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def settings_values() -> list[str]:
    settings = QgsSettings()
    settings.sync()
    return [str(settings.value(k)) for k in settings.allKeys()]


# -- API token -------------------------------------------------------------------------------------

def test_token_kept_in_the_auth_database_and_sent_as_bearer(backend, plugin, plugin_settings, auth_master_password, message_bar, qtbot):
    from qgis_plugin.gui.options import OptionsPage

    backend.env["CCGAUTOPKG_API_TOKEN"] = TOKEN
    backend.serve()
    dock = plugin.dock
    page = OptionsPage(message_bar=message_bar)  # Settings → Options → CCG AutoPackaging
    assert page.ui.tokenEdit.isEnabled() and page.ui.tokenEdit.echoMode() == page.ui.tokenEdit.Password
    assert "master password" in page.ui.tokenNote.text(), "the page explains before QGIS asks"
    page.ui.urlEdit.setText(backend.url)
    page.apply()
    assert plugin_settings.value("ccg_autopkg/backend_url") == backend.url
    # no token: liveness answers, the data routes say 401: a clear message, no exception
    with qtbot.waitSignal(dock.error_reported, timeout=15000) as error:
        dock.connect_backend()
    assert "needs an API token (HTTP 401)" in error.args[0]
    assert "missing or wrong API token" in error.args[0] and "Settings → Options → CCG AutoPackaging" in error.args[0]
    assert "HTTP 401" in dock.ui.stateLabel.text() and "needs an API token" in dock.ui.stateLabel.text()
    assert dock.ui.processorList.count() == 0
    assert len(messages(message_bar, Qgis.Critical)) == 1, "one message, not one per refused request"

    # the token typed on the options page, OK: stored in the auth database, only its id in the settings
    page.ui.tokenEdit.setText(TOKEN)
    with qtbot.waitSignal(dock.processors_listed, timeout=15000):
        page.applied.connect(dock.connect_backend)
        page.apply()
    assert page.ui.tokenEdit.text() == "", "the token does not stay in the widget"
    authcfg = QgsSettings().value("ccg_autopkg/authcfg", "", type=str)
    manager = QgsApplication.authManager()
    assert authcfg and authcfg in manager.configIds()
    assert authcfg in page.ui.tokenEdit.placeholderText()
    from qgis_plugin.auth import load_token

    assert load_token() == TOKEN
    values = settings_values()
    assert authcfg in values
    assert not any(TOKEN in v for v in values)
    assert TOKEN not in Path(QgsSettings().fileName()).read_text(errors="replace")

    # a new session: the token comes back from the auth database; search, job and download work
    dock.client.token = ""
    with qtbot.waitSignal(dock.processors_listed, timeout=15000):
        dock.connect_backend()
    assert dock.client.token == TOKEN
    with qtbot.waitSignal(dock.boundaries_listed, timeout=10000) as listed:
        dock.ui.searchEdit.setText("gamb")
        dock.run_search()
    assert "gambia" in [b["name"] for b in listed.args[0]]
    with qtbot.waitSignal(dock.boundary_chosen, timeout=10000):
        dock.choose_boundary({"name": "gambia", "name_long": "Gambia"})
    dock.set_checked_processors([NE])
    with qtbot.waitSignal(dock.package_loaded, timeout=60000) as loaded:
        dock.create_package()
    report = loaded.args[0]
    assert len(report.added) == 1 and report.added[0].isValid()  # streamed download with the token
    assert report.outline is not None  # the blocking client sent it too
    assert not messages(message_bar, Qgis.Critical)[1:], messages(message_bar, Qgis.Critical)

    # forget: removed from the auth database and the settings
    page.forget_token()
    assert authcfg not in manager.configIds()
    assert QgsSettings().value("ccg_autopkg/authcfg", "", type=str) == ""
    assert dock.client.token == "" and not page.ui.forgetTokenButton.isEnabled()


def test_token_field_disabled_without_a_usable_auth_database(qgis_iface, qgis_new_project, plugin_settings, monkeypatch):
    import qgis_plugin.gui.options
    from qgis_plugin.gui.options import OptionsPage

    monkeypatch.setattr(qgis_plugin.gui.options, "auth_unavailable_reason", lambda: "Authentication system is DISABLED: test")
    page = OptionsPage()
    assert not page.ui.tokenEdit.isEnabled() and not page.ui.forgetTokenButton.isEnabled()
    assert "DISABLED: test" in page.ui.tokenEdit.toolTip()
    page.ui.tokenEdit.setText("typed anyway")
    page.apply()  # no plain-text fallback: nothing stored anywhere
    assert plugin_settings.value("ccg_autopkg/authcfg", "", type=str) == ""
    assert not any("typed anyway" in v for v in settings_values())


# -- start a local backend --------------------------------------------------------------------

def autopkg_stand_in(backend_env: dict, folder: Path) -> Path:
    """An `autopkg` command: this checkout's CLI with the test data folder (seeded boundaries)."""
    script = folder / "autopkg"
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in backend_env.items() if k.startswith("CCGAUTOPKG_") or k == "PYTHONPATH")
    script.write_text(f"#!/bin/sh\n{exports}cd {shlex.quote(str(ROOT))}\nexec {shlex.quote(sys.executable)} -m backend.cli \"$@\"\n")
    script.chmod(0o755)
    return script


def test_start_local_backend_connects_and_unload_stops_it(backend_env, plugin, plugin_settings, message_bar, qtbot, tmp_path):
    plugin_settings.setValue("ccg_autopkg/autopkg_command", str(autopkg_stand_in(backend_env, tmp_path)))
    dock = plugin.dock
    url = f"http://127.0.0.1:{free_port()}"
    plugin_settings.setValue("ccg_autopkg/backend_url", url)
    assert dock.ui.startBackendButton.isHidden()
    with qtbot.waitSignal(dock.connection_changed, timeout=15000):
        dock.connect_backend()
    assert not dock.ui.startBackendButton.isHidden(), "nothing answers on localhost: offer to start it"
    assert "Start local backend" in messages(message_bar, Qgis.Critical)[0]

    ticks = [time.monotonic()]
    heartbeat = QTimer()
    heartbeat.timeout.connect(lambda: ticks.append(time.monotonic()))
    heartbeat.start(50)
    with qtbot.waitSignal(dock.processors_listed, timeout=60000):
        dock.ui.startBackendButton.click()
    heartbeat.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert max(gaps) < 1.0, f"GUI blocked {max(gaps):.2f} s while the backend started"
    assert dock.connected and dock.ui.stateLabel.text() == f"Connected to {url}"
    assert dock.ui.startBackendButton.isHidden()
    local = dock.local_backend
    pid = local.pid()
    assert pid > 0 and pid_alive(pid)
    assert local.arguments[-4:] == ["--port", url.rsplit(":", 1)[1], "--host", "127.0.0.1"]

    started = time.monotonic()
    plugin.unload()
    assert time.monotonic() - started < 0.5, "unload does not wait for the child"
    qtbot.waitUntil(lambda: not pid_alive(pid), timeout=15000)


def test_unload_mid_job_leaves_the_started_backend_running(backend_env, plugin, plugin_settings, qtbot, tmp_path):
    """Unloading the plugin while a job it submitted runs on the backend it started: the backend
    keeps running and finishes the job (it used to be killed, the job ending FAILURE)."""
    import os
    import signal

    import requests

    backend_env["CCGAUTOPKG_TEST_PROCESSOR_SECONDS"] = "4"
    plugin_settings.setValue("ccg_autopkg/autopkg_command", str(autopkg_stand_in(backend_env, tmp_path)))
    url = f"http://127.0.0.1:{free_port()}"
    plugin_settings.setValue("ccg_autopkg/backend_url", url)
    dock = plugin.dock
    with qtbot.waitSignal(dock.processors_listed, timeout=60000):
        dock.start_local_backend()
    pid = dock.local_backend.pid()
    try:
        with qtbot.waitSignal(dock.boundary_chosen, timeout=10000):
            dock.choose_boundary({"name": "gambia", "name_long": "Gambia"})
        dock.set_checked_processors(["test_processor.version_1"])
        with qtbot.waitSignal(dock.job_updated, timeout=10000):
            dock.create_package()
        job = dock.job_id
        plugin.unload()
        assert pid_alive(pid), "left running: a job of the panel's is unfinished"
        deadline = time.monotonic() + 30
        while (status := requests.get(f"{url}/v1/jobs/{job}", timeout=5).json())["job_group_status"] != "COMPLETE":
            assert time.monotonic() < deadline, status
            qtbot.wait(200)
        assert [p["job_status"] for p in status["job_group_processors"]] == ["SUCCESS"]
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)  # serve stops its worker child with it
        qtbot.waitUntil(lambda: not pid_alive(pid), timeout=20000)


def test_autopkg_command_resolution(plugin_settings, monkeypatch):
    from qgis_plugin import local_backend

    plugin_settings.setValue("ccg_autopkg/autopkg_command", '["/usr/bin/python3", "-m", "backend.cli"]')
    assert local_backend.autopkg_command() == ["/usr/bin/python3", "-m", "backend.cli"]
    plugin_settings.setValue("ccg_autopkg/autopkg_command", "/opt/my venv/bin/python -m backend.cli".replace("my venv", "'my venv'"))
    assert local_backend.autopkg_command() == ["/opt/my venv/bin/python", "-m", "backend.cli"]
    plugin_settings.remove("ccg_autopkg/autopkg_command")
    monkeypatch.setattr(local_backend.shutil, "which", lambda name: None)
    # the plugin in this checkout: the repository's venv
    assert local_backend.autopkg_command() == [str(ROOT / ".venv" / "bin" / "autopkg")]
    monkeypatch.setattr(local_backend.shutil, "which", lambda name: "/usr/local/bin/autopkg")
    assert local_backend.autopkg_command() == ["/usr/local/bin/autopkg"]


# -- size hints --------------------------------------------------------------------------------

def test_size_hints_for_the_chosen_boundary(dock, qtbot):
    with qtbot.waitSignal(dock.size_hints_ready, timeout=30000) as hints:
        dock.choose_boundary({"name": "gambia", "name_long": "Gambia"})
    boundary, estimates = hints.args
    assert boundary == "gambia"
    assert estimates[NE]["bytes"] > 50_000 and estimates[NE]["files"] == 1
    items = {dock.ui.processorList.item(r).data(Qt.UserRole): dock.ui.processorList.item(r) for r in range(dock.ui.processorList.count())}
    text = items[NE].text()
    assert text.startswith("Natural Earth Admin 1 States and Provinces — version_1 — Natural-Earth — ~")
    assert re.search(r" — ~\d+(\.\d)? KB, 1 file$", text), text
    # processors without an estimate (or whose estimate failed) carry no hint
    for name, item in items.items():
        if name not in estimates:
            assert "~" not in item.text(), item.text()
    dock.ui.processorList.setCurrentItem(items[NE])
    details = dock.ui.detailsBrowser.toPlainText()
    assert "Estimated size for gambia:" in details and "1 file" in details
    # another boundary: hints replaced; an unknown one: none, and no error shown
    with qtbot.waitSignal(dock.size_hints_ready, timeout=30000) as hints:
        dock.choose_boundary({"name": "atlantis", "name_long": "Atlantis"})
    assert hints.args == ["atlantis", {}]
    assert "~" not in items[NE].text()


def test_size_hint_format():
    from qgis_plugin.gui.dock import size_hint

    assert size_hint({"bytes": 12_400_000, "files": 140}) == "~12 MB, 140 files"
    assert size_hint({"bytes": 2_650_112, "files": 1}) == "~2.7 MB, 1 file"
    assert size_hint({"bytes": 980, "files": None}) == "~980 B"
    assert size_hint({"bytes": None, "files": 3}) == ""


# -- responsiveness ----------------------------------------------------------------------------

def test_gui_stays_responsive_with_a_multi_megabyte_package(dock, served, plugin_settings, qtbot):
    """Job, HTTP download (8 MB) and loading while a 50 ms timer ticks: no gap above 1 s."""
    world = {"type": "Polygon", "coordinates": [[[-179, -60], [179, -60], [179, 84], [-179, 84], [-179, -60]]]}
    boundary = served.post("/v1/boundaries", json=world, params={"name": "world_box", "name_long": "World box"}).json()
    with qtbot.waitSignal(dock.boundary_chosen, timeout=10000):
        dock.choose_boundary({"name": boundary["name"], "name_long": boundary["name_long"]})
    dock.set_checked_processors([NE])
    ticks = [time.monotonic()]
    heartbeat = QTimer()
    heartbeat.timeout.connect(lambda: ticks.append(time.monotonic()))
    heartbeat.start(50)
    with qtbot.waitSignal(dock.package_loaded, timeout=120000) as loaded:
        dock.ui.createButton.click()
    heartbeat.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    report = loaded.args[0]
    (layer,) = report.added
    path = Path(layer.source().split("|")[0])
    size = path.stat().st_size
    assert str(path).startswith(plugin_settings.value("ccg_autopkg/cache_dir")), "downloaded over HTTP"
    assert size > 4_000_000, f"package file only {size} bytes"
    assert layer.isValid() and layer.featureCount() > 3000
    print(f"largest event-loop gap {max(gaps) * 1000:.0f} ms over {len(gaps)} ticks; package file {size / 1e6:.1f} MB")
    assert max(gaps) < 1.0, f"GUI event loop blocked for {max(gaps):.2f} s"
    assert layer.id() in QgsProject.instance().mapLayers()


def test_processing_algorithms_send_the_stored_token(backend, plugin, qgis_processing, auth_master_password, plugin_settings):
    """`processing.run()` uses the token of the stored authcfg (requests and the download)."""
    import pytest
    from qgis import processing
    from qgis.core import QgsProcessingException

    from qgis_plugin.auth import save_token

    backend.env["CCGAUTOPKG_API_TOKEN"] = TOKEN
    backend.serve()
    params = {"BACKEND_URL": backend.url, "BOUNDARY": "gambia", "PROCESSORS": NE, "WAIT": True, "LOAD": True}
    with pytest.raises(QgsProcessingException, match="API token"):
        processing.run("ccg_autopkg:create_package", params)
    authcfg = save_token(TOKEN)
    try:
        result = processing.run("ccg_autopkg:create_package", params)
        assert result["JOB_STATUS"] == "COMPLETE" and result["LOADED_LAYERS"] == 1
        assert Path(result["PACKAGE_FOLDER"], "boundary.geojson").is_file()
    finally:
        save_token("")
    assert authcfg not in QgsApplication.authManager().configIds()
