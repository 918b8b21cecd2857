"""Processor clipping benchmark (issue 4, item 7): our raster/vector clips vs the GDAL tools.

    .venv/bin/python bench/bench_processors.py [--repeat N] [--quick] [--naive-sample F]

Inputs are built once into bench/cache/ by bench/build_inputs.py (a 43200x21600 Int16 global
grid, 120 small global rasters, a 2-million-LineString GeoPackage, the boundaries Gambia, Kenya,
Brazil from QGIS's world map). Then, in one run on the same inputs, medians over --repeat runs:

* raster, per boundary: `clip_raster_to_cog` timed inside this (warm) process; `gdal_translate
  -projwin <bbox> -co COMPRESS=PACKBITS` (the predecessor's bounding-box crop) and `gdalwarp
  -cutline <boundary> -crop_to_cutline -co COMPRESS=DEFLATE -co TILED=YES` as whole processes;
  `read_window_only` (the I/O floor); output bytes. Brazil's peak memory: one clip in a child
  process, its ru_maxrss vs the uncompressed window (width x height x 2 bytes).
* multi-file (120 files of 3600x1800), Gambia: all files clipped in-process vs one
  `gdal_translate -projwin` process per file.
* vector, per boundary: `clip_vector_to_gpkg` vs `ogr2ogr -spat <bbox> -clipsrc <boundary>` (whole
  process) vs a naive clip without spatial filter (every feature read, shape() + prepared
  intersects + intersection, results written) -- timed on the first --naive-sample fraction of
  the layer (10 % by default, the features are in random order) and extrapolated, once.

Prints markdown tables (medians, ratios, the issue's targets with pass/miss) and writes them to
bench/results.md. --quick: one repeat, Gambia and Kenya only.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import build_inputs as B  # noqa: E402

OUT = B.CACHE / "out"
RESULTS = ROOT / "bench" / "results.md"


#: A measurement whose first run takes longer than this is not repeated (see RUNS).
MAX_REPEAT_SECONDS = 60.0
#: label -> number of runs behind each median (only those cut short by MAX_REPEAT_SECONDS).
RUNS: dict[str, int] = {}


def timed(fn, repeat: int, label: str = "") -> tuple[float, object]:
    """Median seconds of `repeat` calls and the last result (a single call when it is very slow)."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        if times[0] > MAX_REPEAT_SECONDS and len(times) < repeat:
            RUNS[label] = 1
            break
    return statistics.median(times), result


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def size(path: Path) -> int:
    return path.stat().st_size


# --------------------------------------------------------------------------- raster

def raster_bench(name: str, geom, repeat: int) -> dict:
    from processors.raster import clip_raster_to_cog, read_window_only

    src = B.GLOBAL_TIF
    minx, miny, maxx, maxy = geom.bounds
    ours_path = OUT / f"{name}-ours.tif"
    pb_path = OUT / f"{name}-packbits.tif"
    warp_path = OUT / f"{name}-gdalwarp.tif"
    read_window_only(src, geom)  # warm the page cache for this window
    r = {}
    r["read_s"], r["window_bytes"] = timed(lambda: read_window_only(src, geom), repeat)
    r["ours_s"], res = timed(lambda: clip_raster_to_cog(src, boundary=geom, destination=ours_path), repeat)
    r["ours_bytes"] = sum(size(p) for p in res.paths)
    r["shape"] = res.shape

    def translate():
        pb_path.unlink(missing_ok=True)
        run(["gdal_translate", "-q", "-projwin", repr(minx), repr(maxy), repr(maxx), repr(miny),
             "-co", "COMPRESS=PACKBITS", str(src), str(pb_path)])

    def warp():
        warp_path.unlink(missing_ok=True)
        run(["gdalwarp", "-q", "-cutline", str(B.boundary_path(name)), "-crop_to_cutline",
             "-co", "COMPRESS=DEFLATE", "-co", "TILED=YES", str(src), str(warp_path)])

    r["translate_s"], _ = timed(translate, repeat)
    r["packbits_bytes"] = size(pb_path)
    r["warp_s"], _ = timed(warp, repeat)
    r["warp_bytes"] = size(warp_path)
    r.update(raster_phases(src, geom, OUT / f"{name}-phases.tif"))
    return r


def raster_phases(src: Path, geom, destination: Path) -> dict:
    """One extra, instrumented clip: seconds in the masked strips (read + mask + temporary tiled
    GTiff) and in the COG copy (DEFLATE + overviews). Not part of the medians above."""
    import processors.raster as R

    spent = {"strips_s": 0.0, "cog_s": 0.0}
    orig_write, orig_copy = R._write_strips, R.rasterio.shutil.copy

    def wrap(key, fn):
        def inner(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.perf_counter() - t0
        return inner

    R._write_strips, R.rasterio.shutil.copy = wrap("strips_s", orig_write), wrap("cog_s", orig_copy)
    try:
        R.clip_raster_to_cog(src, boundary=geom, destination=destination)
    finally:
        R._write_strips, R.rasterio.shutil.copy = orig_write, orig_copy
    return spent


MEMORY_CHILD = r"""
import json, resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from shapely.geometry import shape
from processors.raster import clip_raster_to_cog, read_window_only, _open, _plan
g = shape(json.loads(Path(sys.argv[2]).read_text())["features"][0]["geometry"])
with _open(Path(sys.argv[3])) as src:
    (_, _, tight, outer), = _plan(src, g)
    window = tight or outer
    window_bytes = int(window.width) * int(window.height) * 2
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
base = status("VmRSS")
clip_raster_to_cog(Path(sys.argv[3]), boundary=g, destination=Path(sys.argv[4]))
peak = status("VmHWM")
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"base": base, "peak": peak, "maxrss": maxrss, "window_bytes": window_bytes}))
"""
# ru_maxrss is not used for the verdict: Linux keeps the parent's high-water mark across
# fork+exec (signal->maxrss), so a child of this ~300 MB bench process reports the parent's peak.
# VmHWM belongs to the child's own address space (fresh after exec).


def memory_bench(name: str, cachemax: str | None) -> dict:
    env = dict(os.environ)
    if cachemax:
        env["GDAL_CACHEMAX"] = cachemax
    else:
        env.pop("GDAL_CACHEMAX", None)
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(ROOT), str(B.boundary_path(name)), str(B.GLOBAL_TIF),
         str(OUT / f"{name}-mem.tif")], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def multi_bench(name: str, geom, repeat: int) -> dict:
    from processors.raster import clip_raster_to_cog

    files = B.multi_files()
    folder = OUT / "multi"
    folder.mkdir(parents=True, exist_ok=True)
    minx, miny, maxx, maxy = geom.bounds

    def ours():
        return sum(sum(size(p) for p in clip_raster_to_cog(
            f, boundary=geom, destination=folder / f"{f.stem}-ours.tif").paths) for f in files)

    def translate():
        total = 0
        for f in files:
            out = folder / f"{f.stem}-packbits.tif"
            out.unlink(missing_ok=True)
            run(["gdal_translate", "-q", "-projwin", repr(minx), repr(maxy), repr(maxx), repr(miny),
                 "-co", "COMPRESS=PACKBITS", str(f), str(out)])
            total += size(out)
        return total

    r = {"files": len(files)}
    r["ours_s"], r["ours_bytes"] = timed(ours, repeat)
    r["translate_s"], r["packbits_bytes"] = timed(translate, repeat)
    return r


# --------------------------------------------------------------------------- vector

def count_features(path: Path) -> int:
    import fiona

    with fiona.open(path) as c:
        return len(c)


def naive_clip(geom, destination: Path, fraction: float) -> tuple[float, int, int]:
    """Clip without spatial filter on the first `fraction` of the layer; (seconds, read, kept)."""
    import fiona
    from shapely.geometry import mapping, shape
    from shapely.prepared import prep

    destination.unlink(missing_ok=True)
    prepared = prep(geom)
    t0 = time.perf_counter()
    with fiona.open(B.ROADS_GPKG, layer=B.ROADS_LAYER) as src:
        total = len(src)
        n = max(1, int(total * fraction))
        schema = {"geometry": "MultiLineString", "properties": src.schema["properties"]}
        kept, read = [], 0
        for f in itertools.islice(src, n):
            read += 1
            g = shape(f["geometry"])
            if not prepared.intersects(g):
                continue
            clipped = g.intersection(geom)
            if clipped.is_empty or clipped.geom_type not in ("LineString", "MultiLineString"):
                continue
            if clipped.geom_type == "LineString":
                from shapely.geometry import MultiLineString
                clipped = MultiLineString([clipped])
            kept.append({"geometry": mapping(clipped), "properties": dict(f["properties"])})
        with fiona.open(destination, "w", driver="GPKG", schema=schema, crs_wkt=src.crs_wkt) as dst:
            dst.writerecords(kept)
    return time.perf_counter() - t0, read, len(kept)


def vector_bench(name: str, geom, repeat: int, naive_fraction: float) -> dict:
    from processors.vector import clip_vector_to_gpkg

    minx, miny, maxx, maxy = geom.bounds
    ours_path = OUT / f"{name}-roads-ours.gpkg"
    ogr_path = OUT / f"{name}-roads-ogr2ogr.gpkg"
    r = {}
    r["ours_s"], res = timed(lambda: clip_vector_to_gpkg(
        B.ROADS_GPKG, layer=B.ROADS_LAYER, boundary=geom, destination=ours_path), repeat, f"ours vector {name}")
    r["ours_features"], r["candidates"] = res.feature_count, res.candidates
    r["kept_whole"], r["clipped"] = res.kept_whole, res.clipped

    def ogr():
        ogr_path.unlink(missing_ok=True)
        run(["ogr2ogr", "-f", "GPKG", str(ogr_path), str(B.ROADS_GPKG), B.ROADS_LAYER,
             "-spat", repr(minx), repr(miny), repr(maxx), repr(maxy),
             "-clipsrc", str(B.boundary_path(name))])

    r["ogr_s"], _ = timed(ogr, repeat, f"ogr2ogr {name}")
    r["ogr_features"] = count_features(ogr_path)

    def ogr_spat_only():
        ogr_path.unlink(missing_ok=True)
        run(["ogr2ogr", "-f", "GPKG", str(ogr_path), str(B.ROADS_GPKG), B.ROADS_LAYER,
             "-spat", repr(minx), repr(miny), repr(maxx), repr(maxy)])

    r["ogr_spat_s"], _ = timed(ogr_spat_only, repeat, f"ogr2ogr -spat only {name}")
    if naive_fraction > 0:
        seconds, read, kept = naive_clip(geom, OUT / f"{name}-roads-naive.gpkg", naive_fraction)
        r["naive_sample_s"], r["naive_read"], r["naive_kept"] = seconds, read, kept
        r["naive_s"] = seconds * B.ROADS_COUNT / read  # extrapolated to the whole layer
    return r


# --------------------------------------------------------------------------- report

def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def check(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "**miss**")


def report(names, rast, mem, multi, vect, args, built, elapsed) -> str:
    L = []
    gdal = subprocess.run(["gdalinfo", "--version"], capture_output=True, text=True).stdout.strip()
    import rasterio
    L.append("# Processor clipping benchmark\n")
    L.append(f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}")
    L.append(f"- machine: `nproc` = {os.cpu_count()}, {platform.machine()}, {platform.system()} {platform.release()}; "
             f"{gdal} (rasterio {rasterio.__version__} on GDAL {rasterio.__gdal_version__}); run under `nice -n 19`")
    L.append(f"- command: `.venv/bin/python bench/bench_processors.py --repeat {args.repeat}"
             f"{' --quick' if args.quick else ''}`; medians of {args.repeat}; ours timed in this warm process, "
             "GDAL tools as whole processes (`subprocess.run`)")
    L.append("- inputs (bench/cache/, built by bench/build_inputs.py): 43200x21600 Int16 30\" grid "
             f"({mb(size(B.GLOBAL_TIF))}, tiled 512, DEFLATE, nodata -32768, smooth field + noise); "
             f"{B.MULTI_COUNT} global 3600x1800 Int16 files; {B.ROADS_COUNT:,} 4-vertex LineStrings on land "
             f"({mb(size(B.ROADS_GPKG))} GPKG with R*Tree); boundaries from QGIS world_map.gpkg `countries`")
    L.append(f"- inputs built this run: {', '.join(f'{k} {v:.0f} s' for k, v in built.items()) or 'none (cached)'}; "
             f"bench wall time {elapsed:.0f} s (excluding the build)\n")

    L.append("## Raster: polygon clip of the 30\" grid\n")
    L.append("| boundary | window (h x w) | read-only floor | ours (COG) | gdal_translate -projwin PACKBITS | "
             "gdalwarp -cutline DEFLATE | ours / gdalwarp | ours / floor | bytes ours | bytes PACKBITS | "
             "bytes gdalwarp | bytes ours / PACKBITS | ours, one instrumented run: strips / COG copy |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in names:
        r = rast[n]
        L.append(f"| {n} | {r['shape'][0]} x {r['shape'][1]} | {r['read_s']:.3f} s | {r['ours_s']:.3f} s | "
                 f"{r['translate_s']:.3f} s | {r['warp_s']:.3f} s | {r['ours_s'] / r['warp_s']:.2f} | "
                 f"{r['ours_s'] / r['read_s']:.2f} | {mb(r['ours_bytes'])} | {mb(r['packbits_bytes'])} | "
                 f"{mb(r['warp_bytes'])} | {r['ours_bytes'] / r['packbits_bytes']:.2f} | "
                 f"{r['strips_s']:.3f} s / {r['cog_s']:.3f} s |")
    if mem:
        L.append("\nPeak memory of one Brazil clip in a fresh child process (VmHWM of the child; 'base' = its "
                 "VmRSS after imports and opening the source, before the clip; ru_maxrss is not used because "
                 "Linux carries the parent's high-water mark across fork+exec):\n")
        L.append("| boundary | GDAL_CACHEMAX | uncompressed window | process peak | peak - base | "
                 "peak / window | (peak - base) / window |")
        L.append("|---|---|---|---|---|---|---|")
        for (n, cm), m in mem.items():
            L.append(f"| {n} | {cm or 'default (5 % of RAM)'} | {mb(m['window_bytes'])} | {mb(m['peak'])} | "
                     f"{mb(m['peak'] - m['base'])} | {m['peak'] / m['window_bytes']:.2f} | "
                     f"{(m['peak'] - m['base']) / m['window_bytes']:.2f} |")

    if multi:
        m = multi
        L.append(f"\n## Multi-file: {m['files']} global 3600x1800 Int16 files, Gambia\n")
        L.append("| ours, all files in-process | one gdal_translate -projwin process per file | speed-up | "
                 "bytes ours | bytes PACKBITS |")
        L.append("|---|---|---|---|---|")
        L.append(f"| {m['ours_s']:.3f} s | {m['translate_s']:.3f} s | {m['translate_s'] / m['ours_s']:.1f}x | "
                 f"{m['ours_bytes'] / 1e3:.0f} kB | {m['packbits_bytes'] / 1e3:.0f} kB |")

    L.append(f"\n## Vector: {B.ROADS_COUNT:,} road LineStrings\n")
    L.append("| boundary | candidates (bbox) | features out ours / ogr2ogr | ours | ogr2ogr -spat -clipsrc | "
             "ours / ogr2ogr | ogr2ogr -spat only (no clip) | naive, no spatial filter (extrapolated) | naive / ours |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for n in names:
        r = vect[n]
        naive = (f"{r['naive_s']:.1f} s ({r['naive_sample_s']:.1f} s on {r['naive_read']:,} features)"
                 if "naive_s" in r else "not run")
        ratio = f"{r['naive_s'] / r['ours_s']:.0f}x" if "naive_s" in r else ""
        L.append(f"| {n} | {r['candidates']:,} | {r['ours_features']:,} / {r['ogr_features']:,} | "
                 f"{r['ours_s']:.3f} s | {r['ogr_s']:.3f} s | {r['ours_s'] / r['ogr_s']:.2f} | {r['ogr_spat_s']:.3f} s | "
                 f"{naive} | {ratio} |")

    if RUNS:
        L.append(f"\nRuns longer than {MAX_REPEAT_SECONDS:.0f} s were not repeated: "
                 + ", ".join(f"{k} ({v} run)" for k, v in RUNS.items()) + ".")
    L.append("\n## Targets (issue 4, Acceptance)\n")
    L.append("| target | boundary | measured | result |")
    L.append("|---|---|---|---|")
    for n in names:
        r = rast[n]
        if n in ("Kenya", "Brazil"):
            v = r["ours_s"] / r["warp_s"]
            L.append(f"| raster clip <= 0.75x gdalwarp -cutline | {n} | {v:.2f}x | {check(v <= 0.75)} |")
            v = r["ours_s"] / r["read_s"]
            L.append(f"| raster clip <= 2.5x read-only floor | {n} | {v:.2f}x | {check(v <= 2.5)} |")
        v = r["ours_bytes"] / r["packbits_bytes"]
        L.append(f"| output <= 0.4x bytes of PACKBITS bbox crop | {n} | {v:.2f}x | {check(v <= 0.4)} |")
    for (n, cm), m in mem.items():
        v = m["peak"] / m["window_bytes"]
        d = (m["peak"] - m["base"]) / m["window_bytes"]
        L.append(f"| peak memory <= 1.5x uncompressed window (GDAL_CACHEMAX {cm or 'default'}) | {n} | "
                 f"{v:.2f}x whole process, {d:.2f}x above the imports | "
                 f"{check(v <= 1.5)} whole process / {check(d <= 1.5)} above imports |")
    if multi:
        v = multi["translate_s"] / multi["ours_s"]
        L.append(f"| >= 3x faster than one gdal_translate per file ({multi['files']} files) | Gambia | {v:.1f}x | "
                 f"{check(v >= 3)} |")
    for n in names:
        r = vect[n]
        v = r["ours_s"] / r["ogr_s"]
        if n == "Kenya":
            L.append(f"| vector clip <= 1.0x ogr2ogr -spat -clipsrc | {n} | {v:.2f}x | {check(v <= 1.0)} |")
        if n == "Brazil":
            L.append(f"| vector clip <= 0.1x ogr2ogr -spat -clipsrc | {n} | {v:.2f}x | {check(v <= 0.1)} |")
        if "naive_s" in r:
            v = r["naive_s"] / r["ours_s"]
            L.append(f"| vector clip >= 20x faster than without spatial filter (extrapolated) | {n} | {v:.0f}x | "
                     f"{check(v >= 20)} |")
    L.append("\n## Where the time goes (measured in this run)\n")
    for n in names:
        r = rast[n]
        L.append(f"- raster {n}: of one instrumented clip, {r['strips_s']:.3f} s went to the masked strips (read + "
                 f"mask + temporary tiled GTiff; the read-only floor alone is {r['read_s']:.3f} s) and "
                 f"{r['cog_s']:.3f} s to the COG copy (DEFLATE level 1 + predictor of the full resolution and of the "
                 "overviews, which are built beforehand in the uncompressed temporary file and timed in neither) -- the part the "
                 "read-only floor does not have.")
    for n in names:
        r = vect[n]
        L.append(f"- vector {n}: ogr2ogr copies the {r['candidates']:,} bbox candidates without clipping in "
                 f"{r['ogr_spat_s']:.3f} s (C read + write), so of its {r['ogr_s']:.3f} s, "
                 f"{max(0.0, r['ogr_s'] - r['ogr_spat_s']):.3f} s is -clipsrc (GEOS intersection of every candidate "
                 f"with the unprepared boundary); ours spends {r['ours_s']:.3f} s, "
                 f"{r['ours_s'] / max(r['candidates'], 1) * 1e6:.0f} us per candidate: OGR read + write from Python, "
                 "features in quadtree cells inside the boundary copied without a geometry test, only those in "
                 "cells the boundary crosses tested and clipped with shapely against that cell's piece, plus the "
                 "R*Tree built at the end (see bench/diagnose_processors.py vector).")
    L.append("- details per phase and per call: `.venv/bin/python bench/diagnose_processors.py raster|memory|vector "
             "<boundary>`")
    return "\n".join(L) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat, Gambia and Kenya only")
    parser.add_argument("--naive-sample", type=float, default=0.1,
                        help="fraction of the layer read by the naive clip (0 skips it)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not write bench/results.md")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1
    names = ["Gambia", "Kenya"] if args.quick else list(B.BOUNDARY_NAMES)

    t_build = time.perf_counter()
    built = B.ensure_inputs()
    if built:
        print(f"inputs built in {time.perf_counter() - t_build:.1f} s", flush=True)
    t0 = time.perf_counter()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    geoms = B.load_boundaries(names)

    from processors.raster import clip_raster_to_cog
    clip_raster_to_cog(B.GLOBAL_TIF, boundary=geoms["Gambia"], destination=OUT / "warm-up.tif")  # warm process

    rast, vect, mem = {}, {}, {}
    for n in names:
        rast[n] = raster_bench(n, geoms[n], args.repeat)
        print(f"raster {n}: " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rast[n].items()}),
              flush=True)
    if "Brazil" in names:
        for cm in (None, "64MB"):
            mem[("Brazil", cm)] = memory_bench("Brazil", cm)
            print(f"memory Brazil GDAL_CACHEMAX={cm}: {mem[('Brazil', cm)]}", flush=True)
    multi = multi_bench("Gambia", geoms["Gambia"], args.repeat)
    print(f"multi-file Gambia: {multi}", flush=True)
    for n in names:
        vect[n] = vector_bench(n, geoms[n], args.repeat, args.naive_sample)
        print(f"vector {n}: " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in vect[n].items()}),
              flush=True)
    elapsed = time.perf_counter() - t0
    text = report(names, rast, mem, multi, vect, args, built, elapsed)
    print()
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    shutil.rmtree(OUT, ignore_errors=True)


if __name__ == "__main__":
    main()
