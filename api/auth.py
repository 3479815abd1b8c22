"""Bearer API keys: who is calling, for which tenant, with which permission.

Only a key's SHA-256 is stored; a request's key is hashed and looked up (through the short cache
the submission ports use too, storage.account_caches). Every handler reads the tenant from
`request[CALLER]` and passes it to storage, so every query is scoped to it; `identify` sets it,
from the API's one middleware (`api.app.api_edge`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

from aiohttp import web

from api import errors
from api.context import API_KEYS, KEY_USES, POOL
from api.errors import ApiError
from storage.database import Pool
from storage.errors import StorageError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Paths served without an API key: operations endpoints, and the ingesters, which have their own
# token (api.ingest.raw.check_ingester_token) or signature.
PUBLIC_PATHS = frozenset(
    {"/healthz", "/metrics", "/openapi.json", "/events/inbound", "/events/inbound/ses-s3"}
)
# Signed download links carry their own proof instead of a key (api.downloads.routes checks it).
PUBLIC_PREFIX = "/download/"
# The dashboard signs people in with its own sessions (api.dashboard), not API keys.
DASHBOARD_PREFIX = "/dashboard/"


@dataclass(frozen=True, slots=True)
class Caller:
    tenant_id: UUID
    api_key_id: UUID
    permission: str  # full_access | sending_access
    domain_id: UUID | None  # a sending_access key may be limited to one domain

    def require_full_access(self) -> None:
        if self.permission != "full_access":
            raise ApiError(errors.RESTRICTED_API_KEY)


CALLER = web.RequestKey("caller", Caller)


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(errors.MISSING_API_KEY)
    return token.strip()


async def authenticate(pool: Pool, request: web.Request) -> Caller:
    token = bearer_token(request)
    app = request.app
    try:
        key = await app[API_KEYS].authenticate(pool, token)
    except StorageError as error:
        raise ApiError(errors.SERVICE_UNAVAILABLE) from error
    if key is None:
        raise ApiError(errors.INVALID_API_KEY)
    await app[KEY_USES].record(pool, key.id)  # GET /api-keys shows it, to the minute
    return Caller(key.tenant_id, key.id, key.permission, key.domain_id)


async def identify(request: web.Request) -> None:
    """Sets `request[CALLER]` from its API key, unless the route is public (or is aiohttp's own
    404/405 answer); refuses the request otherwise. Called by the API's one middleware
    (api.app.api_edge), before the handler."""
    match = request.match_info
    resource = match.route.resource
    if (
        match.http_exception is not None
        or resource is None
        or resource.canonical in PUBLIC_PATHS
        or resource.canonical.startswith(PUBLIC_PREFIX)
        or request.path.startswith(DASHBOARD_PREFIX)
    ):
        return
    request[CALLER] = await authenticate(request.app[POOL], request)
