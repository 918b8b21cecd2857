"""Build (once) and cache the inputs of bench/bench_processors.py in bench/cache/.

    .venv/bin/python bench/build_inputs.py          # builds whatever is missing

* `global_30s_int16.tif`: 43200x21600 Int16 EPSG:4326 grid (30 arc-seconds), tiled 512, DEFLATE,
  nodata -32768. Values: a smooth field (sines of ~300-pixel wavelength, +-1500) plus a shorter
  wave and 0..29 of uniform noise, so DEFLATE compresses it about as well as a real DEM; where
  the field is < -900 it is nodata (about a fifth of the pixels, in smooth blobs). Written in
  strips of 512 rows (about 44 MB each), so memory stays bounded.
* `multi/tile_NNN.tif`: 120 global 3600x1800 Int16 rasters (6 arc-minutes, like STORM's 140
  files), tiled 256, DEFLATE, the same kind of field with a per-file phase.
* `roads.gpkg` layer `roads`: 2,000,000 LineStrings of 4 vertices (random walks of ~1-3 km steps)
  starting at random land points (a 0.1-degree land mask rasterised from QGIS's world map,
  cells weighted by cos(latitude)), attributes `osm_id` (int) and `highway` (str), GeoPackage
  R*Tree spatial index. Generated as CSV with WKT by numpy and loaded by `ogr2ogr`.
* `Gambia.geojson`, `Kenya.geojson`, `Brazil.geojson`: the boundaries from QGIS's
  `world_map.gpkg` layer `countries` (field NAME), for the GDAL command-line tools.
* `storm-mirror/`: the 140 STORM files laid out like their origin (a source mirror for
  `autopkg serve`), each 3600x1200 Float32 over 60S..60N (STORM's real grid), DEFLATE, tiled
  256, nodata -9999; values: the same kind of field (wind speeds 0..80), a phase per file.
  Synthetic stand-ins, used only to time jobs (bench/bench_jobs.py).
* `boundaries.db`: the boundary store seeded with Natural Earth countries and provinces.
* `sample-mirror/`: the offline sample mirror of every processor (`processors.samples`), for the
  jobs/min mix.

Every file is written under a temporary name and renamed when complete, so an interrupted build
is redone on the next run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / "cache"
WORLD_MAP = Path("/usr/share/qgis/resources/data/world_map.gpkg")
BOUNDARY_NAMES = ("Gambia", "Kenya", "Brazil")

GLOBAL_TIF = CACHE / "global_30s_int16.tif"
MULTI_DIR = CACHE / "multi"
MULTI_COUNT = 120
ROADS_GPKG = CACHE / "roads.gpkg"
ROADS_LAYER = "roads"
ROADS_COUNT = 2_000_000
NODATA = -32768


def log(msg: str) -> None:
    print(f"[build] {msg}", flush=True)


def _field(cols: np.ndarray, rows: np.ndarray, scale: float, phase: float, rng) -> np.ndarray:
    """Smooth field + short wave + noise, Int16, nodata where the smooth part is low."""
    c = cols[None, :].astype(np.float32) * np.float32(scale)
    r = rows[:, None].astype(np.float32) * np.float32(scale)
    v = np.sin(c / 300.0 + phase) * np.cos(r / 420.0 + phase) * 1500.0
    v += np.sin(c / 37.0 + r / 53.0) * 200.0
    out = v.astype(np.int16)
    out += rng.integers(0, 30, size=out.shape, dtype=np.int16)
    out[v < -900] = NODATA
    return out


def build_global(path: Path = GLOBAL_TIF) -> float:
    import rasterio
    from rasterio.transform import from_bounds
    from rasterio.windows import Window

    width, height = 43200, 21600
    tmp = path.with_suffix(".tmp.tif")
    t0 = time.perf_counter()
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="int16", crs="EPSG:4326",
                   transform=from_bounds(-180, -90, 180, 90, width, height), nodata=NODATA, tiled=True,
                   blockxsize=512, blockysize=512, compress="DEFLATE", BIGTIFF="YES", NUM_THREADS="ALL_CPUS")
    rng = np.random.default_rng(0)
    cols = np.arange(width)
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, height, 512):
            n = min(512, height - r0)
            dst.write(_field(cols, np.arange(r0, r0 + n), 1.0, 0.0, rng), 1, window=Window(0, r0, width, n))
    os.replace(tmp, path)
    return time.perf_counter() - t0


def build_multi(folder: Path = MULTI_DIR, count: int = MULTI_COUNT) -> float:
    import rasterio
    from rasterio.transform import from_bounds

    width, height = 3600, 1800
    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    cols, rows = np.arange(width), np.arange(height)
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="int16", crs="EPSG:4326",
                   transform=from_bounds(-180, -90, 180, 90, width, height), nodata=NODATA, tiled=True,
                   blockxsize=256, blockysize=256, compress="DEFLATE")
    for i in range(count):
        path = folder / f"tile_{i:03d}.tif"
        if path.exists():
            continue
        rng = np.random.default_rng(1000 + i)
        tmp = path.with_suffix(".tmp.tif")
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(_field(cols, rows, 12.0, i * 0.05, rng), 1)
        os.replace(tmp, path)
    return time.perf_counter() - t0


def multi_files(folder: Path = MULTI_DIR, count: int = MULTI_COUNT) -> list[Path]:
    return [folder / f"tile_{i:03d}.tif" for i in range(count)]


def _land_cells(res: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Row/col indices of 0.1-degree land cells and their sampling weights (cos latitude)."""
    import fiona
    from rasterio.features import rasterize
    from rasterio.transform import from_bounds

    w, h = int(360 / res), int(180 / res)
    with fiona.open(WORLD_MAP, layer="countries") as src:
        shapes = [(f["geometry"], 1) for f in src if f["properties"].get("NAME") != "Antarctica"]
    mask = rasterize(shapes, out_shape=(h, w), transform=from_bounds(-180, -90, 180, 90, w, h), dtype="uint8")
    rr, cc = np.nonzero(mask)
    lat = 90 - (rr + 0.5) * res
    weights = np.cos(np.radians(lat))
    return np.stack([rr, cc], axis=1), weights / weights.sum()


def build_roads(path: Path = ROADS_GPKG, count: int = ROADS_COUNT) -> float:
    t0 = time.perf_counter()
    res = 0.1
    cells, weights = _land_cells(res)
    rng = np.random.default_rng(7)
    csv = path.with_suffix(".tmp.csv")
    classes = np.array(["motorway", "trunk", "primary", "secondary", "tertiary", "residential", "track"])
    chunk = 250_000
    with open(csv, "w") as out:
        out.write("WKT,osm_id,highway\n")
        for start in range(0, count, chunk):
            n = min(chunk, count - start)
            pick = cells[rng.choice(len(cells), size=n, p=weights)]
            x0 = -180 + (pick[:, 1] + rng.random(n)) * res
            y0 = 90 - (pick[:, 0] + rng.random(n)) * res
            steps = rng.normal(0, 0.015, size=(n, 3, 2))  # ~1.7 km steps
            xs = np.concatenate([x0[:, None], x0[:, None] + np.cumsum(steps[:, :, 0], axis=1)], axis=1)
            ys = np.concatenate([y0[:, None], y0[:, None] + np.cumsum(steps[:, :, 1], axis=1)], axis=1)
            np.clip(xs, -180, 180, out=xs)
            np.clip(ys, -90, 90, out=ys)
            hw = classes[rng.integers(0, len(classes), size=n)]
            lines = [
                f'"LINESTRING ({a:.6f} {b:.6f},{c:.6f} {d:.6f},{e:.6f} {f:.6f},{g:.6f} {hh:.6f})",{start + k},{cls}\n'
                for k, (a, c, e, g, b, d, f, hh, cls) in enumerate(
                    zip(xs[:, 0], xs[:, 1], xs[:, 2], xs[:, 3], ys[:, 0], ys[:, 1], ys[:, 2], ys[:, 3], hw))
            ]
            out.writelines(lines)
    log(f"roads CSV written in {time.perf_counter() - t0:.1f} s; loading with ogr2ogr")
    tmp = path.with_suffix(".tmp.gpkg")
    tmp.unlink(missing_ok=True)
    subprocess.run(
        ["ogr2ogr", "-f", "GPKG", str(tmp), str(csv), "-nln", ROADS_LAYER, "-a_srs", "EPSG:4326",
         "-nlt", "LINESTRING", "-gt", "65536", "-oo", "GEOM_POSSIBLE_NAMES=WKT", "-oo", "KEEP_GEOM_COLUMNS=NO",
         "-oo", "AUTODETECT_TYPE=YES", "-lco", "SPATIAL_INDEX=YES", "-lco", "FID=fid"],
        check=True)
    csv.unlink()
    os.replace(tmp, path)
    return time.perf_counter() - t0


STORM_MIRROR = CACHE / "storm-mirror"
BOUNDARIES_DB = CACHE / "boundaries.db"
SAMPLE_MIRROR = CACHE / "sample-mirror"


def storm_files(mirror: Path = STORM_MIRROR) -> list[Path]:
    from processors.builtin.storm import StormGlobalMosaics
    from processors.fetch import mirror_url

    return [Path(mirror_url(src.url, str(mirror))) for src in StormGlobalMosaics.raster_sources()]


def build_storm(mirror: Path = STORM_MIRROR) -> float:
    import rasterio
    from rasterio.transform import from_bounds

    width, height = 3600, 1200
    t0 = time.perf_counter()
    cols, rows = np.arange(width), np.arange(height)
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="float32", crs="EPSG:4326",
                   transform=from_bounds(-180, -60, 180, 60, width, height), nodata=-9999.0, tiled=True,
                   blockxsize=256, blockysize=256, compress="DEFLATE")
    for i, path in enumerate(storm_files(mirror)):
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        field = _field(cols, rows, 12.0, i * 0.05, np.random.default_rng(2000 + i))
        data = np.where(field == NODATA, np.float32(-9999.0), (field.astype(np.float32) + 1530.0) / 40.0)
        tmp = path.with_suffix(".tmp.tif")
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data.astype(np.float32), 1)
        os.replace(tmp, path)
    return time.perf_counter() - t0


def build_boundaries_db(path: Path = BOUNDARIES_DB) -> float:
    from backend.boundaries import BoundaryStore

    t0 = time.perf_counter()
    tmp = path.with_suffix(".tmp.db")
    tmp.unlink(missing_ok=True)
    store = BoundaryStore(tmp)
    store.seed_natural_earth(WORLD_MAP)
    store.close()
    os.replace(tmp, path)
    return time.perf_counter() - t0


def build_sample_mirror(folder: Path = SAMPLE_MIRROR) -> float:
    from processors.samples import build_sample_mirror as build

    t0 = time.perf_counter()
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    build(tmp, world_map_gpkg=WORLD_MAP)
    os.replace(tmp, folder)
    return time.perf_counter() - t0


def ensure_job_inputs() -> dict[str, float]:
    """The inputs of bench/bench_jobs.py; {input: seconds} for what was built now."""
    CACHE.mkdir(parents=True, exist_ok=True)
    built: dict[str, float] = {}
    for name, ready, build in (("storm mirror", lambda: all(p.exists() for p in storm_files()), build_storm),
                               ("boundaries db", BOUNDARIES_DB.exists, build_boundaries_db),
                               ("sample mirror", SAMPLE_MIRROR.exists, build_sample_mirror)):
        if not ready():
            log(f"building the {name} ...")
            built[name] = build()
            log(f"built in {built[name]:.1f} s")
    return built


def boundary_path(name: str) -> Path:
    return CACHE / f"{name}.geojson"


def build_boundaries(names=BOUNDARY_NAMES) -> None:
    import fiona

    with fiona.open(WORLD_MAP, layer="countries") as src:
        found = {f["properties"]["NAME"]: f["geometry"] for f in src if f["properties"].get("NAME") in names}
    for name in names:
        if name not in found:
            raise SystemExit(f"{name} not in {WORLD_MAP} layer countries")
        geometry = found[name]
        geometry = geometry.__geo_interface__ if hasattr(geometry, "__geo_interface__") else dict(geometry)
        doc = {"type": "FeatureCollection",
               "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
               "features": [{"type": "Feature", "properties": {"NAME": name}, "geometry": geometry}]}
        boundary_path(name).write_text(json.dumps(doc))


def load_boundaries(names=BOUNDARY_NAMES) -> dict:
    from shapely.geometry import shape

    return {n: shape(json.loads(boundary_path(n).read_text())["features"][0]["geometry"]) for n in names}


def ensure_inputs(names=BOUNDARY_NAMES, *, roads: bool = True) -> dict[str, float]:
    """Build what is missing (the roads only with `roads`); return {input: seconds} for what was built now."""
    CACHE.mkdir(parents=True, exist_ok=True)
    built: dict[str, float] = {}
    if not all(boundary_path(n).exists() for n in names):
        build_boundaries(names)
    if not GLOBAL_TIF.exists():
        log(f"building {GLOBAL_TIF.name} (43200x21600 Int16) ...")
        built["global raster"] = build_global()
        log(f"built in {built['global raster']:.1f} s")
    if not all(p.exists() for p in multi_files()):
        log(f"building {MULTI_COUNT} rasters of 3600x1800 in {MULTI_DIR.name}/ ...")
        built["multi-file rasters"] = build_multi()
        log(f"built in {built['multi-file rasters']:.1f} s")
    if roads and not ROADS_GPKG.exists():
        log(f"building {ROADS_GPKG.name} ({ROADS_COUNT:,} LineStrings) ...")
        built["roads gpkg"] = build_roads()
        log(f"built in {built['roads gpkg']:.1f} s")
    return built


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    t = time.perf_counter()
    print(ensure_inputs())
    print(ensure_job_inputs())
    print(f"total {time.perf_counter() - t:.1f} s")
