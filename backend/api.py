"""The HTTP API (v1, compatible with the predecessor) and the package file server."""
from __future__ import annotations

import hmac
import time
import uuid
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from backend import __version__
from backend.errors import BackendError, InvalidRequest, NotFound, PayloadTooLarge
from backend.service import Service
from processors.errors import ProcessorNotFound


class JobRequest(BaseModel):
    boundary_name: str = Field(description="Name of a boundary from /v1/boundaries")
    processors: list[str] = Field(description='Processor versions, "dataset.version"')


def create_app(service: Service) -> FastAPI:
    """The FastAPI application over one `Service`."""
    app = FastAPI(
        title="CCG AutoPackaging",
        version=__version__,
        description="Cut global datasets to a boundary and deliver them as documented data packages.",
        redoc_url="/redoc",
    )
    app.state.service = service
    boundaries, packages, registry, queue = service.boundaries, service.packages, service.registry, service.queue

    open_paths = {"/v1/liveness", "/v1/readiness", "/openapi.json", "/redoc", "/docs"}

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        """With CCGAUTOPKG_API_TOKEN set, a bearer token guards data and jobs (not health or docs)."""
        token = service.settings.api_token if service.settings else ""
        if token and request.url.path not in open_paths:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                return JSONResponse({"detail": "missing or wrong API token (Authorization: Bearer <token>)"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(BackendError)
    def backend_error(_: Request, exc: BackendError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(ProcessorNotFound)
    def processor_not_found(_: Request, exc: ProcessorNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    # -- health -------------------------------------------------------------------------------
    @app.get("/v1/liveness", tags=["health"])
    def liveness() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/v1/readiness", tags=["health"])
    def readiness() -> JSONResponse:
        checks: dict[str, str] = {}
        for name, check in (
            ("database", lambda: boundaries.count()),
            ("queue", lambda: _queue_round_trip(queue)),
            ("storage", lambda: _storage_writable(packages.root)),
        ):
            try:
                check()
                checks[name] = "ok"
            except Exception as exc:  # readiness reports, it does not raise
                checks[name] = f"failed: {exc}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503)

    # -- boundaries -----------------------------------------------------------------------------
    @app.get("/v1/boundaries", tags=["boundaries"])
    def list_boundaries() -> list[dict[str, Any]]:
        return boundaries.list()

    @app.get("/v1/boundaries/search", tags=["boundaries"])
    def search_boundaries(
        name: str | None = Query(None, description="Case-insensitive substring of the name"),
        latitude: float | None = Query(None, description="Latitude of a point, EPSG:4326"),
        longitude: float | None = Query(None, description="Longitude of a point, EPSG:4326"),
    ) -> list[dict[str, Any]]:
        if name:
            return boundaries.search_name(name)
        if latitude is not None and longitude is not None:
            return boundaries.search_point(latitude=latitude, longitude=longitude)
        raise InvalidRequest("give either name, or latitude and longitude")

    @app.get("/v1/boundaries/{name}", tags=["boundaries"])
    def get_boundary(name: str) -> dict[str, Any]:
        return boundaries.get(name)

    @app.post("/v1/boundaries", tags=["boundaries"], status_code=201)
    async def create_boundary(
        request: Request,
        name: str | None = Query(None, description="Name (slug) for the boundary; default derived from the geometry"),
        name_long: str | None = Query(None, description="Human-readable name"),
    ) -> JSONResponse:
        """Upload a custom boundary: a GeoJSON Polygon/MultiPolygon (geometry, Feature or
        FeatureCollection) in EPSG:4326. 201 when created, 200 when the same one exists."""
        limit = service.settings.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"boundary upload is {declared} bytes; the limit is {limit}")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise PayloadTooLarge(f"boundary upload exceeds the limit of {limit} bytes")
        boundary, created = await boundaries.add_geojson_async(
            bytes(body), name=name, name_long=name_long, max_bytes=limit, max_vertices=service.settings.max_upload_vertices
        )
        return Response(boundary.json(), status_code=201 if created else 200, media_type="application/json")

    # -- processors -----------------------------------------------------------------------------
    def dataset_entry(dataset: str) -> dict[str, Any]:
        classes = registry.datasets().get(dataset)
        if not classes:
            raise NotFound(f"processor not found: {dataset!r}")
        return {
            "name": dataset,
            "description": classes[-1].metadata.description,
            "versions": [c.describe() for c in classes],
        }

    @app.get("/v1/processors", tags=["processors"])
    def list_processors() -> list[dict[str, Any]]:
        return [dataset_entry(d) for d in registry.datasets()]

    @app.get("/v1/processors/{name}", tags=["processors"])
    def get_processor(name: str) -> dict[str, Any]:
        return dataset_entry(name)

    @app.get("/v1/processors/{name}/{version}", tags=["processors"])
    def get_processor_version(name: str, version: str) -> dict[str, Any]:
        full = version if "." in version else f"{name}.{version}"
        return registry.get(full).describe()

    @app.get("/v1/processors/{name}/{version}/estimate", tags=["processors"])
    def estimate_processor(
        name: str,
        version: str,
        boundary_name: str = Query(..., description="Name of a boundary from /v1/boundaries"),
    ) -> dict[str, Any]:
        """Estimated output size for a boundary, before running (no download):
        `{processor, boundary_name, bytes, files, method}`."""
        from pathlib import Path as _Path

        from backend.errors import BoundaryNotFound
        from backend.jobs import boundary_for_processors

        full = version if "." in version else f"{name}.{version}"
        processor = registry.get(full)  # 404 when unknown
        try:
            record = boundaries.get(boundary_name)
        except BoundaryNotFound:
            raise InvalidRequest(f"unknown boundary: {boundary_name!r}") from None
        scratch = _Path(service.settings.localfs_processing_backend_root) / "tmp" / "estimate"
        context = queue.processor_context(processor, scratch, scratch)
        result = processor().estimate(boundary_for_processors(record), context)
        return {"processor": full, "boundary_name": boundary_name, "bytes": result.get("bytes"),
                "files": result.get("files"), "method": result.get("method", "")}

    # -- packages -------------------------------------------------------------------------------
    @app.get("/v1/packages", tags=["packages"])
    def list_packages() -> list[dict[str, Any]]:
        return packages.list_packages()

    @app.get("/v1/packages/{boundary_name}", tags=["packages"])
    def get_package(boundary_name: str) -> dict[str, Any]:
        return packages.get_package(boundary_name)

    # -- jobs -----------------------------------------------------------------------------------
    @app.post("/v1/jobs", tags=["jobs"], status_code=202)
    def submit_job(job: JobRequest) -> dict[str, str]:
        return {"job_id": queue.submit(boundary_name=job.boundary_name, processors=job.processors)}

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def job_status(job_id: str) -> dict[str, Any]:
        return queue.status(job_id)

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"])
    def cancel_job(job_id: str) -> dict[str, Any]:
        return queue.cancel(job_id)

    # -- package files ------------------------------------------------------------------------
    @app.api_route("/packages/{path:path}", methods=["GET", "HEAD"], tags=["packages"])
    def package_file(path: str) -> FileResponse:
        """Package files, with HTTP Range support (QGIS streams COGs this way)."""
        parts = [p for p in path.split("/") if p]
        if any(p.startswith(".") for p in parts):
            raise NotFound(f"no such package file: {path!r}")
        target = packages.resolve_file("/".join(parts))
        if not target.is_file():
            raise NotFound(f"no such package file: {path!r}")
        media = "application/json" if target.suffix == ".json" else None
        return FileResponse(target, media_type=media)

    return app


def _queue_round_trip(queue) -> None:
    key = f"readiness:{uuid.uuid4().hex}"
    queue.huey.storage.put_data(key, str(time.time()).encode())
    queue.huey.storage.delete_data(key)


def _storage_writable(root) -> None:
    probe = root / f".readiness-{uuid.uuid4().hex}"
    probe.write_text("ok")
    probe.unlink()
