"""Shared helpers of the reliability tests: hostile geometries and a liveness probe."""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import requests


def overlapping_triangles(count: int, *, x: float = 10.0, y: float = 10.0, radius: float = 1.0) -> dict:
    """A MultiPolygon of `count` triangles turned around one point: every edge crosses most others
    (the upload that stalled the service: 200 took minutes of GEOS time, 20,000 filled memory)."""
    polygons = []
    for i in range(count):
        turn = 2 * math.pi * i / count
        ring = [(round(x + radius * math.cos(turn + k * 2.1), 4), round(y + radius * math.sin(turn + k * 2.1), 4))
                for k in range(3)]
        polygons.append([[*ring, ring[0]]])
    return {"type": "MultiPolygon", "coordinates": polygons}


def densified_country(name: str, world_map_gpkg: str, factor: int) -> dict:
    """A real Natural Earth country with every edge split into `factor` (a legitimate, valid,
    detailed boundary: Canada with factor 5 has 188,470 vertices, 7.7 MB of GeoJSON)."""
    import fiona

    with fiona.open(world_map_gpkg, layer="countries") as src:
        geometry = next(f["geometry"] for f in src if f["properties"]["NAME"] == name)
    polygons = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]

    def densify(ring):
        out = [[x0 + (x1 - x0) * k / factor, y0 + (y1 - y0) * k / factor]
               for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:]) for k in range(factor)]
        return out + [list(ring[-1])]

    return {"type": "MultiPolygon", "coordinates": [[densify(r) for r in polygon] for polygon in polygons]}


@dataclass
class LivenessProbe:
    """Polls `GET /v1/liveness` every 20 ms in a thread while the `with` block runs; `latencies`
    in milliseconds (a probe that gets no answer within 10 s counts as 10,000 ms)."""

    url: str
    latencies: list[float] = field(default_factory=list)

    def __enter__(self) -> "LivenessProbe":
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        while not self.latencies:  # the first answer: the probe is running
            time.sleep(0.01)
        return self

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                session.get(self.url + "/v1/liveness", timeout=10).raise_for_status()
                self.latencies.append((time.perf_counter() - started) * 1000)
            except requests.RequestException:
                self.latencies.append(10_000.0)
            self._stop.wait(0.02)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def summary(self) -> str:
        return (f"{len(self.latencies)} liveness probes: p50 {self.percentile(50):.1f} ms, "
                f"p90 {self.percentile(90):.1f} ms, max {max(self.latencies):.1f} ms")
