"""One way to put an EPSG:4326 boundary into a source's CRS, for clipping and for estimates.

The boundary, never the data, is reprojected: its edges are first densified (no segment longer
than DENSIFY_MAX_SEGMENT_DEGREES) so that they follow the projection's curvature (a straight
edge in degrees is a curve in Mollweide), then transformed; an invalid result is repaired with
`buffer(0)`. A boundary already in EPSG:4326 is returned unchanged.
"""
from __future__ import annotations

import math

from rasterio.crs import CRS
from rasterio.warp import transform_geom
from shapely.geometry import MultiPolygon, Polygon, mapping, shape

#: Longest boundary edge, in degrees, before the boundary is reprojected into another CRS.
DENSIFY_MAX_SEGMENT_DEGREES = 0.1
EPSG_4326 = CRS.from_epsg(4326)


def boundary_in_crs(boundary, crs):
    """The (Multi)Polygon `boundary` (EPSG:4326) in `crs` (a rasterio CRS, WKT or `AUTH:CODE`)."""
    target = crs if isinstance(crs, CRS) else CRS.from_user_input(crs)
    if target == EPSG_4326:
        return boundary
    dense = densify(boundary, DENSIFY_MAX_SEGMENT_DEGREES)
    projected = shape(transform_geom(EPSG_4326, target, mapping(dense)))
    return projected if projected.is_valid else projected.buffer(0)


def densify(geom, max_segment: float):
    """`geom` with points added so that no edge is longer than `max_segment`."""

    def ring(coords):
        coords = list(coords)
        out = [coords[0]]
        for (x0, y0), (x1, y1) in zip((c[:2] for c in coords), (c[:2] for c in coords[1:])):
            n = int(math.ceil(math.hypot(x1 - x0, y1 - y0) / max_segment))
            for i in range(1, n):
                out.append((x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n))
            out.append((x1, y1))
        return out

    def polygon(p):
        return Polygon(ring(p.exterior.coords), [ring(r.coords) for r in p.interiors])

    if isinstance(geom, MultiPolygon):
        return MultiPolygon([polygon(p) for p in geom.geoms])
    return polygon(geom)
