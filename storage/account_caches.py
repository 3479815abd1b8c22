"""Per-process caches of what an account's requests and submitted messages look up first: the
caller's API key, the sender's domain and the account's monthly sending limit. Shared by the
HTTP API and the submission ports, so both edges authenticate and check senders with the same
reads and the same staleness. (The MX's routing answers have their own,
storage.inbound.lookup_cache.)

Only speed-ups, each bounded by a few seconds: a deleted key keeps working for up to
`KeyCache.TTL_SECONDS` in a process that saw it (as revocation takes that long across several
processes anyway), a stale domain entry costs one rebuild, never a wrong send (the insert
statement re-checks the domain row, storage.sending.emails.INSERT_EMAIL), and a limit set or changed
takes effect within `LimitCache.TTL_SECONDS`. Unknown keys and domains are never cached.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar
from uuid import UUID

from storage.account import directory
from storage.account.directory import ApiKey
from storage.database import Pool
from storage.errors import StorageError
from storage.sending import emails as sending
from storage.sending import replies

T = TypeVar("T")


class KeyCache:
    """Valid API keys, by their hash (as the database has them): no key is kept in memory."""

    TTL_SECONDS = 5.0
    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[float, ApiKey]] = {}
        self._by_id: dict[UUID, tuple[float, ApiKey]] = {}

    async def authenticate(self, pool: Pool, token: str) -> ApiKey | None:
        """The key's row, or None for an unknown key. StorageError when it cannot be checked."""
        digest = directory.hash_api_key(token)
        entry = self._entries.get(digest)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        key = await directory.authenticate_api_key(pool, token)
        if key is None:
            self._entries.pop(digest, None)
            return None
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + self.TTL_SECONDS, key)
        return key

    async def by_id(self, pool: Pool, key_id: UUID) -> ApiKey | None:
        """The key a session logged in with, as it is now (None: deleted), read at most once
        per TTL_SECONDS: a long SMTP session loses a revoked key as the API does."""
        entry = self._by_id.get(key_id)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        key = await directory.find_api_key(pool, key_id)
        if key is None:
            self._by_id.pop(key_id, None)
            return None
        if len(self._by_id) >= self.MAX_ENTRIES:
            self._by_id.clear()
        self._by_id[key_id] = (time.monotonic() + self.TTL_SECONDS, key)
        return key


class DomainCache(Generic[T]):
    """Sender domains by tenant and name, each made into a `T` once (policy's SenderDomain:
    storage may not import policy, so the caller names the type)."""

    TTL_SECONDS = 5.0
    MAX_ENTRIES = 10_000

    def __init__(self, make: Callable[..., T]) -> None:
        self._make = make
        self._entries: dict[tuple[UUID, str], tuple[float, T]] = {}

    async def get(self, pool: Pool, tenant_id: UUID, name: str, *, fresh: bool = False) -> T | None:
        """The tenant's domain of that name; `fresh` reads past the cache."""
        name = name.lower()
        now = time.monotonic()
        entry = self._entries.get((tenant_id, name))
        if entry is not None and not fresh and entry[0] > now:
            return entry[1]
        row: dict[str, Any] | None = await sending.find_sender_domain(pool, tenant_id, name)
        if row is None:
            self._entries.pop((tenant_id, name), None)
            return None
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        domain = self._make(**row)
        self._entries[(tenant_id, name)] = (now + self.TTL_SECONDS, domain)
        return domain


class LimitCache:
    """Whether a tenant has reached its monthly sending limit (storage.sending.replies), asking for
    the count only when it has a limit: most tenants have none, and then a message costs no
    query."""

    TTL_SECONDS = 5.0
    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._limits: dict[UUID, tuple[float, int | None]] = {}

    async def reached(self, pool: Pool, tenant_id: UUID) -> bool:
        now = time.monotonic()
        entry = self._limits.get(tenant_id)
        if entry is None or entry[0] <= now:
            if len(self._limits) >= self.MAX_ENTRIES:
                self._limits.clear()
            entry = (now + self.TTL_SECONDS, await replies.sending_limit(pool, tenant_id))
            self._limits[tenant_id] = entry
        if entry[1] is None:
            return False
        return await replies.sending_limit_reached(pool, tenant_id)


class LastUseRecorder:
    """Writes an API key's `last_used_at` at most once per INTERVAL_SECONDS per key and
    process, so recording use costs one UPDATE a minute for a busy key, not one per request."""

    INTERVAL_SECONDS = 60.0
    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._written: dict[UUID, float] = {}

    def due(self, key_id: UUID) -> bool:
        """Whether this use should be written; if so, it counts as written from now on."""
        now = time.monotonic()
        last = self._written.get(key_id)
        if last is not None and now - last < self.INTERVAL_SECONDS:
            return False
        if len(self._written) >= self.MAX_ENTRIES:
            self._written.clear()
        self._written[key_id] = now
        return True

    async def record(self, pool: Pool, key_id: UUID) -> None:
        """Best effort: a use that cannot be written is not worth failing the request for."""
        if self.due(key_id):
            with contextlib.suppress(StorageError):
                await directory.mark_api_key_used(pool, key_id)
