"""Per-dataset styles: the declarative specs of processors/styles.py drawn by the plugin on real
GeoTIFFs and GeoPackages (flood depth in blues, wind speed, population on a log scale, built-up
classes, power plants by fuel, roads by type), legend labels at the data's precision."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr
from qgis.core import QgsRasterLayer, QgsVectorLayer

from processors.styles import style_for
from qgis_plugin.styles import apply_style


def tif(path: Path, data: np.ndarray, dtype=gdal.GDT_Float32) -> QgsRasterLayer:
    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[1], data.shape[0], 1, dtype)
    ds.SetGeoTransform((30, 0.1, 0, -1, 0, -0.1))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    ds.SetProjection(srs.ExportToWkt())
    ds.GetRasterBand(1).WriteArray(data)
    ds.GetRasterBand(1).SetNoDataValue(-9999 if dtype == gdal.GDT_Float32 else 255)
    ds = None
    return QgsRasterLayer(str(path), path.stem, "gdal")


def gpkg(path: Path, geometry: int, field: str, values: list[str], wkt: str) -> QgsVectorLayer:
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    layer = ds.CreateLayer("data", srs, geometry)
    layer.CreateField(ogr.FieldDefn(field, ogr.OFTString))
    for value in values:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField(field, value)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    ds = None
    return QgsVectorLayer(str(path), path.stem, "ogr")


def ramp_items(layer: QgsRasterLayer) -> list:
    return layer.renderer().shader().rasterShaderFunction().colorRampItemList()


def test_flood_depth_in_blues_with_metre_labels(tmp_path):
    layer = tif(tmp_path / "flood.tif", np.linspace(0, 4.2, 100, dtype="float32").reshape(10, 10))
    apply_style(layer, style_for("wri_aqueduct"))
    assert layer.renderer().type() == "singlebandpseudocolor"
    assert (layer.renderer().classificationMin(), layer.renderer().classificationMax()) == (0.0, 5.0), "fixed range across files"
    items = ramp_items(layer)
    assert [i.label for i in items] == ["0.0 m", "1.0 m", "2.0 m", "3.0 m", "4.0 m", "5.0 m"]
    first, last = items[0].color, items[-1].color
    assert first.blue() > first.red() and last.blue() > last.red() and last.lightness() < first.lightness(), "light to dark blue"
    assert layer.dataProvider().useSourceNoDataValue(1)


def test_wind_speed_and_population_on_a_log_scale(tmp_path):
    wind = tif(tmp_path / "wind.tif", np.full((4, 4), 41.7, dtype="float32"))
    apply_style(wind, style_for("storm"))
    assert [i.label for i in ramp_items(wind)] == ["20 m/s", "32 m/s", "44 m/s", "56 m/s", "68 m/s", "80 m/s"]
    people = tif(tmp_path / "pop.tif", np.geomspace(1, 5000, 16, dtype="float32").reshape(4, 4))
    apply_style(people, style_for("jrc_ghsl_population"))
    labels = [i.label for i in ramp_items(people)]
    assert labels == ["≤ 1 people", "≤ 10 people", "≤ 100 people", "≤ 1,000 people", "> 1,000 people"]
    assert people.renderer().shader().rasterShaderFunction().colorRampType() == people.renderer().shader().rasterShaderFunction().Discrete


def test_built_up_classes(tmp_path):
    layer = tif(tmp_path / "msz.tif", np.array([[1, 11], [21, 25]], dtype="uint8"), gdal.GDT_Byte)
    apply_style(layer, style_for("jrc_ghsl_built_c"))
    assert layer.renderer().type() == "paletted"
    labels = {int(c.value): c.label for c in layer.renderer().classes()}
    assert labels[11] == "Residential, height ≤ 3 m" and labels[25] == "Non-residential, > 30 m" and len(labels) == 15


def test_power_plants_by_fuel_and_roads_by_type(tmp_path):
    plants = gpkg(tmp_path / "plants.gpkg", ogr.wkbPoint, "primary_fuel", ["Hydro", "Solar", "Gas"], "POINT (33 -3)")
    apply_style(plants, style_for("wri_powerplants"))
    renderer = plants.renderer()
    assert renderer.type() == "categorizedSymbol" and renderer.classAttribute() == "primary_fuel"
    by_value = {c.value(): c for c in renderer.categories()}
    assert by_value["Hydro"].symbol().color().name() == "#1f78b4" and by_value[""].label() == "Other"
    roads = gpkg(tmp_path / "roads.gpkg", ogr.wkbLineString, "asset_type", ["trunk", "railway"], "LINESTRING (30 -3, 34 -2)")
    apply_style(roads, style_for("gri_osm"))
    widths = {c.value(): c.symbol().width() for c in roads.renderer().categories()}
    assert widths["motorway"] > widths["trunk"] > widths["tertiary"]
    # a spec for another geometry (or none) falls back to the readable default
    apply_style(roads, style_for("wri_powerplants"))
    assert roads.renderer().type() == "singleSymbol"
