"""Where the time and memory of the processor clips go (the reasons behind bench/results.md).

    .venv/bin/python bench/diagnose_processors.py raster Kenya|Brazil   # phases of clip_raster_to_cog
    .venv/bin/python bench/diagnose_processors.py files Kenya           # per file of 140 STORM stand-ins
    .venv/bin/python bench/diagnose_processors.py memory Brazil         # RSS per phase (set GDAL_CACHEMAX)
    .venv/bin/python bench/diagnose_processors.py vector Kenya|Brazil   # phases and cProfile of clip_vector_to_gpkg

Uses the inputs cached by bench/build_inputs.py; monkeypatches only inside this process.
"""
from __future__ import annotations

import cProfile
import os
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
    """Seconds per phase of `clip_raster_to_cog` (medians of `repeat` clips; the phases of
    bench_processors.RASTER_PHASES): a window larger than a strip is masked and read in strips by
    READ_THREADS threads (mask and decoding summed over them), this thread writing the temporary
    GTiff, then copied by the COG driver; a window
    in one strip is read, masked and made into the COG in memory. The read-only floor reads the
    whole window in one thread, in the same strips."""
    from bench_processors import timed_raster_phases

    geom = B.load_boundaries([name])[name]
    OUT.mkdir(parents=True, exist_ok=True)
    R.clip_raster_to_cog(B.GLOBAL_TIF, boundary=geom, destination=OUT / "warm.tif")
    runs, totals, floors = [], [], []
    for _ in range(repeat):
        with timed_raster_phases() as spent:
            t = time.perf_counter()
            R.clip_raster_to_cog(B.GLOBAL_TIF, boundary=geom, destination=OUT / f"{name}.tif")
            totals.append(time.perf_counter() - t)
        runs.append(spent)
        t = time.perf_counter()
        R.read_window_only(B.GLOBAL_TIF, geom)
        floors.append(time.perf_counter() - t)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(f"{name}: total {med(totals):.3f} s, read-only floor {med(floors):.3f} s (the whole window, one thread), "
          f"ratio {med(totals) / med(floors):.2f}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    labels = {
        "strips_s": "strips: read + mask + temporary GTiff (wall)",
        "phase_read_s": f"  decoding the touched tiles (summed over {R.READ_THREADS} threads for strips)",
        "mask_s": f"  polygon mask (summed over {R.READ_THREADS} threads for strips)",
        "cog_s": "COG driver's copy (ZSTD + predictor, every level; wall)",
        "memory_s": "COG from memory (one-strip window: MEM + overviews + the copy)",
    }
    for key, label in labels.items():
        print(f"  {label}: {med([r[key] for r in runs]):.3f} s")
    others = [t - r["strips_s"] - (r["memory_s"] or r["cog_s"]) for t, r in zip(totals, runs)]
    print(f"  other (planning, opening, renaming; a one-strip window: its read and mask): {med(others):.3f} s")


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

    orig_copy, orig_write = R._copy_to_cog, R._write_strips

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

    R._write_strips, R._copy_to_cog = write, copy
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


def vector(name: str, repeat: int = 3) -> None:
    """Seconds per phase of `clip_vector_to_gpkg` (medians of `repeat` clips, wall time: the copy
    of the features inside runs in a thread of its own, alongside the edge tests), then a cProfile
    of the calling thread."""
    import processors.vector as V

    geom = B.load_boundaries([name])[name]
    OUT.mkdir(parents=True, exist_ok=True)
    phases = {
        "boundary pieces (_PieceTree)": (V, "_PieceTree"),
        "candidates from the R*Tree": (V, "_candidate_envelopes"),
        "grid sort of the envelopes": (V, "_BoundaryGrid"),
        "GDAL copy of the features inside (its thread)": (V._BackgroundCopy, "_run"),
        "edge features tested one by one": (V, "_clip_ogr_feature"),
        "features written by the writer": (V, "_write_kept"),
        "spatial index: boxes read": (V._PackedRtree, "envelopes"),
        "spatial index: packed and written": (V._PackedRtree, "load"),
        "the one fsync": (V, "_fsync"),
    }
    from bench_processors import timed_phases

    seconds = {k: [] for k in phases}
    totals = []
    for i in range(repeat + 1):  # the first clip warms the process and the page cache
        with timed_phases(phases) as spent:
            t = time.perf_counter()
            res = V.clip_vector_to_gpkg(B.ROADS_GPKG, layer=B.ROADS_LAYER, boundary=geom, destination=OUT / f"{name}.gpkg")
            totals.append(time.perf_counter() - t)
        for key, v in seconds.items():
            v.append(spent[key])
    med = lambda xs: sorted(xs[1:])[len(xs[1:]) // 2]  # noqa: E731
    print(f"{name}: total {med(totals):.3f} s (runs: {', '.join(f'{t:.3f}' for t in totals[1:])}), "
          f"{res.candidates} candidates, {res.kept_whole} whole, {res.clipped} clipped, {res.tested} tested")
    for key, v in seconds.items():
        print(f"  {key}: {med(v):.3f} s")
    prof = cProfile.Profile()
    prof.enable()
    V.clip_vector_to_gpkg(B.ROADS_GPKG, layer=B.ROADS_LAYER, boundary=geom, destination=OUT / f"{name}.gpkg")
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(14)


if __name__ == "__main__":
    {"raster": raster, "files": files, "memory": memory, "vector": vector}[sys.argv[1]](sys.argv[2])
