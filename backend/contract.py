"""The HTTP contract in one place: route paths and state names.

The API routers, the Python client and the CLI import these. The QGIS plugin may not import the
backend, so it keeps its own copy (a test checks that the two agree).
"""
from __future__ import annotations

from enum import StrEnum

# -- routes (the predecessor's, then this project's additions) ------------------------------------
LIVENESS = "/v1/liveness"
READINESS = "/v1/readiness"
BOUNDARIES = "/v1/boundaries"
BOUNDARY_SEARCH = "/v1/boundaries/search"
BOUNDARY = "/v1/boundaries/{name}"
PROCESSORS = "/v1/processors"
PROCESSOR = "/v1/processors/{name}"
PROCESSOR_VERSION = "/v1/processors/{name}/{version}"
PROCESSOR_ESTIMATE = "/v1/processors/{name}/{version}/estimate"
PACKAGES = "/v1/packages"
PACKAGE = "/v1/packages/{boundary_name}"
JOBS = "/v1/jobs"
JOB = "/v1/jobs/{job_id}"
PACKAGE_FILES = "/packages"  # + "/{boundary}/..." : the package files themselves


class JobState(StrEnum):
    """State of one processor in a job (the predecessor's names; RETRY is never used here)."""

    PENDING = "PENDING"
    EXECUTING = "EXECUTING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    SKIPPED = "SKIPPED"
    REVOKED = "REVOKED"


TERMINAL_STATES = frozenset({JobState.SUCCESS, JobState.FAILURE, JobState.SKIPPED, JobState.REVOKED})


class GroupStatus(StrEnum):
    """`job_group_status`: the predecessor's two values; its clients poll while PENDING."""

    PENDING = "PENDING"
    COMPLETE = "COMPLETE"


class GroupState(StrEnum):
    """`job_group_state` (added): PENDING until a processor starts, then EXECUTING, then COMPLETE."""

    PENDING = "PENDING"
    EXECUTING = "EXECUTING"
    COMPLETE = "COMPLETE"
