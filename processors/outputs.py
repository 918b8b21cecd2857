"""Facts read back from written output files: format, CRS, codec, emptiness, synthetic marker.

The package records what the files *are*, not what a processor believes they are: every file's
CRS in datapackage.json is read from the file itself with GDAL (so a dataset mixing EPSG:4326
and Mollweide rasters, like gridfinder, declares each file's own CRS), and a file carrying the
`SYNTHETIC` marker (GeoTIFF tag or GeoPackage metadata item) makes its resource synthetic.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from osgeo import gdal, osr

#: Name of the GeoTIFF tag / GeoPackage metadata item marking data made from synthetic stand-ins.
SYNTHETIC_TAG = "SYNTHETIC"
#: Lowest `FindMatches` confidence accepted when a CRS carries no authority code (as rasterio).
_MATCH_CONFIDENCE = 70


@dataclass(frozen=True)
class FileFacts:
    format: str | None  # GDAL driver short name ("GTiff", "GPKG", ...), None when GDAL cannot open it
    crs: str | None  # "EPSG:4326", "ESRI:54009", ... (WKT when no authority matches), None without one
    synthetic: bool  # carries the SYNTHETIC marker
    features: int | None  # vector files: features over all layers; None for rasters
    compression: str | None = None  # rasters: GDAL's name of the codec ("ZSTD", "DEFLATE"), None when uncompressed


def crs_name(srs: osr.SpatialReference | None) -> str | None:
    """`AUTHORITY:CODE` of a CRS (looked up when the file's WKT has no identifier), else its WKT."""
    if srs is None:
        return None
    name, code = srs.GetAuthorityName(None), srs.GetAuthorityCode(None)
    if name and code:
        return f"{name}:{code}"
    for match, confidence in srs.FindMatches() or []:
        if confidence >= _MATCH_CONFIDENCE and match.GetAuthorityName(None) and match.GetAuthorityCode(None):
            return f"{match.GetAuthorityName(None)}:{match.GetAuthorityCode(None)}"
    return srs.ExportToWkt()


def file_facts(path: Path) -> FileFacts:
    """What GDAL reads from `path` (raster or vector); a non-geospatial file gives format None."""
    gdal.PushErrorHandler("CPLQuietErrorHandler")  # "not recognised as a supported format" is an answer here
    try:
        ds = gdal.OpenEx(str(path), gdal.OF_RASTER | gdal.OF_VECTOR | gdal.OF_READONLY)
    except RuntimeError:  # when another module turned GDAL exceptions on
        ds = None
    finally:
        gdal.PopErrorHandler()
    if ds is None:
        return FileFacts(format=None, crs=None, synthetic=False, features=None)
    try:
        synthetic = bool(ds.GetMetadataItem(SYNTHETIC_TAG))
        if ds.RasterCount:
            return FileFacts(ds.GetDriver().ShortName, crs_name(ds.GetSpatialRef()), synthetic, None,
                             ds.GetMetadataItem("COMPRESSION", "IMAGE_STRUCTURE"))
        crs, features = None, 0
        for i in range(ds.GetLayerCount()):
            layer = ds.GetLayer(i)
            features += layer.GetFeatureCount()
            crs = crs or crs_name(layer.GetSpatialRef())
        return FileFacts(ds.GetDriver().ShortName, crs, synthetic, features)
    finally:
        ds = None
