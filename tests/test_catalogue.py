"""The raster catalogue processors end-to-end against generated sources.

Every source file of a processor (140 for STORM, 379 for Aqueduct, 245 inside ISIMIP's zip, ...)
is generated small (a 40x20-pixel world, or 72x36 in Mollweide) and laid out like its origin
under a mirror root, `<root>/<host>/<path>`, served by the loopback origin server of
tests/sources.py (with Range support) and passed as the context's `source_mirror`.
Expected pixels are checked independently of the clipper: output pixel centres are tested against
the EPSG:4326 polygon with shapely (after transforming them back from Mollweide for GHSL).
"""
from __future__ import annotations

import hashlib
import itertools
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_bounds
from rasterio.warp import transform as transform_points
from shapely import vectorized
from shapely.geometry import MultiPolygon, Polygon, box, mapping

from processors.base import Boundary, ProcessorContext
from processors.builtin.isimp_drought import IsimipDrought
from processors.builtin.jrc_ghsl import JrcGhslBuiltC, JrcGhslPopulation
from processors.builtin.natural_earth_raster import NaturalEarthRaster
from processors.builtin.storm import StormGlobalMosaics
from processors.builtin.wri_aqueduct import WriAqueduct
from processors.catalogue import RasterCatalogueProcessor
from processors.errors import SourceCorrupt, SourceUnavailable
from processors.fetch import mirror_url
from processors.outputs import file_facts
from processors.raster import BoundaryClipper
from processors.registry import ProcessorRegistry
from sources import MOLLWEIDE_X, MOLLWEIDE_Y, OriginServer  # tests/ is on sys.path

# Concave; edges off the 9-degree pixel centres of the 40x20 test grid; the window's top-right
# corner lies outside the polygon, so the output has masked pixels.
POLYGON = Polygon([(-30.1, -20.1), (50.1, -20.1), (50.1, 10.1), (10.1, 10.1), (10.1, 40.1), (-30.1, 40.1)])
BOUNDARY = Boundary(
    name="testland",
    name_long="Testland",
    geometry=mapping(MultiPolygon([POLYGON])),
    envelope=mapping(box(*POLYGON.bounds)),
)
WORLD = (-180.0, -90.0, 180.0, 90.0)
MOLLWEIDE = (-MOLLWEIDE_X, -MOLLWEIDE_Y, MOLLWEIDE_X, MOLLWEIDE_Y)
NODATA = -999

EXPECTED_COUNTS = {
    NaturalEarthRaster: 1,
    StormGlobalMosaics: 140,
    WriAqueduct: 379,
    IsimipDrought: 245,
    JrcGhslPopulation: 1,
    JrcGhslBuiltC: 2,
}
CATALOGUE = list(EXPECTED_COUNTS)


# --------------------------------------------------------------------------- helpers


def write_tif(path: Path, *, seed: int = 0, crs: str = "EPSG:4326", bounds=WORLD, width: int = 40,
              height: int = 20, rgb: bool = False) -> Path:
    """A small tiled GeoTIFF whose values depend on position and `seed` (never the nodata)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, cols = np.mgrid[0:height, 0:width]
    if rgb:  # like NE2_50M_SR: 3 x uint8, no nodata
        data = np.stack([((rows * 7 + cols * 3 + seed + b) % 250).astype("uint8") for b in range(3)])
        extra = dict(dtype="uint8", count=3, nodata=None)
    else:
        data = ((rows * 7 + cols * 3 + seed * 11) % 20000).astype("int16")[None]
        extra = dict(dtype="int16", count=1, nodata=NODATA)
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, crs=crs,
        transform=from_bounds(*bounds, width, height), tiled=True, blockxsize=256, blockysize=256,
        compress="DEFLATE", **extra,
    ) as dst:
        dst.write(data)
    return path


def build_mirror(root: Path, cls: type[RasterCatalogueProcessor], **tif_kwargs) -> dict[str, Path]:
    """Write every source of `cls` under `root` laid out like its origin; return {part or name: tif}.

    Archived members go into the archive under a nested folder named after the archive stem,
    as ISIMIP's zip does (members are found by name)."""
    made: dict[str, Path] = {}
    archives: dict[str, list] = {}
    staging = root.parent / f"{root.name}-tifs"
    for seed, src in enumerate(cls.raster_sources()):
        key = src.part or src.filename
        if src.is_archive:
            tif = write_tif(staging / src.filename, seed=seed, **tif_kwargs)
            archives.setdefault(src.url, []).append((src, tif))
        else:
            tif = write_tif(Path(mirror_url(src.url, str(root))), seed=seed, **tif_kwargs)
        made[key] = tif
    for url, members in archives.items():
        target = Path(mirror_url(url, str(root)))
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(target.name).stem
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for src, tif in members:
                zf.write(tif, src.member if "/" in (src.member or "") else f"{folder}/{src.filename}")
    return made


def make_context(tmp_path: Path, mirror: str, source_dir: Path | None = None, run: str = "run"):
    dirs = {"output_dir": tmp_path / run / "out", "processing_dir": tmp_path / run / "tmp",
            "source_dir": source_dir or tmp_path / "sources"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    reports: list[tuple[float, str]] = []
    ctx = ProcessorContext(**dirs, source_mirror=mirror, report=lambda p, s: reports.append((p, s)))
    return ctx, reports


def check_pixels(source: Path, output: Path) -> int:
    """Inside-polygon pixels equal the source, outside are nodata; return the inside count."""
    with rasterio.open(source) as src, rasterio.open(output) as out:
        assert out.crs == src.crs
        assert out.res == pytest.approx(src.res)
        col_off = round((out.transform.c - src.transform.c) / src.transform.a)
        row_off = round((out.transform.f - src.transform.f) / src.transform.e)
        got = out.read()
        want = src.read(window=((row_off, row_off + out.height), (col_off, col_off + out.width)))
        nodata = out.nodata
        rows, cols = np.mgrid[0:out.height, 0:out.width]
        xs, ys = out.transform * (cols + 0.5, rows + 0.5)
        if out.crs.to_epsg() != 4326:
            lon, lat = transform_points(out.crs, "EPSG:4326", xs.ravel(), ys.ravel())
            xs, ys = np.asarray(lon).reshape(xs.shape), np.asarray(lat).reshape(ys.shape)
        inside = vectorized.contains(POLYGON, xs, ys)
        assert inside.any() and (~inside).any()
        for band_got, band_want in zip(got, want):
            assert np.array_equal(band_got[inside], band_want[inside])
            assert (band_got[~inside] == nodata).all()
        return int(inside.sum())


def expected_name(cls, part: str | None) -> str:
    return "-".join(p for p in (cls.name, cls.version, part, BOUNDARY.name) if p) + ".tif"


def run_end_to_end(tmp_path: Path, cls, mirror_root: Path, made: dict[str, Path], pick: str | None):
    with OriginServer(mirror_root) as server:
        ctx, reports = make_context(tmp_path, server.url)
        output = cls().generate(BOUNDARY, ctx)
    sources = cls.raster_sources()
    expected = next(EXPECTED_COUNTS[c] for c in cls.__mro__ if c in EXPECTED_COUNTS)
    assert len(sources) == expected == cls.total_expected_files()
    assert output.format == "GeoTIFF"
    assert output.files == [expected_name(cls, s.part) for s in sources]
    assert sorted(p.name for p in ctx.output_dir.iterdir()) == sorted(output.files)
    # one request per distinct origin file: archives are fetched once for all their members
    assert sum(server.requests.values()) == len({s.url for s in sources})
    percents = [p for p, _ in reports]
    assert percents == sorted(percents) and percents[-1] == 100
    key = pick if pick is not None else next(iter(made))
    part = next(s.part for s in sources if (s.part or s.filename) == key)
    check_pixels(made[key], ctx.output_dir / expected_name(cls, part))
    return output, ctx


# --------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("cls", CATALOGUE, ids=lambda c: c.full_name())
def test_metadata_is_complete(cls):
    meta = cls.metadata
    for field in ("description", "dataset", "author", "origin_url", "title", "title_long", "summary", "citation"):
        assert getattr(meta, field), f"{cls.full_name()}: empty {field}"
    assert meta.license.name and meta.license.path.startswith("https://") and meta.license.title
    assert meta.formats == ("GeoTIFF",)
    assert "Aqueduct" not in meta.description or cls is WriAqueduct  # the STORM copy-paste is gone
    assert cls.full_name() in ProcessorRegistry.discover().names()
    parts = [s.part for s in cls.raster_sources()]
    assert len(set(parts)) == len(parts) == EXPECTED_COUNTS[cls]
    assert (parts == [None]) == (EXPECTED_COUNTS[cls] == 1)


def test_declared_layouts_follow_the_origins():
    storm = [s.url for s in StormGlobalMosaics.raster_sources()]
    assert storm[0] == "https://zenodo.org/record/7438145/files/STORM_FIXED_RETURN_PERIODS_constant_10_YR_RP.tif"
    assert "https://zenodo.org/record/7438145/files/STORM_FIXED_RETURN_PERIODS_CMCC-CM2-VHR4_10000_YR_RP.tif" in storm
    aq = {s.filename for s in WriAqueduct.raster_sources()}
    for name in ("inunriver_historical_000000000WATCH_1980_rp00002.tif", "inunriver_rcp8p5_MIROC-ESM-CHEM_2080_rp01000.tif",
                 "inunriver_rcp4p5_00000NorESM1-M_2080_rp00250.tif", "inunriver_rcp4p5_0000GFDL-ESM2M_2030_rp00100.tif",
                 "inuncoast_historical_wtsub_hist_rp0001_5.tif", "inuncoast_historical_wtsub_2080_rp0050_0.tif",
                 "inuncoast_rcp8p5_wtsub_2050_rp1000_0.tif"):
        assert name in aq
    assert not any("nosub" in n or "perc_" in n for n in aq)
    assert {s.url.rsplit("/", 1)[0] for s in WriAqueduct.raster_sources()} == {
        "http://wri-projects.s3.amazonaws.com/AqueductFloodTool/download/v2"}
    isimip = IsimipDrought.raster_sources()
    assert {s.url for s in isimip} == {"https://zenodo.org/record/7732393/files/lange2020_expected_occurrence.zip"}
    names = {s.filename for s in isimip}
    assert "lange2020_pcr-globwb_ipsl-cm5a-lr_ewembi_historical_histsoc_co2_led_global_annual_1861_2005_baseline_occurrence.tif" in names
    assert "lange2020_hwmid-humidex_hadgem2-es_ewembi_rcp26_nosoc_co2_leh_global_annual_2006_2099_2080_occurrence.tif" in names
    assert sum("_leh_" in n for n in names) == 28 and sum("_mpi-hm_" in n for n in names) == 21
    (ne,) = NaturalEarthRaster.raster_sources()
    assert ne.url.endswith("/download/50m/raster/NE2_50M_SR.zip") and ne.member == "NE2_50M_SR/NE2_50M_SR.tif"
    built = JrcGhslBuiltC.raster_sources()
    assert [s.part for s in built] == ["GHS_BUILT_C_MSZ_E2018_GLOBE_R2022A_54009_10_V1_0",
                                       "GHS_BUILT_C_FUN_E2018_GLOBE_R2022A_54009_10_V1_0"]
    assert built[0].member_sha1 == "5bdc5a6036f72d119745c02b940cbbadbb881d66"


# --------------------------------------------------------------------------- end to end


def test_storm_140_files_and_cache_across_runs(tmp_path, raster_mirror):
    root, made = raster_mirror(StormGlobalMosaics)
    pick = "STORM_FIXED_RETURN_PERIODS_HadGEM3-GC31-HM_700_YR_RP"
    with OriginServer(root) as server:
        first, _ = make_context(tmp_path, server.url, run="first")
        out1 = StormGlobalMosaics().generate(BOUNDARY, first)
        second, _ = make_context(tmp_path, server.url, run="second")
        out2 = StormGlobalMosaics().generate(BOUNDARY, second)
    assert len(out1.files) == 140 and out2.files == out1.files
    assert out1.files[0] == "storm-global_mosaics_version_1-STORM_FIXED_RETURN_PERIODS_constant_10_YR_RP-testland.tif"
    # each source downloaded exactly once over both runs: the second run used the cache
    assert len(server.requests) == 140 and set(server.requests.values()) == {1}
    check_pixels(made[pick], second.output_dir / expected_name(StormGlobalMosaics, pick))


def test_wri_aqueduct_379_files(tmp_path, raster_mirror):
    root, made = raster_mirror(WriAqueduct)
    out, _ = run_end_to_end(tmp_path, WriAqueduct, root, made, "inuncoast_rcp4p5_wtsub_2030_rp0001_5")
    assert len(out.files) == 379


def test_isimip_245_files_from_one_nested_zip(tmp_path, raster_mirror):
    root, made = raster_mirror(IsimipDrought)
    pick = "lange2020_mpi-hm_miroc5_ewembi_rcp60_2005soc_co2_led_global_annual_2006_2099_2050_occurrence"
    out, ctx = run_end_to_end(tmp_path, IsimipDrought, root, made, pick)
    assert len(out.files) == 245
    with zipfile.ZipFile(Path(mirror_url(IsimipDrought.raster_sources()[0].url, str(root)))) as zf:
        assert all(n.startswith("lange2020_expected_occurrence/") for n in zf.namelist())


def test_natural_earth_raster_rgb(tmp_path):
    root = tmp_path / "mirror"
    made = build_mirror(root, NaturalEarthRaster, rgb=True, width=360, height=180)
    out, ctx = run_end_to_end(tmp_path, NaturalEarthRaster, root, made, None)
    assert out.files == ["natural_earth_raster-version_1-testland.tif"]
    with rasterio.open(ctx.output_dir / out.files[0]) as ds:
        assert ds.count == 3 and ds.crs.to_epsg() == 4326 and ds.nodata == 255


def test_jrc_ghsl_population_stays_in_mollweide(tmp_path):
    root = tmp_path / "mirror"
    made = build_mirror(root, JrcGhslPopulation, crs="ESRI:54009", bounds=MOLLWEIDE, width=72, height=36)
    out, ctx = run_end_to_end(tmp_path, JrcGhslPopulation, root, made, None)
    assert out.files == ["jrc_ghsl_population-r2022_epoch2020_1km-testland.tif"]
    assert file_facts(ctx.output_dir / out.files[0]).crs == "ESRI:54009"
    with rasterio.open(ctx.output_dir / out.files[0]) as ds:
        assert ds.crs == rasterio.crs.CRS.from_user_input("ESRI:54009")


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_jrc_ghsl_built_c_two_zips_with_member_hashes(tmp_path):
    root = tmp_path / "mirror"
    made = build_mirror(root, JrcGhslBuiltC, crs="ESRI:54009", bounds=MOLLWEIDE, width=72, height=36)

    class SyntheticBuiltC(JrcGhslBuiltC):  # the real member SHA-1s, swapped for the synthetic files'
        sources = tuple(replace(s, member_sha1=_sha1(made[s.part])) for s in JrcGhslBuiltC.sources)

    out, ctx = run_end_to_end(tmp_path, SyntheticBuiltC, root, made, "GHS_BUILT_C_FUN_E2018_GLOBE_R2022A_54009_10_V1_0")
    assert out.files == [
        "jrc_ghsl_built_c-r2022_epoch2018_10m_mszfun-GHS_BUILT_C_MSZ_E2018_GLOBE_R2022A_54009_10_V1_0-testland.tif",
        "jrc_ghsl_built_c-r2022_epoch2018_10m_mszfun-GHS_BUILT_C_FUN_E2018_GLOBE_R2022A_54009_10_V1_0-testland.tif",
    ]
    for name in out.files:
        with rasterio.open(ctx.output_dir / name) as ds:
            assert ds.crs == rasterio.crs.CRS.from_user_input("ESRI:54009")


def test_member_hash_mismatch_is_refused(tmp_path):
    """The real (declared) SHA-1 does not match a synthetic member: SourceCorrupt, nothing kept."""
    root = tmp_path / "mirror"
    build_mirror(root, JrcGhslBuiltC, crs="ESRI:54009", bounds=MOLLWEIDE, width=72, height=36)
    ctx, _ = make_context(tmp_path, str(root))  # a folder mirror
    with pytest.raises(SourceCorrupt, match="GHS_BUILT_C_MSZ_E2018_GLOBE_R2022A_54009_10_V1_0.tif.*sha1"):
        JrcGhslBuiltC().generate(BOUNDARY, ctx)
    assert not any(ctx.output_dir.iterdir())
    assert not list(ctx.source_dir.rglob("*.tif"))


def test_wrong_crs_is_refused(tmp_path):
    root = tmp_path / "mirror"
    build_mirror(root, JrcGhslPopulation)  # EPSG:4326 instead of Mollweide
    ctx, _ = make_context(tmp_path, str(root))
    with pytest.raises(SourceCorrupt, match="expected ESRI:54009"):
        JrcGhslPopulation().generate(BOUNDARY, ctx)


# --------------------------------------------------------------------------- failures


class FewStorm(StormGlobalMosaics):
    sources = StormGlobalMosaics.sources[:6]



def test_missing_source_names_the_url_and_leaves_no_output(tmp_path):
    root = tmp_path / "mirror"
    build_mirror(root, FewStorm)
    missing = FewStorm.sources[3]
    Path(mirror_url(missing.url, str(root))).unlink()
    with OriginServer(root) as server:
        ctx, _ = make_context(tmp_path, server.url)
        with pytest.raises(SourceUnavailable) as err:
            FewStorm().generate(BOUNDARY, ctx)
    assert missing.url in str(err.value) and "404" in str(err.value)
    assert not any(ctx.output_dir.iterdir())


def test_missing_source_in_folder_mirror(tmp_path):
    root = tmp_path / "mirror"
    build_mirror(root, FewStorm)
    missing = FewStorm.sources[0]
    Path(mirror_url(missing.url, str(root))).unlink()
    ctx, _ = make_context(tmp_path, str(root))
    with pytest.raises(SourceUnavailable, match=missing.url.replace(".", r"\.")):
        FewStorm().generate(BOUNDARY, ctx)


def test_boundary_outside_the_data_is_an_empty_result_after_one_fetch(tmp_path):
    """Empty is a result: every file gets an all-nodata COG on the dataset's grid over the
    boundary's extent, marked empty; the first file showed the miss, the others are not fetched."""
    root = tmp_path / "mirror"
    build_mirror(root, FewStorm, bounds=(100.0, -40.0, 180.0, 0.0), width=16, height=8)  # a regional grid
    with OriginServer(root) as server:
        ctx, _ = make_context(tmp_path, server.url)
        out = FewStorm().generate(BOUNDARY, ctx)
    assert sum(server.requests.values()) == 1  # nothing else was fetched
    assert len(out.files) == len(FewStorm.sources) and all(d.empty for d in out.details)
    assert "No pixel of the dataset lies within the boundary" in out.description
    for name in out.files:
        with rasterio.open(ctx.output_dir / name) as ds:
            assert ds.res == pytest.approx((5.0, 5.0)) and ds.crs.to_epsg() == 4326
            assert ((ds.transform.c - 100.0) / 5.0) % 1 == pytest.approx(0)  # on the source grid
            assert box(*ds.bounds).contains(POLYGON)
            assert (ds.read(1) == NODATA).all()


def test_files_after_the_first_are_clipped_two_at_a_time_into_the_same_files(tmp_path, monkeypatch):
    """One dataset uses both cores: two clip threads work at once (the first two clips in threads
    wait at a barrier that only two simultaneous clips pass; one thread would time out and fail
    the run), and every output is byte for byte the one a single thread writes."""
    root = tmp_path / "mirror"
    build_mirror(root, FewStorm)
    monkeypatch.setattr(FewStorm, "parallel_clips", 1)
    with OriginServer(root) as server:
        alone, _ = make_context(tmp_path, server.url, run="alone")
        one_thread = FewStorm().generate(BOUNDARY, alone)

        together, threads, calls = threading.Barrier(2, timeout=60), set(), itertools.count()
        clip = BoundaryClipper.clip

        def clip_meeting_another(self, *args, **kwargs):
            if threading.current_thread() is not threading.main_thread() and next(calls) < 2:
                together.wait()
                threads.add(threading.current_thread().name)
            return clip(self, *args, **kwargs)

        monkeypatch.setattr(BoundaryClipper, "clip", clip_meeting_another)
        monkeypatch.setattr(FewStorm, "parallel_clips", 2)
        both, reports = make_context(tmp_path, server.url, run="both")
        two_threads = FewStorm().generate(BOUNDARY, both)
    assert len(threads) == 2
    assert two_threads.files == one_thread.files and len(one_thread.files) == len(FewStorm.sources)
    for name in one_thread.files:
        assert (both.output_dir / name).read_bytes() == (alone.output_dir / name).read_bytes(), name
    percents = [p for p, _ in reports]
    assert percents == sorted(percents) and percents[-1] == 100


def test_cancel_mid_run_leaves_no_output(tmp_path):
    from processors.errors import Cancelled

    root = tmp_path / "mirror"
    build_mirror(root, FewStorm)
    with OriginServer(root) as server:
        ctx, reports = make_context(tmp_path, server.url)
        ctx.is_cancelled = lambda: len(reports) >= 5  # after two files were clipped
        with pytest.raises(Cancelled):
            FewStorm().generate(BOUNDARY, ctx)
    assert not any(ctx.output_dir.iterdir())


def test_antimeridian_boundary_gives_east_and_west_outputs(tmp_path):
    root = tmp_path / "mirror"
    build_mirror(root, FewStorm)
    pacific = MultiPolygon([box(160.1, -30.1, 179.9, -5.1), box(-179.9, -30.1, -160.1, -5.1)])
    boundary = Boundary(name="pacific", name_long="Pacific", geometry=mapping(pacific), envelope=mapping(box(-180, -30.1, 180, -5.1)))
    ctx, _ = make_context(tmp_path, str(root))
    out = FewStorm().generate(boundary, ctx)
    stems = [s.part for s in FewStorm.sources]
    assert out.files == [f"storm-global_mosaics_version_1-{p}-pacific-{side}.tif" for p in stems for side in ("east", "west")]
    for name in out.files[:2]:
        with rasterio.open(ctx.output_dir / name) as ds:
            assert ds.width <= 3  # one side of the antimeridian, never a world-wide strip


def test_outputs_install_as_a_datapackage_resource(tmp_path):
    """The backend's package store records sha256, bytes, licence, sources and citation."""
    import hashlib

    from backend.packages import PackageStore

    root = tmp_path / "mirror"
    build_mirror(root, FewStorm)
    ctx, _ = make_context(tmp_path, str(root))
    out = FewStorm().generate(BOUNDARY, ctx)
    sizes = {name: (ctx.output_dir / name).stat().st_size for name in out.files}
    digests = {name: hashlib.sha256((ctx.output_dir / name).read_bytes()).hexdigest() for name in out.files}
    store = PackageStore(tmp_path / "packages")
    resource = store.install_dataset({"name": BOUNDARY.name, "name_long": BOUNDARY.name_long}, FewStorm, out, ctx.output_dir)
    assert [p.rsplit("/", 1)[1] for p in resource["path"]] == out.files
    assert resource["hashes"] == [digests[n] for n in out.files] and resource["hash_algorithm"] == "sha256"
    assert resource["bytes"] == sum(sizes.values()) and resource["format"] == "GeoTIFF"
    assert resource["license"] == {"name": "CC0-1.0", "path": "https://creativecommons.org/publicdomain/zero/1.0/",
                                   "title": FewStorm.metadata.license.title}
    assert resource["sources"] == [{"title": FewStorm.metadata.title_long, "path": "https://doi.org/10.5281/zenodo.7438145"}]
    assert "Bloemendaal" in resource["citation"] and "crs" not in resource
    assert [f["crs"] for f in resource["files"]] == ["EPSG:4326"] * len(out.files)
