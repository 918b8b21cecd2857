"""Liveness and readiness probes (open without a token)."""
from __future__ import annotations

import uuid
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from backend import contract
from backend.dependencies import ServiceDep
from backend.schemas import Liveness, Readiness

router = APIRouter(tags=["health"])


@router.get(contract.LIVENESS, response_model=Liveness)
async def liveness() -> Liveness:  # async: answered on the event loop, no worker thread
    return Liveness(status="alive")


@router.get(contract.READINESS, response_model=Readiness,
            responses={503: {"model": Readiness, "description": "A part is not ready; `checks` says which"}})
def readiness(service: ServiceDep) -> JSONResponse:
    checks: dict[str, str] = {}
    for name, check in (
        ("database", lambda: service.boundaries.count()),
        ("queue", service.queue.check_storage),
        ("storage", lambda: _storage_writable(service.packages.root)),
    ):
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:  # readiness reports, it does not raise
            checks[name] = f"failed: {exc}"
    ready = all(v == "ok" for v in checks.values())
    body = Readiness(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


def _storage_writable(root: Path) -> None:
    probe = root / f".readiness-{uuid.uuid4().hex}"
    probe.write_text("ok")
    probe.unlink()
