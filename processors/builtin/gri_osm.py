"""GRI road and rail networks derived from OpenStreetMap, from a FILE source (no private database).

The predecessor read a private PostGIS table (`features`, JSON `properties`) through
`AUTOPKG_OSM_PG*` credentials that nobody outside the project had. Here the network is a
GeoPackage source fetched like every other dataset:

    https://global.infrastructureresilience.org/extract/gri_osm/roads_and_rail_version_1/gri_osm_road_and_rail.gpkg

with two LineString layers in EPSG:4326, `roads` and `rail`, both with the predecessor's fixed
attribute schema (`SCHEMA` below; open-gira's network-creation output, November 2022 snapshot).
That URL is the *documented layout* of the source, not a published download: GRI does not
publish the network as one file at a stable URL at the time of writing. A site that has the file
(e.g. exported from GRI's database or built with open-gira) places it in a source mirror
(`CCGAUTOPKG_SOURCE_MIRROR`) at
`<mirror>/global.infrastructureresilience.org/extract/gri_osm/roads_and_rail_version_1/gri_osm_road_and_rail.gpkg`;
without a mirror the fetch fails with a clear message naming that URL.

Processing, like the predecessor's `ST_Dump(ST_Intersection(...))`: both layers are read through
the bounding-box filter (the GeoPackage's R*Tree), cut at the boundary polygon, and written as one
`LineString` layer `gri_osm_road_and_rail` (one feature per piece; `subsector` says road or rail)
with the fixed schema (missing keys null, other keys dropped). `wkt` is passed through as the
source has it (the predecessor's comment says it holds the unclipped geometry).
"""
from __future__ import annotations

from processors.base import DataLicense, ProcessorMetadata
from processors.catalogue import VectorClipProcessor

SOURCE_URL = (
    "https://global.infrastructureresilience.org/extract/gri_osm/roads_and_rail_version_1/gri_osm_road_and_rail.gpkg"
)
SOURCE_LAYERS = ("roads", "rail")
OUTPUT_LAYER = "gri_osm_road_and_rail"
#: The predecessor's fixed output schema (fiona types), in its order.
SCHEMA = {
    "asset_id": "float",
    "osm_way_id": "str",
    "asset_type": "str",
    "paved": "bool",
    "material": "str",
    "lanes": "int",
    "_asset_type": "str",
    "rehab_cost_USD_per_km": "float",
    "sector": "str",
    "subsector": "str",
    "tag_bridge": "str",
    "bridge": "bool",
    "wkt": "str",
}
ODBL = DataLicense(
    name="ODbL-1.0",
    path="https://opendefinition.org/licenses/odc-odbl",
    title="Open Data Commons Open Database License 1.0",
)


class GriOsmRoadsAndRail(VectorClipProcessor):
    """Roads and rail (LineStrings) cut at the boundary polygon, one GeoPackage layer."""

    name = "gri_osm"
    version = "roads_and_rail_version_1"
    metadata = ProcessorMetadata(
        description="Extraction from GRI OSM Table for Roads and Rail, including Damages",
        dataset="gri_osm_road_and_rail",
        author="nismod/open-gira contributors and OpenStreetMap contributors",
        license=ODBL,
        origin_url="https://global.infrastructureresilience.org",
        formats=("GeoPackage",),
        title="Road and Rail networks derived from OpenStreetMap",
        title_long="Road and Rail networks derived from OpenStreetMap",
        summary=(
            "Road (trunk to tertiary) and rail networks from an OpenStreetMap snapshot taken in "
            "November 2022, processed with the open-gira pipeline (https://github.com/nismod/open-gira) "
            "into a topologically connected network annotated with surface, lanes, bridges and "
            "rehabilitation costs. Lines are cut at the boundary polygon (one LineString per piece). "
            "Read from a GeoPackage source (layers roads and rail) configured through the source mirror."
        ),
        citation=(
            "Russell T., Thomas F., nismod/open-gira contributors and OpenStreetMap contributors "
            "(2022) Global Road and Rail networks derived from OpenStreetMap. [Dataset] Available at "
            "https://global.infrastructureresilience.org"
        ),
    )
    source_url = SOURCE_URL
    layers = SOURCE_LAYERS
    output_layer = OUTPUT_LAYER
    explode = True
    properties_schema = SCHEMA
    feature_noun = "road and rail lines"
    declared_feature_count = 21_000_000  # roads + rail edges of the global network (order of magnitude)
    declared_feature_bytes = 330
