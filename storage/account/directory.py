"""Tenants, domains, receiving routes and API keys: administration and the RCPT-time lookup."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from storage.account import domains
from storage.database import Pool
from storage.errors import StorageError, storage_errors
from storage.ids import uuid7
from storage.keyset import IdPages, fetch_page


@dataclass(frozen=True, slots=True)
class Tenant:
    id: UUID
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Domain:
    id: UUID
    tenant_id: UUID
    name: str
    verified: bool
    receiving_enabled: bool
    reply_domain: str | None
    created_at: datetime

    @property
    def effective_reply_domain(self) -> str:
        """Where reply addresses live: the reply subdomain when set, else the domain itself."""
        return self.reply_domain or self.name


@dataclass(frozen=True, slots=True)
class Route:
    id: UUID
    tenant_id: UUID
    domain_id: UUID
    kind: str
    address: str
    target: str | None


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: UUID
    tenant_id: UUID
    name: str
    key_prefix: str
    permission: str
    created_at: datetime
    domain_id: UUID | None = None
    last_used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RecipientRoute:
    """The RCPT-time answer: the domain that takes the recipient and its best route, if any."""

    tenant_id: UUID
    domain_id: UUID
    domain: str
    reply_domain: str | None
    route_kind: str | None
    route_address: str | None
    route_target: str | None


INSERT_TENANT = "INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING id, name, created_at"
SELECT_TENANT = """
SELECT id, name, created_at FROM tenants
WHERE name = $1 OR id::text = lower($1)
"""
DOMAIN_COLUMNS = "id, tenant_id, name, verified, receiving_enabled, reply_domain, created_at"
SELECT_DOMAIN_BY_NAME = f"SELECT {DOMAIN_COLUMNS} FROM domains WHERE name = $1"
SELECT_DOMAIN_FOR_ADDRESS = f"""
SELECT {DOMAIN_COLUMNS} FROM domains
WHERE tenant_id = $1 AND (name = $2 OR reply_domain = $2)
"""
SELECT_TENANT_DOMAINS = f"SELECT {DOMAIN_COLUMNS} FROM domains WHERE tenant_id = $1 ORDER BY name"
INSERT_ROUTE = """
INSERT INTO routes (id, tenant_id, domain_id, kind, address, target)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, tenant_id, domain_id, kind, address, target
"""
INSERT_API_KEY = """
INSERT INTO api_keys (id, tenant_id, name, key_hash, key_prefix, permission, domain_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, tenant_id, name, key_prefix, permission, created_at, domain_id
"""
SELECT_API_KEY_BY_ID = """
SELECT id, tenant_id, name, key_prefix, permission, created_at, domain_id
FROM api_keys WHERE id = $1
"""
SELECT_API_KEY_BY_HASH = """
SELECT id, tenant_id, name, key_prefix, permission, created_at, domain_id
FROM api_keys WHERE key_hash = $1
"""
DELETE_API_KEY = "DELETE FROM api_keys WHERE tenant_id = $1 AND id = $2"
# One page of a tenant's keys, newest first by their time-ordered (UUIDv7) ids, for GET /api-keys.
API_KEY_PAGE_COLUMNS = (
    "id, tenant_id, name, key_prefix, permission, created_at, domain_id, last_used_at"
)
API_KEY_PAGES = IdPages.of("api_keys", API_KEY_PAGE_COLUMNS)
# The last use, written at most once a minute per key (the caller throttles too, in memory):
# a request never waits on a row lock, and a busy key costs one UPDATE a minute, not one a call.
MARK_API_KEY_USED = """
UPDATE api_keys SET last_used_at = now()
WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
"""

# The recipient's domain (or reply domain) if it takes mail, with the best route among the
# candidates ($2, best first: exact address, address without +detail, the catch-all).
SELECT_RECIPIENT_ROUTE = """
SELECT d.tenant_id, d.id AS domain_id, d.name AS domain, d.reply_domain,
       r.kind AS route_kind, r.address AS route_address, r.target AS route_target
FROM domains d
LEFT JOIN LATERAL (
    SELECT kind, address, target FROM routes
    WHERE routes.domain_id = d.id AND routes.address = ANY($2::text[])
    ORDER BY array_position($2::text[], routes.address)
    LIMIT 1
) r ON true
WHERE (d.name = $1 OR d.reply_domain = $1) AND d.verified AND d.receiving_enabled
"""


def hash_api_key(key: str) -> bytes:
    # Keys are 256-bit random values, so a fast hash is enough; no password stretching needed.
    # A header's or a SASL password's bytes that are not UTF-8 arrive as surrogate escapes:
    # hashed as they came, they match no key, instead of failing to encode.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


async def create_tenant(pool: Pool, name: str) -> Tenant:
    async with storage_errors():
        row = await pool.fetchrow(INSERT_TENANT, uuid7(), name)
    return Tenant(**dict(row))


async def find_tenant(pool: Pool, name_or_id: str) -> Tenant | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_TENANT, name_or_id)
    return Tenant(**dict(row)) if row else None


async def add_domain(
    pool: Pool,
    tenant_id: UUID,
    name: str,
    *,
    receiving: bool,
    reply_domain: str | None,
    verified: bool,
    dkim: domains.DkimKey | None = None,
    event_data: domains.EventData,
) -> Domain:
    """Claim a domain for a tenant (storage.account.domains.insert_domain, in the MX's terms)."""
    added = await domains.insert_domain(
        pool,
        tenant_id,
        name,
        receiving=receiving,
        reply_domain=reply_domain,
        verified=verified,
        dkim=dkim,
        event_data=event_data,
    )
    return Domain(
        id=added.id,
        tenant_id=added.tenant_id,
        name=added.name,
        verified=added.verified,
        receiving_enabled=added.receiving_enabled,
        reply_domain=added.reply_domain,
        created_at=added.created_at,
    )


async def find_domain(pool: Pool, name: str) -> Domain | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_DOMAIN_BY_NAME, name.lower())
    return Domain(**dict(row)) if row else None


async def list_domains(pool: Pool, tenant_id: UUID) -> list[Domain]:
    async with storage_errors():
        rows = await pool.fetch(SELECT_TENANT_DOMAINS, tenant_id)
    return [Domain(**dict(r)) for r in rows]


async def add_route(pool: Pool, tenant_id: UUID, address: str, target: str | None) -> Route:
    """Route `local@domain`, or `*@domain` for a catch-all; with `target`, an alias."""
    address = address.lower()
    local, _, domain_name = address.rpartition("@")
    async with storage_errors():
        domain = await pool.fetchrow(SELECT_DOMAIN_FOR_ADDRESS, tenant_id, domain_name)
        if domain is None:
            raise StorageError(
                f"{domain_name} is not a domain of this tenant; add it first", temporary=False
            )
        kind = "catch_all" if local == "*" else ("alias" if target else "exact")
        row = await pool.fetchrow(
            INSERT_ROUTE,
            uuid7(),
            tenant_id,
            domain["id"],
            kind,
            address,
            target.lower() if target else None,
        )
    return Route(**dict(row))


async def create_api_key(
    pool: Pool,
    tenant_id: UUID,
    name: str,
    permission: str = "full_access",
    domain_id: UUID | None = None,
) -> tuple[ApiKey, str]:
    """A new key; the key itself is returned once and only its hash is kept."""
    key = "re_" + secrets.token_urlsafe(32)
    async with storage_errors():
        row = await pool.fetchrow(
            INSERT_API_KEY,
            uuid7(),
            tenant_id,
            name,
            hash_api_key(key),
            key[:8],
            permission,
            domain_id,
        )
    return ApiKey(**dict(row)), key


async def authenticate_api_key(pool: Pool, key: str) -> ApiKey | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_API_KEY_BY_HASH, hash_api_key(key))
    return ApiKey(**dict(row)) if row else None


async def find_api_key(pool: Pool, key_id: UUID) -> ApiKey | None:
    """A key by its id: whether a session that logged in with it may still use it."""
    async with storage_errors():
        row = await pool.fetchrow(SELECT_API_KEY_BY_ID, key_id)
    return ApiKey(**dict(row)) if row else None


async def list_api_keys_page(
    pool: Pool,
    tenant_id: UUID,
    *,
    limit: int,
    after: UUID | None = None,
    before: UUID | None = None,
) -> tuple[list[ApiKey], bool]:
    """One page, newest first, and whether more lie beyond it in the direction of travel."""
    rows, more = await fetch_page(
        pool, API_KEY_PAGES, tenant_id, limit=limit, after=after, before=before
    )
    return [ApiKey(**dict(row)) for row in rows], more


async def mark_api_key_used(pool: Pool, key_id: UUID) -> None:
    async with storage_errors():
        await pool.execute(MARK_API_KEY_USED, key_id)


async def delete_api_key(pool: Pool, tenant_id: UUID, key_id: UUID) -> bool:
    async with storage_errors():
        status = await pool.execute(DELETE_API_KEY, tenant_id, key_id)
    return bool(status == "DELETE 1")


async def lookup_recipient(
    conn: Pool | asyncpg.Connection, domain: str, candidates: Sequence[str]
) -> RecipientRoute | None:
    async with storage_errors():
        row = await conn.fetchrow(SELECT_RECIPIENT_ROUTE, domain, list(candidates))
    return RecipientRoute(**dict(row)) if row else None
