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

import json
import os
import shutil
import uuid
from pathlib import Path

from processors.base import Boundary, Processor, ProcessorContext, ProcessorMetadata, ProcessorOutput
from processors.catalogue import NATURAL_EARTH_TERMS
from processors.errors import SourceCorrupt
from processors.fetch import cache_path, extract_archive, fetch, file_lock
from processors.vector import clip_vector_into_output

SOURCE_URL = "https://www.naturalearthdata.com/http//www.naturalearthdata.com/download/10m/cultural/ne_10m_roads.zip"
SHAPEFILE = "ne_10m_roads.shp"
LAYER = "ne_10m_roads"
_MARKER = ".extracted.json"


def fetch_and_extract(url: str, member: str, context: ProcessorContext, *, max_bytes: int = 2 * 1024**3) -> Path:
    """Fetch the archive at `url` into the source cache once, extract it once into `<zip>.d/`
    (locked, marker file), and return the extracted `member` (found by name anywhere inside)."""
    archive = fetch(
        url,
        cache_path(url, Path(context.source_dir)),
        mirror=context.options.get("source_mirror") or None,
        check_cancelled=context.check_cancelled,
    )
    folder = archive.with_name(archive.name + ".d")
    marker = folder / _MARKER
    with file_lock(folder.with_name(folder.name + ".lock"), context.check_cancelled):
        stamp = {"archive": archive.name, "size": archive.stat().st_size, "mtime": archive.stat().st_mtime}
        if not (marker.is_file() and json.loads(marker.read_text()) == stamp):
            if folder.exists():  # stale or interrupted: start again
                shutil.rmtree(folder)
            extract_archive(archive, folder, max_bytes=max_bytes, check_cancelled=context.check_cancelled)
            tmp = folder / f".marker-{uuid.uuid4().hex[:8]}"
            tmp.write_text(json.dumps(stamp))
            os.replace(tmp, marker)
    found = [p for p in folder.rglob(member) if p.is_file()]
    if len(found) != 1:
        raise SourceCorrupt(f"{url}: expected one {member} in the archive, found {len(found)}")
    return found[0]


def cached_member(url: str, member: str, context: ProcessorContext) -> Path | None:
    """The extracted `member` when the archive was already fetched and extracted; else None."""
    folder = cache_path(url, Path(context.source_dir))
    folder = folder.with_name(folder.name + ".d")
    if not (folder / _MARKER).is_file():
        return None
    return next((p for p in folder.rglob(member) if p.is_file()), None)


class NaturalEarthVector(Processor):
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
    #: Declared facts about the real source, for estimates before it is downloaded.
    declared_feature_count = 56_601
    declared_feature_bytes = 420  # mean GeoPackage bytes per road feature (geometry + attributes)

    def source(self, context: ProcessorContext) -> Path:
        return fetch_and_extract(self.source_url, SHAPEFILE, context)

    def cached_source(self, context: ProcessorContext) -> Path | None:
        return cached_member(self.source_url, SHAPEFILE, context)

    def generate(self, boundary: Boundary, context: ProcessorContext) -> ProcessorOutput:
        context.progress(0, "fetching ne_10m_roads.zip")
        shapefile = self.source(context)
        filename = self.output_filename(boundary, "gpkg")
        result = clip_vector_into_output(
            shapefile,
            layer=None,
            boundary=boundary,
            context=context,
            filename=filename,
            output_layer=LAYER,
            progress_range=(5, 95),
        )
        context.progress(100, f"wrote {result.feature_count} roads")
        return ProcessorOutput(
            files=[filename],
            format="GPKG",
            description=(
                f"{self.metadata.title} clipped to {boundary.name_long or boundary.name}: "
                f"{result.feature_count} roads (layer {result.layer}, {result.geometry_type}, {result.crs})"
            ),
            extra={"layer": result.layer, "feature_count": result.feature_count},
        )

    def estimate(self, boundary: Boundary, context: ProcessorContext) -> dict:
        from processors.estimate import estimate_vector

        return estimate_vector(
            self, boundary, self.cached_source(context), layers=[None],
            declared_features=self.declared_feature_count, declared_feature_bytes=self.declared_feature_bytes,
        )
