"""WRI Aqueduct Floods hazard maps (version 2): riverine and coastal inundation depth, 379 GeoTIFFs.

The file list is generated from the bucket's naming pattern instead of scraping the S3 listing
page at run time (the predecessor scraped it, filtered it, and truncated it to 379 names):

Riverine, `inunriver_<scenario>_<GCM zero-padded to 14>_<year>_rp<RP, 5 digits>.tif`
    historical / `000000000WATCH` / 1980, and rcp4p5 and rcp8p5 x five GCMs (NorESM1-M,
    GFDL-ESM2M, HadGEM2-ES, IPSL-CM5A-LR, MIROC-ESM-CHEM) x 2030, 2050, 2080; return periods 2,
    5, 10, 25, 50, 100, 250, 500, 1000 years: (1 + 2 x 5 x 3) x 9 = **279** files.
Coastal, `inuncoast_<scenario>_wtsub_<year>_rp<RP, 4 digits>_<decimal>.tif`
    with subsidence (`wtsub`) and the 95th sea-level-rise percentile only (the predecessor
    dropped `nosub` and the `_perc_05`/`_perc_50` variants): historical x hist, 2030, 2050, 2080
    and rcp4p5, rcp8p5 x 2030, 2050, 2080; return periods 1.5 (`rp0001_5`), 2, 5, 10, 25, 50,
    100, 250, 500, 1000 (`rp0002_0` ... `rp1000_0`): (4 + 2 x 3) x 10 = **100** files.

279 + 100 = **379**, the predecessor's expected total, and the same names as its published
packages (e.g. `inunriver_rcp4p5_00000NorESM1-M_2080_rp00250`, `inuncoast_historical_wtsub_2080_rp0050_0`,
`inuncoast_rcp4p5_wtsub_2030_rp0001_5`).
"""
from __future__ import annotations

from processors.base import Dimension, ProcessorMetadata
from processors.catalogue import CC_BY_4, RasterCatalogueProcessor, RasterSource, part_from_stem
from processors.estimate import RasterGrid

BASE_URL = "http://wri-projects.s3.amazonaws.com/AqueductFloodTool/download/v2/"
RIVER_GCMS = ("NorESM1-M", "GFDL-ESM2M", "HadGEM2-ES", "IPSL-CM5A-LR", "MIROC-ESM-CHEM")
RIVER_RPS = (2, 5, 10, 25, 50, 100, 250, 500, 1000)
COAST_RPS = ("0001_5", "0002_0", "0005_0", "0010_0", "0025_0", "0050_0", "0100_0", "0250_0", "0500_0", "1000_0")
FUTURE_SCENARIOS = ("rcp4p5", "rcp8p5")
FUTURE_YEARS = ("2030", "2050", "2080")


def riverine_names() -> list[str]:
    combos = [("historical", "WATCH", "1980")] + [
        (scenario, gcm, year) for scenario in FUTURE_SCENARIOS for gcm in RIVER_GCMS for year in FUTURE_YEARS
    ]
    return [
        f"inunriver_{scenario}_{gcm:0>14}_{year}_rp{rp:05d}.tif"
        for scenario, gcm, year in combos
        for rp in RIVER_RPS
    ]


def coastal_names() -> list[str]:
    combos = [("historical", year) for year in ("hist",) + FUTURE_YEARS] + [
        (scenario, year) for scenario in FUTURE_SCENARIOS for year in FUTURE_YEARS
    ]
    return [f"inuncoast_{scenario}_wtsub_{year}_rp{rp}.tif" for scenario, year in combos for rp in COAST_RPS]


def source_urls() -> list[str]:
    return [BASE_URL + name for name in riverine_names() + coastal_names()]


SCENARIO_LABELS = {"historical": "historical", "rcp4p5": "RCP4.5", "rcp8p5": "RCP8.5"}
#: Return periods as the names encode them (`rp00100`, `rp0100_0`, `rp0001_5`) -> years.
RETURN_PERIOD_VALUES = ("1.5", "2", "5", "10", "25", "50", "100", "250", "500", "1000")
DIMENSIONS = (
    Dimension("hazard", "Hazard", ("inunriver", "inuncoast"), "inunriver"),
    Dimension("scenario", "Scenario", tuple(SCENARIO_LABELS), "historical"),
    Dimension("year", "Year", ("1980", "hist") + FUTURE_YEARS, "1980"),
    Dimension("model", "Climate model (riverine) / subsidence (coastal)", ("WATCH",) + RIVER_GCMS + ("wtsub",), "WATCH"),
    Dimension("return_period", "Return period", RETURN_PERIOD_VALUES, "100", unit="years"),
)


def _years(encoded: str) -> str:
    """`rp00100` / `rp0100_0` -> "100", `rp0001_5` -> "1.5"."""
    whole, _, decimal = encoded[2:].partition("_")
    return str(int(whole)) + (f".{decimal}" if decimal and decimal != "0" else "")


def source_dimensions(name: str) -> dict[str, str]:
    """Dimension values encoded in a file name: hazard_scenario_model_year_rp (see module doc)."""
    hazard, scenario, model, year, *rp = name[: -len(".tif")].split("_")
    return {"hazard": hazard, "scenario": scenario, "year": year, "model": model.lstrip("0"),
            "return_period": _years("_".join(rp))}


def source_label(dimensions: dict[str, str]) -> str:
    rp, scenario, year = dimensions["return_period"], SCENARIO_LABELS[dimensions["scenario"]], dimensions["year"]
    if dimensions["hazard"] == "inunriver":
        return f"Riverine flood, {rp}-year return period — {scenario}, {dimensions['model']}, {year}"
    when = "present day" if year == "hist" else year
    return f"Coastal flood, {rp}-year return period — {scenario} sea level, {when}, with subsidence"


def aqueduct_sources() -> tuple[RasterSource, ...]:
    sources = []
    for url in source_urls():
        dimensions = source_dimensions(url.rsplit("/", 1)[-1])
        sources.append(part_from_stem(url, label=source_label(dimensions), dimensions=dimensions))
    return tuple(sources)


class WriAqueduct(RasterCatalogueProcessor):
    """379 EPSG:4326 inundation-depth GeoTIFFs (1 km), one output per source file."""

    name = "wri_aqueduct"
    version = "version_2"
    metadata = ProcessorMetadata(
        description="WRI Aqueduct Floods coastal and riverine inundation depth maps, clipped to the boundary",
        dataset="wri_aqueduct",
        author=(
            "Ward, P.J., H.C. Winsemius, S. Kuzma, M.F.P. Bierkens, A. Bouwman, H. de Moel, "
            "A. Díaz Loaiza, et al."
        ),
        license=CC_BY_4,
        origin_url="http://wri-projects.s3.amazonaws.com/AqueductFloodTool/download/v2/index.html",
        formats=("GeoTIFF",),
        title="Aqueduct Flood Hazard Maps",
        title_long="World Resource Institute - Aqueduct Flood Hazard Maps (Version 2, updated October 20, 2020)",
        summary=(
            "Inundation depth (m) for coastal and riverine floods over a 1 km grid, for return "
            "periods from 2 (1.5 for coastal) to 1000 years: riverine under historical climate "
            "(WATCH, 1980) and under RCP4.5 and RCP8.5 from five GCMs for 2030, 2050 and 2080; "
            "coastal with subsidence at the 95th sea-level-rise percentile, historical and under "
            "RCP4.5 and RCP8.5. 379 files, each clipped to the boundary polygon."
        ),
        citation=(
            "Ward, P.J., H.C. Winsemius, S. Kuzma, M.F.P. Bierkens, A. Bouwman, H. de Moel, "
            "A. Díaz Loaiza, et al. 2020. Aqueduct Floods Methodology. Technical Note. Washington, "
            "D.C.: World Resources Institute. Available online at: "
            "www.wri.org/publication/aqueduct-floods-methodology."
        ),
    )
    sources = aqueduct_sources()
    dimensions = DIMENSIONS
    expected_crs = "EPSG:4326"
    #: 30 arc-seconds (~1 km), global (declared for estimates).
    grid = RasterGrid("EPSG:4326", (-180.0, -90.0, 180.0, 90.0), 43200, 21600, "float32")
    compression_ratio = 0.2  # mostly dry (0 m) cells
