"""Polygons of a layer (or processing source) as one dissolved GeoJSON geometry in EPSG:4326,
the form `POST /v1/boundaries` accepts."""
from __future__ import annotations

import json
from typing import Any, Iterable, Optional

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsFeature,
    QgsGeometry,
    QgsProject,
    QgsVectorLayer,
    QgsWkbTypes,
)

WGS84 = "EPSG:4326"


class NoPolygonsError(ValueError):
    """Nothing usable: no polygon layer, no selection, or only empty geometries."""


def dissolve_to_wgs84(features: Iterable[QgsFeature], crs: QgsCoordinateReferenceSystem,
                      transform_context: Optional[QgsCoordinateTransformContext] = None) -> QgsGeometry:
    """Union of the features' polygons (`QgsGeometry.unaryUnion`), transformed to EPSG:4326."""
    parts = []
    for feature in features:
        geometry = feature.geometry()
        if geometry is None or geometry.isNull() or geometry.isEmpty():
            continue
        if geometry.type() != QgsWkbTypes.PolygonGeometry:
            continue
        if not geometry.isGeosValid():
            geometry = geometry.makeValid()
        parts.append(QgsGeometry(geometry))
    if not parts:
        raise NoPolygonsError("no polygon geometry among the features")
    union = QgsGeometry.unaryUnion(parts) if len(parts) > 1 else parts[0]
    if union is None or union.isNull() or union.isEmpty():
        raise NoPolygonsError("the polygons dissolve to an empty geometry")
    target = QgsCoordinateReferenceSystem(WGS84)
    if crs.isValid() and crs != target:
        context = transform_context or QgsProject.instance().transformContext()
        union.transform(QgsCoordinateTransform(crs, target, context))
    if union.type() != QgsWkbTypes.PolygonGeometry:  # e.g. a collection after makeValid
        polygons = [p for p in union.asGeometryCollection() if p.type() == QgsWkbTypes.PolygonGeometry]
        if not polygons:
            raise NoPolygonsError("the polygons dissolve to no polygon")
        union = QgsGeometry.collectGeometry(polygons)
    return union


def geometry_to_geojson(geometry: QgsGeometry) -> dict[str, Any]:
    return json.loads(geometry.asJson(12))


def selected_polygons_geojson(layer) -> dict[str, Any]:
    """The selected polygons of `layer`, dissolved, in EPSG:4326, as a GeoJSON geometry.

    Raises `NoPolygonsError` with a message for the user when there is nothing to use.
    """
    if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        raise NoPolygonsError("make a polygon layer the active layer and select one or more of its polygons")
    if layer.geometryType() != QgsWkbTypes.PolygonGeometry:
        raise NoPolygonsError(f"the active layer {layer.name()!r} is not a polygon layer")
    if layer.selectedFeatureCount() == 0:
        raise NoPolygonsError(f"select one or more polygons of {layer.name()!r} first")
    geometry = dissolve_to_wgs84(layer.getSelectedFeatures(), layer.crs(), QgsProject.instance().transformContext())
    return geometry_to_geojson(geometry)
