"""The parts of the service, built once from settings and shared by the API, workers and CLI."""
from __future__ import annotations

from dataclasses import dataclass

from backend.boundaries import BoundaryStore, open_store
from backend.jobs import JobQueue, make_huey
from backend.packages import PackageStore
from backend.settings import Settings
from processors.registry import ProcessorRegistry


@dataclass
class Service:
    settings: Settings
    boundaries: BoundaryStore
    packages: PackageStore
    registry: ProcessorRegistry
    queue: JobQueue


def build_service(settings: Settings | None = None) -> Service:
    """Open the boundary store, package store, processor registry and job queue."""
    settings = settings or Settings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.localfs_processing_backend_root.mkdir(parents=True, exist_ok=True)
    boundaries = open_store(settings)
    packages = PackageStore(settings.localfs_storage_backend_root, host_url=settings.packages_host_url)
    registry = ProcessorRegistry.discover(include_test_processors=settings.include_test_processors)
    queue = JobQueue(settings=settings, boundaries=boundaries, packages=packages, registry=registry, huey=make_huey(settings))
    return Service(settings=settings, boundaries=boundaries, packages=packages, registry=registry, queue=queue)
