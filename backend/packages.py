"""The package store (`localfs`): package folders, datapackage.json, provenance, HTML pages.

Layout per boundary (compatible with the predecessor):
  <root>/<boundary>/datapackage.json provenance.json index.html license.html version.html
  <root>/<boundary>/datasets/<dataset>/<version>/index.html license.html data/<files>
Every write is atomic (write a temporary file, then rename); updates of the shared JSON files
are serialised by an exclusive lock on `<root>/<boundary>/.lock`, across threads and processes.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import socket
import stat
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from backend import __version__
from backend.boundaries import NAME_PATTERN as SAFE_NAME  # package folders are named after boundaries
from backend.errors import PackageNotFound, UnsafePath
from backend.html import dataset_index_html, dataset_license_html, package_index_html, package_license_html, package_version_html
from processors.base import Processor, ProcessorOutput
from processors.errors import PathOutsideRoot
from processors.outputs import FileFacts, file_facts
from processors.safepaths import inside, make_dirs, open_no_follow, relative_parts
from processors.styles import style_for

STAGING_PREFIX = ".staging-"  # + version, uuid, pid@host of the installing process
#: Threads reading installed files' facts with GDAL (which releases the GIL) beside the hashing.
FACT_THREADS = len(os.sched_getaffinity(0))
_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def sha256_file(path: Path, *also) -> tuple[str, int]:
    """sha256 of the file and its size in bytes; its bytes are also fed to the `also` digests
    (a running hash)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
            for other in also:
                other.update(block)
    return digest.hexdigest(), size


def _is_regular_file(path: Path) -> bool:
    """A regular file itself, not a link to one."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def write_atomic(path: Path, text: str, *, sync: bool = True) -> None:
    """Write `text` to `path` through a temporary file and a rename, so readers never see half;
    `sync`: flushed to the disk before the rename, so that even a machine crash leaves the old or
    the new document, never an empty one. The HTML pages skip it (`sync=False`): they are views
    rebuilt from datapackage.json at every install, and a sync cost 3-12 ms each here, five per
    installed dataset, in the package lock."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk: leave nothing half-written behind
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


class PackageStore:
    """Data packages under one root folder."""

    def __init__(self, root: Path, *, host_url: str = ""):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.host_url = host_url.rstrip("/")

    # -- paths -------------------------------------------------------------------------------
    def package_dir(self, boundary_name: str) -> Path:
        """The package folder of a boundary; `UnsafePath` for names that could escape the root."""
        if not SAFE_NAME.match(boundary_name or ""):
            raise UnsafePath(f"invalid package name: {boundary_name!r}")
        return inside(self.root, self.root / boundary_name)

    def dataset_dir(self, boundary_name: str, processor: type[Processor]) -> Path:
        return self.package_dir(boundary_name) / "datasets" / processor.name / processor.version

    def resolve_file(self, relative: str) -> Path:
        """A file under the root from a URL path (a folder's `index.html`); `UnsafePath` for `..`,
        symbolic links on the way and names no file system accepts (they would leave the root,
        or fail as a 500)."""
        try:
            path = inside(self.root, self.root.joinpath(*relative_parts(relative)))
            return inside(self.root, path / "index.html") if path.is_dir() else path
        except PathOutsideRoot:  # its text names server folders: not for the client
            raise UnsafePath(f"invalid path: {relative[:300]!r}") from None

    def uri(self, relative: str) -> str:
        """Public URL of a path relative to the root (empty host URL: relative to the API)."""
        return f"{self.host_url or '/packages'}/{relative}"

    # -- locking and JSON documents ----------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, boundary_name: str) -> Iterator[Path]:
        """Exclusive lock on a package, across threads (flock is per open file) and processes."""
        folder = make_dirs(self.root, self.package_dir(boundary_name))
        with _thread_locks_guard:
            thread_lock = _thread_locks.setdefault(folder, threading.Lock())
        with thread_lock, open_no_follow(folder / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read_datapackage(self, boundary_name: str) -> dict[str, Any] | None:
        path = self.package_dir(boundary_name) / "datapackage.json"
        try:
            with open_no_follow(path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def read_provenance(self, boundary_name: str) -> dict[str, Any]:
        path = self.package_dir(boundary_name) / "provenance.json"
        try:
            with open_no_follow(path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    # -- package life cycle --------------------------------------------------------------------
    def ensure_package(self, boundary: dict[str, Any]) -> Path:
        """Create the package folder and its pages if they are missing (boundary setup)."""
        with self.locked(boundary["name"]) as folder:
            make_dirs(self.root, folder / "datasets")
            if not (folder / "index.html").exists():
                self._write_package_pages(folder, boundary, self.read_datapackage(boundary["name"]))
        return folder

    def has_dataset(self, boundary_name: str, processor: type[Processor]) -> bool:
        """True when the dataset version is recorded in datapackage.json and its files exist."""
        package = self.read_datapackage(boundary_name)
        if not package:
            return False
        resource = next((r for r in package["resources"] if r["name"] == resource_name(processor)), None)
        if resource is None:
            return False
        folder = self.package_dir(boundary_name)
        return all((folder / p).is_file() for p in resource["path"])

    def install_dataset(
        self, boundary: dict[str, Any], processor: type[Processor], output: ProcessorOutput, output_dir: Path,
        provenance: ProvenanceRecord | None = None,
    ) -> dict[str, Any]:
        """Move a processor's finished outputs into the package atomically and record them.

        The version folder is assembled beside its final place. Then, under the package lock:
        `provenance` is merged into provenance.json, the folder is renamed into place and
        datapackage.json gains (or replaces) the resource. So the package never shows a
        half-written dataset nor one without its provenance; if datapackage.json cannot be written
        (a full disk), the folder goes back out and the previous version, if any, back in.
        """
        folder = self.package_dir(boundary["name"])
        final = self.dataset_dir(boundary["name"], processor)
        make_dirs(self.root, final.parent)
        inside(self.root, final)
        staging = final.parent / f"{STAGING_PREFIX}{processor.version}-{uuid.uuid4().hex}-{os.getpid()}@{socket.gethostname()}"
        (staging / "data").mkdir(parents=True)
        try:
            paths, hashes, total = [], [], 0
            whole = hashlib.sha256()  # over the files in path[] order: frictionless's multipart hash
            output_dir = output_dir.resolve()
            with concurrent.futures.ThreadPoolExecutor(FACT_THREADS, thread_name_prefix="facts") as pool:
                # GDAL reads each file's facts in these threads while this one hashes the files in order
                pending_facts = []
                for name in output.files:
                    source = output_dir / name
                    if name in ("", ".", "..") or source.name != name or not _is_regular_file(source):
                        raise ValueError(f"processor output {name!r} is not a file in its output folder")
                    target = staging / "data" / name
                    shutil.move(source, target)  # a rename on the same file system, a copy otherwise
                    pending_facts.append(pool.submit(file_facts, target))
                    digest, size = sha256_file(target, whole)
                    hashes.append(digest)
                    total += size
                    paths.append(f"{final.relative_to(folder).as_posix()}/data/{name}")
                facts = [f.result() for f in pending_facts]
            resource = build_resource(
                processor, output, paths=paths, hashes=hashes, total_bytes=total, total_sha256=whole.hexdigest(), facts=facts
            )
            write_atomic(staging / "index.html", dataset_index_html(processor, resource), sync=False)
            write_atomic(staging / "license.html", dataset_license_html(processor, resource), sync=False)
            with self.locked(boundary["name"]):
                if provenance is not None:
                    self._merge_provenance(folder, boundary["name"], provenance.key, {
                        **provenance.job,
                        "processors": {processor.full_name(): {
                            "job_status": "SUCCESS", "job_result": {**dataset_result(resource), **provenance.result},
                            **provenance.details}},
                    })
                previous = _swap_in(staging, final)
                try:
                    package = self._update_datapackage(boundary, resource)
                except BaseException:
                    _swap_out(staging, final, previous)
                    raise
                if previous is not None:
                    shutil.rmtree(previous, ignore_errors=True)
                self._write_package_pages(folder, boundary, package)
            return resource
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _update_datapackage(self, boundary: dict[str, Any], resource: dict[str, Any]) -> dict[str, Any]:
        """Add or replace one resource in datapackage.json. Caller holds the package lock."""
        package = self.read_datapackage(boundary["name"]) or new_datapackage(boundary)
        package["resources"] = [r for r in package["resources"] if r["name"] != resource["name"]] + [resource]
        package["resources"].sort(key=lambda r: r["name"])
        licenses = {r["license"]["name"]: r["license"] for r in package["resources"]}
        package["licenses"] = [licenses[k] for k in sorted(licenses)]
        package["synthetic"] = any(r.get("synthetic", False) for r in package["resources"])
        package["updated"] = utcnow()
        write_json_atomic(self.package_dir(boundary["name"]) / "datapackage.json", package)
        return package

    def add_provenance(self, boundary: dict[str, Any], entry: dict[str, Any], key: str | None = None) -> None:
        """Merge one run's entry into provenance.json under `key` (default: time and job id);
        an existing entry keeps the processors the new one does not mention."""
        key = key or f"{utcnow()} {entry.get('job_id', '')}".strip()
        with self.locked(boundary["name"]) as folder:
            self._merge_provenance(folder, boundary["name"], key, entry)

    def _merge_provenance(self, folder: Path, boundary_name: str, key: str, entry: dict[str, Any]) -> None:
        """Caller holds the package lock."""
        provenance = self.read_provenance(boundary_name)
        merged = {**provenance.get(key, {}), **entry}
        merged["processors"] = {**provenance.get(key, {}).get("processors", {}), **entry.get("processors", {})}
        if not merged["processors"]:
            del merged["processors"]
        provenance[key] = merged
        write_json_atomic(folder / "provenance.json", provenance)

    def _write_package_pages(self, folder: Path, boundary: dict[str, Any], package: dict[str, Any] | None) -> None:
        resources = package["resources"] if package else []
        write_atomic(folder / "index.html", package_index_html(boundary, resources), sync=False)
        write_atomic(folder / "license.html", package_license_html(boundary, resources), sync=False)
        write_atomic(folder / "version.html", package_version_html(boundary, resources, __version__), sync=False)

    def clean(self) -> list[str]:
        """Remove what an interrupted install left in each package (a worker killed mid-install):
        staging folders whose process is gone, set-aside old versions, temporary files, and
        dataset folders datapackage.json does not list. Says what it removed."""
        removed = []
        for package in self.list_packages():
            with self.locked(package["boundary_name"]) as folder:
                datasets = folder / "datasets"
                try:
                    inside(self.root, datasets)  # linked elsewhere, this clean-up would delete there
                except PathOutsideRoot as exc:
                    removed.append(f"left {folder} alone: {exc}")
                    continue
                listed = {folder / Path(p).parents[1] for r in (self.read_datapackage(package["boundary_name"]) or {}).get("resources", []) for p in r["path"]}
                leftovers = [p for p in folder.glob(".*.tmp") if not p.is_symlink()]
                dataset_folders = _subfolders(datasets) if datasets.is_dir() else []
                for version in [v for d in dataset_folders for v in _subfolders(d, hidden=True)]:
                    if version.name.startswith(STAGING_PREFIX):
                        owner, _, host = version.name.rpartition("@")
                        if process_gone({"host": host, "pid": owner.rpartition("-")[2]}):
                            leftovers.append(version)
                    elif version.name.startswith(".trash-") or version not in listed:
                        leftovers.append(version)
                for leftover in leftovers:
                    if leftover.is_dir():
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        leftover.unlink(missing_ok=True)
                    removed.append(f"removed {leftover}")
                for dataset in dataset_folders:
                    if not any(dataset.iterdir()):
                        dataset.rmdir()
        return removed

    # -- listing ----------------------------------------------------------------------------------
    def list_packages(self) -> list[dict[str, Any]]:
        """`[{boundary_name, uri}]` for every package folder."""
        return [
            {"boundary_name": p.name, "uri": self.uri(f"{p.name}/")}
            for p in sorted(self.root.iterdir())
            if p.is_dir() and not p.is_symlink() and SAFE_NAME.match(p.name)
        ]

    def get_package(self, boundary_name: str) -> dict[str, Any]:
        """A package with its datasets and parsed datapackage.json; `PackageNotFound`."""
        folder = self.package_dir(boundary_name)
        if not folder.is_dir():
            raise PackageNotFound(boundary_name)
        package = self.read_datapackage(boundary_name)
        datasets = []
        for resource in (package or {}).get("resources", []):
            datasets.append(
                {
                    "name": resource["name"],
                    "processor": resource.get("processor", ""),
                    "version": resource.get("version", ""),
                    "title": resource.get("title", ""),
                    "files": [
                        {"path": p, "uri": self.uri(f"{boundary_name}/{p}"), "bytes": (folder / p).stat().st_size if (folder / p).exists() else None, "sha256": h}
                        for p, h in zip(resource["path"], resource["hashes"])
                    ],
                }
            )
        return {
            "boundary_name": boundary_name,
            "uri": self.uri(f"{boundary_name}/"),
            "datapackage_uri": self.uri(f"{boundary_name}/datapackage.json"),
            "datasets": datasets,
            "datapackage": package,
        }

    def dataset_versions(self, boundary_name: str) -> list[tuple[str, str]]:
        """(dataset, version) of every dataset version folder in a package; `PackageNotFound`."""
        datasets = inside(self.root, self.package_dir(boundary_name) / "datasets")
        if not datasets.parent.is_dir():
            raise PackageNotFound(boundary_name)
        if not datasets.is_dir():
            return []
        return [(d.name, v.name) for d in _subfolders(datasets) for v in _subfolders(d)]

    def delete_package(self, boundary_name: str) -> None:
        """Remove a package folder: renamed out of sight at once, then deleted."""
        with self.locked(boundary_name) as folder:
            trash = self.root / f".trash-{boundary_name}-{uuid.uuid4().hex}"
            os.replace(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)


def software_versions() -> dict[str, str]:
    """Versions of what made the outputs, for provenance.json."""
    import fiona
    import rasterio
    import shapely
    from osgeo import gdal, osr

    return {
        "ccg_autopkg": __version__,
        "gdal": gdal.__version__,
        "proj": f"{osr.GetPROJVersionMajor()}.{osr.GetPROJVersionMinor()}.{osr.GetPROJVersionMicro()}",
        "rasterio": rasterio.__version__,
        "fiona": fiona.__version__,
        "shapely": shapely.__version__,
    }


def resource_name(processor: type[Processor]) -> str:
    """Frictionless resource names are unique per package: one per dataset version."""
    return f"{processor.name}-{processor.version}"


def new_datapackage(boundary: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": boundary["name"],
        "title": boundary.get("name_long") or boundary["name"],
        "description": f"Datasets clipped to the boundary of {boundary.get('name_long') or boundary['name']}, with licences, citations and provenance.",
        "profile": "data-package",
        "created": utcnow(),
        "licenses": [],
        "synthetic": False,
        "resources": [],
    }


def build_resource(
    processor: type[Processor],
    output: ProcessorOutput,
    *,
    paths: list[str],
    hashes: list[str],
    total_bytes: int,
    total_sha256: str,
    facts: list[FileFacts],
) -> dict[str, Any]:
    """The predecessor's resource shape (`path[]`, per-file sha256 `hashes[]`, `bytes`, licence,
    sources, citation) plus the standard `hash` (sha256 of the files concatenated in `path[]`
    order, which is what frictionless checks for a multi-file resource, so a flipped byte fails
    `frictionless validate`) and the extension read by the QGIS plugin: `synthetic`,
    `dimensions` and `files[]` (label, dimension values, the CRS, format and, for a compressed
    raster, codec read from each file, `empty`)."""
    meta = processor.metadata
    license_ = {"name": meta.license.name, "path": meta.license.path, "title": meta.license.title}
    dimensions = {d.name: d for d in output.dimensions}
    files = []
    for path, fact in zip(paths, facts):
        detail = output.detail(path.rsplit("/", 1)[-1])
        for key, value in detail.dimensions.items():
            if key not in dimensions or value not in dimensions[key].values:
                raise ValueError(f"{processor.full_name()}: {detail.name} has {key}={value!r}, not a declared dimension value")
        files.append({
            "path": path,
            "label": detail.label,
            "dimensions": dict(detail.dimensions),
            "crs": fact.crs,
            "format": fact.format or output.format,
            **({"compression": fact.compression} if fact.compression else {}),
            "empty": detail.empty or fact.features == 0,
        })
    resource = {
        "name": resource_name(processor),
        "processor": processor.full_name(),
        "version": processor.version,
        "title": meta.title or meta.dataset or processor.name,
        "description": output.description or meta.description,
        "path": paths,
        "format": output.format,
        "bytes": total_bytes,
        "hash": f"sha256:{total_sha256}",
        "hashes": hashes,
        "hash_algorithm": "sha256",
        "license": license_,
        "licenses": [license_],
        "sources": [{"title": meta.title_long or meta.title or meta.dataset or processor.name, "path": meta.origin_url}],
        "citation": meta.citation,
        "author": meta.author,
        "synthetic": output.synthetic or any(f.synthetic for f in facts),
        "dimensions": [d.as_json() for d in output.dimensions],
        "files": files,
        "style": style_for(processor.name),  # how clients should draw it (processors/styles.py)
    }
    resource.update(output.extra)
    return resource


@dataclass(frozen=True)
class ProvenanceRecord:
    """What a job records with a dataset it installs: its provenance.json key, the job's fields
    (`job_id`, `boundary_name`, `submitted`...), details of this processor's run (`worker`...)
    and what its result adds to `dataset_result` (`sources`...)."""

    key: str
    job: dict[str, Any]
    details: dict[str, Any]
    result: dict[str, Any]


def process_gone(worker: dict[str, Any]) -> bool:
    """True when `worker` (`{host, pid}`) ran on this machine and its process has exited."""
    if worker.get("host") != socket.gethostname() or not str(worker.get("pid", "")).isdigit():
        return False
    try:
        os.kill(int(worker["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def dataset_result(resource: dict[str, Any]) -> dict[str, Any]:
    """A job's result for a dataset it installed."""
    return {"resource": resource["name"], "paths": resource["path"], "bytes": resource["bytes"],
            "synthetic": resource.get("synthetic", False)}


def _subfolders(parent: Path, *, hidden: bool = False) -> list[Path]:
    """Folders in `parent` that are not symbolic links (the caller checked `parent` itself);
    hidden ones (staging, set-aside versions) only when asked."""
    return [f for f in sorted(parent.iterdir())
            if f.is_dir() and not f.is_symlink() and (hidden or not f.name.startswith("."))]


def _swap_in(staging: Path, final: Path) -> Path | None:
    """Rename `staging` to `final`; an existing `final` is moved aside and returned (or None)."""
    previous = None
    if final.exists():
        previous = final.with_name(f".trash-{final.name}-{uuid.uuid4().hex}")
        os.replace(final, previous)
    os.replace(staging, final)
    return previous


def _swap_out(staging: Path, final: Path, previous: Path | None) -> None:
    """Undo `_swap_in`."""
    os.replace(final, staging)
    if previous is not None:
        os.replace(previous, final)
