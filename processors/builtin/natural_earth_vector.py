"""Natural Earth 1:10m roads, clipped to the boundary polygon (GeoPackage).

Source: `ne_10m_roads.zip` (a shapefile, EPSG:4326, about 56,600 road lines with their
attributes). Fixes against the predecessor: no database (it dropped and reloaded a PostGIS table
on every run; here the shapefile is read directly through the bounding-box filter), the zip is
fetched once into the shared source cache and extracted once (safely, under a lock), and the
metadata has a real title, summary and citation. Lines are cut at the boundary (not kept whole);
one output feature per source feature (a road cut into pieces is one MultiLineString, like
`ogr2ogr -clipsrc`), every source attribute kept. Output layer: `ne_10m_roads`.
"""
from __future__ import annotations

from pathlib import Path

from processors.base import ProcessorContext, ProcessorMetadata
from processors.catalogue import NATURAL_EARTH_TERMS, VectorClipProcessor
from processors.sources import check_vector

SOURCE_URL = "https://www.naturalearthdata.com/http//www.naturalearthdata.com/download/10m/cultural/ne_10m_roads.zip"
SHAPEFILE = "ne_10m_roads.shp"
LAYER = "ne_10m_roads"


class NaturalEarthVector(VectorClipProcessor):
    """Natural Earth 10m roads (shapefile in a zip) clipped to the boundary polygon."""

    name = "natural_earth_vector"
    version = "version_1"
    metadata = ProcessorMetadata(
        description="Natural Earth 1:10m roads, clipped to the boundary",
        dataset="natural_earth_vector_roads",
        author="Natural Earth Data",
        license=NATURAL_EARTH_TERMS,
        origin_url="https://www.naturalearthdata.com/downloads/10m-cultural-vectors/roads/",
        formats=("GeoPackage",),
        title="Natural Earth Roads (1:10m)",
        title_long="Natural Earth 1:10m Cultural Vectors - Roads",
        summary=(
            "Major roads of the world at 1:10 million scale (highways, secondary roads, ferry "
            "routes and tracks, with type, scale rank, continent, label and length attributes), "
            "from the Natural Earth shapefile ne_10m_roads (EPSG:4326). Lines are cut at the "
            "boundary polygon; every source attribute is kept. Natural Earth data is in the public "
            "domain."
        ),
        citation=(
            "Natural Earth (2017) 1:10m Cultural Vectors: Roads, version 5.0.0. Free vector and "
            "raster map data @ naturalearthdata.com. Available at "
            "https://www.naturalearthdata.com/downloads/10m-cultural-vectors/roads/"
        ),
    )
    source_url = SOURCE_URL
    output_layer = LAYER
    feature_noun = "roads"
    #: Declared facts about the real source, for estimates before it is downloaded.
    declared_feature_count = 56_601
    declared_feature_bytes = 420  # mean GeoPackage bytes per road feature (geometry + attributes)
    max_extract_bytes = 512 * 1024**2  # the real shapefile is about 40 MB

    def source(self, context: ProcessorContext) -> Path:
        return context.sources.archive_member(self.source_url, SHAPEFILE, max_bytes=self.max_extract_bytes,
                                              validate=check_vector, progress=(0.0, 5.0))

    def cached_source(self, context: ProcessorContext) -> Path | None:
        return context.sources.cached_member(self.source_url, SHAPEFILE)
