"""processors.raster.clip_raster_to_cog on small synthetic GeoTIFFs (tests/sources.py).

Expected pixels are computed independently of the clipper: each output pixel centre is tested
against the EPSG:4326 boundary with shapely (after transforming the centres back to EPSG:4326 for
Mollweide sources), and its value is compared with the source pixel at the same place.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as transform_points
from shapely import vectorized
from shapely.geometry import MultiPolygon, Polygon, box

from processors import raster
from processors.errors import Cancelled, NoDataForBoundary, SourceCorrupt, SourceUnavailable
from processors.raster import (
    BoundaryClipper,
    RasterClipResult,
    clip_raster_to_cog,
    default_nodata,
    read_window_only,
    split_antimeridian,
)
from sources import synthetic_raster  # tests/sources.py: pytest puts tests/ on sys.path

# Concave, two parts, edges off the 0.25-degree pixel centres; covers the nodata hole of the
# synthetic rasters (rows/cols 300..340 = lon -105..-95, lat 15..5 on the 0.25-degree grid).
BOUNDARY = MultiPolygon([
    Polygon([(-112.1, 1.1), (-88.1, 1.1), (-88.1, 9.1), (-100.1, 9.1), (-100.1, 21.1), (-112.1, 21.1)]),
    Polygon([(-80.1, -10.1), (-60.1, -10.1), (-70.1, 6.1)]),
])
FIJI = MultiPolygon([box(177.05, -19.05, 179.999, -16.05), box(-180, -17.05, -178.05, -15.05)])
EDGE_TOLERANCE_DEGREES = 0.02


def check_clip(source: Path, result: RasterClipResult, boundary, path: Path | None = None) -> int:
    """Inside pixels equal the source, outside pixels are nodata; return the inside count."""
    path = path or result.paths[0]
    with rasterio.open(source) as src, rasterio.open(path) as out:
        assert out.crs == src.crs
        assert out.res == pytest.approx(src.res, rel=1e-12)
        assert out.dtypes == src.dtypes[: out.count]
        col_off = (out.transform.c - src.transform.c) / src.transform.a
        row_off = (out.transform.f - src.transform.f) / src.transform.e
        assert col_off == pytest.approx(round(col_off), abs=1e-6) and row_off == pytest.approx(round(row_off), abs=1e-6)
        col_off, row_off = round(col_off), round(row_off)
        got = out.read()
        want = src.read(window=((row_off, row_off + out.height), (col_off, col_off + out.width)))
        nodata = out.nodata
        assert nodata == result.nodata or (math.isnan(nodata) and math.isnan(result.nodata))

        rows, cols = np.mgrid[0:out.height, 0:out.width]
        xs, ys = out.transform * (cols + 0.5, rows + 0.5)
        if out.crs.to_epsg() != 4326:
            lon, lat = transform_points(out.crs, "EPSG:4326", xs.ravel(), ys.ravel())
            xs, ys = np.asarray(lon).reshape(xs.shape), np.asarray(lat).reshape(ys.shape)
        inside = vectorized.contains(boundary, xs, ys)
        near_edge = vectorized.contains(boundary.boundary.buffer(EDGE_TOLERANCE_DEGREES), xs, ys)
        sure_in, sure_out = inside & ~near_edge, ~inside & ~near_edge
        assert sure_in.sum() > 0

        def is_nodata(a):
            return np.isnan(a) if np.isnan(nodata) else a == nodata

        for band in range(out.count):
            g, w = got[band], want[band]
            np.testing.assert_array_equal(g[sure_in], w[sure_in])
            assert is_nodata(g[sure_out]).all()
        return int(sure_in.sum())


@pytest.mark.parametrize(
    "dtype,crs,nodata",
    [
        ("int16", "EPSG:4326", -999),
        ("uint8", "EPSG:4326", None),
        ("float32", "EPSG:4326", None),
        ("float32", "EPSG:4326", -3.4e38),
        ("int16", "ESRI:54009", -999),
        ("uint8", "ESRI:54009", None),
    ],
)
def test_inside_pixels_equal_the_source_and_outside_are_nodata(tmp_path, dtype, crs, nodata):
    source = synthetic_raster(tmp_path / "src.tif", dtype=dtype, crs=crs, nodata=nodata)
    result = clip_raster_to_cog(source, boundary=BOUNDARY, destination=tmp_path / "out" / "clip.tif")
    assert result.paths == [tmp_path / "out" / "clip.tif"]
    assert result.dtype == dtype and result.crs == crs
    expected_nodata = float(np.dtype(dtype).type(nodata)) if nodata is not None else default_nodata(dtype)
    assert result.nodata == expected_nodata or (math.isnan(result.nodata) and math.isnan(expected_nodata))
    check_clip(source, result, BOUNDARY)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.tif"]  # no temporary left


def test_default_nodata_per_dtype():
    assert default_nodata("int16") == -32768 and default_nodata("uint8") == 255
    assert default_nodata("uint16") == 65535 and math.isnan(default_nodata("float32"))


def test_source_nodata_inside_the_polygon_stays_nodata(tmp_path):
    source = synthetic_raster(tmp_path / "src.tif", dtype="int16", nodata=-999)
    result = clip_raster_to_cog(source, boundary=BOUNDARY, destination=tmp_path / "clip.tif")
    with rasterio.open(result.paths[0]) as out:
        # lon -102, lat 10 is inside the L-shaped part and inside the source's nodata hole
        (value,) = next(out.sample([(-102.0, 10.0)]))
    assert value == -999


@pytest.mark.parametrize("compress", ["DEFLATE", "ZSTD"])
def test_output_is_a_cloud_optimised_geotiff(tmp_path, compress):
    source = synthetic_raster(tmp_path / "src.tif", dtype="float32", nodata=None)
    result = clip_raster_to_cog(source, boundary=box(-150.1, -60.1, 50.1, 60.1), destination=tmp_path / "clip.tif", compress=compress)
    with rasterio.open(result.paths[0]) as out:
        assert out.width > 512
        assert out.profile["tiled"] and out.block_shapes[0] == (512, 512)
        assert out.compression.name.upper() == compress
        structure = out.tags(ns="IMAGE_STRUCTURE")
        assert structure["LAYOUT"] == "COG"
        assert structure["PREDICTOR"] == "3"  # floating-point predictor for float32
        assert out.overviews(1), "no overviews"
    int_result = clip_raster_to_cog(
        synthetic_raster(tmp_path / "int.tif"), boundary=box(-150.1, -60.1, 50.1, 60.1), destination=tmp_path / "int-clip.tif", compress=compress
    )
    with rasterio.open(int_result.paths[0]) as out:
        assert out.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
        assert out.overviews(1)


def test_an_output_smaller_than_a_tile_is_one_tile_that_holds_it_with_the_same_pixels(tmp_path, monkeypatch, caplog):
    """The one-tile write path: a window smaller than 512x512 becomes one tile of its own size
    (a multiple of 16, at least the COG driver's 128), ZSTD by default; its pixels and
    georeferencing are those of the padded 512x512 DEFLATE tile written before."""
    source = synthetic_raster(tmp_path / "src.tif", dtype="float32", nodata=None)
    with caplog.at_level(logging.WARNING):  # GDAL's messages reach rasterio's log while a clipper runs
        small = clip_raster_to_cog(source, boundary=BOUNDARY, destination=tmp_path / "small.tif")
        tiny = clip_raster_to_cog(source, boundary=box(-100.1, 10.1, -98.1, 12.1), destination=tmp_path / "tiny.tif")
    assert not caplog.records  # e.g. the COG driver's "unexpected value for BLOCKSIZE" below 128
    with rasterio.open(tiny.paths[0]) as t:
        assert max(t.shape) < 16 and t.block_shapes[0] == (128, 128)
    monkeypatch.setattr(raster, "block_size", lambda width, height: raster.TILE_SIZE)
    padded = clip_raster_to_cog(source, boundary=BOUNDARY, destination=tmp_path / "padded.tif", compress="DEFLATE")
    height, width = small.shape
    side = max(128, -(-max(width, height) // 16) * 16)
    assert 128 < max(width, height) < side + 16 <= 512
    with rasterio.open(small.paths[0]) as a, rasterio.open(padded.paths[0]) as b:
        assert a.block_shapes[0] == (side, side) and b.block_shapes[0] == (512, 512)
        assert a.compression.name.upper() == "ZSTD" and b.compression.name.upper() == "DEFLATE"
        assert a.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and not a.overviews(1)
        assert (a.transform, a.crs, a.shape, a.nodata is None or math.isnan(a.nodata)) == (b.transform, b.crs, b.shape, True)
        np.testing.assert_array_equal(a.read(), b.read())
    assert small.paths[0].stat().st_size < padded.paths[0].stat().st_size


def test_only_the_bounding_box_window_is_written(tmp_path):
    source = synthetic_raster(tmp_path / "src.tif")
    result = clip_raster_to_cog(source, boundary=BOUNDARY, destination=tmp_path / "clip.tif")
    minx, miny, maxx, maxy = BOUNDARY.bounds
    # every pixel whose centre (at k * 0.25 + 0.125 degrees) lies in the bounding box, no other

    def centres(lo, hi):
        return math.floor((hi - 0.125) / 0.25) - math.ceil((lo - 0.125) / 0.25) + 1

    assert result.shape == (centres(miny, maxy), centres(minx, maxx)) == (124, 208)
    left, bottom, right, top = result.bounds
    assert abs(left - minx) <= 0.125 and abs(right - maxx) <= 0.125  # half a pixel at most
    assert abs(bottom - miny) <= 0.125 and abs(top - maxy) <= 0.125
    assert read_window_only(source, BOUNDARY) == result.shape[0] * result.shape[1] * 2


def test_antimeridian_boundary_gives_one_narrow_output_per_side(tmp_path):
    source = synthetic_raster(tmp_path / "src.tif", dtype="int16", nodata=-999)
    result = clip_raster_to_cog(source, boundary=FIJI, destination=tmp_path / "out" / "fiji.tif")
    assert [(o.part, o.path.name) for o in result.outputs] == [("east", "fiji-east.tif"), ("west", "fiji-west.tif")]
    assert not (tmp_path / "out" / "fiji.tif").exists()
    for output in result.outputs:
        assert output.width <= 13 and output.height <= 17  # 3 x 4 degrees at 0.25: far from 1440
        check_clip(source, result, FIJI, output.path)
    east, west = result.outputs
    assert east.bounds[0] >= 177 and east.bounds[2] <= 180
    assert west.bounds[0] >= -180 and west.bounds[2] <= -178


def test_antimeridian_boundary_on_a_mollweide_raster(tmp_path):
    source = synthetic_raster(tmp_path / "src.tif", crs="ESRI:54009", nodata=-999)
    result = clip_raster_to_cog(source, boundary=FIJI, destination=tmp_path / "fiji.tif",
                                part_path=lambda part: tmp_path / f"ds-v1-{part}-fiji.tif")
    assert [o.path.name for o in result.outputs] == ["ds-v1-east-fiji.tif", "ds-v1-west-fiji.tif"]
    for output in result.outputs:
        assert output.width < 50  # the world is 1440 pixels wide
        with rasterio.open(output.path) as out:
            assert (out.read(1) != -999).sum() > 0


def test_split_antimeridian_keeps_ordinary_and_prime_meridian_boundaries_whole():
    assert split_antimeridian(BOUNDARY) == [(None, BOUNDARY)]
    europe = MultiPolygon([box(-10, 40, -1, 50), box(1, 40, 20, 50)])  # both sides of 0, not of 180
    assert split_antimeridian(europe) == [(None, europe)]
    parts = split_antimeridian(FIJI)
    assert [p for p, _ in parts] == ["east", "west"]
    assert parts[0][1].bounds[0] == pytest.approx(177.05) and parts[1][1].bounds[2] == pytest.approx(-178.05)


def test_antimeridian_side_outside_the_raster_gives_one_plain_output(tmp_path):
    source = synthetic_raster(tmp_path / "src.tif", bounds=(170, -30, 180, -10), width=40, height=80)
    result = clip_raster_to_cog(source, boundary=FIJI, destination=tmp_path / "fiji.tif")
    assert result.paths == [tmp_path / "fiji.tif"] and result.outputs[0].part is None
    check_clip(source, result, FIJI)


def test_boundary_missing_the_raster_raises_no_data_for_boundary(tmp_path):
    source = synthetic_raster(tmp_path / "src.tif", bounds=(0, 0, 10, 10), width=40, height=40)
    with pytest.raises(NoDataForBoundary, match="src.tif"):
        clip_raster_to_cog(source, boundary=box(50, 50, 60, 60), destination=tmp_path / "out" / "clip.tif")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_boundary_smaller_than_a_pixel_keeps_the_touched_pixel(tmp_path):
    source = synthetic_raster(tmp_path / "src.tif")
    island = box(10.01, 10.01, 10.05, 10.05)  # inside one 0.25-degree pixel, away from its centre
    result = clip_raster_to_cog(source, boundary=island, destination=tmp_path / "clip.tif")
    assert result.outputs[0].all_touched and result.shape == (1, 1)
    with rasterio.open(source) as src, rasterio.open(result.paths[0]) as out:
        assert out.read(1)[0, 0] == next(src.sample([(10.03, 10.03)]))[0]


def test_unreadable_source_raises_source_unavailable(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"<!DOCTYPE html><html>not a tiff</html>")
    with pytest.raises(SourceUnavailable, match="bad.tif"):
        clip_raster_to_cog(bad, boundary=BOUNDARY, destination=tmp_path / "clip.tif")


def test_cancellation_leaves_no_destination_file(tmp_path):
    source = synthetic_raster(tmp_path / "src.tif")
    out_dir = tmp_path / "out"
    calls = []

    def check():
        calls.append(1)
        if len(calls) >= 3:
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        clip_raster_to_cog(source, boundary=BOUNDARY, destination=out_dir / "clip.tif", strip_rows=10, check_cancelled=check)
    assert list(out_dir.iterdir()) == []


def test_cancellation_after_one_antimeridian_side_removes_it(tmp_path):
    source = synthetic_raster(tmp_path / "src.tif")
    out_dir = tmp_path / "out"
    calls = []

    def check():
        calls.append(1)
        if len(calls) > 4:  # the east side is complete by then (2 strips + 2 checks)
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        clip_raster_to_cog(source, boundary=FIJI, destination=out_dir / "fiji.tif", strip_rows=8, check_cancelled=check)
    assert list(out_dir.iterdir()) == []


def _same_file_content(a: Path, b: Path) -> None:
    """Same pixels at full resolution and in every overview, same georeferencing, nodata, colour
    interpretation, compression, tiling and metadata."""
    from osgeo import gdal

    def described(path: Path) -> dict:
        info = gdal.Info(str(path), format="json")
        for key in ("description", "files"):
            info.pop(key, None)
        return info

    assert described(a) == described(b)
    with rasterio.open(a) as x, rasterio.open(b) as y:
        assert x.overviews(1) == y.overviews(1)
        np.testing.assert_array_equal(x.read(), y.read())
        for factor in x.overviews(1):
            shape = (x.count, x.height // factor, x.width // factor)
            np.testing.assert_array_equal(x.read(out_shape=shape), y.read(out_shape=shape))


@pytest.mark.parametrize("dtype, crs, nodata, bands", [
    ("float32", "ESRI:54009", None, 1), ("int16", "EPSG:4326", -999, 1), ("uint8", "EPSG:4326", None, 3),
])
def test_in_memory_path_and_strips_give_the_same_file(tmp_path, dtype, crs, nodata, bands):
    """A window that fits in one strip is clipped in memory; forcing strips gives the same file.
    Three sources on one grid through one clipper: the second and third reuse the grid's plan and mask."""
    wide = MultiPolygon([box(-170, -60, 170, 60)])  # > 512 pixels wide: the COG gets overviews
    sources = [synthetic_raster(tmp_path / f"src{i}.tif", dtype=dtype, crs=crs, nodata=nodata, bands=bands) for i in range(3)]
    for boundary, name in ((BOUNDARY, "b"), (wide, "wide")):
        with BoundaryClipper(boundary) as clipper:
            lean = [clipper.clip(src, tmp_path / f"{name}-lean{i}.tif") for i, src in enumerate(sources)]
        assert len(clipper._grids) == 1 and len(next(iter(clipper._grids.values())).masks) == 1
        with BoundaryClipper(boundary, strip_rows=7) as clipper:
            strips = [clipper.clip(src, tmp_path / f"{name}-strips{i}.tif") for i, src in enumerate(sources)]
        for a, b in zip(lean, strips):
            assert a.shape == b.shape and a.shape[0] > 7 * 5
            _same_file_content(a.paths[0], b.paths[0])
        if name == "wide":
            with rasterio.open(lean[0].paths[0]) as ds:
                assert ds.overviews(1)  # overviews compared too
        else:  # (check_clip cannot map the wide window's corners out of Mollweide)
            for src, result in zip(sources, lean):
                check_clip(src, result, boundary)


def test_strips_follow_the_progress_and_read_the_same_window(tmp_path):
    source = synthetic_raster(tmp_path / "src.tif", crs="ESRI:54009", dtype="float32", nodata=None)
    progress = []
    strips = clip_raster_to_cog(source, boundary=BOUNDARY, destination=tmp_path / "strips.tif", strip_rows=7,
                                progress=lambda p, s: progress.append(p))
    assert progress[-1] == 100.0 and progress == sorted(progress)
    rows = strips.shape[0]
    assert read_window_only(source, BOUNDARY, strip_rows=7) == read_window_only(source, BOUNDARY) == rows * strips.shape[1] * 4


def test_clipper_refuses_a_source_in_an_unexpected_crs(tmp_path):
    source = synthetic_raster(tmp_path / "src.tif")
    with BoundaryClipper(BOUNDARY) as clipper, pytest.raises(SourceCorrupt, match="src.tif is in EPSG:4326, expected ESRI:54009"):
        clipper.clip(source, tmp_path / "out.tif", expected_crs="ESRI:54009")
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.parametrize("block_rows_per_strip", [2, 1])
def test_strips_follow_the_byte_budget_in_whole_rows_of_source_tiles(tmp_path, monkeypatch, block_rows_per_strip):
    """The strips in memory at once share the budget, in whole rows of the source's 256-row
    tiles (so no tile is decoded twice); a budget smaller than one row of tiles still gives one
    row of tiles per strip."""
    import processors.raster as raster

    source = synthetic_raster(tmp_path / "src.tif", width=2880, height=2880)  # 0.125 x 0.0625 degrees
    seen = []
    real = raster._strips

    def spy(*args, **kwargs):
        for w in real(*args, **kwargs):
            seen.append(w)
            yield w

    monkeypatch.setattr(raster, "_strips", spy)
    boundary = box(-170.1, -80.1, 170.1, 80.1)
    width = 2722  # pixel centres in the box
    budget = raster.STRIPS_IN_MEMORY * block_rows_per_strip * 256 * width * 2 if block_rows_per_strip > 1 else 1000
    result = clip_raster_to_cog(source, boundary=boundary, destination=tmp_path / "clip.tif", strip_bytes=budget)
    assert result.shape[1] == width and len(seen) > 2
    assert sum(int(w.height) for w in seen) == result.shape[0]
    assert max(int(w.height) for w in seen) == block_rows_per_strip * 256
    assert all((int(w.row_off) + int(w.height)) % 256 == 0 for w in seen[:-1])


def test_multiband_source_masks_every_band(tmp_path):
    source = synthetic_raster(tmp_path / "src.tif", dtype="uint8", nodata=None, bands=3)
    result = clip_raster_to_cog(source, boundary=BOUNDARY, destination=tmp_path / "clip.tif")
    assert result.count == 3
    check_clip(source, result, BOUNDARY)


def test_one_pixel_rule_per_boundary_across_the_antimeridian(tmp_path):
    """Fiji with a west side smaller than a pixel: pixel centres would keep the east side and
    nothing of the west; both sides use the touched-pixel rule instead (never one rule per side)."""
    source = synthetic_raster(tmp_path / "src.tif", dtype="int16", nodata=-999)  # 0.25 degree
    fiji = MultiPolygon([box(177.05, -19.05, 179.999, -16.05), box(-179.99, -16.24, -179.96, -16.21)])
    result = clip_raster_to_cog(source, boundary=fiji, destination=tmp_path / "fiji.tif")
    assert [o.part for o in result.outputs] == ["east", "west"]
    assert all(o.all_touched for o in result.outputs)
    east = result.outputs[0]
    assert east.inside_pixels > 12 * 12  # touched keeps the border pixels the centres left out
    assert result.outputs[1].inside_pixels == 1
    ordinary = clip_raster_to_cog(source, boundary=FIJI, destination=tmp_path / "ordinary.tif")
    assert not any(o.all_touched for o in ordinary.outputs)  # both sides have centres: centres


def test_far_apart_parts_get_one_output_per_cluster_not_a_window_of_nodata(tmp_path):
    """France (Natural Earth, with Guiana, the Antilles, Réunion and Mayotte): one window over all
    of it would be 99 % outside the polygon; instead one output per cluster of nearby parts,
    mainland (with Corsica) first, each pixel-exact."""
    from test_estimate import country

    france = country("France").shape()
    assert france.area / box(*france.bounds).area < 0.01
    source = synthetic_raster(tmp_path / "src.tif", width=1440, height=720, holes=False)
    result = clip_raster_to_cog(source, boundary=france, destination=tmp_path / "france.tif")
    assert [o.part for o in result.outputs] == ["part1", "part2", "part3", "part4", "part5"]
    mainland, guiana = result.outputs[0], result.outputs[1]
    assert -6 < mainland.bounds[0] and mainland.bounds[2] < 10 and guiana.bounds[2] < -50
    pixels = sum(o.width * o.height for o in result.outputs)
    single = (france.bounds[2] - france.bounds[0]) * (france.bounds[3] - france.bounds[1]) * 16
    assert pixels < 0.05 * single
    assert mainland.inside_pixels / (mainland.width * mainland.height) > 0.4
    for output in result.outputs[:2]:  # the others are a few pixels, all near the coast
        check_clip(source, result, france, output.path)


def _gdal_nearest_overviews_of(path: Path) -> list[np.ndarray]:
    """The full resolution of `path` put in a GTiff whose NEAREST overviews GDAL builds, with the
    COG's levels: what `path`'s overviews should hold."""
    from osgeo import gdal

    with rasterio.open(path) as ds:
        data = ds.read()
    bands, height, width = data.shape
    factors = raster._overview_levels(width, height)
    ref = gdal.GetDriverByName("GTiff").Create(str(path.with_suffix(".ref.tif")), width, height, bands,
                                              gdal.GDT_Int16 if data.dtype == np.int16 else gdal.GDT_Byte, ["TILED=YES"])
    ref.WriteArray(data)
    ref.BuildOverviews("NEAREST", factors)
    levels = [np.stack([ref.GetRasterBand(b + 1).GetOverview(k).ReadAsArray() for b in range(bands)])
              for k in range(len(factors))]
    ref = None
    return levels


@pytest.mark.parametrize("strip_rows", [None, 37])
@pytest.mark.parametrize("size, bands", [((2100, 700), 1), ((701, 1537), 3), ((2274, 2), 1)])
def test_overviews_are_gdals_nearest_overviews(tmp_path, size, bands, strip_rows):
    """The overviews sampled in memory (in one piece, or strip by strip) hold exactly the pixels
    of GDAL's BuildOverviews("NEAREST"); a window two pixels wide, whose width stops halving, gets
    GDAL's own."""
    from osgeo import gdal

    height, width = size
    dtype = "int16" if bands == 1 else "uint8"
    source = synthetic_raster(tmp_path / "src.tif", dtype=dtype, nodata=None, width=width + 10, height=height + 10,
                              bounds=(0, 0, width + 10, height + 10), bands=bands)
    boundary = Polygon([(5, 5), (5 + width, 5), (5, 5 + height)]) if width > 2 else box(5.2, 5, 6.8, 5 + height)
    result = clip_raster_to_cog(source, boundary=boundary, destination=tmp_path / "clip.tif", strip_rows=strip_rows)
    assert result.shape == (height, width)
    expected = _gdal_nearest_overviews_of(result.paths[0])
    assert expected
    ds = gdal.Open(str(result.paths[0]))
    assert ds.GetRasterBand(1).GetOverviewCount() == len(expected)
    for k, want in enumerate(expected):
        got = np.stack([ds.GetRasterBand(b + 1).GetOverview(k).ReadAsArray() for b in range(bands)])
        np.testing.assert_array_equal(got, want)


def test_tiles_with_no_pixel_inside_are_nodata_in_the_strips_path(tmp_path):
    """The strips' temporary file leaves out the tiles no pixel of the polygon falls in (they
    read as nodata): the COG is the same file as the one made in memory."""
    source = synthetic_raster(tmp_path / "src.tif", width=1440, height=720, nodata=-999)
    triangle = Polygon([(-179, 89), (179, 89), (-179, -89)])  # the lower right tiles are all outside
    lean = clip_raster_to_cog(source, boundary=triangle, destination=tmp_path / "lean.tif")
    strips = clip_raster_to_cog(source, boundary=triangle, destination=tmp_path / "strips.tif", strip_rows=100)
    _same_file_content(lean.paths[0], strips.paths[0])
    with rasterio.open(strips.paths[0]) as out:
        corner = out.read(1, window=((512, out.height), (1024, out.width)))
    assert corner.size and (corner == -999).all()


def test_a_damaged_tile_read_by_a_reading_thread_raises_and_leaves_nothing(tmp_path, monkeypatch):
    """Strips of a large window are read by READ_THREADS threads (each decoding in its own thread,
    with its own dataset handle): a tile overwritten with random bytes still raises
    SourceUnavailable, naming the source, and no output or temporary file is left."""
    import os

    source = synthetic_raster(tmp_path / "src.tif", width=2880, height=1440)  # tiles of 256
    with rasterio.open(source) as ds:  # a tile (column 4, row 2) that the third strip reads
        offset = int(ds.get_tag_item("BLOCK_OFFSET_4_2", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_4_2", "TIFF", bidx=1))
    with open(source, "r+b") as f:
        f.seek(offset)
        f.write(os.urandom(size))
    read = []
    real = raster._read_strip
    monkeypatch.setattr(raster, "_read_strip", lambda *a, **k: (read.append(a[3]), real(*a, **k))[1])
    out_dir = tmp_path / "out"
    with pytest.raises(SourceUnavailable, match="src.tif"):
        clip_raster_to_cog(source, boundary=box(-170.1, -80.1, 170.1, 80.1), destination=out_dir / "clip.tif",
                           strip_bytes=raster.STRIPS_IN_MEMORY * 256 * 2722 * 2)  # strips of 256 rows
    assert len(read) >= 3 and all(int(w.height) <= 256 for w in read)
    assert list(out_dir.iterdir()) == []
