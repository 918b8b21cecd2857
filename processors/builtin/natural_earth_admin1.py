"""Natural Earth admin-1 (states and provinces), from the copy QGIS ships in `world_map.gpkg`."""
from __future__ import annotations

from pathlib import Path

from processors.base import DEFAULT_WORLD_MAP_GPKG, ProcessorContext, ProcessorMetadata
from processors.catalogue import NATURAL_EARTH_TERMS, VectorClipProcessor
from processors.sources import check_vector

__all__ = ["DEFAULT_WORLD_MAP_GPKG", "NaturalEarthAdmin1"]
SOURCE_LAYER = "states_provinces"


class NaturalEarthAdmin1(VectorClipProcessor):
    """Admin-1 boundaries clipped to the boundary polygon, written as a GeoPackage.

    Its source is `context.world_map_gpkg`, QGIS's `world_map.gpkg` (default: the Debian location).
    """

    name = "natural_earth_admin1"
    version = "version_1"
    metadata = ProcessorMetadata(
        description="Natural Earth 1:10m admin-1 states and provinces, clipped to the boundary",
        dataset="natural_earth_admin1",
        author="Natural Earth Data",
        license=NATURAL_EARTH_TERMS,
        origin_url="https://www.naturalearthdata.com/downloads/10m-cultural-vectors/10m-admin-1-states-provinces/",
        formats=("GeoPackage",),
        title="Natural Earth Admin 1 States and Provinces",
        title_long="Natural Earth 1:10m Cultural Vectors - Admin 1 – States, Provinces",
        summary=(
            "Internal administrative boundaries (first-order subdivisions: states, provinces, "
            "regions, departments) of the world's countries at 1:10 million scale, as polygons "
            "with names and country codes. Taken from the Natural Earth copy that QGIS ships in "
            "world_map.gpkg (layer states_provinces, EPSG:4326) and clipped to the boundary "
            "polygon; subdivisions crossing the boundary are cut at it. Natural Earth data is in "
            "the public domain."
        ),
        citation="Natural Earth. Free vector and raster map data @ naturalearthdata.com.",
    )

    layers = (SOURCE_LAYER,)
    output_layer = SOURCE_LAYER
    feature_noun = "states and provinces"
    declared_feature_count = 4_596
    declared_feature_bytes = 2_000

    def source(self, context: ProcessorContext) -> Path:
        return context.sources.local(Path(context.world_map_gpkg), validate=check_vector)

    def cached_source(self, context: ProcessorContext) -> Path | None:
        source = Path(context.world_map_gpkg)
        return source if source.is_file() else None
