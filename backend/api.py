"""The HTTP API (v1, compatible with the predecessor) and the package file server."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter

from backend import __version__
from backend.errors import BackendError
from backend.routers import boundaries, health, jobs, packages, processors
from backend.schemas import BoundaryUpload
from backend.service import Service
from processors.errors import PathOutsideRoot, ProcessorNotFound


#: The order of the routers in the API's documentation.
DOCUMENTED_ORDER = (health, boundaries, processors, packages, jobs)


def create_app(service: Service) -> FastAPI:
    """The FastAPI application over one `Service` (routes reach it through `get_service`)."""
    app = FastAPI(
        title="CCG AutoPackaging",
        version=__version__,
        description="Cut global datasets to a boundary and deliver them as documented data packages.",
        redoc_url="/redoc",
        openapi_tags=[{"name": module.router.tags[0]} for module in DOCUMENTED_ORDER],
    )
    app.state.service = service
    # Routes are matched in the order of inclusion, router by router: the routes every client
    # polls first (job status after 22 others cost ~0.12 ms of its ~0.44 ms per request).
    for module in (jobs, boundaries, health, processors, packages):
        app.include_router(module.router)

    @app.exception_handler(BackendError)
    def backend_error(_: Request, exc: BackendError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(PathOutsideRoot)
    def path_outside_root(_: Request, exc: PathOutsideRoot) -> JSONResponse:
        # Its text names server folders: the client learns what was refused, not where.
        return JSONResponse({"detail": "refused: a symbolic link or a name leading out of the server's folders"},
                            status_code=400)

    @app.exception_handler(ProcessorNotFound)
    def processor_not_found(_: Request, exc: ProcessorNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus the upload body, which the route reads raw (see routers.boundaries)."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes,
                                 tags=app.openapi_tags)
            upload = TypeAdapter(BoundaryUpload).json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(upload.pop("$defs", {}))
            components["BoundaryUpload"] = upload
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app
