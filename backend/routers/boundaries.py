"""Boundaries: list, search, detail, and custom uploads."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response

from backend import contract
from backend.dependencies import ServiceDep, require_token
from backend.errors import InvalidRequest, PayloadTooLarge
from backend.routers import TOKEN_ERRORS, errors
from backend.schemas import Boundary, BoundarySummary

router = APIRouter(tags=["boundaries"], dependencies=[Depends(require_token)], responses=TOKEN_ERRORS)

# The upload is read as raw bytes (limits while streaming, our own messages for bad GeoJSON), so
# FastAPI cannot infer its body; `backend.api` puts the BoundaryUpload schema in the components.
UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/BoundaryUpload"}},
    "application/geo+json": {"schema": {"$ref": "#/components/schemas/BoundaryUpload"}},
}}}


# List and search are `async`: they run on the event loop, not on a worker thread (a thread hop
# costs more than they do). The names come from the store's in-memory index; a point search is
# one R*Tree + small-polygon query, about 0.06 ms, and WAL readers never wait for a writer.
@router.get(contract.BOUNDARIES, response_model=list[BoundarySummary])
async def list_boundaries(service: ServiceDep) -> list[dict]:
    return service.boundaries.list()


@router.get(contract.BOUNDARY_SEARCH, response_model=list[BoundarySummary],
            responses=errors({400: "Neither a name nor both coordinates, or coordinates out of range"}))
async def search_boundaries(
    service: ServiceDep,
    name: str | None = Query(None, description="Case-insensitive substring of the name or long name"),
    latitude: float | None = Query(None, description="Latitude of a point, EPSG:4326"),
    longitude: float | None = Query(None, description="Longitude of a point, EPSG:4326"),
) -> list[dict]:
    """By name (exact match first), or the boundaries containing a point (countries first)."""
    if latitude is not None and longitude is not None:
        return service.boundaries.search_point(latitude=latitude, longitude=longitude)
    if name:
        return service.boundaries.search_name(name)
    raise InvalidRequest("Search must include name or valid latitude, longitude coordinates")


@router.get(contract.BOUNDARY, response_model=Boundary,
            responses=errors({404: "No boundary of that name", 413: "Too large to render within the server's budget"}))
def get_boundary(service: ServiceDep, name: str) -> Response:
    # Rendered off the event loop (this thread, or a child process for a large one): FastAPI would
    # validate and encode it on the loop, which held liveness 0.5 s for a 200,000-vertex boundary.
    return Response(service.boundaries.get_json(name), media_type="application/json")


@router.post(contract.BOUNDARIES, response_model=Boundary, status_code=201, openapi_extra=UPLOAD_BODY,
             responses={200: {"model": Boundary, "description": "The same boundary was uploaded before"},
                        **errors({400: "Not a usable polygon in EPSG:4326 (the message says why)",
                                  409: "A different boundary has that name", 413: "Upload too large"})})
async def create_boundary(
    request: Request,
    service: ServiceDep,
    name: str | None = Query(None, description="Name (slug) for the boundary; default derived from the geometry"),
    name_long: str | None = Query(None, description="Human-readable name"),
) -> Response:
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
    boundary, created = await service.boundaries.add_geojson_async(
        bytes(body), name=name, name_long=name_long, max_bytes=limit, max_vertices=service.settings.max_upload_vertices
    )
    # The answer's JSON was rendered with the upload check (a big polygon is not re-encoded here).
    return Response(boundary.json(), status_code=201 if created else 200, media_type="application/json")
