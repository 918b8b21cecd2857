"""Fixtures for the plugin tests: real QGIS (pytest-qgis, offscreen) and a real backend subprocess.

Run separately from the main suite, with pytest-qgis enabled:
    QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest -q -o addopts=-ra tests/plugin
The backend fixtures (`backend_env`, `backend`, `served`) come from tests/conftest.py.
"""
from __future__ import annotations

from typing import Iterator

import pytest
from qgis.core import Qgis, QgsApplication, QgsSettings

# The QGIS authentication database of the test profile (pytest-qgis keeps the profile in
# <repo>/.qgis-settings) is unlocked with this master password; QGIS would ask the user for it.
MASTER_PASSWORD = "ccg-autopkg-tests-master"


@pytest.fixture
def message_bar(qgis_iface):
    bar = qgis_iface.messageBar()
    bar.clear_messages()
    return bar


def messages(bar, *levels) -> list[str]:
    levels = levels or (Qgis.Info, Qgis.Warning, Qgis.Critical, Qgis.Success)
    return [m for level in levels for m in bar.get_messages(level)]


@pytest.fixture
def plugin_settings(tmp_path) -> Iterator[QgsSettings]:
    """Plugin settings pointing at a per-test download cache; removed afterwards."""
    settings = QgsSettings()
    settings.remove("ccg_autopkg")
    settings.setValue("ccg_autopkg/cache_dir", str(tmp_path / "cache"))
    # downloads over HTTP unless a test asks for local package roots (this machine may have some)
    settings.setValue("ccg_autopkg/use_local_packages", False)
    yield settings
    settings.remove("ccg_autopkg")


@pytest.fixture
def plugin(qgis_iface, qgis_new_project, plugin_settings, message_bar):
    """The plugin loaded as QGIS loads it (classFactory + initGui), unloaded afterwards."""
    import qgis_plugin

    instance = qgis_plugin.classFactory(qgis_iface)
    instance.initGui()
    yield instance
    instance.unload()


@pytest.fixture
def dock(plugin, served, plugin_settings, qtbot):
    """The panel connected to a real `autopkg serve` on loopback, processors listed."""
    panel = plugin.dock
    plugin_settings.setValue("ccg_autopkg/backend_url", served.url)
    with qtbot.waitSignal(panel.processors_listed, timeout=20000):
        panel.connect_backend()
    assert panel.connected
    return panel


@pytest.fixture(scope="session")
def auth_master_password(qgis_app) -> str:
    """The authentication database unlocked (headless: no dialog asks for the master password)."""
    manager = QgsApplication.authManager()
    assert not manager.isDisabled(), manager.disabledMessage()
    assert manager.setMasterPassword(MASTER_PASSWORD, True), (
        f"the test profile's auth database {manager.authenticationDatabasePath()} has another master password")
    return MASTER_PASSWORD
