"""Typed request and response models of the `/v1` API (the predecessor's shapes, then added fields).

Compatibility rule: a predecessor field keeps its name, meaning and type; what this project adds
is marked "added" in its description.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from backend.contract import GroupState, GroupStatus, JobState

Position = list[float]


class ErrorDetail(BaseModel):
    detail: str = Field(description="What went wrong, for a person to read")


class Liveness(BaseModel):
    status: str = Field(examples=["alive"])


class Readiness(BaseModel):
    status: str = Field(description="`ready` or `not ready`")
    checks: dict[str, str] = Field(description="added: `ok` or the failure, per part (database, queue, storage)")


# -- GeoJSON ------------------------------------------------------------------------------------
class Polygon(BaseModel):
    """GeoJSON Polygon, EPSG:4326."""

    type: Literal["Polygon"]
    coordinates: list[list[Position]]


class MultiPolygon(BaseModel):
    """GeoJSON MultiPolygon, EPSG:4326."""

    type: Literal["MultiPolygon"]
    coordinates: list[list[list[Position]]]


class Feature(BaseModel):
    type: Literal["Feature"]
    geometry: Polygon | MultiPolygon
    properties: dict[str, Any] | None = None


class FeatureCollection(BaseModel):
    type: Literal["FeatureCollection"]
    features: list[Feature]


# Documents the body of POST /v1/boundaries; the route reads the raw bytes itself (size limits
# while streaming, and its own messages for bad GeoJSON), so this is never used to parse.
BoundaryUpload = Annotated[
    Union[Polygon, MultiPolygon, Feature, FeatureCollection],
    Field(discriminator="type", description="A polygon in EPSG:4326: a geometry, a Feature or a FeatureCollection of polygons"),
]


# -- boundaries ---------------------------------------------------------------------------------
class BoundarySummary(BaseModel):
    id: int = Field(description="added: row id")
    name: str = Field(description="Unique name (slug) used in every other route")
    name_long: str = Field(description="Human-readable name")


class Boundary(BoundarySummary):
    admin_level: Annotated[str, BeforeValidator(str)] = Field(description='"0" country, "1" state/province, "99" custom upload')
    geometry: MultiPolygon
    envelope: Polygon


# -- processors ---------------------------------------------------------------------------------
class License(BaseModel):
    name: str
    path: str
    title: str


class ProcessorVersionMetadata(BaseModel):
    name: str = Field(description='"dataset.version"')
    description: str
    version: str
    status: str = Field("", description='In a package: "complete"; empty otherwise')
    uri: str = Field("", description="In a package: URL of this dataset version's folder; empty otherwise")
    data_author: str
    data_title: str
    data_title_long: str
    data_summary: str
    data_citation: str
    data_license: License
    data_origin_url: str
    data_formats: list[str]


class Processor(BaseModel):
    name: str = Field(description="Dataset name")
    description: str = Field("", description="added: what the dataset is")
    versions: list[ProcessorVersionMetadata]


class Estimate(BaseModel):
    """added: output size before running (no download)."""

    processor: str
    boundary_name: str
    bytes: int | None
    files: int | None
    method: str


# -- packages -----------------------------------------------------------------------------------
class PackageSummary(BaseModel):
    boundary_name: str
    uri: str = Field(description="URL of the package folder")


class PackageFile(BaseModel):
    path: str = Field(description="Relative to the package folder, as in datapackage.json")
    uri: str
    bytes: int | None
    sha256: str


class PackageDataset(BaseModel):
    name: str = Field(description="datapackage.json resource name")
    processor: str
    version: str
    title: str
    files: list[PackageFile]


class Package(PackageSummary):
    boundary: Boundary | None = Field(description="The boundary the package was cut to (null if it was removed from the store)")
    processors: list[Processor] = Field(description="Dataset versions in the package; each version's `uri` is its folder")
    datapackage: dict[str, Any] = Field(description="The package's datapackage.json (Frictionless Data Package)")
    datapackage_uri: str = Field(description="added: URL of datapackage.json")
    datasets: list[PackageDataset] = Field(description="added: every file of every dataset with its URL, size and sha256")


class PackageDeleted(BaseModel):
    """added."""

    boundary_name: str
    deleted: bool


# -- jobs ---------------------------------------------------------------------------------------
class JobRequest(BaseModel):
    boundary_name: str = Field(description="Name of a boundary from /v1/boundaries")
    processors: list[str] = Field(description='Processor versions, "dataset.version"')
    replace: bool = Field(False, description="added: run datasets already in the package again and replace them (default: SKIPPED)")

    @field_validator("processors")
    @classmethod
    def no_duplicates(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise PydanticCustomError("duplicate_processors", "duplicate processors not allowed")
        return value


class SubmittedJob(BaseModel):
    job_id: str


class JobProgress(BaseModel):
    percent_complete: int = Field(description="Whole percent, 0-100")
    current_task: str
    percent: float = Field(description="added: unrounded percent")


class JobStatus(BaseModel):
    model_config = ConfigDict(use_enum_values=True)

    job_id: str
    processor_name: str
    job_status: JobState
    job_progress: JobProgress | None
    job_result: dict[str, Any] | None
    worker: dict[str, Any] | None = Field(None, description="added: host, pid and thread that ran it")
    followed_job_id: str | None = Field(None, description="added: the job this one followed because it was producing the same dataset")


class JobGroupStatus(BaseModel):
    model_config = ConfigDict(use_enum_values=True)

    job_group_status: GroupStatus = Field(description="PENDING until every processor is done, then COMPLETE")
    job_group_percent_complete: int
    job_group_processors: list[JobStatus]
    job_id: str = Field(description="added")
    boundary_name: str = Field(description="added")
    created: str = Field("", description="added: submission time (UTC, ISO 8601)")
    replace: bool = Field(False, description="added: the job re-runs datasets already in the package")
    job_group_state: GroupState = Field(description="added: PENDING, EXECUTING once a processor started, COMPLETE")
    job_group_percent: float = Field(description="added: unrounded percent")
    job_group_cancelled: bool = Field(description="added: DELETE /v1/jobs/{job_id} was called")
