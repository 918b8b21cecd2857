"""Natural Earth II with shaded relief, 1:50m, clipped to the boundary polygon."""
from __future__ import annotations

from processors.base import ProcessorMetadata
from processors.catalogue import NATURAL_EARTH_TERMS, RasterCatalogueProcessor, RasterSource
from processors.estimate import RasterGrid

SOURCE_URL = "https://www.naturalearthdata.com/http//www.naturalearthdata.com/download/50m/raster/NE2_50M_SR.zip"


class NaturalEarthRaster(RasterCatalogueProcessor):
    """`NE2_50M_SR.zip` -> `NE2_50M_SR/NE2_50M_SR.tif` (EPSG:4326, RGB), one output file.

    Fixes against the predecessor: a real title, summary and citation; the licence is Natural
    Earth's terms of use (public domain), which is what its own template said; the zip is cached.
    """

    name = "natural_earth_raster"
    version = "version_1"
    metadata = ProcessorMetadata(
        description="Natural Earth II 1:50m raster with shaded relief, clipped to the boundary",
        dataset="natural_earth_raster",
        author="Natural Earth Data",
        license=NATURAL_EARTH_TERMS,
        origin_url="https://www.naturalearthdata.com/downloads/50m-natural-earth-2/50m-natural-earth-ii-with-shaded-relief/",
        formats=("GeoTIFF",),
        title="Natural Earth II with Shaded Relief (1:50m)",
        title_long="Natural Earth II with Shaded Relief - 1:50m raster (NE2_50M_SR)",
        summary=(
            "Natural Earth II is a raster map of the world with idealised land cover, shaded "
            "relief and water bodies, in soft natural colours, at 1:50 million scale (about "
            "0.0167 degree, 10800x5400 pixels, RGB, EPSG:4326). Clipped to the boundary "
            "polygon; pixels outside it are nodata (255)."
        ),
        citation=(
            "Natural Earth (2012) Natural Earth II with Shaded Relief, 1:50m raster, version 2.0. "
            "Free vector and raster map data @ naturalearthdata.com. Available at "
            "https://www.naturalearthdata.com/downloads/50m-natural-earth-2/50m-natural-earth-ii-with-shaded-relief/"
        ),
    )
    sources = (RasterSource(url=SOURCE_URL, member="NE2_50M_SR/NE2_50M_SR.tif"),)
    expected_crs = "EPSG:4326"
    max_extract_bytes = 2 * 1024**3
    grid = RasterGrid("EPSG:4326", (-180.0, -90.0, 180.0, 90.0), 10800, 5400, "uint8", 3)
    compression_ratio = 0.45  # shaded-relief imagery compresses less than hazard grids
