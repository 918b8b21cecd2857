"""Processor clipping benchmark: our raster/vector clips vs GDAL, like with like (issue 10).

    .venv/bin/python bench/bench_processors.py [--repeat N] [--quick] [--no-no-filter]

Inputs are built once into bench/cache/ by bench/build_inputs.py (a 43200x21600 Int16 global
grid, 120 small global rasters, a 2-million-LineString GeoPackage, the boundaries Gambia, Kenya,
Brazil from QGIS's world map). Then, in one run on the same inputs, medians over --repeat runs:

* raster, per boundary: `clip_raster_to_cog`; `gdal.Warp(cutline, crop_to_cutline)` in this
  process and `gdalwarp` as a process, both writing the same COG as ours (`cog_options`);
  `gdal.Translate -projwin` PACKBITS (the predecessor's bounding-box crop, for bytes) in-process
  and as a process; `read_window_only` (the I/O floor). Ours and gdal.Warp's outputs are compared
  before their ratio is printed. Brazil's peak memory: one clip in a child process (VmHWM).
* multi-file (120 files of 3600x1800), Kenya: one `BoundaryClipper` for all files (as a catalogue
  processor runs) vs a `gdal.Warp` loop in this process vs one `gdalwarp` process per file.
* vector, per boundary: `clip_vector_to_gpkg` vs `gdal.VectorTranslate(-spat, -clipsrc)` in this
  process and `ogr2ogr` as a process (outputs compared: same features, same clipped lengths), the
  `-spat`-only copy, and our own clip with only the spatial filter removed (every feature a candidate).

Prints markdown tables (medians, ratios, the issue's targets with pass/miss) and writes them to
bench/results.md (keeping its "Jobs and API" section, written by bench/bench_jobs.py). --quick:
one repeat, Gambia and Kenya only. --parts raster|multi|vector: only those (printed, not written).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
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


def loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def fresh(path: Path) -> Path:
    """`path` removed first, for every side alike (replacing an existing file by rename makes
    ext4 flush the new one first: a cost the jobs, which write into new folders, never pay)."""
    path.unlink(missing_ok=True)
    return path


def size(path: Path) -> int:
    return path.stat().st_size


# --------------------------------------------------------------------------- raster

PACKBITS = ["COMPRESS=PACKBITS"]


def cog_options(width: int, height: int) -> list[str]:
    """Our COG creation options for an output of width x height (`processors.raster.cog_options`:
    codec, level, predictor, tile size, compression threads), given to the GDAL peers: like with
    like. OVERVIEWS=AUTO computes the levels ours builds before its copy."""
    from processors.raster import cog_options as ours

    return [f"{k}={v}" for k, v in ours(width, height).items()] + ["OVERVIEWS=AUTO"]


def gdal_warp(src: Path, cutline: Path, out: Path, shape: tuple[int, int]) -> None:
    from osgeo import gdal

    gdal.Warp(str(out), str(src), format="COG", cutlineDSName=str(cutline), cropToCutline=True,
              creationOptions=cog_options(shape[1], shape[0]))


def gdalwarp_process(src: Path, cutline: Path, out: Path, shape: tuple[int, int]) -> None:
    out.unlink(missing_ok=True)
    run(["gdalwarp", "-q", "-of", "COG", "-cutline", str(cutline), "-crop_to_cutline",
         *[a for o in cog_options(shape[1], shape[0]) for a in ("-co", o)], str(src), str(out)])


def projwin(geom) -> list[float]:
    minx, miny, maxx, maxy = geom.bounds
    return [minx, maxy, maxx, miny]


def gdal_translate(src: Path, geom, out: Path) -> None:
    from osgeo import gdal

    gdal.Translate(str(out), str(src), projWin=projwin(geom), creationOptions=PACKBITS)


def gdal_translate_process(src: Path, geom, out: Path) -> None:
    out.unlink(missing_ok=True)
    run(["gdal_translate", "-q", "-projwin", *map(repr, projwin(geom)), "-co", PACKBITS[0], str(src), str(out)])


def compare_rasters(ours: Path, theirs: Path) -> tuple[int, int, int]:
    """(values that differ where both outputs hold data, pixels inside one output only, pixels
    inside ours), on the source grid: gdalwarp's crop window can start a pixel off ours."""
    import numpy as np
    import rasterio

    with rasterio.open(ours) as a, rasterio.open(theirs) as b:
        assert a.crs == b.crs and all(abs(x - y) <= 1e-9 * abs(x) for x, y in zip(a.res, b.res)), (a.res, b.res)
        dc = round((b.transform.c - a.transform.c) / a.transform.a)
        dr = round((b.transform.f - a.transform.f) / a.transform.e)
        x, y = a.read(1), b.read(1)
        in_a, in_b = x != a.nodata, y != b.nodata
    r0, c0 = min(0, dr), min(0, dc)
    h, w = max(x.shape[0], dr + y.shape[0]) - r0, max(x.shape[1], dc + y.shape[1]) - c0
    canvas = {k: np.zeros((h, w), t) for k, t in (("ia", bool), ("ib", bool), ("va", x.dtype), ("vb", x.dtype))}
    canvas["ia"][-r0:-r0 + x.shape[0], -c0:-c0 + x.shape[1]] = in_a
    canvas["va"][-r0:-r0 + x.shape[0], -c0:-c0 + x.shape[1]] = x
    canvas["ib"][dr - r0:dr - r0 + y.shape[0], dc - c0:dc - c0 + y.shape[1]] = in_b
    canvas["vb"][dr - r0:dr - r0 + y.shape[0], dc - c0:dc - c0 + y.shape[1]] = y
    both = canvas["ia"] & canvas["ib"]
    return (int((canvas["va"][both] != canvas["vb"][both]).sum()), int((canvas["ia"] ^ canvas["ib"]).sum()),
            int(canvas["ia"].sum()))


def verdict(diff: tuple[int, int, int]) -> tuple[bool, str]:
    """Comparable when every shared pixel has the same value and at most 0.1 % of the inside
    pixels are inside one output only (the pixel-centre test on the polygon's edge)."""
    values, edge, inside = diff
    if values:
        return False, f"{values} values differ"
    return edge <= 0.001 * max(inside, 1), f"same values, {edge} of {inside:,} px on the edge in one only"


def raster_bench(name: str, geom, repeat: int) -> dict:
    from processors.raster import clip_raster_to_cog, read_window_only

    src = B.GLOBAL_TIF
    cutline = B.boundary_path(name)
    paths = {k: OUT / f"{name}-{k}.tif" for k in ("ours", "warp", "gdalwarp", "translate", "gdal_translate")}
    read_window_only(src, geom)  # warm the page cache for this window
    r = {}
    r["read_s"], r["window_bytes"] = timed(lambda: read_window_only(src, geom), repeat)
    r["ours_s"], res = timed(lambda: clip_raster_to_cog(src, boundary=geom, destination=fresh(paths["ours"])), repeat)
    r["ours_bytes"] = sum(size(p) for p in res.paths)
    r["shape"] = res.shape
    r["warp_s"], _ = timed(lambda: gdal_warp(src, cutline, fresh(paths["warp"]), res.shape), repeat)
    r["gdalwarp_s"], _ = timed(lambda: gdalwarp_process(src, cutline, fresh(paths["gdalwarp"]), res.shape), repeat)
    r["translate_s"], _ = timed(lambda: gdal_translate(src, geom, fresh(paths["translate"])), repeat)
    r["gdal_translate_s"], _ = timed(lambda: gdal_translate_process(src, geom, fresh(paths["gdal_translate"])), repeat)
    r["warp_bytes"], r["packbits_bytes"] = size(paths["warp"]), size(paths["translate"])
    r["comparable"], r["match"] = verdict(compare_rasters(paths["ours"], paths["warp"]))
    r.update(raster_phases(src, geom, OUT / f"{name}-phases.tif"))
    return r


#: The phases of a raster clip that `timed_raster_phases` times: key -> function of processors.raster.
RASTER_PHASES = {
    "strips_s": "_write_strips",  # a window larger than a strip: read, masked, temporary GTiff (wall)
    "phase_read_s": "_read_masked",  # decoding the touched tiles (summed over the reading threads)
    "mask_s": "_outside_mask",  # the polygon's pixel mask (summed over the reading threads)
    "cog_s": "_copy_to_cog",  # the COG driver's copy: compression of every level (wall)
    "memory_s": "_cog_from_memory",  # a window in one strip: MEM dataset + overviews + that copy
}


@contextlib.contextmanager
def timed_phases(phases: dict[str, tuple[object, str]]):
    """Yields {key: seconds spent in `owner.attr`} for the `phases` (key -> (owner, attr)), added
    up while inside (the calls of several threads add up); the functions are put back after."""
    spent = {key: 0.0 for key in phases}
    lock = threading.Lock()
    originals = {key: getattr(owner, attr) for key, (owner, attr) in phases.items()}

    def timed_call(key, fn):
        def inner(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                with lock:
                    spent[key] += time.perf_counter() - t0
        return inner

    for key, (owner, attr) in phases.items():
        setattr(owner, attr, timed_call(key, originals[key]))
    try:
        yield spent
    finally:
        for key, (owner, attr) in phases.items():
            setattr(owner, attr, originals[key])


def timed_raster_phases():
    """`timed_phases` of the RASTER_PHASES functions of processors.raster."""
    import processors.raster as R

    return timed_phases({key: (R, attr) for key, attr in RASTER_PHASES.items()})


def raster_phases(src: Path, geom, destination: Path) -> dict:
    """One extra, instrumented clip (not part of the medians): seconds per RASTER_PHASES phase."""
    from processors.raster import clip_raster_to_cog

    with timed_raster_phases() as spent:
        t0 = time.perf_counter()
        clip_raster_to_cog(src, boundary=geom, destination=destination)
        spent["phases_total_s"] = time.perf_counter() - t0
    return spent


MEMORY_CHILD = r"""
import json, resource, sys
from pathlib import Path
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
stages = [("Python", status("VmRSS"))]
sys.path.insert(0, sys.argv[1])
import numpy
stages.append(("numpy", status("VmRSS")))
from shapely.geometry import shape
stages.append(("shapely", status("VmRSS")))
from processors.raster import clip_raster_to_cog, read_window_only, _open, _plan
stages.append(("processors.raster (GDAL's osgeo, rasterio, pyproj)", status("VmRSS")))
g = shape(json.loads(Path(sys.argv[2]).read_text())["features"][0]["geometry"])
with _open(Path(sys.argv[3])) as src:
    (_, _, tight, outer), = _plan(src, g)
    window = tight or outer
    window_bytes = int(window.width) * int(window.height) * 2
base = status("VmRSS")
stages.append(("the source opened and the boundary planned", base))
clip_raster_to_cog(Path(sys.argv[3]), boundary=g, destination=Path(sys.argv[4]))
peak = status("VmHWM")
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"base": base, "peak": peak, "maxrss": maxrss, "window_bytes": window_bytes, "stages": stages}))
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
    """All files with one BoundaryClipper (as a catalogue processor does) vs gdal.Warp over the
    same files in this process and one gdalwarp process per file, same COG options."""
    from processors.raster import BoundaryClipper

    files = B.multi_files()
    cutline = B.boundary_path(name)
    folders = {k: OUT / f"multi-{k}" for k in ("ours", "warp", "gdalwarp")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)

    shape = []

    def ours():
        with BoundaryClipper(geom) as clipper:
            results = [clipper.clip(f, fresh(folders["ours"] / f.name)) for f in files]
        shape[:] = results[0].shape  # all files share a grid: the same window
        return sum(size(p) for result in results for p in result.paths)

    def warp():
        for f in files:
            gdal_warp(f, cutline, fresh(folders["warp"] / f.name), shape)
        return sum(size(folders["warp"] / f.name) for f in files)

    def gdalwarp():
        for f in files:
            gdalwarp_process(f, cutline, fresh(folders["gdalwarp"] / f.name), shape)

    r = {"files": len(files), "boundary": name}
    r["ours_s"], r["ours_bytes"] = timed(ours, repeat)
    r["warp_s"], r["warp_bytes"] = timed(warp, repeat)
    r["gdalwarp_s"], _ = timed(gdalwarp, repeat)
    worst = max(compare_rasters(folders["ours"] / f.name, folders["warp"] / f.name) for f in files[::10])
    r["comparable"], r["match"] = verdict(worst)
    return r


# --------------------------------------------------------------------------- vector

def count_features(path: Path) -> int:
    import fiona

    with fiona.open(path) as c:
        return len(c)


def features_by_id(path: Path, layer: str) -> dict[int, float]:
    """{osm_id: geometry length} of a clipped roads layer."""
    from osgeo import ogr

    ds = ogr.Open(str(path))
    lyr = ds.GetLayerByName(layer)
    out = {}
    for f in lyr:
        g = f.GetGeometryRef()
        out[f.GetField("osm_id")] = g.Length() if g is not None else 0.0
    return out


def compare_vectors(ours: Path, theirs: Path, layer: str) -> tuple[bool, str]:
    """Same features (osm_id) with the same clipped length (1e-9 degrees) in both outputs."""
    a, b = features_by_id(ours, layer), features_by_id(theirs, layer)
    only = len(set(a) ^ set(b))
    longer = sum(1 for k in set(a) & set(b) if abs(a[k] - b[k]) > 1e-9)
    ok = only == 0 and longer == 0
    return ok, (f"same {len(a):,} features, same lengths" if ok else f"{only} features in one only, {longer} lengths differ")


def without_spatial_filter(fn):
    """Run `fn` with the bounding-box filter of our clip widened to the layer's extent: our own
    clip with only the filter removed (every feature of the layer is a candidate, sorted by the
    boundary grid from its R*Tree box)."""
    import processors.vector as V

    original = V._candidate_envelopes

    def whole_layer(ds, lyr, bbox):
        minx, maxx, miny, maxy = lyr.GetExtent()
        return original(ds, lyr, (minx, miny, maxx, maxy))

    V._candidate_envelopes = whole_layer
    try:
        return fn()
    finally:
        V._candidate_envelopes = original


def vector_bench(name: str, geom, repeat: int, no_filter: bool) -> dict:
    from osgeo import gdal

    from processors.vector import clip_vector_to_gpkg

    minx, miny, maxx, maxy = geom.bounds
    paths = {k: OUT / f"{name}-roads-{k}.gpkg" for k in ("ours", "nofilter", "ogr2ogr", "translate", "spat")}
    cutline = B.boundary_path(name)
    r = {}

    def ours(path=paths["ours"]):
        return clip_vector_to_gpkg(B.ROADS_GPKG, layer=B.ROADS_LAYER, boundary=geom, destination=fresh(path))

    r["ours_s"], res = timed(ours, repeat, f"ours vector {name}")
    r["ours_features"], r["candidates"] = res.feature_count, res.candidates
    r["kept_whole"], r["clipped"], r["tested"] = res.kept_whole, res.clipped, res.tested

    def ogr2ogr():
        paths["ogr2ogr"].unlink(missing_ok=True)
        run(["ogr2ogr", "-f", "GPKG", str(paths["ogr2ogr"]), str(B.ROADS_GPKG), B.ROADS_LAYER,
             "-spat", repr(minx), repr(miny), repr(maxx), repr(maxy), "-clipsrc", str(cutline)])

    def translate():
        paths["translate"].unlink(missing_ok=True)
        gdal.VectorTranslate(str(paths["translate"]), str(B.ROADS_GPKG), format="GPKG", layers=[B.ROADS_LAYER],
                             spatFilter=[minx, miny, maxx, maxy], options=["-clipsrc", str(cutline)])

    def spat_only():
        paths["spat"].unlink(missing_ok=True)
        gdal.VectorTranslate(str(paths["spat"]), str(B.ROADS_GPKG), format="GPKG", layers=[B.ROADS_LAYER],
                             spatFilter=[minx, miny, maxx, maxy])

    r["translate_s"], _ = timed(translate, repeat, f"gdal.VectorTranslate {name}")
    r["ogr_s"], _ = timed(ogr2ogr, repeat, f"ogr2ogr {name}")
    r["spat_s"], _ = timed(spat_only, repeat, f"gdal.VectorTranslate -spat only {name}")
    r["ogr_features"] = count_features(paths["translate"])
    r["comparable"], r["match"] = compare_vectors(paths["ours"], paths["translate"], B.ROADS_LAYER)
    if no_filter:
        r["nofilter_s"], nf = timed(lambda: without_spatial_filter(lambda: ours(paths["nofilter"])), 1, f"ours without filter {name}")
        r["nofilter_features"], r["nofilter_candidates"] = nf.feature_count, nf.candidates
    return r


# --------------------------------------------------------------------------- report

def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def check(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "**miss**")


def ratio(ours: float, theirs: float, comparable: bool) -> str:
    """A ratio only for outputs checked equal (see `verdict` / `compare_vectors`)."""
    return f"{ours / theirs:.2f}" if comparable else "outputs differ"


def report(names, rast, mem, multi, vect, args, built, elapsed, loads) -> str:
    from processors.raster import READ_THREADS

    L = []
    gdal = subprocess.run(["gdalinfo", "--version"], capture_output=True, text=True).stdout.strip()
    import rasterio
    L.append("# Processor clipping benchmark\n")
    L.append(f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}")
    L.append(f"- machine: `nproc` = {os.cpu_count()}, {platform.machine()}, {platform.system()} {platform.release()}; "
             f"{gdal} (rasterio {rasterio.__version__} on GDAL {rasterio.__gdal_version__}); "
             f"load average (1, 5, 15 min, the bench's own work included) {loads[0]} at the start, {loads[1]} at the end; not run under `nice`")
    L.append(f"- command: `.venv/bin/python bench/bench_processors.py --repeat {args.repeat}"
             f"{' --quick' if args.quick else ''}{'' if set(args.parts) == set(PARTS) else ' --parts ' + ' '.join(args.parts)}`; medians of {args.repeat}; ours and every GDAL peer in this "
             "process (`gdal.Warp`, `gdal.Translate`, `gdal.VectorTranslate`) and the same peers as whole "
             "processes (`gdalwarp`, `gdal_translate`, `ogr2ogr`), in the same run")
    L.append("- like with like: the raster peers write the same COG as ours, with the creation options ours uses "
             "for the same output size (`processors.raster.cog_options`: " + ", ".join(cog_options(1024, 1024)) +
             f"; an output smaller than one 512x512 tile is one tile of its own size, BLOCKSIZE=max(128, 16*ceil(side/16)), "
             f"without NUM_THREADS); ours reads only the source tiles the polygon touches, decoded in one thread "
             f"for a window up to one strip (Gambia, Kenya) and in {READ_THREADS} threads, each with a dataset handle "
             "of its own, for a larger one (Brazil); the read-only floor (one thread, the same strips) "
             "and gdal.Warp (one thread) read the whole bounding-box window; every side writes to a removed path; "
             "`gdal_translate -projwin` (the predecessor's bounding-box crop, PACKBITS) is there for output bytes; "
             "outputs are compared before a ratio is printed (rasters: same value on every pixel both keep, at "
             "most 0.1 % of pixels kept by one side only on the polygon's edge; vectors: same features, same "
             "clipped lengths)")
    L.append("- inputs (bench/cache/, built by bench/build_inputs.py): 43200x21600 Int16 30\" grid "
             f"({mb(size(B.GLOBAL_TIF))}, tiled 512, DEFLATE, nodata -32768, smooth field + noise); "
             f"{B.MULTI_COUNT} global 3600x1800 Int16 files; "
             + (f"{B.ROADS_COUNT:,} 4-vertex LineStrings on land ({mb(size(B.ROADS_GPKG))} GPKG with R*Tree); "
                if vect else "") + "boundaries from QGIS world_map.gpkg `countries`")
    L.append(f"- inputs built this run: {', '.join(f'{k} {v:.0f} s' for k, v in built.items()) or 'none (cached)'}; "
             f"bench wall time {elapsed:.0f} s (excluding the build)\n")

    if rast:
        L.append("## Raster: polygon clip of the 30\" grid\n")
        L.append("| boundary | window (h x w) | read-only floor | ours | gdal.Warp (in-process) | gdalwarp (process) | "
                 "ours / gdal.Warp | ours / floor | outputs, ours vs gdal.Warp | gdal.Translate -projwin PACKBITS "
                 "(in-process / process) | bytes ours / gdal.Warp / PACKBITS |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in rast:
        r = rast[n]
        L.append(f"| {n} | {r['shape'][0]} x {r['shape'][1]} | {r['read_s']:.3f} s | {r['ours_s']:.3f} s | "
                 f"{r['warp_s']:.3f} s | {r['gdalwarp_s']:.3f} s | {ratio(r['ours_s'], r['warp_s'], r['comparable'])} | "
                 f"{r['ours_s'] / r['read_s']:.2f} | {r['match']} | {r['translate_s']:.3f} s / {r['gdal_translate_s']:.3f} s | "
                 f"{mb(r['ours_bytes'])} / {mb(r['warp_bytes'])} / {mb(r['packbits_bytes'])} |")
    if mem:
        L.append("\nPeak memory of one Brazil clip in a fresh child process (VmHWM of the child; 'base' = its "
                 "VmRSS after imports and opening the source, before the clip):\n")
        L.append("| boundary | GDAL_CACHEMAX | uncompressed window | process peak | peak - base | "
                 "peak / window | (peak - base) / window |")
        L.append("|---|---|---|---|---|---|---|")
        for (n, cm), m in mem.items():
            L.append(f"| {n} | {cm or 'default (5 % of RAM)'} | {mb(m['window_bytes'])} | {mb(m['peak'])} | "
                     f"{mb(m['peak'] - m['base'])} | {m['peak'] / m['window_bytes']:.2f} | "
                     f"{(m['peak'] - m['base']) / m['window_bytes']:.2f} |")
        m = next(iter(mem.values()))
        steps = [f"{label} {mb(rss)}" if i == 0 else f"+ {label} {mb(rss - m['stages'][i - 1][1])}"
                 for i, (label, rss) in enumerate(m["stages"])]
        L.append(f"\nWhere the base goes (VmRSS of the first child, step by step): {', '.join(steps)}: "
                 f"{mb(m['base'])} = {m['base'] / m['window_bytes']:.2f}x the window before the clip starts, "
                 "above the 1.5x that the whole process may hold; the clip itself adds the 'peak - base' above.")

    if multi:
        m = multi
        L.append(f"\n## Multi-file: {m['files']} global 3600x1800 Int16 files, {m['boundary']}\n")
        L.append("| ours, one BoundaryClipper for all files | gdal.Warp loop (in-process) | one gdalwarp process per file | "
                 "ours / gdal.Warp | outputs (every 10th file) | bytes ours / gdal.Warp |")
        L.append("|---|---|---|---|---|---|")
        L.append(f"| {m['ours_s']:.3f} s | {m['warp_s']:.3f} s | {m['gdalwarp_s']:.3f} s | "
                 f"{ratio(m['ours_s'], m['warp_s'], m['comparable'])} | {m['match']} | "
                 f"{m['ours_bytes'] / 1e3:.0f} kB / {m['warp_bytes'] / 1e3:.0f} kB |")

    if vect:
        L.append(f"\n## Vector: {B.ROADS_COUNT:,} road LineStrings\n")
        L.append("| boundary | candidates (bbox) | features ours / GDAL | ours | gdal.VectorTranslate -spat -clipsrc "
                 "(in-process) | ogr2ogr (process) | ours / gdal.VectorTranslate | outputs | -spat only, no clip "
                 "(in-process) | ours without the spatial filter | without / with |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in vect:
        r = vect[n]
        nofilter = f"{r['nofilter_s']:.3f} s ({r['nofilter_candidates']:,} candidates)" if "nofilter_s" in r else "not run"
        slower = f"{r['nofilter_s'] / r['ours_s']:.0f}x" if "nofilter_s" in r else ""
        L.append(f"| {n} | {r['candidates']:,} | {r['ours_features']:,} / {r['ogr_features']:,} | {r['ours_s']:.3f} s | "
                 f"{r['translate_s']:.3f} s | {r['ogr_s']:.3f} s | {ratio(r['ours_s'], r['translate_s'], r['comparable'])} | "
                 f"{r['match']} | {r['spat_s']:.3f} s | {nofilter} | {slower} |")

    if RUNS:
        L.append(f"\nRuns longer than {MAX_REPEAT_SECONDS:.0f} s were not repeated: "
                 + ", ".join(f"{k} ({v} run)" for k, v in RUNS.items()) + ".")
    L.append("\n## Targets (issue 10)\n")
    L.append("| target | boundary | measured | result |")
    L.append("|---|---|---|---|")

    def row(target, n, value, ok, comparable=True):
        L.append(f"| {target} | {n} | {value} | {check(ok) if comparable else '**outputs differ: no ratio**'} |")

    for n in rast:
        r = rast[n]
        if n == "Kenya":
            v = r["ours_s"] / r["warp_s"]
            row("raster clip <= 0.5x in-process gdal.Warp, same codec", n, f"{v:.2f}x", v <= 0.5, r["comparable"])
        if n == "Brazil":
            v = r["ours_s"] / r["read_s"]
            row("raster clip <= 2.0x read-only floor", n, f"{v:.2f}x", v <= 2.0)
    for (n, cm), m in mem.items():
        v = m["peak"] / m["window_bytes"]
        d = (m["peak"] - m["base"]) / m["window_bytes"]
        row(f"peak memory <= 1.5x uncompressed window, whole process (GDAL_CACHEMAX {cm or 'default'})", n,
            f"{v:.2f}x ({d:.2f}x above the imports; the measured reason: after the imports, before the clip, the "
            f"process holds {m['base'] / m['window_bytes']:.2f}x)", v <= 1.5)
    for n in vect:
        r = vect[n]
        v = r["ours_s"] / r["translate_s"]
        if n == "Kenya":
            row("vector clip <= 0.5x in-process gdal.VectorTranslate -clipsrc", n, f"{v:.2f}x", v <= 0.5, r["comparable"])
        if n == "Brazil":
            row("vector clip <= 0.03x in-process gdal.VectorTranslate -clipsrc", n, f"{v:.3f}x", v <= 0.03, r["comparable"])
    L.append("\n## Where the time goes (measured in this run)\n")
    for n in rast:
        r = rast[n]
        L.append(f"- raster {n}: of one instrumented clip (total {r['phases_total_s']:.3f} s), "
                 + (f"{r['strips_s']:.3f} s went to the strips of a window larger than a strip ({READ_THREADS} threads "
                    f"making the polygon's mask, {r['mask_s']:.3f} s summed over them, decoding the touched source tiles, "
                    f"{r['phase_read_s']:.3f} s summed over them, and sampling the NEAREST overviews; this thread writing "
                    f"the temporary uncompressed GTiff meanwhile) and {r['cog_s']:.3f} s to the COG driver's copy (ZSTD "
                    "level 1 + predictor of the full resolution and the overviews, on the compression threads)"
                    if r["strips_s"] else
                    f"{r['phase_read_s']:.3f} s went to decoding the touched source tiles, {r['mask_s']:.3f} s to the "
                    f"polygon mask and {r['memory_s']:.3f} s to the COG written from memory (MEM dataset, overviews, "
                    f"of which {r['cog_s']:.3f} s the COG driver's copy)")
                 + f"; the read-only floor of the whole window is {r['read_s']:.3f} s.")
    for n in vect:
        r = vect[n]
        L.append(f"- vector {n}: GDAL copies the {r['candidates']:,} bbox candidates without clipping in "
                 f"{r['spat_s']:.3f} s, so of its {r['translate_s']:.3f} s, "
                 f"{max(0.0, r['translate_s'] - r['spat_s']):.3f} s is -clipsrc (GEOS intersection of every candidate "
                 f"with the unprepared boundary); ours spends {r['ours_s']:.3f} s, "
                 f"{r['ours_s'] / max(r['candidates'], 1) * 1e6:.1f} us per candidate: the candidates' R*Tree boxes "
                 f"sorted at once by a grid of the boundary, the features inside copied by GDAL in a thread of its "
                 f"own while {r['tested']:,} near the boundary's edge are tested one by one ({r['clipped']:,} "
                 f"clipped), the output's R*Tree packed from the features' boxes in one pass.")
    L.append("- details per phase and per call: `.venv/bin/python bench/diagnose_processors.py raster|memory|vector "
             "<boundary>`, per file of a multi-file dataset: `... diagnose_processors.py files Kenya`")
    return "\n".join(L) + "\n"


#: What --parts can pick: raster clips of the grid (with Brazil's memory), the multi-file loop, vector clips.
PARTS = ("raster", "multi", "vector")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat, Gambia and Kenya only")
    parser.add_argument("--no-filter", action=argparse.BooleanOptionalAction, default=True,
                        help="also time our vector clip with the spatial filter removed")
    parser.add_argument("--no-write", action="store_true", help="print only, do not write bench/results.md")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="measure only these parts (then print only: bench/results.md needs them all)")
    args = parser.parse_args()
    if set(args.parts) != set(PARTS):
        args.no_write = True
    if args.quick:
        args.repeat = 1
    names = ["Gambia", "Kenya"] if args.quick else list(B.BOUNDARY_NAMES)

    t_build = time.perf_counter()
    built = B.ensure_inputs(roads="vector" in args.parts)
    if built:
        print(f"inputs built in {time.perf_counter() - t_build:.1f} s", flush=True)
    t0 = time.perf_counter()
    load_start = loadavg()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    geoms = B.load_boundaries(names)

    from processors.raster import clip_raster_to_cog
    clip_raster_to_cog(B.GLOBAL_TIF, boundary=geoms["Gambia"], destination=OUT / "warm-up.tif")  # warm process

    rast, vect, mem, multi = {}, {}, {}, {}
    for n in names if "raster" in args.parts else ():
        rast[n] = raster_bench(n, geoms[n], args.repeat)
        print(f"raster {n}: " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rast[n].items()}),
              flush=True)
    if "Brazil" in rast:
        for cm in (None, "64MB"):
            mem[("Brazil", cm)] = memory_bench("Brazil", cm)
            print(f"memory Brazil GDAL_CACHEMAX={cm}: {mem[('Brazil', cm)]}", flush=True)
    if "multi" in args.parts:
        multi = multi_bench("Kenya", geoms["Kenya"], args.repeat)
        print(f"multi-file Kenya: {multi}", flush=True)
    for n in names if "vector" in args.parts else ():
        vect[n] = vector_bench(n, geoms[n], args.repeat, args.no_filter)
        print(f"vector {n}: " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in vect[n].items()}),
              flush=True)
    elapsed = time.perf_counter() - t0
    text = report(names, rast, mem, multi, vect, args, built, elapsed, (load_start, loadavg()))
    print()
    print(text)
    if not args.no_write:
        old = RESULTS.read_text() if RESULTS.exists() else ""
        jobs = old[old.find("## Jobs and API"):] if "## Jobs and API" in old else ""
        RESULTS.write_text(text + ("\n" + jobs if jobs else ""))
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    shutil.rmtree(OUT, ignore_errors=True)


if __name__ == "__main__":
    main()
