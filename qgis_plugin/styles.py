"""How layers look: a dataset's declarative style spec (the resource's `style` in datapackage.json,
from `processors/styles.py`) or, without one, a readable default per layer type.

Everything here works on a layer that is not in a project yet, in any thread (the layers are
styled while they are built off the GUI thread).
"""
from __future__ import annotations

from typing import Any, Optional

from qgis.core import (
    QgsAbstractMetadataBase,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsGradientColorRamp,
    QgsLayerMetadata,
    QgsMapLayer,
    QgsRasterBandStats,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsStyle,
    QgsSymbol,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QColor

# -- styles ------------------------------------------------------------------------------------
RAMP_NAME = "Viridis"
STATS_SAMPLE = 250_000  # pixels sampled for the stretch: quick on the GUI thread even for big rasters
FILL = QColor(46, 134, 171, 90)
STROKE = QColor(27, 79, 114)


def style_raster(layer: QgsRasterLayer) -> None:
    """Single-band rasters: a continuous colour ramp stretched on the band's (sampled) min/max,
    nodata transparent. Multi-band rasters keep QGIS's default (RGB) renderer."""
    provider = layer.dataProvider()
    if layer.bandCount() != 1 or provider is None:
        return
    provider.setUseSourceNoDataValue(1, True)
    stats = provider.bandStatistics(1, QgsRasterBandStats.Min | QgsRasterBandStats.Max, layer.extent(), STATS_SAMPLE)
    low, high = stats.minimumValue, stats.maximumValue
    if not (low == low and high == high):  # NaN: an all-nodata raster
        return
    if high <= low:
        high = low + 1
    ramp = QgsStyle.defaultStyle().colorRamp(RAMP_NAME) or QgsGradientColorRamp(QColor(68, 1, 84), QColor(253, 231, 37))
    function = QgsColorRampShader(low, high, ramp, QgsColorRampShader.Interpolated)
    function.classifyColorRamp(5)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(function)
    renderer = QgsSingleBandPseudoColorRenderer(provider, 1, shader)
    renderer.setClassificationMin(low)
    renderer.setClassificationMax(high)
    layer.setRenderer(renderer)


def style_vector(layer: QgsVectorLayer) -> None:
    """A readable single symbol by geometry type: translucent fill, lines, small markers."""
    geometry_type = layer.geometryType()
    if geometry_type not in (QgsWkbTypes.PointGeometry, QgsWkbTypes.LineGeometry, QgsWkbTypes.PolygonGeometry):
        return
    symbol = QgsSymbol.defaultSymbol(geometry_type)
    if symbol is None:
        return
    if geometry_type == QgsWkbTypes.PolygonGeometry:
        symbol.setColor(FILL)
        layer_symbol = symbol.symbolLayer(0)
        if hasattr(layer_symbol, "setStrokeColor"):
            layer_symbol.setStrokeColor(STROKE)
            layer_symbol.setStrokeWidth(0.4)
    elif geometry_type == QgsWkbTypes.LineGeometry:
        symbol.setColor(STROKE)
        symbol.setWidth(0.6)
    else:
        symbol.setColor(STROKE)
        symbol.setSize(2.4)
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))


def apply_style(layer: QgsMapLayer, spec: Optional[dict[str, Any]] = None) -> None:
    """The dataset's style spec when it has one, else the default for the layer type."""
    if isinstance(layer, QgsRasterLayer):
        style_raster(layer)
    elif isinstance(layer, QgsVectorLayer):
        style_vector(layer)


def style_outline(layer: QgsVectorLayer) -> None:
    """No fill, a bold outline: the boundary stays readable on top of every dataset."""
    symbol = QgsFillSymbol.createSimple({"style": "no", "outline_style": "solid", "outline_color": "230,60,30,255", "outline_width": "0.8"})
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))


def layer_metadata(resource: dict[str, Any], package: dict[str, Any]) -> QgsLayerMetadata:
    """QGIS layer metadata from a datapackage resource."""
    meta = QgsLayerMetadata()
    meta.setIdentifier(resource.get("name", ""))
    meta.setParentIdentifier(package.get("name", ""))
    meta.setTitle(resource.get("title") or resource.get("name", ""))
    meta.setAbstract(resource.get("description", ""))
    meta.setType("dataset")
    licenses = resource.get("licenses") or ([resource["license"]] if resource.get("license") else [])
    meta.setLicenses([" ".join(x for x in (lic.get("title") or lic.get("name", ""), f"<{lic['path']}>" if lic.get("path") else "") if x) for lic in licenses])
    rights = [resource["citation"]] if resource.get("citation") else []
    if resource.get("author"):
        rights.append(f"Author: {resource['author']}")
    meta.setRights(rights)
    keywords = [k for k in (resource.get("processor"), package.get("name")) if k]
    if keywords:
        meta.addKeywords("ccg_autopkg", keywords)
    for source in resource.get("sources", []):
        if source.get("path"):
            meta.addLink(QgsAbstractMetadataBase.Link(source.get("title") or "source", "WWW:LINK", source["path"]))
    for lic in licenses:
        if lic.get("path"):
            meta.addLink(QgsAbstractMetadataBase.Link(f"Licence: {lic.get('title') or lic.get('name')}", "WWW:LINK", lic["path"]))
    return meta
