"""WRI Global Power Plant Database v1.3.0: CSV with coordinates -> points, kept whole in the boundary.

The zip (SHA-1 declared) holds `global_power_plant_database.csv`. It is converted once into a
point GeoPackage with a spatial index, a derived file of the source cache (rebuilt when the CSV
changes; EPSG:4326, one feature per row, every CSV column kept: columns whose non-empty values
all parse as numbers become floats, the others strings), then points intersecting the boundary
polygon are written out. A boundary without a power plant gets an empty layer.
"""
from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path

import fiona
from fiona.crs import from_epsg

from processors.base import ProcessorContext, ProcessorMetadata
from processors.catalogue import CC_BY_4, VectorClipProcessor
from processors.errors import SourceCorrupt
from processors.sources import check_vector

SOURCE_URL = "https://wri-dataportal-prod.s3.amazonaws.com/manual/global_power_plant_database_v_1_3.zip"
SOURCE_SHA1 = "083f11452efc1ed0e8fb1494f0ce49e5c37718e2"
CSV_NAME = "global_power_plant_database.csv"
LAYER = "global_power_plant_database"
POINTS = "global_power_plant_database.gpkg"


def csv_to_points(csv_path: Path, destination: Path) -> int:
    """Write the CSV's rows as EPSG:4326 points (from `longitude`/`latitude`) into a GeoPackage."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        if "longitude" not in columns or "latitude" not in columns:
            raise SourceCorrupt(f"{csv_path.name} has no longitude/latitude columns")
        numeric = {c: True for c in columns}
        rows = 0
        for row in reader:
            rows += 1
            for c in columns:
                value = row[c]
                if numeric[c] and value not in ("", None):
                    try:
                        float(value)
                    except ValueError:
                        numeric[c] = False
    schema = {"geometry": "Point", "properties": {c: ("float" if numeric[c] else "str") for c in columns}}
    tmp = destination.with_name(f".{destination.stem}.{uuid.uuid4().hex[:8]}.tmp.gpkg")
    written = 0
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f, fiona.open(
            tmp, "w", driver="GPKG", schema=schema, crs=from_epsg(4326), layer=LAYER
        ) as dst:
            batch = []
            for row in csv.DictReader(f):
                try:
                    lon, lat = float(row["longitude"]), float(row["latitude"])
                except ValueError:
                    continue  # a plant without coordinates cannot be placed
                props = {
                    c: (float(row[c]) if numeric[c] and row[c] != "" else (None if row[c] == "" else row[c]))
                    for c in columns
                }
                batch.append({"geometry": {"type": "Point", "coordinates": (lon, lat)}, "properties": props})
                if len(batch) >= 2000:
                    dst.writerecords(batch)
                    written += len(batch)
                    batch = []
            if batch:
                dst.writerecords(batch)
                written += len(batch)
        os.replace(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


class WriPowerplants(VectorClipProcessor):
    """Power plants (points) intersecting the boundary, as a GeoPackage."""

    name = "wri_powerplants"
    version = "version_130"
    metadata = ProcessorMetadata(
        description="World Resources Institute - Global Powerplants",
        dataset="wri_powerplants",
        author="World Resources Institute",
        license=CC_BY_4,
        origin_url="https://datasets.wri.org/dataset/globalpowerplantdatabase",
        formats=("GeoPackage",),
        title="WRI Global Power Plant Database",
        title_long="World Resources Institute Global Power Plant Database (version 1.3.0)",
        summary=(
            "About 35,000 power plants in 167 countries (thermal, nuclear, hydro and renewable "
            "plants) with capacity, primary fuel, commissioning year, owner and reported or "
            "estimated annual generation. Points within the boundary polygon, with every "
            "attribute of the database's CSV."
        ),
        citation=(
            "Global Energy Observatory, Google, KTH Royal Institute of Technology in Stockholm, "
            "Enipedia, World Resources Institute. 2018. Global Power Plant Database. Published on "
            "Resource Watch and Google Earth Engine; http://resourcewatch.org/ https://earthengine.google.com/"
        ),
    )
    source_url = SOURCE_URL
    source_sha1: str | None = SOURCE_SHA1
    layers = (LAYER,)
    output_layer = LAYER
    keep_whole = True
    feature_noun = "power plants"
    declared_feature_count = 34_936
    declared_feature_bytes = 520

    def source(self, context: ProcessorContext) -> Path:
        table = context.sources.archive_member(self.source_url, CSV_NAME, sha1=self.source_sha1,
                                               max_bytes=1024**3, progress=(0.0, 5.0))
        context.progress(5, "converting the CSV to points (once)")
        return context.sources.derived(POINTS, [table], lambda target: csv_to_points(table, target),
                                       validate=check_vector)

    def cached_source(self, context: ProcessorContext) -> Path | None:
        return context.sources.cached_derived(POINTS)
