"""An in-process job queue over real folders, SpatiaLite and Huey (immediate mode)."""
from __future__ import annotations

from pathlib import Path

from huey import MemoryHuey

from backend.boundaries import BoundaryStore
from backend.jobs import JobQueue
from backend.packages import PackageStore
from backend.settings import Settings
from processors.registry import ProcessorRegistry
from tests.conftest import seeded_data_dir

TEST = "test_processor.version_1"
ADMIN1 = "natural_earth_admin1.version_1"
RASTER = "natural_earth_raster.version_1"


def make_queue(data_dir: Path, seeded_boundaries_db: Path, **settings) -> JobQueue:
    config = Settings(data_dir=seeded_data_dir(data_dir, seeded_boundaries_db), test_processor_seconds=0.0, heartbeat_timeout=1.0, **settings)
    return JobQueue(
        settings=config,
        boundaries=BoundaryStore(config.boundaries_db),
        packages=PackageStore(config.localfs_storage_backend_root),
        registry=ProcessorRegistry.discover(include_test_processors=True),
        huey=MemoryHuey("reliability", immediate=True),
    )


def states(queue: JobQueue, job_id: str) -> dict[str, str]:
    return {p["processor_name"]: p["job_status"] for p in queue.status(job_id)["job_group_processors"]}


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())
