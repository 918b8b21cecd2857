"""JRC Global Human Settlement Layer (R2022A): population 1 km and built-up characteristics 10 m.

Both are in World Mollweide (ESRI:54009) and stay in it: the boundary is projected, not the
raster. Each source is a zip holding one GeoTIFF.
"""
from __future__ import annotations

from processors.base import Dimension, ProcessorMetadata
from processors.catalogue import CC_BY_4, RasterCatalogueProcessor, RasterSource
from processors.estimate import RasterGrid

MOLLWEIDE_BOUNDS = (-18041000.0, -9000000.0, 18041000.0, 9000000.0)

JRC_FTP = "https://jeodpp.jrc.ec.europa.eu/ftp/jrc-opendata/GHSL/"
POP_STEM = "GHS_POP_E2020_GLOBE_R2022A_54009_1000_V1_0"
POP_URL = f"{JRC_FTP}GHS_POP_GLOBE_R2022A/GHS_POP_E2020_GLOBE_R2022A_54009_1000/V1-0/{POP_STEM}.zip"


def built_c_stem(kind: str) -> str:
    return f"GHS_BUILT_C_{kind}_E2018_GLOBE_R2022A_54009_10_V1_0"


def built_c_url(kind: str) -> str:
    return (
        f"{JRC_FTP}GHS_BUILT_C_GLOBE_R2022A/GHS_BUILT_C_{kind}_GLOBE_R2022A/"
        f"GHS_BUILT_C_{kind}_E2018_GLOBE_R2022A_54009_10/V1-0/{built_c_stem(kind)}.zip"
    )


#: SHA-1 of the extracted GeoTIFFs, as the predecessor declared them.
BUILT_C_TIF_SHA1 = {
    "MSZ": "5bdc5a6036f72d119745c02b940cbbadbb881d66",
    "FUN": "344f6d54e3253b3c0a3370e7dbe8da328586ec79",
}
BUILT_C_LABELS = {"MSZ": "Morphological Settlement Zone (MSZ)", "FUN": "Functional Classification (FUN)"}
EC_REUSE = (
    " Reuse is authorised under the European Commission's reuse policy (Commission Decision "
    "2011/833/EU), provided the source is acknowledged. © European Union, 2022."
)


class JrcGhslPopulation(RasterCatalogueProcessor):
    """GHS-POP R2022A, epoch 2020, 1 km, Mollweide: one zip, one GeoTIFF, one output."""

    name = "jrc_ghsl_population"
    version = "r2022_epoch2020_1km"
    metadata = ProcessorMetadata(
        description="JRC GHS-POP R2022A population grid for 2020 at 1 km, clipped to the boundary (Mollweide)",
        dataset="r2022_epoch2020_1km",
        author="Joint Research Centre",
        license=CC_BY_4,
        origin_url="https://ghsl.jrc.ec.europa.eu/download.php?ds=pop",
        formats=("GeoTIFF",),
        title="GHS-POP - R2022A",
        title_long="GHS-POP R2022A - extract from GHS population grid for 2020, 1km resolution",
        summary=(
            "Residential population (people per cell) for the epoch 2020 on a 1 km grid in World "
            "Mollweide (ESRI:54009), disaggregated from census data using the GHSL built-up "
            "surface. Clipped to the boundary polygon in the source projection." + EC_REUSE
        ),
        citation=(
            "Schiavina M., Freire S., MacManus K. (2022): GHS-POP R2022A - GHS population grid "
            "multitemporal (1975-2030). European Commission, Joint Research Centre (JRC), "
            "doi:10.2905/D6D86A90-4351-4508-99C1-CB074B022C4A. Methodology: Freire S., MacManus K., "
            "Pesaresi M., Doxsey-Whitfield E., Mills J. (2016) Development of new open and free "
            "multi-temporal global population grids at 250 m resolution. AGILE 2016."
        ),
    )
    sources = (RasterSource(url=POP_URL, member=f"{POP_STEM}.tif"),)
    expected_crs = "ESRI:54009"
    max_extract_bytes = 20 * 1024**3
    grid = RasterGrid("ESRI:54009", MOLLWEIDE_BOUNDS, 36082, 18000, "float32")  # 1 km


class JrcGhslBuiltC(RasterCatalogueProcessor):
    """GHS-BUILT-C R2022A, epoch 2018, 10 m, Mollweide: MSZ and FUN zips, two outputs."""

    name = "jrc_ghsl_built_c"
    version = "r2022_epoch2018_10m_mszfun"
    metadata = ProcessorMetadata(
        description=(
            "JRC GHS-BUILT-C R2022A built-up characteristics (morphological settlement zone and "
            "functional classification) for 2018 at 10 m, clipped to the boundary (Mollweide)"
        ),
        dataset="r2022_epoch2018_10m_mszfun",
        author="Joint Research Centre",
        license=CC_BY_4,
        origin_url="https://ghsl.jrc.ec.europa.eu/download.php?ds=builtC",
        formats=("GeoTIFF",),
        title="GHS-BUILT-C MSZ and FC, R2022 E2018 10m",
        title_long=(
            "JRC Global Human Settlement Layer - Built-Up Characteristics (GHS-BUILT-C - MSZ & FC) - "
            "Release 2022 - Epoch 2018 - 10m resolution - Morphological Settlement Zone & "
            "Functional Classification"
        ),
        summary=(
            "Built-up characteristics at 10 m for 2018 in World Mollweide (ESRI:54009), derived "
            "from a Sentinel-2 composite and other GHS R2022A data: the Morphological Settlement "
            "Zone (MSZ) and the Functional Classification (FUN: residential / non-residential "
            "and building height classes). Two files, each clipped to the boundary polygon in "
            "the source projection." + EC_REUSE
        ),
        citation=(
            "Pesaresi M., P. Panagiotis (2022): GHS-BUILT-C R2022A - GHS Settlement "
            "Characteristics, derived from Sentinel2 composite (2018) and other GHS R2022A data. "
            "European Commission, Joint Research Centre (JRC), "
            "doi:10.2905/DDE11594-2A66-4C1B-9A19-821382AED36E. Methodology: European Commission, "
            "GHSL Data Package 2022, doi:10.2760/19817."
        ),
    )
    sources = tuple(
        RasterSource(
            url=built_c_url(kind),
            member=f"{built_c_stem(kind)}.tif",
            part=built_c_stem(kind),
            member_sha1=BUILT_C_TIF_SHA1[kind],
            label=BUILT_C_LABELS[kind],
            dimensions={"layer": kind},
        )
        for kind in ("MSZ", "FUN")
    )
    dimensions = (Dimension("layer", "Layer", tuple(BUILT_C_LABELS), "MSZ"),)
    expected_crs = "ESRI:54009"
    max_extract_bytes = 120 * 1024**3
    grid = RasterGrid("ESRI:54009", MOLLWEIDE_BOUNDS, 3608200, 1800000, "uint8")  # 10 m
    compression_ratio = 0.15  # classes, mostly empty land
