"""Bearer API keys: who is calling, for which tenant, with which permission.

Only a key's SHA-256 is stored; a request's key is hashed and looked up. Every handler reads the
tenant from `request[CALLER]` and passes it to storage, so every query is scoped to it.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from uuid import UUID

from aiohttp import web

from api import errors
from api.errors import ApiError
from storage import directory
from storage.database import Pool
from storage.errors import StorageError


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


class KeyCache:
    """Valid keys remembered for a few seconds, so a busy client costs no lookup per request.

    The price: a deleted key keeps working for up to TTL_SECONDS in each API process that saw
    it (as revocation already takes that long across several processes). Unknown keys are
    never remembered.
    """

    TTL_SECONDS = 5.0
    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        # By the key's hash, as the database has it: no key is kept in memory longer than
        # its request.
        self._entries: dict[bytes, tuple[float, Caller]] = {}

    def get(self, token: str) -> Caller | None:
        entry = self._entries.get(directory.hash_api_key(token))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, token: str, caller: Caller) -> None:
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        entry = (time.monotonic() + self.TTL_SECONDS, caller)
        self._entries[directory.hash_api_key(token)] = entry


# One cache per application (the app is frozen once started, so it cannot hold it itself).
_KEY_CACHES: weakref.WeakKeyDictionary[web.Application, KeyCache] = weakref.WeakKeyDictionary()


async def authenticate(pool: Pool, request: web.Request) -> Caller:
    token = bearer_token(request)
    cache = _KEY_CACHES.get(request.app)
    if cache is None:
        cache = _KEY_CACHES[request.app] = KeyCache()
    caller = cache.get(token)
    if caller is not None:
        return caller
    try:
        key = await directory.authenticate_api_key(pool, token)
    except StorageError as error:
        raise ApiError(errors.SERVICE_UNAVAILABLE) from error
    if key is None:
        raise ApiError(errors.INVALID_API_KEY)
    caller = Caller(key.tenant_id, key.id, key.permission, key.domain_id)
    cache.put(token, caller)
    return caller
