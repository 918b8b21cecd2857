"""The plugin object: its entries in the Plugins menu and toolbar, the dock, the options page and
the processing provider; `unload()` removes exactly what `initGui()` added."""
from __future__ import annotations

from typing import Optional

from qgis.PyQt.QtCore import Qt, QUrl
from qgis.PyQt.QtGui import QDesktopServices, QIcon
from qgis.PyQt.QtWidgets import QAction, QMessageBox

from .__about__ import ICON_PATH, PLUGIN_NAME, __summary__, __uri_homepage__, __version__


class CcgAutoPackagingPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.dock = None
        self.actions: list[QAction] = []
        self.toggle_action: Optional[QAction] = None
        self.provider = None
        self.options_factory = None

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
        from .gui.dock import CcgDockWidget
        from .gui.options import OptionsFactory

        self.initProcessing()
        main = self.iface.mainWindow()

        self.dock = CcgDockWidget(self.iface, main)
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        # Processing's parameters offer what the backend answered the panel
        self.dock.processors_listed.connect(self._datasets_listed)
        self.dock.boundary_names_listed.connect(lambda names: self.provider is not None and self.provider.update_catalogue(boundaries=names))

        self.toggle_action = QAction(QIcon(ICON_PATH), f"{PLUGIN_NAME} panel", main)
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
        options = QAction("Options…", main)
        options.setObjectName("CcgAutoPackagingOptions")
        options.triggered.connect(lambda: self.iface.showOptionsDialog(main, PLUGIN_NAME))
        help_ = QAction("Help", main)
        help_.setObjectName("CcgAutoPackagingHelp")
        help_.triggered.connect(lambda: QDesktopServices.openUrl(QUrl(__uri_homepage__)))
        about = QAction(f"About {PLUGIN_NAME}", main)
        about.setObjectName("CcgAutoPackagingAbout")
        about.triggered.connect(self.about)
        self.actions = [self.toggle_action, pick, load, options, help_, about]
        for action in self.actions:
            self.iface.addPluginToMenu(PLUGIN_NAME, action)
        self.iface.addToolBarIcon(self.toggle_action)  # the plugins toolbar: no toolbar row of our own

        self.options_factory = OptionsFactory(on_applied=lambda: self.dock.connect_backend(), message_bar=self.iface.messageBar())
        self.iface.registerOptionsWidgetFactory(self.options_factory)

    def unload(self) -> None:
        if self.provider is not None:
            from qgis.core import QgsApplication

            QgsApplication.processingRegistry().removeProvider(self.provider)  # deletes the provider
            self.provider = None
        if self.options_factory is not None:
            self.iface.unregisterOptionsWidgetFactory(self.options_factory)
            self.options_factory = None
        if self.dock is not None:
            self.dock.shutdown()
            self.iface.removeDockWidget(self.dock)
            self.dock.hide()
            self.dock.setParent(None)
            self.dock.deleteLater()
            self.dock = None
        if self.toggle_action is not None:
            self.iface.removeToolBarIcon(self.toggle_action)
        for action in self.actions:
            self.iface.removePluginMenu(PLUGIN_NAME, action)
            action.setParent(None)
            action.deleteLater()
        self.actions = []
        self.toggle_action = None

    # -- handlers -------------------------------------------------------------------------------
    def _datasets_listed(self, datasets: list) -> None:
        from .gui.dock import processor_label

        if self.provider is not None:
            self.provider.update_catalogue(datasets={v["name"]: processor_label(v) for d in datasets for v in d.get("versions", [])})

    def about(self) -> None:
        QMessageBox.about(self.iface.mainWindow(), f"About {PLUGIN_NAME}",
                          f"<b>{PLUGIN_NAME} {__version__}</b><p>{__summary__}</p>"
                          f'<p><a href="{__uri_homepage__}">{__uri_homepage__}</a></p>')

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
        self.dock.ui.tabs.setCurrentWidget(self.dock.ui.boundaryTab)
        self.dock.ui.pickButton.setChecked(True)
