"""ISIMIP extreme drought and heat occurrence (Lange et al. 2020), 245 GeoTIFFs from one zip.

The 245 names follow `lange2020_<impact model>_<gcm>_ewembi_<scenario>_<soc>_co2_<led|leh>_
global_annual_<start>_<end>_<epoch>_occurrence.tif`:

* impact models clm45, h08, jules-w1, lpjml, orchidee, pcr-globwb, watergap2 (drought, `led`)
  and hwmid-humidex (heatwave, `leh`), each with the GCMs gfdl-esm2m, hadgem2-es, ipsl-cm5a-lr
  and miroc5; mpi-hm (drought) without hadgem2-es;
* per model and GCM: `historical` 1861-2005 epoch `baseline`, and `rcp26` and `rcp60` 2006-2099
  at epochs 2030, 2050 and 2080 (7 files);
* socio-economic setting: `nosoc` for jules-w1, orchidee and hwmid-humidex; `2005soc` for clm45
  (also in its historical run); `histsoc` (historical) / `2005soc` (rcp) for the others.

8 x 4 x 7 + 1 x 3 x 7 = 224 + 21 = **245**. The source is Zenodo record 7732393's
`lange2020_expected_occurrence.zip`, whose TIFFs sit in a nested `lange2020_expected_occurrence/`
folder; it is extracted once into the source cache (safely) and members are found by name.
"""
from __future__ import annotations

from processors.base import Dimension, ProcessorMetadata
from processors.catalogue import CC0, RasterCatalogueProcessor, RasterSource
from processors.estimate import RasterGrid

SOURCE_URL = "https://zenodo.org/record/7732393/files/lange2020_expected_occurrence.zip"
DROUGHT_MODELS = ("clm45", "h08", "jules-w1", "lpjml", "mpi-hm", "orchidee", "pcr-globwb", "watergap2")
HEAT_MODELS = ("hwmid-humidex",)
GCMS = ("gfdl-esm2m", "hadgem2-es", "ipsl-cm5a-lr", "miroc5")
NOSOC_MODELS = {"jules-w1", "orchidee", "hwmid-humidex"}
MODEL_GCM_GAPS = {("mpi-hm", "hadgem2-es")}
RUNS = [("historical", "1861_2005", "baseline")] + [
    (scenario, "2006_2099", epoch) for scenario in ("rcp26", "rcp60") for epoch in ("2030", "2050", "2080")
]


def _soc(model: str, scenario: str) -> str:
    if model in NOSOC_MODELS:
        return "nosoc"
    if scenario == "historical" and model != "clm45":
        return "histsoc"
    return "2005soc"


VARIABLES = {"drought": "Extreme drought", "heatwave": "Extreme heatwave"}
SCENARIO_LABELS = {"historical": "historical", "rcp26": "RCP2.6", "rcp60": "RCP6.0"}
DIMENSIONS = (
    Dimension("variable", "Event", tuple(VARIABLES), "drought"),
    Dimension("impact_model", "Impact model", DROUGHT_MODELS + HEAT_MODELS, "clm45"),
    Dimension("gcm", "Climate model (GCM)", GCMS, "gfdl-esm2m"),
    Dimension("scenario", "Scenario", tuple(SCENARIO_LABELS), "historical"),
    Dimension("epoch", "Epoch", ("baseline", "2030", "2050", "2080"), "baseline"),
)


def source_runs() -> list[tuple[str, dict[str, str]]]:
    """(file name, dimension values) of the 245 GeoTIFFs, in the archive's order."""
    runs = []
    for model in DROUGHT_MODELS + HEAT_MODELS:
        indicator = "leh" if model in HEAT_MODELS else "led"
        for gcm in GCMS:
            if (model, gcm) in MODEL_GCM_GAPS:
                continue
            for scenario, years, epoch in RUNS:
                name = (
                    f"lange2020_{model}_{gcm}_ewembi_{scenario}_{_soc(model, scenario)}_co2_{indicator}"
                    f"_global_annual_{years}_{epoch}_occurrence.tif"
                )
                runs.append((name, {"variable": "heatwave" if indicator == "leh" else "drought",
                                    "impact_model": model, "gcm": gcm, "scenario": scenario, "epoch": epoch}))
    return runs


def source_names() -> list[str]:
    return [name for name, _ in source_runs()]


def source_label(d: dict[str, str]) -> str:
    when = "1861-2005 baseline" if d["epoch"] == "baseline" else d["epoch"]
    return (f"{VARIABLES[d['variable']]} occurrence — {d['impact_model']} forced by {d['gcm']}, "
            f"{SCENARIO_LABELS[d['scenario']]}, {when}")


class IsimipDrought(RasterCatalogueProcessor):
    """245 annual occurrence-probability GeoTIFFs (0.5 degree, EPSG:4326) from one zip."""

    name = "isimp_drought"
    version = "version_1"
    metadata = ProcessorMetadata(
        description="ISIMIP annual probability of extreme drought and heatwave events, clipped to the boundary",
        dataset="ISIMP Drought",
        author="Lange, S., Volkholz, J., Geiger, T., Zhao, F., Vega, I., Veldkamp, T., et al. (2020)",
        license=CC0,
        origin_url="https://doi.org/10.5281/zenodo.7732393",
        formats=("GeoTIFF",),
        title="ISIMIP Drought",
        title_long="Annual probability of extreme heat and drought events, derived from Lange et al 2020",
        summary=(
            "A draft annual probability of occurrence of extreme drought (8 hydrological models) "
            "and heatwave (HWMId-humidex) events on a 0.5 degree grid, forced by 4 GCMs under "
            "the historical baseline (1861-2005) and RCP 2.6 and 6.0 for the epochs 2030, 2050 "
            "and 2080 (derived with infra-risk-vis etl/pipelines/isimip). 245 files, each clipped "
            "to the boundary polygon. Licensed CC0."
        ),
        citation=(
            "Lange, S., Volkholz, J., Geiger, T., Zhao, F., Vega, I., Veldkamp, T., et al. (2020). "
            "Projecting exposure to extreme climate impact events across six event categories and "
            "three spatial scales. Earth's Future, 8, e2020EF001616. DOI 10.1029/2020EF001616"
        ),
    )
    sources = tuple(
        RasterSource(url=SOURCE_URL, member=name, part=name[: -len(".tif")], label=source_label(dims), dimensions=dims)
        for name, dims in source_runs()
    )
    dimensions = DIMENSIONS
    expected_crs = "EPSG:4326"
    max_extract_bytes = 20 * 1024**3
    grid = RasterGrid("EPSG:4326", (-180.0, -90.0, 180.0, 90.0), 720, 360, "float32")  # 0.5 degree
