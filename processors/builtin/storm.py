"""STORM tropical cyclone wind speed return-period maps (global mosaics), 140 GeoTIFFs."""
from __future__ import annotations

from processors.base import Dimension, ProcessorMetadata
from processors.catalogue import CC0, RasterCatalogueProcessor, RasterSource, part_from_stem
from processors.estimate import RasterGrid

ZENODO_FILES = "https://zenodo.org/record/7438145/files/"
#: `constant` is the present-day baseline; the four GCMs are 2050 under RCP8.5.
MODELS = ("constant", "CMCC-CM2-VHR4", "CNRM-CM6-1-HR", "EC-Earth3P-HR", "HadGEM3-GC31-HM")
#: 10-100 by 10, 200-1000 by 100, 2000-10000 by 1000: 28 return periods (years).
RETURN_PERIODS = tuple(range(10, 101, 10)) + tuple(range(200, 1001, 100)) + tuple(range(2000, 10001, 1000))


DIMENSIONS = (
    Dimension("model", "Climate model", MODELS, "constant"),
    Dimension("return_period", "Return period", tuple(str(rp) for rp in RETURN_PERIODS), "100", unit="years"),
)


def _climate(model: str) -> str:
    return "present climate" if model == "constant" else f"{model}, 2050 RCP8.5"


def storm_sources() -> tuple[RasterSource, ...]:
    """The 140 maps, model-major, each labelled and placed along model x return period."""
    return tuple(
        part_from_stem(
            f"{ZENODO_FILES}STORM_FIXED_RETURN_PERIODS_{model}_{rp}_YR_RP.tif",
            label=f"{rp}-year return period — {_climate(model)}",
            dimensions={"model": model, "return_period": str(rp)},
        )
        for model in MODELS
        for rp in RETURN_PERIODS
    )


class StormGlobalMosaics(RasterCatalogueProcessor):
    """5 models x 28 return periods = 140 EPSG:4326 GeoTIFFs from Zenodo record 7438145."""

    name = "storm"
    version = "global_mosaics_version_1"
    metadata = ProcessorMetadata(
        description="STORM tropical cyclone maximum wind speed return-period maps, clipped to the boundary",
        dataset="STORM Global Mosaics 10.5281/zenodo.7438145",
        author="University of Oxford",
        license=CC0,
        origin_url="https://doi.org/10.5281/zenodo.7438145",
        formats=("GeoTIFF",),
        title="STORM tropical cyclone wind speed maps",
        title_long="STORM tropical cyclone wind speed return period maps as global GeoTIFFs",
        summary=(
            "Maximum tropical cyclone wind speed (m/s) for 28 return periods (10 to 10,000 years) at "
            "10 km resolution, mosaicked to global extent with open-gira code: present-day climate "
            "(`constant`) and 2050 under RCP8.5 from four high-resolution GCMs (CMCC-CM2-VHR4, "
            "CNRM-CM6-1-HR, EC-Earth3P-HR, HadGEM3-GC31-HM). 140 files, each clipped to the boundary polygon."
        ),
        citation=(
            "Russell, Tom. (2022). STORM tropical cyclone wind speed return periods as global GeoTIFFs "
            "(1.0.0) [Data set]. Zenodo. https://doi.org/10.5281/zenodo.7438145. Derived from: "
            "Bloemendaal, Nadia; de Moel, H. (Hans); Muis, S; Haigh, I.D. (Ivan); Aerts, J.C.J.H. "
            "(Jeroen) (2020): STORM tropical cyclone wind speed return periods. 4TU.ResearchData. "
            "Dataset. https://doi.org/10.4121/12705164.v3 and Bloemendaal, Nadia; de Moel, Hans; "
            "Dullaart, Job; Haarsma, R.J. (Reindert); Haigh, I.D. (Ivan); Martinez, Andrew B.; et al. "
            "(2022): STORM climate change tropical cyclone wind speed return periods. "
            "4TU.ResearchData. Dataset. https://doi.org/10.4121/14510817.v3"
        ),
    )
    sources = storm_sources()
    dimensions = DIMENSIONS
    expected_crs = "EPSG:4326"
    #: 0.1 degree between 60 S and 60 N (declared for estimates; the cached file's grid wins).
    grid = RasterGrid("EPSG:4326", (-180.0, -60.0, 180.0, 60.0), 3600, 1200, "float32")
