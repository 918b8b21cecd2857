"""One APIRouter per resource; `backend.api.create_app` mounts them."""
from __future__ import annotations

from typing import Any

from backend.schemas import ErrorDetail


def errors(described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting error statuses and their `{"detail": ...}` body."""
    return {code: {"model": ErrorDetail, "description": text} for code, text in described.items()}


TOKEN_ERRORS = errors({401: "API token missing or wrong (only when the server sets one)"})
