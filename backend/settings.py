"""One typed settings object, read from `CCGAUTOPKG_*` environment variables."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

PREFIX = "CCGAUTOPKG_"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "ccg-autopkg"


def setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """Every setting; the environment variable is `CCGAUTOPKG_` + the upper-cased field name."""

    data_dir: Path = setting(None, "Folder for all state: boundary database, queue, packages, processing. Default: the per-user data folder (~/.local/share/ccg-autopkg).")
    storage_backend: str = setting("localfs", "Where packages are stored; `localfs` (a folder, which may be shared storage) is the only backend.")
    localfs_storage_backend_root: Path = setting(None, "Package root folder. Default: DATA_DIR/packages.")
    localfs_processing_backend_root: Path = setting(None, "Processing folder (source cache and scratch). Default: DATA_DIR/processing.")
    boundaries_db: Path = setting(None, "SpatiaLite database of boundaries. Default: DATA_DIR/boundaries.db.")
    huey_url: str = setting("", "Job queue: empty for SqliteHuey at DATA_DIR/huey.db, or `redis://host:port/db` for RedisHuey shared by many workers.")
    host: str = setting("127.0.0.1", "Address `autopkg serve` listens on.")
    port: int = setting(8000, "Port `autopkg serve` listens on.")
    workers: int = setting(None, "Worker processes `serve` starts (0: API only) or `autopkg worker` runs. Default: the number of CPU cores.")
    api_processes: int = setting(None, "API processes `autopkg serve` runs, each on its own socket of the port (SO_REUSEPORT: the kernel spreads connections evenly; each reads the same database and queue). Default: 2, or 1 on a one-core machine.")
    api_token: str = setting("", "When set, every route except liveness, readiness and the API docs requires `Authorization: Bearer <token>`.")
    packages_host_url: str = setting("", "Public base URL of the package files; empty means the API's own `/packages` route.")
    include_test_processors: bool = setting(False, "List the predecessor's `test_processor` and `test_fail_processor`.")
    test_processor_seconds: float = setting(1.0, "How long the test processors run.")
    source_mirror: str = setting("", "Replaces every source origin: a base URL or a folder laid out like the origins (`<mirror>/<host>/<path>`), for offline sites and tests.")
    world_map_gpkg: Path = setting(Path("/usr/share/qgis/resources/data/world_map.gpkg"), "QGIS's Natural Earth world map, used to seed boundaries and by `natural_earth_admin1`.")
    seed_boundaries: bool = setting(True, "Load Natural Earth countries and states/provinces when the boundary store is empty at start.")
    max_upload_bytes: int = setting(16_000_000, "Largest custom boundary accepted by `POST /v1/boundaries` (bytes of GeoJSON).")
    max_upload_vertices: int = setting(200_000, "Most vertices accepted in a custom boundary.")
    max_upload_parts: int = setting(10_000, "Most polygon parts accepted in a custom boundary.")
    upload_check_seconds: float = setting(15.0, "Time budget for checking and repairing one custom boundary (in a separate process); a boundary that needs longer is refused with 413.")
    upload_check_memory_mb: int = setting(1024, "Memory budget (MB) for checking and repairing one custom boundary; a boundary that needs more is refused with 413.")
    heartbeat_timeout: float = setting(60.0, "Seconds without a heartbeat after which a running processor's worker is taken as dead.")
    job_retention_days: float = setting(30.0, "Days a finished job's record (status, progress, result) stays in the queue storage; a worker start removes older ones. The package and its provenance.json keep what was made. 0 keeps records forever.")

    def __post_init__(self) -> None:
        # Derived folders: set once so every part of the service agrees on them.
        data_dir = Path(self.data_dir) if self.data_dir else _default_data_dir()
        object.__setattr__(self, "data_dir", data_dir)
        for name, default in (
            ("localfs_storage_backend_root", data_dir / "packages"),
            ("localfs_processing_backend_root", data_dir / "processing"),
            ("boundaries_db", data_dir / "boundaries.db"),
        ):
            value = getattr(self, name)
            object.__setattr__(self, name, Path(value) if value else default)
        if self.workers is None:
            object.__setattr__(self, "workers", os.cpu_count() or 1)
        if self.api_processes is None:
            object.__setattr__(self, "api_processes", min(2, os.cpu_count() or 1))
        if self.api_processes < 1:
            raise ValueError(f"{PREFIX}API_PROCESSES={self.api_processes}: at least 1")
        if self.storage_backend != "localfs":
            raise ValueError(f"{PREFIX}STORAGE_BACKEND={self.storage_backend!r}: only 'localfs' is supported")

    @property
    def huey_db(self) -> Path:
        return self.data_dir / "huey.db"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Settings from `environ` (default `os.environ`), then explicit overrides."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def documentation(cls) -> list[tuple[str, str, str]]:
        """(variable, default, help) for every setting, for the README and `autopkg settings`."""
        rows = []
        for f in dataclasses.fields(cls):
            default = "" if f.default is None else str(f.default)
            rows.append((PREFIX + f.name.upper(), default, f.metadata["help"]))
        return rows

    def environ(self) -> dict[str, str]:
        """These settings as environment variables, for child processes."""
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _parse(f: dataclasses.Field, raw: str) -> Any:
    kind = f.type
    try:
        if kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw).expanduser()
        return raw
    except ValueError:
        raise ValueError(f"{PREFIX}{f.name.upper()}={raw!r} is not a valid {kind}") from None
