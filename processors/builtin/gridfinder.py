"""Gridfinder (Arderne et al. 2020): predicted power lines (vector) and two rasters.

From Zenodo record 3628142: `grid.gpkg` (predicted MV/HV lines, kept whole when they intersect
the boundary, like the predecessor), `targets.tif` (binary: predicted grid-connected locations)
and `lv.tif` (low-voltage line length per cell), both clipped to the polygon as COGs. Three
outputs: `gridfinder-version_1-{grid.gpkg,targets.tif,lv.tif}` with the boundary name. (The
predecessor's `exists()` counted only the two TIFFs against 3 expected files, so it never saw a
finished package; this processor returns all three in one resource.)
"""
from __future__ import annotations

from pathlib import Path

from processors.base import Boundary, Dimension, OutputFile, ProcessorContext, ProcessorMetadata, ProcessorOutput
from processors.catalogue import CC_BY_4, PART, RasterCatalogueProcessor, RasterSource, clip_vector_source
from processors.estimate import RasterGrid, estimate_vector
from processors.sources import check_vector

ZENODO_FILES = "https://zenodo.org/record/3628142/files/"
GRID_URL = ZENODO_FILES + "grid.gpkg"


class Gridfinder(RasterCatalogueProcessor):
    """grid.gpkg (keep-whole lines) + targets.tif + lv.tif."""

    name = "gridfinder"
    version = "version_1"
    metadata = ProcessorMetadata(
        description="Gridfinder predicted power grid lines, grid-connected targets and low-voltage lines, clipped to the boundary",
        dataset="gridfinder",
        author="Arderne, Christopher; Nicolas, Claire; Zorn, Conrad; Koks, Elco E",
        license=CC_BY_4,
        origin_url="https://doi.org/10.5281/zenodo.3628142",
        formats=("GeoPackage", "GeoTIFF"),
        title="Gridfinder",
        title_long="Gridfinder data from 'Predictive mapping of the global power system using open data'",
        summary=(
            "Predicted global medium- and high-voltage power grid lines (grid.gpkg; lines that "
            "intersect the boundary are kept whole), a raster of locations predicted to be "
            "grid-connected (targets.tif) and an estimate of low-voltage line length per cell "
            "(lv.tif), from Arderne et al. (2020), Nature Scientific Data 7:19 "
            "(doi:10.1038/s41597-019-0347-4). Rasters are clipped to the boundary polygon."
        ),
        citation=(
            "Arderne, Christopher, Nicolas, Claire, Zorn, Conrad, & Koks, Elco E. (2020). Data from: "
            "Predictive mapping of the global power system using open data [Data set]. In Nature "
            "Scientific Data (1.1.1, Vol. 7, Number Article 19). Zenodo. "
            "https://doi.org/10.5281/zenodo.3628142"
        ),
    )
    sources = (
        RasterSource(url=ZENODO_FILES + "targets.tif", part="targets",
                     label="Locations predicted to be grid-connected (targets.tif)", dimensions={"layer": "targets"},
                     grid=RasterGrid("EPSG:4326", (-180.0, -60.0, 180.0, 84.0), 43200, 17280, "uint8")),
        RasterSource(url=ZENODO_FILES + "lv.tif", part="lv",
                     label="Low-voltage line length per cell (lv.tif)", dimensions={"layer": "lv"},
                     grid=RasterGrid("ESRI:54009", (-18041000.0, -9000000.0, 18041000.0, 9000000.0), 36082, 18000, "float32")),
    )
    dimensions = (Dimension("layer", "Layer", ("grid", "targets", "lv"), "grid"),)
    grid_label = "Predicted medium- and high-voltage grid lines (grid.gpkg)"
    declared_grid_features = 1_200_000  # predicted MV/HV line segments in grid.gpkg
    declared_grid_feature_bytes = 250
    grid_url = GRID_URL
    output_format = "mixed"

    @classmethod
    def total_expected_files(cls) -> int:
        return len(cls.raster_sources()) + 1

    def estimate(self, boundary: Boundary, context: ProcessorContext) -> dict:
        rasters = super().estimate(boundary, context)
        grid = estimate_vector(
            self, boundary, context.sources.cached(self.grid_url), layers=[None],
            declared_features=self.declared_grid_features, declared_feature_bytes=self.declared_grid_feature_bytes,
        )
        if rasters["bytes"] is None:
            return {"bytes": None, "files": self.total_expected_files(), "method": rasters["method"]}
        return {
            "bytes": rasters["bytes"] + grid["bytes"],
            "files": rasters["files"] + 1,
            "method": f"{rasters['method']}; grid.gpkg: {grid['method']}",
        }

    def generate(self, boundary: Boundary, context: ProcessorContext) -> ProcessorOutput:
        # Rasters first: a boundary outside the data ends the run before the large grid.gpkg.
        rasters = super().generate(boundary, context)
        context.progress(90, "fetching grid.gpkg")
        filename = self.output_filename(boundary, "gpkg", part="grid")
        try:
            grid = context.sources.fetch(self.grid_url, validate=check_vector, progress=(90, 93))
            result = clip_vector_source(grid, context, boundary, filename, keep_whole=True, progress_range=(93, 99))
        except BaseException:
            for name in rasters.files:
                (Path(context.output_dir) / name).unlink(missing_ok=True)
            raise
        context.progress(100, f"wrote {result.feature_count} grid lines and {len(rasters.files)} rasters")
        # Not clipped into parts: shown with the rasters' default part when they were.
        parts = {d.name: d.default for d in rasters.dimensions if d.name == PART}
        grid_detail = OutputFile(name=filename, label=self.grid_label, dimensions={"layer": "grid", **parts},
                                 empty=result.feature_count == 0)
        return ProcessorOutput(
            files=[filename] + rasters.files,
            format=self.output_format,
            description=(
                f"{self.metadata.title} for {boundary.name_long or boundary.name}: "
                f"{result.feature_count} grid lines (GeoPackage) and "
                f"{len(rasters.files)} Cloud-Optimised GeoTIFFs (targets in EPSG:4326, lv in Mollweide)"
            ),
            extra={"grid_features": result.feature_count},
            dimensions=rasters.dimensions,
            details=(grid_detail,) + rasters.details,
            synthetic=context.sources.synthetic,
        )

