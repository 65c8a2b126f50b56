"""The FastAPI dependency that turns 'Authorization: Bearer <key>' into an ApiKey."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from imagegate.errors import InvalidApiKey, MissingApiKey
from imagegate.keys import service
from imagegate.keys.models import ApiKey

BEARER_HEADERS = {"WWW-Authenticate": 'Bearer realm="imagegate"'}


def bearer_token(request: Request) -> str:
    """The token from the Authorization header; MissingApiKey when there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise MissingApiKey(headers=BEARER_HEADERS)
    if scheme.lower() != "bearer" or not token.strip():
        raise MissingApiKey(
            "Malformed Authorization header: send 'Authorization: Bearer <key>'.", headers=BEARER_HEADERS
        )
    return token.strip()


async def require_key(request: Request) -> ApiKey:
    """The caller's verified key (401 missing/unknown, 403 disabled/expired)."""
    token = bearer_token(request)
    try:
        async with request.app.state.sessions() as session, session.begin():
            key: ApiKey = await service.verify(session=session, token=token)
    except InvalidApiKey as error:
        error.headers = BEARER_HEADERS
        raise
    request.state.key_handle = key.handle
    return key


CallerKey = Annotated[ApiKey, Depends(require_key)]
