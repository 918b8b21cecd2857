"""The plugin's page under Settings → Options: backend URL, API token, package files.

The token is stored in QGIS's authentication database (see `auth`); the page says so, and that
QGIS will ask for a master password, before the user types one.
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis
from qgis.gui import QgsFileWidget, QgsOptionsPageWidget, QgsOptionsWidgetFactory
from qgis.PyQt import uic
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QVBoxLayout, QWidget

from ..__about__ import ICON_PATH, PLUGIN_NAME
from ..auth import TokenStoreError, auth_unavailable_reason, save_token, stored_authcfg
from ..settings import CACHE_DIR, USE_LOCAL_PACKAGES, settings

UI_PATH = Path(__file__).resolve().parent / "ui" / "options.ui"


class OptionsPage(QgsOptionsPageWidget):
    """Settings → Options → CCG AutoPackaging. `apply()` (OK) stores everything."""

    applied = pyqtSignal()

    def __init__(self, parent: QWidget | None = None, message_bar=None):
        super().__init__(parent)
        self.message_bar = message_bar
        self.ui = QWidget()
        uic.loadUi(str(UI_PATH), self.ui)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.ui)
        self.setObjectName("CcgAutoPackagingOptions")
        self.ui.urlEdit.setText(settings.backend_url)
        self.ui.cacheWidget.setStorageMode(QgsFileWidget.GetDirectory)
        self.ui.cacheWidget.setFilePath(str(settings.cache_dir))
        self.ui.useLocalCheck.setChecked(settings.use_local_packages)
        self.ui.forgetTokenButton.clicked.connect(self.forget_token)
        self.token_error = ""
        self._show_token_state()

    def _show_token_state(self) -> None:
        reason = auth_unavailable_reason()
        edit = self.ui.tokenEdit
        edit.setEnabled(not reason)
        if reason:
            edit.setPlaceholderText("unavailable: QGIS authentication system off")
            edit.setToolTip(f"The API token is kept only in the QGIS authentication database, which is not usable: {reason}")
            self.ui.forgetTokenButton.setEnabled(False)
            return
        stored = stored_authcfg()
        edit.setPlaceholderText(f"stored (QGIS authentication, {stored})" if stored else "API token (optional)")
        self.ui.forgetTokenButton.setEnabled(bool(stored))

    def forget_token(self) -> None:
        try:
            save_token("")
        except TokenStoreError as exc:
            self.token_error = str(exc)
        self.ui.tokenEdit.clear()
        self._show_token_state()
        self.applied.emit()

    def apply(self) -> None:
        settings.backend_url = self.ui.urlEdit.text()
        cache = self.ui.cacheWidget.filePath().strip()
        settings.set(CACHE_DIR, cache) if cache else settings.remove(CACHE_DIR)
        settings.set(USE_LOCAL_PACKAGES, self.ui.useLocalCheck.isChecked())
        typed = self.ui.tokenEdit.text().strip()
        self.token_error = ""
        if typed and not auth_unavailable_reason():
            try:
                save_token(typed)
            except TokenStoreError as exc:
                self.token_error = str(exc)
                if self.message_bar is not None:
                    self.message_bar.pushMessage(PLUGIN_NAME, f"API token not stored: {exc}", level=Qgis.Warning, duration=10)
        self.ui.tokenEdit.clear()
        self._show_token_state()
        self.applied.emit()


class OptionsFactory(QgsOptionsWidgetFactory):
    """Registered with `iface.registerOptionsWidgetFactory`; each Options dialog gets a page whose
    `applied` signal reaches `on_applied` (the dock reconnects)."""

    def __init__(self, on_applied=None, message_bar=None):
        super().__init__()
        self.setTitle(PLUGIN_NAME)
        self.on_applied = on_applied
        self.message_bar = message_bar

    def icon(self) -> QIcon:
        return QIcon(ICON_PATH)

    def createWidget(self, parent: QWidget | None = None) -> OptionsPage:  # noqa: N802
        page = OptionsPage(parent, self.message_bar)
        if self.on_applied is not None:
            page.applied.connect(self.on_applied)
        return page
