"""Processors: metadata per dataset and version, and size estimates."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Query

from backend import contract
from backend.dependencies import ServiceDep, require_token
from backend.errors import BoundaryNotFound, InvalidRequest, NotFound
from backend.jobs import boundary_for_processors
from backend.routers import TOKEN_ERRORS, errors
from backend.schemas import Estimate, Processor, ProcessorVersionMetadata
from processors.base import Processor as ProcessorClass
from processors.errors import ProcessorNotFound
from processors.registry import ProcessorRegistry

router = APIRouter(tags=["processors"], dependencies=[Depends(require_token)], responses=TOKEN_ERRORS)


def dataset_entry(registry: ProcessorRegistry, dataset: str) -> Processor:
    classes = registry.datasets().get(dataset)
    if not classes:
        raise NotFound(f"no such processor: {dataset}")
    return Processor(name=dataset, description=classes[-1].metadata.description,
                     versions=[ProcessorVersionMetadata.model_validate(c.describe()) for c in classes])


def processor_version(registry: ProcessorRegistry, name: str, version: str) -> type[ProcessorClass]:
    """The class of `name`/`version` (the version may also be given as `dataset.version`)."""
    full = version if "." in version else f"{name}.{version}"
    try:
        return registry.get(full)
    except ProcessorNotFound:
        raise NotFound(f"no such processor version: {full}") from None


@router.get(contract.PROCESSORS, response_model=list[Processor])
def list_processors(service: ServiceDep) -> list[Processor]:
    """Every dataset and its versions; `status` and `uri` are empty here (set in a package)."""
    return [dataset_entry(service.registry, d) for d in service.registry.datasets()]


# exclude_unset: as in the predecessor, one processor's versions leave out `status` and `uri`.
@router.get(contract.PROCESSOR, response_model=Processor, response_model_exclude_unset=True,
            responses=errors({404: "No such processor"}))
def get_processor(service: ServiceDep, name: str) -> Processor:
    return dataset_entry(service.registry, name)


@router.get(contract.PROCESSOR_VERSION, response_model=ProcessorVersionMetadata, response_model_exclude_unset=True,
            responses=errors({404: "No such processor version"}))
def get_processor_version(service: ServiceDep, name: str, version: str) -> ProcessorVersionMetadata:
    return ProcessorVersionMetadata.model_validate(processor_version(service.registry, name, version).describe())


@router.get(contract.PROCESSOR_ESTIMATE, response_model=Estimate,
            responses=errors({400: "Unknown boundary", 404: "No such processor version"}))
def estimate_processor(
    service: ServiceDep,
    name: str,
    version: str,
    boundary_name: str = Query(..., description="Name of a boundary from /v1/boundaries"),
) -> Estimate:
    """Estimated output size for a boundary, before running (no download)."""
    processor = processor_version(service.registry, name, version)
    try:
        record = service.boundaries.get(boundary_name)
    except BoundaryNotFound as exc:
        raise InvalidRequest(exc.detail) from None
    scratch = Path(service.settings.localfs_processing_backend_root) / "tmp" / "estimate"
    context = service.queue.processor_context(processor, scratch, scratch)
    result = processor().estimate(boundary_for_processors(record), context)
    return Estimate(processor=processor.full_name(), boundary_name=boundary_name, bytes=result.get("bytes"),
                    files=result.get("files"), method=result.get("method", ""))
