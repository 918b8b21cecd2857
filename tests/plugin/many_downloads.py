"""Many small files, many loads: `DownloadPackageTask` run again and again through QGIS's task
manager (thread-pool threads are reused between tasks), each streaming every file over loopback
HTTP. Run as a script (a crash must fail the calling test, not kill pytest):

    python tests/plugin/many_downloads.py BASE_URL FILES LOADS CACHE_DIR

Prints one line per load; exits 0 only when every load fetched every file, sha256 checked.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from qgis.core import QgsApplication  # noqa: E402
from qgis.PyQt.QtCore import QEventLoop, QTimer  # noqa: E402


def main() -> int:
    base_url, count, loads, cache = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    app = QgsApplication([], False)  # noqa: F841
    QgsApplication.setPrefixPath("/usr", True)
    QgsApplication.initQgis()
    from qgis_plugin.loader import DownloadPackageTask, PackageFile

    payload = {i: f"file {i}\n".encode() * (1 + i % 7) for i in range(count)}
    package = {"boundary_name": "many", "datasets": [], "datapackage": {}}
    failures = 0
    for load in range(loads):
        files = [PackageFile(dataset="many-v1", path=f"data/{i}.txt", uri=f"{base_url}/{i}.txt",
                             sha256=hashlib.sha256(payload[i]).hexdigest(), bytes=len(payload[i])) for i in range(count)]
        loop, outcome = QEventLoop(), []

        def done(ok, result, _built):
            outcome.append((ok, result.error, result.downloaded))
            loop.quit()

        task = DownloadPackageTask(package, files, cache / str(load), done)
        QgsApplication.taskManager().addTask(task)
        QTimer.singleShot(120_000, loop.quit)
        loop.exec_()
        print(f"load {load}: {outcome}", flush=True)
        if outcome != [(True, "", count)]:
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
