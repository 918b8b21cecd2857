"""Where the time and memory of the processor clips go (the reasons behind bench/results.md).

    .venv/bin/python bench/diagnose_processors.py raster Kenya|Brazil   # phases of clip_raster_to_cog
    .venv/bin/python bench/diagnose_processors.py files Kenya           # per file of 140 STORM stand-ins
    .venv/bin/python bench/diagnose_processors.py memory Brazil         # RSS per phase (set GDAL_CACHEMAX)
    .venv/bin/python bench/diagnose_processors.py vector Kenya|Brazil   # cProfile of clip_vector_to_gpkg

Uses the inputs cached by bench/build_inputs.py; monkeypatches only inside this process.
"""
from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import build_inputs as B  # noqa: E402
import processors.raster as R  # noqa: E402

OUT = B.CACHE / "diag"


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def raster(name: str, repeat: int = 3) -> None:
    """Seconds per phase of `clip_raster_to_cog` (medians of `repeat` clips): reading (decoding
    only the tiles the polygon touches, `_read_masked`), the polygon mask, the temporary tiled
    GTiff of a window larger than a strip (with the reading and masking in it), the COG written
    from memory (small windows, overviews included) or copied from the temporary GTiff; 'other' is
    mostly the overviews built in the temporary GTiff (large windows) or the read and mask (small)."""
    geom = B.load_boundaries([name])[name]
    top = {"strips (read+mask+write tmp GTiff)": "_write_strips", "COG from memory (MEM + overviews + ZSTD)": "_cog_from_memory"}
    inner = {"read (only the touched tiles)": "_read_masked", "geometry_mask": "geometry_mask"}
    phases: dict[str, list[float]] = {k: [] for k in [*top, "COG copy (ZSTD, overviews as built)", *inner]}
    originals = {attr: getattr(R, attr) for attr in [*top.values(), *inner.values()]}
    original_copy = R.rasterio.shutil.copy

    def acc(key, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[key][-1] += time.perf_counter() - t
        return wrapper

    for key, attr in [*top.items(), *inner.items()]:
        setattr(R, attr, acc(key, originals[attr]))
    R.rasterio.shutil.copy = acc("COG copy (ZSTD, overviews as built)", original_copy)
    OUT.mkdir(parents=True, exist_ok=True)
    for v in phases.values():
        v.append(0.0)
    R.clip_raster_to_cog(B.GLOBAL_TIF, boundary=geom, destination=OUT / "warm.tif")
    for v in phases.values():
        v.clear()
    totals, floors, others = [], [], []
    for _ in range(repeat):
        for v in phases.values():
            v.append(0.0)
        t = time.perf_counter()
        R.clip_raster_to_cog(B.GLOBAL_TIF, boundary=geom, destination=OUT / f"{name}.tif")
        totals.append(time.perf_counter() - t)
        others.append(totals[-1] - sum(phases[k][-1] for k in [*top, "COG copy (ZSTD, overviews as built)"]))
        t = time.perf_counter()
        R.read_window_only(B.GLOBAL_TIF, geom)
        floors.append(time.perf_counter() - t)
    for attr, fn in originals.items():
        setattr(R, attr, fn)
    R.rasterio.shutil.copy = original_copy
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(f"{name}: total {med(totals):.3f} s, read-only floor {med(floors):.3f} s (the whole window)")
    for k, v in phases.items():
        print(f"  {'  ' if k in inner else ''}{k}: {med(v):.3f} s")
    print(f"  other (opening, the overviews in the temporary GTiff, renaming; a window in one strip: its read and mask): "
          f"{med(others):.3f} s")


def files(name: str) -> None:
    """Per-file cost of a multi-file dataset (bench_jobs.py's 140 STORM stand-ins, as a catalogue
    processor clips them after the first file: in 1 and 2 threads) and a cProfile of one pass."""
    import concurrent.futures

    from shapely.geometry import shape

    from backend.boundaries import BoundaryStore

    store = BoundaryStore(B.BOUNDARIES_DB)
    geom = shape(store.get(name.lower())["geometry"])
    store.close()
    sources = B.storm_files()
    out = OUT / "files"
    out.mkdir(parents=True, exist_ok=True)

    def run(workers: int) -> float:
        t = time.perf_counter()
        with R.BoundaryClipper(geom) as clipper, concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda f: clipper.clip(f, out / f.name), sources))
        return time.perf_counter() - t

    run(1)
    for workers in (1, 2):
        print(f"{len(sources)} files, {workers} clip thread(s): {run(workers) / len(sources) * 1000:.1f} ms per file")
    prof = cProfile.Profile()  # profiles its own thread only: one pass in this one
    with R.BoundaryClipper(geom) as clipper:
        prof.enable()
        for f in sources:
            clipper.clip(f, out / f.name)
        prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(14)


def memory(name: str) -> None:
    geom = B.load_boundaries([name])[name]
    marks: list[tuple[str, int]] = []
    peak = [0]
    stop = [False]

    def sample():
        while not stop[0]:
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    orig_copy, orig_write = R.rasterio.shutil.copy, R._write_strips

    def write(*a, **k):
        peak[0] = rss()
        r = orig_write(*a, **k)
        marks.append(("after strips: peak during strips", peak[0]))
        peak[0] = rss()
        return r

    def copy(*a, **k):
        marks.append(("before COG copy: current", rss()))
        r = orig_copy(*a, **k)
        marks.append(("after COG copy: peak during copy", peak[0]))
        return r

    R._write_strips, R.rasterio.shutil.copy = write, copy
    OUT.mkdir(parents=True, exist_ok=True)
    with R._open(B.GLOBAL_TIF) as src:
        (_, _, tight, outer), = R._plan(src, geom)
    window = int(tight.width) * int(tight.height) * 2
    base = rss()
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    R.clip_raster_to_cog(B.GLOBAL_TIF, boundary=geom, destination=OUT / f"{name}-mem.tif")
    stop[0] = True
    th.join()
    print(f"{name}: window {window / 1e6:.1f} MB, base RSS {base / 1e6:.1f} MB")
    for label, value in marks:
        print(f"  {label}: {(value - base) / 1e6:.1f} MB above base")


def vector(name: str) -> None:
    from processors.vector import clip_vector_to_gpkg

    geom = B.load_boundaries([name])[name]
    OUT.mkdir(parents=True, exist_ok=True)
    clip_vector_to_gpkg(B.ROADS_GPKG, layer=B.ROADS_LAYER, boundary=geom, destination=OUT / f"{name}.gpkg")
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    res = clip_vector_to_gpkg(B.ROADS_GPKG, layer=B.ROADS_LAYER, boundary=geom, destination=OUT / f"{name}.gpkg")
    prof.disable()
    print(f"{name}: {time.perf_counter() - t:.2f} s under cProfile, {res.candidates} candidates, "
          f"{res.kept_whole} whole, {res.clipped} clipped")
    pstats.Stats(prof).sort_stats("tottime").print_stats(14)


if __name__ == "__main__":
    {"raster": raster, "files": files, "memory": memory, "vector": vector}[sys.argv[1]](sys.argv[2])
