"""The backend's HTTP contract as the plugin uses it: route paths and state names.

The plugin may not import the backend, so this is its own copy of `backend/contract.py`
(tests/test_plugin_contract.py checks that the two agree). Pure Python: no qgis import.
"""
from __future__ import annotations

from enum import Enum

LIVENESS = "/v1/liveness"
READINESS = "/v1/readiness"
BOUNDARIES = "/v1/boundaries"
BOUNDARY_SEARCH = "/v1/boundaries/search"
BOUNDARY = "/v1/boundaries/{name}"
PROCESSORS = "/v1/processors"
PROCESSOR_ESTIMATE = "/v1/processors/{name}/{version}/estimate"
PACKAGES = "/v1/packages"
PACKAGE = "/v1/packages/{boundary_name}"
JOBS = "/v1/jobs"
JOB = "/v1/jobs/{job_id}"
PATHS = {name: value for name, value in dict(globals()).items() if name.isupper() and isinstance(value, str) and value.startswith("/")}


class JobState(str, Enum):
    """State of one processor in a job."""

    PENDING = "PENDING"
    EXECUTING = "EXECUTING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    SKIPPED = "SKIPPED"
    REVOKED = "REVOKED"


DONE_STATES = (JobState.SUCCESS, JobState.SKIPPED)  # the dataset is in the package
TERMINAL_STATES = frozenset({JobState.SUCCESS, JobState.FAILURE, JobState.SKIPPED, JobState.REVOKED})


class GroupStatus(str, Enum):
    """`job_group_status`."""

    PENDING = "PENDING"
    COMPLETE = "COMPLETE"
