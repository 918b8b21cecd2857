"""FastAPI dependencies: the service the routes work on, and the optional bearer token."""
from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend.service import Service

TOKEN_REFUSED = "missing or wrong API token (Authorization: Bearer <token>)"

# auto_error=False: without a configured token every request passes, so the check is ours.
bearer = HTTPBearer(auto_error=False, description="Required when the server sets CCGAUTOPKG_API_TOKEN")


# Both are `async` though they wait for nothing: FastAPI runs a plain `def` dependency on a worker
# thread, and each such hop cost about 0.1 ms of CPU on every request.
async def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


async def require_token(service: ServiceDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """With CCGAUTOPKG_API_TOKEN set, data and job routes need `Authorization: Bearer <token>`."""
    token = service.settings.api_token
    if not token:
        return
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail=TOKEN_REFUSED, headers={"WWW-Authenticate": "Bearer"})
