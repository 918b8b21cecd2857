"""A small Python client of the HTTP API, for scripts (`autopkg` CLI verbs use it too)."""
from __future__ import annotations

import time
from typing import Any, Callable

import requests

from backend import contract

DEFAULT_URL = "http://127.0.0.1:8000"


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

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ClientError(response.status_code, detail)
        return response.json()

    def readiness(self) -> dict[str, Any]:
        return self._call("GET", contract.READINESS)

    def search_boundaries(self, *, name: str | None = None, latitude: float | None = None, longitude: float | None = None) -> list[dict[str, Any]]:
        """By name (substring) or by point."""
        params = {"name": name} if name else {"latitude": latitude, "longitude": longitude}
        return self._call("GET", contract.BOUNDARY_SEARCH, params=params)

    def boundary(self, name: str) -> dict[str, Any]:
        return self._call("GET", contract.BOUNDARY.format(name=name))

    def upload_boundary(self, geojson: dict[str, Any], *, name: str | None = None, name_long: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("name", name), ("name_long", name_long)) if v}
        return self._call("POST", contract.BOUNDARIES, json=geojson, params=params)

    def processors(self) -> list[dict[str, Any]]:
        return self._call("GET", contract.PROCESSORS)

    def submit_job(self, *, boundary_name: str, processors: list[str], replace: bool = False) -> str:
        """Returns the job id. `replace`: run datasets already in the package again."""
        body = {"boundary_name": boundary_name, "processors": processors, "replace": replace}
        return self._call("POST", contract.JOBS, json=body)["job_id"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", contract.JOB.format(job_id=job_id))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._call("DELETE", contract.JOB.format(job_id=job_id))

    def wait(self, job_id: str, *, poll_seconds: float = 0.5, timeout: float | None = None,
             on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the job group is COMPLETE; returns the final status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.job(job_id)
            if on_progress:
                on_progress(status)
            if status["job_group_status"] == contract.GroupStatus.COMPLETE:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not complete after {timeout} s")
            time.sleep(poll_seconds)

    def packages(self) -> list[dict[str, Any]]:
        return self._call("GET", contract.PACKAGES)

    def package(self, boundary_name: str) -> dict[str, Any]:
        return self._call("GET", contract.PACKAGE.format(boundary_name=boundary_name))
