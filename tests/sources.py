"""Test helpers: a loopback HTTP origin with Range support and switchable faults, and synthetic
source factories (GeoTIFFs, zip archives).

`OriginServer(root)` serves the files under `root` at `http://127.0.0.1:<port>/<path>`. Faults
are set per URL path in `server.faults[path]` (a `Fault`), and every GET is counted in
`server.requests[path]`.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>Not Found</title></head><body>gone</body></html>\n"


@dataclass
class Fault:
    """What goes wrong when a path is requested."""

    break_after: int | None = None  # close the connection after this many body bytes ...
    break_times: int = 1  # ... on this many requests
    html: bool = False  # answer 200 with an HTML error page
    html_without_content_type: bool = False  # the same page served as application/octet-stream
    ignore_range: bool = False  # always answer 200 with the whole file
    status: int | None = None  # answer with this HTTP status (and an empty body)
    status_times: int = 1 << 30  # ... on this many requests
    delay: float = 0.0  # seconds to sleep before sending the body (to make fetches overlap)
    body: bytes | None = None  # answer 200 with these bytes (and a matching Content-Length) instead of the file


class OriginServer:
    """A ThreadingHTTPServer in a daemon thread; use as a context manager."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.faults: dict[str, Fault] = {}
        self.requests: collections.Counter[str] = collections.Counter()
        self.ranges: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> "OriginServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        with self._lock:
            self.requests[path] += 1
            count = self.requests[path]
            self.ranges.append((path, h.headers.get("Range")))
        fault = self.faults.get(path, Fault())
        if fault.status is not None and count <= fault.status_times:
            h.send_response(fault.status)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if fault.body is not None:
            h.send_response(200)
            h.send_header("Content-Type", "application/octet-stream")
            h.send_header("Content-Length", str(len(fault.body)))
            h.end_headers()
            h.wfile.write(fault.body)
            return
        if fault.html or fault.html_without_content_type:
            h.send_response(200)
            h.send_header("Content-Type", "application/octet-stream" if fault.html_without_content_type else "text/html; charset=utf-8")
            h.send_header("Content-Length", str(len(HTML_PAGE)))
            h.end_headers()
            h.wfile.write(HTML_PAGE)
            return
        file = self.root / path.lstrip("/")
        if not file.is_file():
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        data = file.read_bytes()
        start = 0
        range_header = h.headers.get("Range")
        if range_header and not fault.ignore_range and range_header.startswith("bytes="):
            start = int(range_header[6:].split("-")[0])
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        body = data[start:]
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        if fault.delay:
            time.sleep(fault.delay)
        if fault.break_after is not None and count <= fault.break_times:
            h.wfile.write(body[: fault.break_after])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(body)


# --------------------------------------------------------------------------- synthetic rasters

#: Mollweide's full extent (metres): x within +-18040095.7, y within +-9020047.8.
MOLLWEIDE_X = 18040095.696147293
MOLLWEIDE_Y = 9020047.848073646


def synthetic_values(dtype: str, height: int, width: int, bands: int = 1):
    """Deterministic, position-dependent values that never equal the dtype's default nodata
    (min for signed, max for unsigned, NaN for float) nor -999."""
    import numpy as np

    rows, cols = np.mgrid[0:height, 0:width]
    out = []
    for b in range(bands):
        if np.dtype(dtype).kind == "f":
            v = np.sin(rows / 17.0 + b) * 100 + np.cos(cols / 23.0) * 50 + 0.25
        elif np.dtype(dtype).kind == "u":
            v = (rows * 7 + cols * 3 + b) % 250
        else:
            v = (rows * 7 + cols * 3 + b) % 20000
        out.append(v.astype(dtype))
    return np.stack(out)


def synthetic_raster(
    path: Path,
    *,
    dtype: str = "int16",
    crs: str = "EPSG:4326",
    nodata: float | None = -999,
    bounds: tuple[float, float, float, float] | None = None,
    width: int = 1440,
    height: int = 720,
    bands: int = 1,
    holes: bool = True,
    compress: str = "DEFLATE",
) -> Path:
    """A tiled GeoTIFF over `bounds` (default: the world in `crs`, e.g. 0.25 degree in EPSG:4326).

    With `holes` and a nodata value, a 40x40-pixel block at rows/cols 300..340 is nodata.
    """
    import numpy as np
    import rasterio
    from rasterio.transform import from_bounds

    if bounds is None:
        bounds = (-180, -90, 180, 90) if crs == "EPSG:4326" else (-MOLLWEIDE_X, -MOLLWEIDE_Y, MOLLWEIDE_X, MOLLWEIDE_Y)
    data = synthetic_values(dtype, height, width, bands)
    if holes and nodata is not None and height > 340 and width > 340:
        data[:, 300:340, 300:340] = nodata
    profile = dict(
        driver="GTiff", width=width, height=height, count=bands, dtype=dtype, crs=crs,
        transform=from_bounds(*bounds, width, height), nodata=nodata,
        tiled=True, blockxsize=256, blockysize=256, compress=compress,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path
