"""Natural Earth admin-1 (states and provinces), from the copy QGIS ships in `world_map.gpkg`."""
from __future__ import annotations

from pathlib import Path

from processors.base import Boundary, DataLicense, Processor, ProcessorContext, ProcessorMetadata, ProcessorOutput
from processors.errors import SourceUnavailable
from processors.vector import clip_vector_into_output

#: Where Debian's (and most Linux) QGIS packages install Natural Earth's world map.
DEFAULT_WORLD_MAP_GPKG = Path("/usr/share/qgis/resources/data/world_map.gpkg")
SOURCE_LAYER = "states_provinces"

NATURAL_EARTH_TERMS = DataLicense(
    name="Natural-Earth",
    path="https://www.naturalearthdata.com/about/terms-of-use/",
    title="Natural Earth Terms of Use (public domain)",
)


class NaturalEarthAdmin1(Processor):
    """Admin-1 boundaries clipped to the boundary polygon, written as a GeoPackage.

    Option `world_map_gpkg`: path of QGIS's `world_map.gpkg` (default: the Debian location).
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

    def estimate(self, boundary: Boundary, context: ProcessorContext) -> dict:
        from processors.estimate import estimate_vector

        source = Path(context.options.get("world_map_gpkg") or DEFAULT_WORLD_MAP_GPKG)
        return estimate_vector(
            self, boundary, source if source.is_file() else None, layers=[SOURCE_LAYER],
            declared_features=4_596, declared_feature_bytes=2_000,
        )

    def generate(self, boundary: Boundary, context: ProcessorContext) -> ProcessorOutput:
        source = Path(context.options.get("world_map_gpkg") or DEFAULT_WORLD_MAP_GPKG)
        if not source.is_file():
            raise SourceUnavailable(f"Natural Earth world map not found: {source} (set the world_map_gpkg option)")
        context.progress(0, f"reading {SOURCE_LAYER} from {source.name}")

        filename = self.output_filename(boundary, "gpkg")
        result = clip_vector_into_output(
            source,
            layer=SOURCE_LAYER,
            boundary=boundary,
            context=context,
            filename=filename,
            output_layer=SOURCE_LAYER,
            progress_range=(2, 92),
            empty_error=f"no Natural Earth state or province overlaps boundary {boundary.name!r}",
        )
        context.progress(100, f"wrote {result.feature_count} states and provinces")
        return ProcessorOutput(
            files=[filename],
            format="GPKG",
            description=(
                f"{self.metadata.title} clipped to {boundary.name_long or boundary.name}: "
                f"{result.feature_count} features (layer {result.layer}, {result.geometry_type}, {result.crs})"
            ),
            extra={
                "layer": result.layer,
                "feature_count": result.feature_count,
                "geometry_type": result.geometry_type,
            },
        )
