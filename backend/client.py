"""A small Python client of the HTTP API, for scripts (`autopkg` CLI verbs use it too).

Answers are the API's typed models (`backend.schemas`)."""
from __future__ import annotations

import time
import warnings
from typing import Any, Callable, TypeVar

from pydantic import TypeAdapter

# Debian's requests warns on import that the venv's newer chardet is not a version it lists; the
# combination works (the suite runs on it), so the warning is only noise in every command's output.
warnings.filterwarnings("ignore", message=r"urllib3 \(.*\) or chardet \(.*\)/charset_normalizer \(.*\) doesn't match")
import requests  # noqa: E402

from backend import contract  # noqa: E402
from backend.schemas import (  # noqa: E402
    Boundary, BoundarySummary, Estimate, JobGroupStatus, Package, PackageDeleted, PackageSummary, Processor,
)

DEFAULT_URL = "http://127.0.0.1:8000"
Model = TypeVar("Model")


class ClientError(Exception):
    """The backend answered with an error status; `detail` is its message."""

    def __init__(self, status_code: int, detail: Any):
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code, self.detail = status_code, detail


class Client:
    """Talks to one backend over HTTP."""

    def __init__(self, base_url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = 30.0,
                 session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, answer: type[Model] | Any, **kwargs: Any) -> Model:
        response = self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ClientError(response.status_code, detail)
        return TypeAdapter(answer).validate_python(response.json())

    def url(self, uri: str) -> str:
        """Absolute URL of a package URI (they are relative to the API unless a packages host is set)."""
        return uri if "://" in uri else self.base_url + uri

    def readiness(self) -> dict[str, Any]:
        return self._call("GET", contract.READINESS, dict[str, Any])

    def boundaries(self) -> list[BoundarySummary]:
        return self._call("GET", contract.BOUNDARIES, list[BoundarySummary])

    def search_boundaries(self, *, name: str | None = None, latitude: float | None = None,
                          longitude: float | None = None) -> list[BoundarySummary]:
        """By name (substring) or by point."""
        params = {"name": name} if name else {"latitude": latitude, "longitude": longitude}
        return self._call("GET", contract.BOUNDARY_SEARCH, list[BoundarySummary], params=params)

    def boundary(self, name: str) -> Boundary:
        return self._call("GET", contract.BOUNDARY.format(name=name), Boundary)

    def upload_boundary(self, geojson: dict[str, Any], *, name: str | None = None, name_long: str | None = None) -> Boundary:
        params = {k: v for k, v in (("name", name), ("name_long", name_long)) if v}
        return self._call("POST", contract.BOUNDARIES, Boundary, json=geojson, params=params)

    def processors(self) -> list[Processor]:
        return self._call("GET", contract.PROCESSORS, list[Processor])

    def estimate(self, *, processor: str, boundary_name: str) -> Estimate:
        dataset, _, version = processor.partition(".")
        return self._call("GET", contract.PROCESSOR_ESTIMATE.format(name=dataset, version=version), Estimate,
                          params={"boundary_name": boundary_name})

    def submit_job(self, *, boundary_name: str, processors: list[str], replace: bool = False) -> str:
        """Returns the job id. `replace`: run datasets already in the package again."""
        body = {"boundary_name": boundary_name, "processors": processors, "replace": replace}
        return self._call("POST", contract.JOBS, dict[str, str], json=body)["job_id"]

    def job(self, job_id: str) -> JobGroupStatus:
        return self._call("GET", contract.JOB.format(job_id=job_id), JobGroupStatus)

    def jobs(self, *, boundary_name: str | None = None, state: str | None = None, limit: int = 50) -> list[JobGroupStatus]:
        """Recent jobs, newest first."""
        params = {k: v for k, v in (("boundary_name", boundary_name), ("state", state), ("limit", limit)) if v}
        return self._call("GET", contract.JOBS, list[JobGroupStatus], params=params)

    def cancel_job(self, job_id: str) -> JobGroupStatus:
        return self._call("DELETE", contract.JOB.format(job_id=job_id), JobGroupStatus)

    def wait(self, job_id: str, *, poll_seconds: float = 0.5, timeout: float | None = None,
             on_progress: Callable[[JobGroupStatus], None] | None = None) -> JobGroupStatus:
        """Poll until the job group is COMPLETE; returns the final status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.job(job_id)
            if on_progress:
                on_progress(status)
            if status.job_group_status == contract.GroupStatus.COMPLETE:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not complete after {timeout} s")
            time.sleep(poll_seconds)

    def packages(self) -> list[PackageSummary]:
        return self._call("GET", contract.PACKAGES, list[PackageSummary])

    def package(self, boundary_name: str) -> Package:
        return self._call("GET", contract.PACKAGE.format(boundary_name=boundary_name), Package)

    def delete_package(self, boundary_name: str) -> PackageDeleted:
        return self._call("DELETE", contract.PACKAGE.format(boundary_name=boundary_name), PackageDeleted)

