""""Pick on map": a click on the canvas becomes a point in EPSG:4326 for the boundary point search."""
from __future__ import annotations

from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsPointXY, QgsProject
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent, QgsMapToolEmitPoint
from qgis.PyQt.QtCore import Qt, pyqtSignal

WGS84 = "EPSG:4326"


def to_wgs84(point: QgsPointXY, crs: QgsCoordinateReferenceSystem) -> QgsPointXY:
    """A point in `crs` as longitude/latitude (EPSG:4326)."""
    target = QgsCoordinateReferenceSystem(WGS84)
    if not crs.isValid() or crs == target:
        return QgsPointXY(point)
    transform = QgsCoordinateTransform(crs, target, QgsProject.instance())
    return QgsPointXY(transform.transform(point))


class PickBoundaryMapTool(QgsMapToolEmitPoint):
    """Emits `picked(longitude, latitude)` for every left click on the canvas.

    The click is taken on release (as QGIS's own tools do): `canvasClicked` is emitted from
    `canvasReleaseEvent`, not from the press as in the base class.
    """

    picked = pyqtSignal(float, float)

    def __init__(self, canvas: QgsMapCanvas):
        super().__init__(canvas)
        self.setCursor(Qt.CrossCursor)
        self.canvasClicked.connect(self._clicked)

    def canvasPressEvent(self, event: QgsMapMouseEvent) -> None:  # noqa: N802
        event.accept()

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:  # noqa: N802
        self.canvasClicked.emit(self.toMapCoordinates(event.pos()), event.button())

    def _clicked(self, point: QgsPointXY, button) -> None:
        if button != Qt.LeftButton:
            return
        lonlat = to_wgs84(point, self.canvas().mapSettings().destinationCrs())
        self.picked.emit(lonlat.x(), lonlat.y())
