"""Benchmark the boundary store: seed time, point search and name search latency.

    .venv/bin/python bench/bench_boundaries.py [--fresh] [--part-max-vertices N] [--points 2000]

Seeds Natural Earth admin-0 + admin-1 from QGIS's world map into bench/cache/boundaries.db (reused
on later runs unless --fresh; another N than the default uses boundaries-<N>.db), then times
point searches at random land and ocean points and name searches, and prints p50/p90/p99 in ms
and a markdown table. Target: point search p50 < 1 ms, p90 < 5 ms.
"""
from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.boundaries import PART_MAX_VERTICES, BoundaryStore  # noqa: E402

WORLD_MAP = Path("/usr/share/qgis/resources/data/world_map.gpkg")


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    """p50, p90, p99 of samples in seconds, as milliseconds."""
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return qs[49] * 1000, qs[89] * 1000, qs[98] * 1000


def land_points(store: BoundaryStore, count: int, rng: random.Random) -> list[tuple[float, float]]:
    """Points inside random boundaries (representative points, jittered a little)."""
    rows = store._conn().execute(
        "SELECT ST_X(PointOnSurface(geometry)), ST_Y(PointOnSurface(geometry)) FROM boundaries"
        " ORDER BY id").fetchall()
    rows = rng.sample(rows, min(count, len(rows)))
    points = []
    while len(points) < count:
        x, y = rows[len(points) % len(rows)]
        points.append((max(-90, min(90, y + rng.uniform(-0.05, 0.05))),
                       max(-180, min(180, x + rng.uniform(-0.05, 0.05)))))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="seed a new database in a temp dir")
    parser.add_argument("--part-max-vertices", type=int, default=PART_MAX_VERTICES)
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--names", type=int, default=500)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    if args.fresh:
        db_path = Path(tempfile.mkdtemp(prefix="bench-boundaries-")) / "boundaries.db"
    else:
        suffix = "" if args.part_max_vertices == PART_MAX_VERTICES else f"-{args.part_max_vertices}"
        db_path = ROOT / "bench" / "cache" / f"boundaries{suffix}.db"
        db_path.parent.mkdir(parents=True, exist_ok=True)
    store = BoundaryStore(db_path, part_max_vertices=args.part_max_vertices)
    seed_seconds = None
    if store.count() == 0:
        t0 = time.perf_counter()
        report = store.seed_natural_earth(WORLD_MAP)
        seed_seconds = time.perf_counter() - t0
        print(f"seeded {report.loaded} boundaries ({report.skipped} skipped) in {seed_seconds:.1f} s")
    else:
        print(f"reusing {db_path} ({store.count()} boundaries)")
    parts = store._conn().execute("SELECT count(*) FROM boundary_parts").fetchone()[0]
    print(f"{parts} parts, at most {args.part_max_vertices} vertices each")

    # Half in boundaries, half uniformly anywhere (mostly ocean).
    n_land = args.points // 2
    points = land_points(store, n_land, rng)
    points += [(rng.uniform(-90, 90), rng.uniform(-180, 180)) for _ in range(args.points - n_land)]
    rng.shuffle(points)
    store.search_point(0, 0)  # warm up the connection
    point_times, hits = [], 0
    for lat, lon in points:
        t0 = time.perf_counter()
        found = store.search_point(lat, lon)
        point_times.append(time.perf_counter() - t0)
        hits += bool(found)

    names = [b["name_long"] for b in store.list()]
    queries = []
    for _ in range(args.names):
        text = rng.choice(names)
        start = rng.randrange(0, max(1, len(text) - 3))
        queries.append(text[start:start + rng.randint(3, 8)].strip() or text)
    name_times, name_hits = [], 0
    for text in queries:
        t0 = time.perf_counter()
        found = store.search_name(text)
        name_times.append(time.perf_counter() - t0)
        name_hits += len(found)

    p = percentiles(point_times)
    n = percentiles(name_times)
    print(f"point search: {len(points)} queries, {hits} with a match; "
          f"p50 {p[0]:.3f} ms, p90 {p[1]:.3f} ms, p99 {p[2]:.3f} ms")
    print(f"name search:  {len(queries)} queries, {name_hits / len(queries):.1f} matches on average; "
          f"p50 {n[0]:.3f} ms, p90 {n[1]:.3f} ms, p99 {n[2]:.3f} ms")
    print()
    print(f"| measure (part max vertices {args.part_max_vertices}, {parts} parts) | p50 ms | p90 ms | p99 ms |")
    print("|---|---|---|---|")
    print(f"| point search ({len(points)}) | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} |")
    print(f"| name search ({len(queries)}) | {n[0]:.3f} | {n[1]:.3f} | {n[2]:.3f} |")
    seed_cell = f"{seed_seconds:.1f} s" if seed_seconds is not None else "(cached)"
    print(f"| seed ({store.count()} boundaries) | {seed_cell} | | |")
    store.close()
    if args.fresh:
        shutil.rmtree(db_path.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
