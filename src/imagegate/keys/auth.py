"""The FastAPI dependencies that turn 'Authorization: Bearer <key>' into an ApiKey and check its scopes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from imagegate.db import utcnow
from imagegate.errors import InsufficientScope, InvalidApiKey, MissingApiKey, RateLimited
from imagegate.keys import audit, limits, service
from imagegate.keys.models import ApiKey
from imagegate.services import services

BEARER_HEADERS = {"WWW-Authenticate": 'Bearer realm="imagegate"'}
RATE_STATE = "ratelimit_headers"
# What /openapi.json says about the key (and what gives Swagger UI its Authorize button); it never refuses itself.
BEARER_SCHEME = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description="An ImageGate API key (ig_…), from the operator: `imagegate keys create NAME`.",
)


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


async def require_key(
    request: Request, _documented: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER_SCHEME)] = None
) -> ApiKey:
    """The caller's verified key (401 missing/unknown, 403 disabled/expired, 429 over its rate limit)."""
    token = bearer_token(request)  # read here, not from the scheme: our 401s say what was wrong with the header
    cache = services(request).key_cache
    digest = service.hash_token(token)
    cached = cache.get(digest)
    if cached is not None:
        return await _admit_cached(request, cached, digest)
    key, own = await cache.verify_once(
        digest, lambda: admit(request, lambda session: service.verify(session=session, token=token))
    )
    return key if own else await _admit_cached(request, key, digest)


async def verified_key(request: Request, token: str) -> ApiKey:
    """The token's key, from this process's key cache when verified moments ago; no rate token is taken."""
    cache = services(request).key_cache
    digest = service.hash_token(token)
    cached = cache.get(digest)
    if cached is not None:
        now = utcnow()
        service.require_current(cached, digest, now)
        service.require_usable(cached, now)
        return cached
    generation = cache.generation()
    async with services(request).sessions() as session, session.begin():
        key = await service.verify(session=session, token=token)
    cache.put(digest, key, generation)
    return key


async def _admit_cached(request: Request, key: ApiKey, digest: str) -> ApiKey:
    """A key verified moments ago: its state is checked again, and a rate-limited key still takes its token."""
    now = utcnow()
    try:
        service.require_current(key, digest, now)
    except InvalidApiKey as error:
        error.headers = BEARER_HEADERS
        raise
    service.require_usable(key, now)
    if key.rate_limit_per_minute is not None:

        async def same(_session: AsyncSession) -> ApiKey:
            return key

        return await admit(request, same)
    request.state.key_handle = key.handle
    return key


async def admit(request: Request, find: Callable[[AsyncSession], Awaitable[ApiKey]]) -> ApiKey:
    """The key find() verifies, after taking a token from its rate limit (429 when it is at its limit)."""
    sessions = services(request).sessions
    handle = None
    try:
        async with sessions() as session, session.begin():
            key = await find(session)
            handle = key.handle  # a refusal rolls back and expires the instance; keep what the audit needs
            state = await limits.take_rate_token(session=session, key=key, now=utcnow())
    except InvalidApiKey as error:
        error.headers = BEARER_HEADERS
        raise
    except RateLimited as refusal:
        setattr(request.state, RATE_STATE, refusal.headers)
        await audit.record_refusal(sessions=sessions, handle=str(handle), refusal=refusal, path=request.url.path)
        raise
    if state is not None:
        setattr(request.state, RATE_STATE, state.headers())
    request.state.key_handle = key.handle
    return key


async def admit_by_handle(request: Request, handle: str) -> ApiKey:
    """A key chosen by an admin (the playground), held to what its own caller would be: state and rate limit."""
    sessions = services(request).sessions
    try:
        async with sessions() as session, session.begin():
            key = await service.get_by_handle(session=session, handle=handle)
            service.require_usable(key, utcnow())
            await limits.take_rate_token(session=session, key=key, now=utcnow())
    except RateLimited as refusal:
        await audit.record_refusal(sessions=sessions, handle=handle, refusal=refusal, path=request.url.path)
        raise
    return key


CallerKey = Annotated[ApiKey, Depends(require_key)]


def scoped(scope: str) -> Callable[[Request, ApiKey], Awaitable[ApiKey]]:
    """A dependency: the caller's key, which must have the scope (403 insufficient_scope otherwise)."""

    async def dependency(request: Request, key: CallerKey) -> ApiKey:
        try:
            limits.require_scope(key, scope)
        except InsufficientScope as refusal:
            await audit.record_refusal(
                sessions=services(request).sessions, handle=key.handle, refusal=refusal, path=request.url.path
            )
            raise
        return key

    return dependency
