"""Packages: list, detail (the predecessor's shape), delete, and the package files themselves."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from backend import contract
from backend.contract import GroupState
from backend.dependencies import ServiceDep, require_token
from backend.errors import BoundaryNotFound, NotFound, PackageBusy, PackageHasNoDatasets
from backend.routers import TOKEN_ERRORS, errors
from backend.schemas import Package, PackageDeleted, PackageSummary, Processor, ProcessorVersionMetadata
from backend.service import Service
from processors.errors import ProcessorNotFound

router = APIRouter(tags=["packages"], dependencies=[Depends(require_token)], responses=TOKEN_ERRORS)


def package_processors(service: Service, boundary_name: str) -> list[Processor]:
    """Dataset version folders of a known processor, each with the folder's URL (predecessor shape)."""
    processors: dict[str, list[ProcessorVersionMetadata]] = {}
    for dataset, version in service.packages.dataset_versions(boundary_name):
        try:
            cls = service.registry.get(f"{dataset}.{version}")
        except ProcessorNotFound:
            continue  # a folder no processor made: not part of the package's API view
        meta = ProcessorVersionMetadata.model_validate(
            {**cls.describe(), "status": "complete", "uri": service.packages.uri(f"{boundary_name}/datasets/{dataset}/{version}/")})
        processors.setdefault(dataset, []).append(meta)
    return [Processor(name=d, description=service.registry.datasets()[d][-1].metadata.description, versions=v)
            for d, v in processors.items()]


@router.get(contract.PACKAGES, response_model=list[PackageSummary])
def list_packages(service: ServiceDep) -> list[dict]:
    return service.packages.list_packages()


@router.get(contract.PACKAGE, response_model=Package,
            responses=errors({404: "No such package, or it holds no dataset of a known processor"}))
def get_package(service: ServiceDep, boundary_name: str) -> Package:
    processors = package_processors(service, boundary_name)
    if not processors:
        raise PackageHasNoDatasets(boundary_name)
    try:
        boundary = service.boundaries.get(boundary_name)
    except BoundaryNotFound:
        boundary = None
    package = service.packages.get_package(boundary_name)
    return Package.model_validate({**package, "datapackage": package["datapackage"] or {},
                                   "boundary": boundary, "processors": processors})


@router.delete(contract.PACKAGE, response_model=PackageDeleted,
               responses=errors({404: "No such package", 409: "A job for the package is unfinished"}))
def delete_package(service: ServiceDep, boundary_name: str) -> PackageDeleted:
    """Delete a package and every dataset in it (refused while a job for it is unfinished)."""
    service.packages.dataset_versions(boundary_name)  # PackageNotFound
    # A job not COMPLETE may still write into the package (its datasets or its provenance entry).
    unfinished = [j["job_id"] for j in service.queue.jobs(boundary_name=boundary_name, limit=None)
                  if j["job_group_state"] != GroupState.COMPLETE]
    if unfinished:
        raise PackageBusy(boundary_name, unfinished)
    service.packages.delete_package(boundary_name)
    return PackageDeleted(boundary_name=boundary_name, deleted=True)


@router.head(contract.PACKAGE_FILES + "/{path:path}", include_in_schema=False)
@router.get(contract.PACKAGE_FILES + "/{path:path}", response_class=FileResponse,
            responses={200: {"description": "The file (HTTP Range supported)"}, **errors({404: "No such package file"})})
def package_file(service: ServiceDep, path: str) -> FileResponse:
    """Package files, with HTTP Range support (QGIS streams COGs this way); a folder serves its index.html."""
    parts = [p for p in path.split("/") if p]
    if any(p.startswith(".") for p in parts):
        raise NotFound(f"no such package file: {path!r}")
    target = service.packages.resolve_file("/".join(parts))  # a folder: its index.html
    if not target.is_file():
        raise NotFound(f"no such package file: {path!r}")
    media = "application/json" if target.suffix == ".json" else None
    return FileResponse(target, media_type=media)
