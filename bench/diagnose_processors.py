"""Where the time and memory of the processor clips go (the reasons behind bench/results.md).

    .venv/bin/python bench/diagnose_processors.py raster Kenya|Brazil   # phases of clip_raster_to_cog
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
    geom = B.load_boundaries([name])[name]
    phases: dict[str, list[float]] = {"strips (read+mask+write tmp GTiff)": [], "COG copy (DEFLATE+overviews)": [],
                                      "geometry_mask": [], "src.read": []}
    orig_write, orig_copy, orig_mask = R._write_strips, R.rasterio.shutil.copy, R.geometry_mask

    def acc(key, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[key][-1] += time.perf_counter() - t
        return wrapper

    R._write_strips = acc("strips (read+mask+write tmp GTiff)", orig_write)
    R.rasterio.shutil.copy = acc("COG copy (DEFLATE+overviews)", orig_copy)
    R.geometry_mask = acc("geometry_mask", orig_mask)
    OUT.mkdir(parents=True, exist_ok=True)
    for v in phases.values():
        v.append(0.0)
    R.clip_raster_to_cog(B.GLOBAL_TIF, boundary=geom, destination=OUT / "warm.tif")
    for v in phases.values():
        v.clear()
    totals, floors = [], []
    for _ in range(repeat):
        for v in phases.values():
            v.append(0.0)
        t = time.perf_counter()
        R.clip_raster_to_cog(B.GLOBAL_TIF, boundary=geom, destination=OUT / f"{name}.tif")
        totals.append(time.perf_counter() - t)
        t = time.perf_counter()
        R.read_window_only(B.GLOBAL_TIF, geom)
        floors.append(time.perf_counter() - t)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(f"{name}: total {med(totals):.3f} s, read-only floor {med(floors):.3f} s")
    for k, v in phases.items():
        if k != "src.read":
            print(f"  {k}: {med(v):.3f} s")


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
    {"raster": raster, "memory": memory, "vector": vector}[sys.argv[1]](sys.argv[2])
