"""The plugin object: menu, toolbar and dock; `unload()` removes exactly what `initGui()` added."""
from __future__ import annotations

from typing import Optional

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QMenu, QToolBar

from .__about__ import ICON_PATH, PLUGIN_NAME

MENU_OBJECT_NAME = "CcgAutoPackagingMenu"
TOOLBAR_OBJECT_NAME = "CcgAutoPackagingToolbar"


class CcgAutoPackagingPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.menu: Optional[QMenu] = None
        self.toolbar: Optional[QToolBar] = None
        self.dock = None
        self.actions: list[QAction] = []
        self.toggle_action: Optional[QAction] = None
        self.provider = None

    # -- QGIS plugin API ------------------------------------------------------------------------
    def initProcessing(self) -> None:  # noqa: N802
        """The processing provider (QGIS also calls this for processing-only use)."""
        if self.provider is not None:
            return
        from qgis.core import QgsApplication

        from .processing_provider import CcgProcessingProvider

        self.provider = CcgProcessingProvider()
        if not QgsApplication.processingRegistry().addProvider(self.provider):
            self.provider = None

    def initGui(self) -> None:  # noqa: N802
        from .dock import CcgDockWidget

        self.initProcessing()

        main = self.iface.mainWindow()
        icon = QIcon(ICON_PATH)

        self.dock = CcgDockWidget(self.iface, main)
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)

        self.toggle_action = QAction(icon, f"{PLUGIN_NAME} panel", main)
        self.toggle_action.setObjectName("CcgAutoPackagingTogglePanel")
        self.toggle_action.setCheckable(True)
        self.toggle_action.setToolTip("Show or hide the CCG AutoPackaging panel")
        self.toggle_action.setChecked(self.dock.isVisible())
        self.toggle_action.toggled.connect(self._toggle_dock)
        self.dock.visibilityChanged.connect(self._dock_visibility_changed)

        pick = QAction("Pick boundary on map", main)
        pick.setObjectName("CcgAutoPackagingPick")
        pick.triggered.connect(self._pick_on_map)

        load = QAction("Load package of the chosen boundary", main)
        load.setObjectName("CcgAutoPackagingLoad")
        load.triggered.connect(lambda: self.dock.load_package())

        connect = QAction("Connect to backend", main)
        connect.setObjectName("CcgAutoPackagingConnect")
        connect.triggered.connect(lambda: self.dock.connect_backend())

        self.actions = [self.toggle_action, pick, load, connect]

        self.menu = QMenu(PLUGIN_NAME, main)
        self.menu.setObjectName(MENU_OBJECT_NAME)
        self.menu.addActions(self.actions)
        menu_bar = main.menuBar()
        before = None
        try:
            before = self.iface.firstRightStandardMenu()
        except Exception:  # not every iface implementation has it
            before = None
        if isinstance(before, QMenu):
            menu_bar.insertMenu(before.menuAction(), self.menu)
        else:
            menu_bar.addMenu(self.menu)

        self.toolbar = self.iface.addToolBar(PLUGIN_NAME)
        self.toolbar.setObjectName(TOOLBAR_OBJECT_NAME)
        self.toolbar.addAction(self.toggle_action)

    def unload(self) -> None:
        main = self.iface.mainWindow()
        if self.provider is not None:
            from qgis.core import QgsApplication

            QgsApplication.processingRegistry().removeProvider(self.provider)  # deletes the provider
            self.provider = None
        if self.dock is not None:
            self.dock.shutdown()
            self.iface.removeDockWidget(self.dock)
            self.dock.hide()
            self.dock.setParent(None)
            self.dock.deleteLater()
            self.dock = None
        if self.toolbar is not None:
            self.toolbar.clear()
            main.removeToolBar(self.toolbar)
            self.toolbar.setParent(None)
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.menu is not None:
            main.menuBar().removeAction(self.menu.menuAction())
            self.menu.clear()
            self.menu.setParent(None)
            self.menu.deleteLater()
            self.menu = None
        for action in self.actions:
            action.setParent(None)
            action.deleteLater()
        self.actions = []
        self.toggle_action = None

    # -- handlers -------------------------------------------------------------------------------
    def _toggle_dock(self, on: bool) -> None:
        if self.dock is None:
            return
        self.dock.setUserVisible(on)  # showing it connects to the backend (see the dock)

    def _dock_visibility_changed(self, visible: bool) -> None:
        if self.toggle_action is not None and self.toggle_action.isChecked() != visible:
            self.toggle_action.blockSignals(True)
            self.toggle_action.setChecked(visible)
            self.toggle_action.blockSignals(False)

    def _pick_on_map(self) -> None:
        if self.toggle_action is not None and not self.toggle_action.isChecked():
            self.toggle_action.setChecked(True)
        self.dock.ui.pickButton.setChecked(True)
