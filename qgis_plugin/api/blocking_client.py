"""Synchronous calls to the backend for code that runs off the GUI thread.

Processing algorithms and `QgsTask.run()` execute in worker threads where waiting is fine; there
`QgsBlockingNetworkRequest` (QGIS's proxy, SSL and auth settings apply) does the HTTP. The GUI
thread uses the asynchronous `backend_client.BackendClient` instead.
"""
from __future__ import annotations

import json
from typing import Any, Optional
from urllib.parse import quote

from qgis.core import QgsBlockingNetworkRequest, QgsFeedback
from qgis.PyQt.QtCore import QByteArray
from qgis.PyQt.QtNetwork import QNetworkRequest

from . import contract
from .backend_client import api_request, error_message, join_url, normalise_base_url


class BackendRequestError(RuntimeError):
    """An HTTP call that failed: `status` is the HTTP status (None when nothing answered)."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class BlockingClient:
    """`get` / `post_json` / `delete` returning parsed JSON or raising `BackendRequestError`."""

    def __init__(self, base_url: str, feedback: Optional[QgsFeedback] = None, token: str = ""):
        self.base_url = normalise_base_url(base_url)
        self.feedback = feedback
        self.token = token  # sent as `Authorization: Bearer <token>`

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        return join_url(self.base_url, path, params)

    # -- API ------------------------------------------------------------------------------------
    def boundary(self, name: str) -> dict[str, Any]:
        return self.get(contract.BOUNDARY.format(name=quote(name, safe='')))

    def upload_boundary(self, geojson: dict[str, Any], name: str | None = None, name_long: str | None = None) -> dict[str, Any]:
        return self.post_json(contract.BOUNDARIES, geojson, {"name": name, "name_long": name_long})

    def package(self, boundary_name: str) -> dict[str, Any]:
        return self.get(contract.PACKAGE.format(boundary_name=quote(boundary_name, safe='')))

    def submit_job(self, boundary_name: str, processors: list[str]) -> str:
        return self.post_json(contract.JOBS, {"boundary_name": boundary_name, "processors": list(processors)})["job_id"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.get(contract.JOB.format(job_id=quote(job_id, safe='')))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self.delete(contract.JOB.format(job_id=quote(job_id, safe='')))

    # -- verbs ----------------------------------------------------------------------------------
    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        request = QgsBlockingNetworkRequest()
        return self._finish(request, request.get(self._request(path, params), True, self.feedback), path)

    def post_json(self, path: str, body: Any, params: dict[str, Any] | None = None) -> Any:
        req = self._request(path, params)
        req.setHeader(QNetworkRequest.ContentTypeHeader, "application/json")
        request = QgsBlockingNetworkRequest()
        return self._finish(request, request.post(req, QByteArray(json.dumps(body).encode("utf-8")), True, self.feedback), path)

    def delete(self, path: str) -> Any:
        request = QgsBlockingNetworkRequest()
        return self._finish(request, request.deleteResource(self._request(path), self.feedback), path)

    # -- internals ------------------------------------------------------------------------------
    def _request(self, path: str, params: dict[str, Any] | None = None) -> QNetworkRequest:
        return api_request(self.url(path, params), self.token)

    def _finish(self, request: QgsBlockingNetworkRequest, code, path: str) -> Any:
        reply = request.reply()
        status = reply.attribute(QNetworkRequest.HttpStatusCodeAttribute)
        body = bytes(reply.content())
        if self.feedback is not None and self.feedback.isCanceled():
            raise BackendRequestError("cancelled", status)
        if status is None or status >= 400 or code not in (QgsBlockingNetworkRequest.NoError, QgsBlockingNetworkRequest.ServerExceptionError):
            raise BackendRequestError(error_message(status, body, request.errorMessage() or reply.errorString()), status)
        try:
            return json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError) as exc:
            raise BackendRequestError(f"invalid JSON from {self.url(path)}: {exc}", status) from None
