"""WRI Global Power Plant Database v1.3.0: CSV with coordinates -> points, kept whole in the boundary.

The zip (SHA-1 declared) holds `global_power_plant_database.csv`. It is converted once into a
point GeoPackage with a spatial index in the source cache (EPSG:4326, one feature per row, every
CSV column kept: columns whose non-empty values all parse as numbers become floats, the others
strings), then points intersecting the boundary polygon are written out.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import uuid
from pathlib import Path

import fiona
from fiona.crs import from_epsg

from processors.base import Boundary, Processor, ProcessorContext, ProcessorMetadata, ProcessorOutput
from processors.catalogue import CC_BY_4
from processors.errors import SourceCorrupt
from processors.fetch import cache_path, extract_archive, fetch, file_lock
from processors.vector import clip_vector_into_output

SOURCE_URL = "https://wri-dataportal-prod.s3.amazonaws.com/manual/global_power_plant_database_v_1_3.zip"
SOURCE_SHA1 = "083f11452efc1ed0e8fb1494f0ce49e5c37718e2"
CSV_NAME = "global_power_plant_database.csv"
LAYER = "global_power_plant_database"


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


class WriPowerplants(Processor):
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

    def _points(self, context: ProcessorContext) -> Path:
        source_dir = Path(context.source_dir)
        archive = fetch(
            self.source_url,
            cache_path(self.source_url, source_dir),
            sha1=self.source_sha1,
            mirror=context.options.get("source_mirror") or None,
            check_cancelled=context.check_cancelled,
        )
        gpkg = archive.with_name("global_power_plant_database.gpkg")
        with file_lock(gpkg.with_name(gpkg.name + ".lock"), context.check_cancelled):
            record = gpkg.with_name(gpkg.name + ".json")
            stamp = {"archive": archive.name, "size": archive.stat().st_size, "mtime": archive.stat().st_mtime}
            if gpkg.is_file() and record.is_file() and json.loads(record.read_text()) == stamp:
                return gpkg
            context.progress(10, "converting the CSV to points")
            folder = Path(context.processing_dir) / "powerplants_zip"
            shutil.rmtree(folder, ignore_errors=True)
            extracted = extract_archive(archive, folder, max_bytes=1024**3, check_cancelled=context.check_cancelled)
            csvs = [p for p in extracted if p.name == CSV_NAME]
            if len(csvs) != 1:
                raise SourceCorrupt(f"{self.source_url}: expected one {CSV_NAME} in the archive, found {len(csvs)}")
            csv_to_points(csvs[0], gpkg)
            record.write_text(json.dumps(stamp))
            shutil.rmtree(folder, ignore_errors=True)
            return gpkg

    declared_feature_count = 34_936
    declared_feature_bytes = 520

    def estimate(self, boundary: Boundary, context: ProcessorContext) -> dict:
        from processors.estimate import estimate_vector

        gpkg = cache_path(self.source_url, Path(context.source_dir)).with_name("global_power_plant_database.gpkg")
        return estimate_vector(
            self, boundary, gpkg if gpkg.is_file() else None, layers=[LAYER],
            declared_features=self.declared_feature_count, declared_feature_bytes=self.declared_feature_bytes,
        )

    def generate(self, boundary: Boundary, context: ProcessorContext) -> ProcessorOutput:
        context.progress(0, "fetching the Global Power Plant Database")
        points = self._points(context)
        filename = self.output_filename(boundary, "gpkg")
        result = clip_vector_into_output(
            points,
            layer=LAYER,
            boundary=boundary,
            context=context,
            filename=filename,
            keep_whole=True,
            output_layer=LAYER,
            progress_range=(20, 95),
            empty_error=f"no power plant of the database lies within boundary {boundary.name!r}",
        )
        context.progress(100, f"wrote {result.feature_count} power plants")
        return ProcessorOutput(
            files=[filename],
            format="GPKG",
            description=(
                f"{self.metadata.title} within {boundary.name_long or boundary.name}: "
                f"{result.feature_count} power plants (points, {result.crs})"
            ),
            extra={"layer": result.layer, "feature_count": result.feature_count},
        )
