"""How layers look: a dataset's declarative style spec (the resource's `style` in datapackage.json,
from `processors/styles.py`) or, without one, a readable default per layer type.

Everything here works on a layer that is not in a project yet, in any thread (the layers are
styled while they are built off the GUI thread).
"""
from __future__ import annotations

from typing import Any, Optional

from qgis.core import (
    QgsAbstractMetadataBase,
    QgsCategorizedSymbolRenderer,
    QgsColorBrewerColorRamp,
    QgsColorRampLegendNodeSettings,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsGradientColorRamp,
    QgsLayerMetadata,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsRasterBandStats,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRendererCategory,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsSymbol,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QColor

DEFAULT_RAMP = "YlGnBu"  # ColorBrewer ramps are built without QgsStyle (not a worker-thread object)
STATS_SAMPLE = 250_000  # pixels sampled for the default stretch
FILL = QColor(46, 134, 171, 90)
STROKE = QColor(27, 79, 114)
GEOMETRIES = {"point": QgsWkbTypes.PointGeometry, "line": QgsWkbTypes.LineGeometry, "polygon": QgsWkbTypes.PolygonGeometry}


def color_ramp(name: str, classes: int):
    """A ColorBrewer ramp by name (Blues, YlOrRd, …), else a plain blue-to-yellow gradient."""
    if name in QgsColorBrewerColorRamp.listSchemeNames():
        counts = QgsColorBrewerColorRamp.listSchemeVariants(name)
        return QgsColorBrewerColorRamp(name, min(counts, key=lambda n: abs(n - max(classes, 3))))
    return QgsGradientColorRamp(QColor(8, 64, 129), QColor(255, 255, 204))


def label(value: float, precision: int, unit: str) -> str:
    """A legend label at the data's precision: 1.5 m, 40 m/s, 10,000 people."""
    text = f"{value:,.{precision}f}"
    return f"{text} {unit}".strip()


def ramp_values(spec: dict[str, Any]) -> list[float]:
    low, high, classes = float(spec["min"]), float(spec["max"]), max(2, int(spec.get("classes") or 6))
    if spec.get("scale") == "log" and low > 0:
        return [low * (high / low) ** (i / (classes - 1)) for i in range(classes)]
    return [low + (high - low) * i / (classes - 1) for i in range(classes)]


def _pseudocolor(layer: QgsRasterLayer, function: QgsColorRampShader, low: float, high: float) -> None:
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(function)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(low)
    renderer.setClassificationMax(high)
    layer.setRenderer(renderer)


def style_raster_ramp(layer: QgsRasterLayer, spec: dict[str, Any]) -> None:
    """A fixed value range (comparable across a dataset's files) on a named ramp, legend labels
    at the spec's precision and unit; a log scale gives discrete classes (≤ 1, ≤ 10, …)."""
    values = ramp_values(spec)
    precision, unit = int(spec.get("precision") or 0), spec.get("unit") or ""
    ramp = color_ramp(spec.get("ramp", DEFAULT_RAMP), len(values))
    log = spec.get("scale") == "log"
    function = QgsColorRampShader(values[0], values[-1], ramp, QgsColorRampShader.Discrete if log else QgsColorRampShader.Interpolated)
    items = []
    for i, value in enumerate(values):
        text = label(value, precision, unit)
        if log:
            value = float("inf") if i == len(values) - 1 else value
            text = f"> {label(values[-2], precision, unit)}" if i == len(values) - 1 else f"≤ {text}"
        items.append(QgsColorRampShader.ColorRampItem(value, ramp.color(i / (len(values) - 1)), text))
    function.setColorRampItemList(items)
    legend = QgsColorRampLegendNodeSettings()
    legend.setUseContinuousLegend(False)  # the labelled classes, not a bar with 6-decimal ends
    function.setLegendSettings(legend)
    _pseudocolor(layer, function, values[0], values[-1])


def style_raster_classes(layer: QgsRasterLayer, spec: dict[str, Any]) -> None:
    classes = [QgsPalettedRasterRenderer.Class(float(c["value"]), QColor(c["color"]), c["label"]) for c in spec["classes"]]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))


def style_raster(layer: QgsRasterLayer) -> None:
    """No spec: a continuous ramp stretched on the band's (sampled) min/max."""
    provider = layer.dataProvider()
    stats = provider.bandStatistics(1, QgsRasterBandStats.Min | QgsRasterBandStats.Max, layer.extent(), STATS_SAMPLE)
    low, high = stats.minimumValue, stats.maximumValue
    if not (low == low and high == high):  # NaN: an all-nodata raster
        return
    if high <= low:
        high = low + 1
    function = QgsColorRampShader(low, high, color_ramp(DEFAULT_RAMP, 5), QgsColorRampShader.Interpolated)
    function.classifyColorRamp(5)
    _pseudocolor(layer, function, low, high)


def _symbol(geometry_type, color: QColor, spec: dict[str, Any]) -> QgsSymbol:
    symbol = QgsSymbol.defaultSymbol(geometry_type)
    if geometry_type == QgsWkbTypes.PolygonGeometry:
        fill = QColor(color)
        fill.setAlphaF(float(spec.get("fill_opacity", 0.35)))
        symbol.setColor(fill)
        layer_symbol = symbol.symbolLayer(0)
        layer_symbol.setStrokeColor(color)
        layer_symbol.setStrokeWidth(float(spec.get("width", 0.4)))
    elif geometry_type == QgsWkbTypes.LineGeometry:
        symbol.setColor(color)
        symbol.setWidth(float(spec.get("width", 0.6)))
    else:
        symbol.setColor(color)
        symbol.setSize(float(spec.get("size", 2.4)))
    return symbol


def style_vector_spec(layer: QgsVectorLayer, spec: dict[str, Any]) -> None:
    geometry_type = layer.geometryType()
    if spec.get("type") == "categories" and layer.fields().indexOf(spec["field"]) >= 0:
        categories = []
        for entry in spec["categories"]:
            shape = dict(spec, width=entry.get("width") or spec.get("width", 0.4))
            categories.append(QgsRendererCategory(entry["value"], _symbol(geometry_type, QColor(entry["color"]), shape), entry["label"]))
        categories.append(QgsRendererCategory("", _symbol(geometry_type, QColor(spec.get("other", "#b0b0b0")), spec), "Other"))
        layer.setRenderer(QgsCategorizedSymbolRenderer(spec["field"], categories))
    else:
        layer.setRenderer(QgsSingleSymbolRenderer(_symbol(geometry_type, QColor(spec.get("color", STROKE.name())), spec)))


def style_vector(layer: QgsVectorLayer) -> None:
    """No spec: a readable single symbol by geometry type (translucent fill, lines, markers)."""
    symbol = _symbol(layer.geometryType(), STROKE, {"width": 0.6})
    if layer.geometryType() == QgsWkbTypes.PolygonGeometry:
        symbol.setColor(FILL)
        symbol.symbolLayer(0).setStrokeWidth(0.4)
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))


def apply_style(layer: QgsMapLayer, spec: Optional[dict[str, Any]] = None) -> None:
    """The dataset's style spec (`processors/styles.py`, the resource's `style`) when it has a
    part for this layer, else the default for the layer type. Nodata stays transparent;
    multi-band rasters keep QGIS's RGB renderer."""
    spec = spec or {}
    if isinstance(layer, QgsRasterLayer):
        if layer.bandCount() != 1 or layer.dataProvider() is None:
            return
        layer.dataProvider().setUseSourceNoDataValue(1, True)
        raster = spec.get("raster") or {}
        if raster.get("type") == "ramp":
            style_raster_ramp(layer, raster)
        elif raster.get("type") == "classes":
            style_raster_classes(layer, raster)
        else:
            style_raster(layer)
    elif isinstance(layer, QgsVectorLayer):
        if layer.geometryType() not in GEOMETRIES.values():
            return
        vector = spec.get("vector") or {}
        if vector and GEOMETRIES.get(vector.get("geometry")) == layer.geometryType():
            style_vector_spec(layer, vector)
        else:
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
