"""Asynchronous HTTP client for the CCG AutoPackaging backend.

Every call goes through `QgsNetworkAccessManager.instance()` and returns at once; the reply's
`finished` signal parses the JSON and calls `on_success(data)` or `on_error(message, status)`
on the GUI thread. The GUI thread never waits on the network.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Optional
from urllib.parse import quote, urlencode

from qgis.core import QgsNetworkAccessManager
from qgis.PyQt.QtCore import QByteArray, QObject, QUrl
from qgis.PyQt.QtNetwork import QNetworkReply, QNetworkRequest

from ..auth import bearer_header
from . import contract
from ..settings import DEFAULT_URL

TIMEOUT_MS = 15000


def api_request(url: str, token: str) -> QNetworkRequest:
    """A JSON request to the backend: bearer token, no HTTP cache, a transfer timeout."""
    request = QNetworkRequest(QUrl(url))
    request.setRawHeader(b"Accept", b"application/json")
    authorization = bearer_header(token)
    if authorization:
        request.setRawHeader(b"Authorization", authorization)
    request.setAttribute(QNetworkRequest.CacheLoadControlAttribute, QNetworkRequest.AlwaysNetwork)
    if hasattr(request, "setTransferTimeout"):
        request.setTransferTimeout(TIMEOUT_MS)
    return request

Success = Callable[[Any], None]
Failure = Callable[[str, Optional[int]], None]


def error_message(status: int | None, body: bytes, network_error: str = "") -> str:
    """The backend's `detail` when it sent one, else the HTTP status or the network error."""
    if body:
        try:
            detail = json.loads(body.decode("utf-8")).get("detail")
        except (ValueError, AttributeError, UnicodeDecodeError):
            detail = None
        if isinstance(detail, str) and detail:
            return detail
        if detail:  # FastAPI validation errors: a list of {loc, msg, type}
            try:
                return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
            except (TypeError, AttributeError):
                return str(detail)
    if status:
        return f"HTTP {status}" + (f": {network_error}" if network_error else "")
    return network_error or "no answer from the backend"


def normalise_base_url(value: str) -> str:
    return (value or DEFAULT_URL).strip().rstrip("/")


def join_url(base_url: str, path: str, params: dict[str, Any] | None = None) -> str:
    """Absolute URL of an API path (`/v1/...`) or of a package URI (`/packages/...`, absolute, file://)."""
    if path.startswith(("http://", "https://", "file://")):
        full = path
    else:
        full = normalise_base_url(base_url) + (path if path.startswith("/") else "/" + path)
    if params:
        query = {k: v for k, v in params.items() if v is not None and v != ""}
        if query:
            full += "?" + urlencode(query)
    return full


class BackendClient(QObject):
    """Calls to one backend base URL; `close()` aborts everything still in flight."""

    def __init__(self, base_url: str = DEFAULT_URL, parent: QObject | None = None, token: str = ""):
        super().__init__(parent)
        self.base_url = base_url
        self.token = token  # API token (kept in memory only; stored in the QGIS auth database)
        self._replies: dict[int, QNetworkReply] = {}
        self._closed = False

    # -- URL ------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self._base_url

    @base_url.setter
    def base_url(self, value: str) -> None:
        self._base_url = normalise_base_url(value)

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        """Absolute URL of an API path (`/v1/...`) or of a package URI (`/packages/...` or absolute)."""
        return join_url(self.base_url, path, params)

    # -- API calls ----------------------------------------------------------------------------
    def liveness(self, on_success: Success, on_error: Failure) -> QNetworkReply:
        return self.get(contract.LIVENESS, on_success=on_success, on_error=on_error)

    def processors(self, on_success: Success, on_error: Failure) -> QNetworkReply:
        return self.get(contract.PROCESSORS, on_success=on_success, on_error=on_error)

    def boundaries(self, on_success: Success, on_error: Failure) -> QNetworkReply:
        return self.get(contract.BOUNDARIES, on_success=on_success, on_error=on_error)

    def search_name(self, name: str, on_success: Success, on_error: Failure) -> QNetworkReply:
        return self.get(contract.BOUNDARY_SEARCH, {"name": name}, on_success=on_success, on_error=on_error)

    def search_point(self, latitude: float, longitude: float, on_success: Success, on_error: Failure) -> QNetworkReply:
        params = {"latitude": repr(float(latitude)), "longitude": repr(float(longitude))}
        return self.get(contract.BOUNDARY_SEARCH, params, on_success=on_success, on_error=on_error)

    def boundary(self, name: str, on_success: Success, on_error: Failure) -> QNetworkReply:
        return self.get(contract.BOUNDARY.format(name=quote(name, safe='')), on_success=on_success, on_error=on_error)

    def package(self, boundary_name: str, on_success: Success, on_error: Failure) -> QNetworkReply:
        return self.get(contract.PACKAGE.format(boundary_name=quote(boundary_name, safe='')), on_success=on_success, on_error=on_error)

    def submit_job(self, boundary_name: str, processors: list[str], on_success: Success, on_error: Failure) -> QNetworkReply:
        body = {"boundary_name": boundary_name, "processors": list(processors)}
        return self.post_json(contract.JOBS, body, on_success=on_success, on_error=on_error)

    def packages(self, on_success: Success, on_error: Failure) -> QNetworkReply:
        return self.get(contract.PACKAGES, on_success=on_success, on_error=on_error)

    def upload_boundary(self, geojson: dict[str, Any], on_success: Success, on_error: Failure,
                        name: str | None = None, name_long: str | None = None) -> QNetworkReply:
        """`POST /v1/boundaries`: a custom polygon (GeoJSON in EPSG:4326); answers the boundary."""
        return self.post_json(contract.BOUNDARIES, geojson, {"name": name, "name_long": name_long}, on_success=on_success, on_error=on_error)

    def job(self, job_id: str, on_success: Success, on_error: Failure) -> QNetworkReply:
        return self.get(contract.JOB.format(job_id=quote(job_id, safe='')), on_success=on_success, on_error=on_error)

    def cancel_job(self, job_id: str, on_success: Success, on_error: Failure) -> QNetworkReply:
        return self.delete(contract.JOB.format(job_id=quote(job_id, safe='')), on_success=on_success, on_error=on_error)

    def readiness(self, on_success: Success, on_error: Failure) -> QNetworkReply:
        return self.get(contract.READINESS, on_success=on_success, on_error=on_error)

    def estimate(self, processor: str, boundary_name: str, on_success: Success, on_error: Failure) -> QNetworkReply:
        """`GET /v1/processors/{dataset}/{version}/estimate`: `{bytes, files, method}` for a boundary."""
        dataset, _, version = processor.partition(".")
        path = contract.PROCESSOR_ESTIMATE.format(name=quote(dataset, safe=''), version=quote(version or processor, safe=''))
        return self.get(path, {"boundary_name": boundary_name}, on_success=on_success, on_error=on_error)

    # -- verbs --------------------------------------------------------------------------------
    def get(self, path: str, params: dict[str, Any] | None = None, *, on_success: Success, on_error: Failure) -> QNetworkReply:
        reply = QgsNetworkAccessManager.instance().get(self._request(path, params))
        return self._track(reply, on_success, on_error)

    def post_json(self, path: str, body: Any, params: dict[str, Any] | None = None, *, on_success: Success, on_error: Failure) -> QNetworkReply:
        request = self._request(path, params)
        request.setHeader(QNetworkRequest.ContentTypeHeader, "application/json")
        reply = QgsNetworkAccessManager.instance().post(request, QByteArray(json.dumps(body).encode("utf-8")))
        return self._track(reply, on_success, on_error)

    def delete(self, path: str, *, on_success: Success, on_error: Failure) -> QNetworkReply:
        reply = QgsNetworkAccessManager.instance().deleteResource(self._request(path))
        return self._track(reply, on_success, on_error)

    def pending(self) -> int:
        return len(self._replies)

    def close(self) -> None:
        """Abort every request in flight; their callbacks are not called any more."""
        self._closed = True
        for reply in list(self._replies.values()):
            reply.abort()
        self._replies.clear()

    # -- internals ----------------------------------------------------------------------------
    def _request(self, path: str, params: dict[str, Any] | None = None) -> QNetworkRequest:
        return api_request(self.url(path, params), self.token)

    def _track(self, reply: QNetworkReply, on_success: Success, on_error: Failure) -> QNetworkReply:
        self._closed = False
        key = id(reply)
        self._replies[key] = reply
        reply.finished.connect(lambda: self._finished(key, reply, on_success, on_error))
        return reply

    def _finished(self, key: int, reply: QNetworkReply, on_success: Success, on_error: Failure) -> None:
        tracked = self._replies.pop(key, None) is not None
        try:
            if not tracked or self._closed:
                return  # aborted by close(): nobody is listening any more
            status = reply.attribute(QNetworkRequest.HttpStatusCodeAttribute)
            body = bytes(reply.readAll())
            if reply.error() == QNetworkReply.OperationCanceledError and status is None:
                on_error("request cancelled", None)
                return
            if status is None or status >= 400:
                on_error(error_message(status, body, reply.errorString()), status)
                return
            try:
                data = json.loads(body.decode("utf-8")) if body else None
            except (ValueError, UnicodeDecodeError) as exc:
                on_error(f"invalid JSON from {reply.url().toString()}: {exc}", status)
                return
            on_success(data)
        finally:
            reply.deleteLater()
