"""How each dataset should look: a small declarative style spec per processor (dataset name).

The spec goes into the dataset's datapackage resource as `style` (see `backend/packages.py`), so
the QGIS plugin — and any other client — can draw the data sensibly: flood depth in blues (m),
wind speed (m/s), population on a log scale, built-up classes, power plants by fuel, grid lines,
roads by type. `style_for(name)` gives the JSON form:

    {"raster": {"type": "ramp", "ramp": "Blues", "min": 0, "max": 5, "unit": "m", "precision": 1,
                "classes": 6, "scale": "linear", "title": "Flood depth"}
               | {"type": "classes", "classes": [{"value": 11, "label": "…", "color": "#…"}], …},
     "vector": {"type": "single", "geometry": "line", "color": "#…", "width": 0.5}
               | {"type": "categories", "field": "primary_fuel", "geometry": "point",
                  "categories": [{"value": "Coal", "label": "Coal", "color": "#…"}], "other": "#…"}}

Either part may be absent (a dataset of rasters only has no vector style). Ramp names are QGIS
default-style ramps (ColorBrewer: Blues, YlOrRd, …); `precision` is the number of decimals of the
legend labels, `scale: "log"` spaces the classes logarithmically (population).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal, Optional


@dataclass(frozen=True)
class RasterRamp:
    ramp: str
    min: float
    max: float
    unit: str
    precision: int
    title: str
    classes: int = 6
    scale: Literal["linear", "log"] = "linear"
    type: str = "ramp"


@dataclass(frozen=True)
class Category:
    value: Any
    label: str
    color: str  # #rrggbb
    width: Optional[float] = None  # lines (mm)


@dataclass(frozen=True)
class RasterClasses:
    classes: tuple[Category, ...]
    title: str
    unit: str = ""
    type: str = "classes"


@dataclass(frozen=True)
class VectorSingle:
    geometry: Literal["point", "line", "polygon"]
    color: str
    width: float = 0.4  # lines and polygon outlines (mm)
    size: float = 2.4  # points (mm)
    fill_opacity: float = 0.35  # polygons
    type: str = "single"


@dataclass(frozen=True)
class VectorCategories:
    field: str
    geometry: Literal["point", "line", "polygon"]
    categories: tuple[Category, ...]
    other: str  # colour of values not listed
    width: float = 0.4
    size: float = 2.4
    type: str = "categories"


@dataclass(frozen=True)
class DatasetStyle:
    raster: Optional[RasterRamp | RasterClasses] = None
    vector: Optional[VectorSingle | VectorCategories] = None

    def to_json(self) -> dict[str, Any]:
        """Exactly what datapackage.json holds (tuples become lists)."""
        return json.loads(json.dumps({k: v for k, v in asdict(self).items() if v is not None}))


def _categories(*entries: tuple[Any, str, str] | tuple[Any, str, str, float]) -> tuple[Category, ...]:
    return tuple(Category(*entry) for entry in entries)


# GHS-BUILT-C MSZ (R2022A): open spaces 1–5, residential 11–15, non-residential 21–25 by height.
BUILT_UP_CLASSES = _categories(
    (1, "Open space, low vegetation", "#f0ead2"), (2, "Open space, medium vegetation", "#c9e0a8"),
    (3, "Open space, high vegetation", "#7fb069"), (4, "Open space, water", "#8ecae6"), (5, "Open space, road", "#bdbdbd"),
    (11, "Residential, height ≤ 3 m", "#fde0c5"), (12, "Residential, 3–6 m", "#facba6"), (13, "Residential, 6–15 m", "#f59e72"),
    (14, "Residential, 15–30 m", "#e2674a"), (15, "Residential, > 30 m", "#b8323b"),
    (21, "Non-residential, height ≤ 3 m", "#d9d4f0"), (22, "Non-residential, 3–6 m", "#b3a9e0"),
    (23, "Non-residential, 6–15 m", "#8a7cc9"), (24, "Non-residential, 15–30 m", "#6551ad"), (25, "Non-residential, > 30 m", "#3f2a87"),
)
FUELS = _categories(
    ("Coal", "Coal", "#3b3b3b"), ("Oil", "Oil", "#7b3f00"), ("Gas", "Gas", "#e07b39"), ("Petcoke", "Petcoke", "#5c4033"),
    ("Nuclear", "Nuclear", "#b5179e"), ("Hydro", "Hydro", "#1f78b4"), ("Wind", "Wind", "#6a9fd4"), ("Solar", "Solar", "#f4c20d"),
    ("Geothermal", "Geothermal", "#c0392b"), ("Biomass", "Biomass", "#4d9221"), ("Waste", "Waste", "#8c6d31"),
    ("Wave and Tidal", "Wave and tidal", "#17becf"), ("Storage", "Storage", "#9467bd"), ("Cogeneration", "Cogeneration", "#969696"),
)
OSM_ROADS = _categories(
    ("motorway", "Motorway", "#c0392b", 1.0), ("trunk", "Trunk", "#e67e22", 0.8), ("primary", "Primary", "#f1c40f", 0.6),
    ("secondary", "Secondary", "#7f8c8d", 0.45), ("tertiary", "Tertiary", "#95a5a6", 0.35), ("railway", "Railway", "#2c3e50", 0.5),
)
NE_ROADS = _categories(
    ("Major Highway", "Major highway", "#c0392b", 0.8), ("Secondary Highway", "Secondary highway", "#e67e22", 0.5),
    ("Road", "Road", "#7f8c8d", 0.35), ("Beltway", "Beltway", "#d35400", 0.5), ("Bypass", "Bypass", "#d35400", 0.5),
    ("Ferry Route", "Ferry route", "#2980b9", 0.35), ("Track", "Track", "#a0a0a0", 0.25),
)

STYLES: dict[str, DatasetStyle] = {
    "wri_aqueduct": DatasetStyle(raster=RasterRamp("Blues", 0.0, 5.0, "m", 1, "Flood depth")),
    "storm": DatasetStyle(raster=RasterRamp("YlOrRd", 20.0, 80.0, "m/s", 0, "Maximum wind speed")),
    "isimp_drought": DatasetStyle(raster=RasterRamp("Oranges", 0.0, 1.0, "", 2, "Land area fraction exposed to drought")),
    "jrc_ghsl_population": DatasetStyle(raster=RasterRamp("PuRd", 1.0, 10000.0, "people", 0, "Population per cell", 5, "log")),
    "jrc_ghsl_built_c": DatasetStyle(raster=RasterClasses(BUILT_UP_CLASSES, "Built-up class")),
    "gridfinder": DatasetStyle(raster=RasterRamp("Greens", 0.0, 1.0, "", 1, "Low-voltage infrastructure", 2),
                               vector=VectorSingle("line", "#d62728", width=0.6)),
    "wri_powerplants": DatasetStyle(vector=VectorCategories("primary_fuel", "point", FUELS, "#bdbdbd", size=2.6)),
    "gri_osm": DatasetStyle(vector=VectorCategories("asset_type", "line", OSM_ROADS, "#b0b0b0", width=0.3)),
    "natural_earth_vector": DatasetStyle(vector=VectorCategories("type", "line", NE_ROADS, "#b0b0b0", width=0.3)),
    "natural_earth_admin1": DatasetStyle(vector=VectorSingle("polygon", "#1b4f72", width=0.3, fill_opacity=0.0)),
}


def style_for(dataset: str) -> Optional[dict[str, Any]]:
    """The JSON style spec of a dataset (processor name), None when it has none."""
    spec = STYLES.get(dataset)
    return spec.to_json() if spec is not None else None
