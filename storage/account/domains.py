"""Domain rows for the API and the `opensend domain` commands: claim, read, check, change, delete.

Nothing here selects `dkim_private_key`: what the API and the command line read cannot leak what
was never read. Only the signer reads it. Every tenant-facing query is scoped by tenant.

Every write here also writes its domain.* webhook event, in its own transaction (an event exists
exactly when its change committed). The event's data is the domain as its tenant sees it, which
storage cannot build (its records depend on the server's hostname): each writer is given the
function that builds it (`EventData`, policy.domains.public.DomainView.event_data).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import asyncpg

from storage.database import Pool
from storage.errors import Conflict, storage_errors
from storage.ids import uuid7
from storage.webhooks.events import record_event


class DkimKey(Protocol):
    """A generated key pair (policy.domains.dkim_keys.DkimKeyPair), as storage needs it."""

    @property
    def selector(self) -> str: ...
    @property
    def public_key(self) -> str: ...
    @property
    def private_key_pem(self) -> str: ...


@dataclass(frozen=True, slots=True)
class DomainDetails:
    id: UUID
    tenant_id: UUID
    name: str
    status: str
    verified: bool
    receiving_enabled: bool
    reply_domain: str | None
    region: str
    dkim_selector: str
    dkim_public_key: str | None
    records: list[dict[str, Any]]  # the last check, per record (policy.domains.records)
    last_checked_at: datetime | None
    created_at: datetime


# The `data` of a domain's webhook events, built from the row as it is after the change (as it
# was before, for domain.deleted): what its tenant sees of it.
EventData = Callable[[DomainDetails], Mapping[str, Any]]
# The types of those events (policy.webhooks.events.EVENT_TYPES).
CREATED, UPDATED, DELETED = "domain.created", "domain.updated", "domain.deleted"


@dataclass(frozen=True, slots=True)
class Page:
    domains: list[DomainDetails]
    has_more: bool


COLUMNS = (
    "id",
    "tenant_id",
    "name",
    "status",
    "verified",
    "receiving_enabled",
    "reply_domain",
    "region",
    "dkim_selector",
    "dkim_public_key",
    "records",
    "last_checked_at",
    "created_at",
)
DETAIL_COLUMNS = ", ".join(COLUMNS)
# Claims of names are serialised, so two tenants cannot verify one name at once, nor one
# tenant's reply domain be another's domain (indexes cannot say that across columns).
LOCK_DOMAINS = "LOCK TABLE domains IN SHARE ROW EXCLUSIVE MODE"
# A name is taken when some tenant verified it (as a domain or a reply domain), or when this
# tenant claimed it already: an unverified claim of another tenant holds nothing (migration
# 0020), so a name cannot be kept from the tenant that owns it by claiming it first.
SELECT_NAME_TAKEN = """
SELECT 1 FROM domains
WHERE (name = ANY($1::text[]) OR reply_domain = ANY($1::text[])) AND id IS DISTINCT FROM $2
  AND (verified OR tenant_id = $3)
"""
# Verified elsewhere meanwhile: what stops a second verification of one name.
SELECT_VERIFIED_ELSEWHERE = """
SELECT 1 FROM domains d, domains mine
WHERE mine.tenant_id = $1 AND mine.id = $2 AND d.id <> mine.id AND d.verified
  AND (d.name IN (mine.name, mine.reply_domain) OR d.reply_domain IN (mine.name, mine.reply_domain))
"""
INSERT_DOMAIN = f"""
INSERT INTO domains (id, tenant_id, name, verified, verified_at, status, receiving_enabled,
                     reply_domain, region, dkim_selector, dkim_private_key, dkim_public_key)
VALUES ($1, $2, $3, $4, CASE WHEN $4 THEN now() END,
        CASE WHEN $4 THEN 'verified' ELSE 'not_started' END,
        $5, $6, $7, COALESCE($8, 'opensend'), $9, $10)
RETURNING {DETAIL_COLUMNS}
"""
SELECT_TENANT_DOMAIN = f"SELECT {DETAIL_COLUMNS} FROM domains WHERE tenant_id = $1 AND id = $2"
# Every tenant's claim of a name; the verified one first.
SELECT_DOMAINS_BY_NAME = (
    f"SELECT {DETAIL_COLUMNS} FROM domains WHERE name = $1 ORDER BY verified DESC, id"
)
# Newest first, as Resend lists. Ids are UUIDv7, so id order is creation order, and a cursor is
# just an id: `after` pages towards older domains, `before` towards newer ones.
SELECT_PAGE_AFTER = f"""
SELECT {DETAIL_COLUMNS} FROM domains
WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2)
ORDER BY id DESC LIMIT $3
"""
SELECT_PAGE_BEFORE = f"""
SELECT {DETAIL_COLUMNS} FROM domains
WHERE tenant_id = $1 AND id > $2
ORDER BY id ASC LIMIT $3
"""


def _update(assignments: str, which: str) -> str:
    """An UPDATE of the domain `which` selects that returns the row as it is (DETAIL_COLUMNS)
    and as it was (before_<column>), to tell whether its tenant sees a change.

    `before` is read and locked by the UPDATE's own statement, so it is the version this change
    replaced even when another writer got there first, and the row is locked only after the
    table lock that every UPDATE takes. A separate SELECT ... FOR UPDATE first would lock the
    row under a weaker table lock, which a claim's LOCK TABLE does not wait for; our UPDATE
    would then wait for the claim, and the claim's UPDATE of the same row for us: a deadlock.
    In SET, `d.` says which of the two rows is meant."""
    after = ", ".join(f"d.{column}" for column in COLUMNS)
    before = ", ".join(f"before.{column} AS before_{column}" for column in COLUMNS)
    return f"""
WITH before AS (
    SELECT {DETAIL_COLUMNS} FROM domains WHERE {which} FOR NO KEY UPDATE
)
UPDATE domains d SET {assignments}
FROM before WHERE d.id = before.id
RETURNING {after}, {before}
"""


# Only where no key exists yet, so two concurrent backfills keep one key, never two halves.
SET_DKIM_KEY = _update(
    "dkim_selector = $2, dkim_private_key = $3, dkim_public_key = $4",
    "id = $1 AND (dkim_private_key IS NULL OR dkim_public_key IS NULL)",
)
SELECT_DOMAIN = f"SELECT {DETAIL_COLUMNS} FROM domains WHERE id = $1"
# $5: true (verified), false (failed) or NULL (DNS did not answer: keep what was known).
RECORD_CHECK = _update(
    """status = $3, records = $4, last_checked_at = now(),
    verified = COALESCE($5, d.verified),
    verified_at = CASE WHEN $5 AND NOT d.verified THEN now()
                       WHEN $5 IS FALSE THEN NULL
                       ELSE d.verified_at END""",
    "tenant_id = $1 AND id = $2",
)
UPDATE_RECEIVING = _update(
    "receiving_enabled = $3, reply_domain = $4", "tenant_id = $1 AND id = $2"
)
DELETE_DOMAIN = f"DELETE FROM domains WHERE tenant_id = $1 AND id = $2 RETURNING {DETAIL_COLUMNS}"


def _details(row: Any) -> DomainDetails:
    return DomainDetails(**{column: row[column] for column in COLUMNS})


async def _updated(
    conn: asyncpg.Connection, row: Any, event_data: EventData
) -> DomainDetails | None:
    """The row an `_update` returned, as it is now; domain.updated when its tenant sees a
    change (a check that only moved last_checked_at is none)."""
    if row is None:
        return None
    after = _details(row)
    before = DomainDetails(**{column: row[f"before_{column}"] for column in COLUMNS})
    data = event_data(after)
    if data != event_data(before):
        await record_event(conn, after.tenant_id, UPDATED, data)
    return after


def _claimed(name: str, reply_domain: str | None) -> list[str]:
    names = [n for n in (name, reply_domain) if n]
    if len(set(names)) != len(names):
        raise Conflict("the reply domain must differ from the domain")
    return names


async def insert_domain(
    pool: Pool,
    tenant_id: UUID,
    name: str,
    *,
    receiving: bool,
    reply_domain: str | None,
    verified: bool = False,
    region: str = "us-east-1",
    dkim: DkimKey | None = None,
    event_data: EventData,
) -> DomainDetails:
    """Claim `name` (and `reply_domain`) for a tenant; Conflict when either is already taken.

    The message never says by whom: another tenant's domains are not ours to reveal.
    """
    names = _claimed(name, reply_domain)
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        await conn.execute(LOCK_DOMAINS)
        if await conn.fetchval(SELECT_NAME_TAKEN, names, None, tenant_id):
            raise Conflict(f"{' or '.join(names)} is already in use")
        row = await conn.fetchrow(
            INSERT_DOMAIN,
            uuid7(),
            tenant_id,
            name,
            verified,
            receiving,
            reply_domain,
            region,
            dkim.selector if dkim else None,
            dkim.private_key_pem if dkim else None,
            dkim.public_key if dkim else None,
        )
        domain = _details(row)
        await record_event(conn, tenant_id, CREATED, event_data(domain))
    return domain


async def get_domain(pool: Pool, tenant_id: UUID, domain_id: UUID) -> DomainDetails | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_TENANT_DOMAIN, tenant_id, domain_id)
    return _details(row) if row else None


async def find_domains_by_name(pool: Pool, name: str) -> list[DomainDetails]:
    """Every tenant's claim of a name, the verified one first: for the operator's command line,
    never for the API."""
    async with storage_errors():
        rows = await pool.fetch(SELECT_DOMAINS_BY_NAME, name)
    return [_details(row) for row in rows]


async def list_domains(
    pool: Pool,
    tenant_id: UUID,
    *,
    limit: int,
    after: UUID | None = None,
    before: UUID | None = None,
) -> Page:
    """One page, newest first; one extra row is read to tell whether there are more."""
    async with storage_errors():
        if before is not None:
            rows = await pool.fetch(SELECT_PAGE_BEFORE, tenant_id, before, limit + 1)
            has_more = len(rows) > limit
            rows = list(reversed(rows[:limit]))
        else:
            rows = await pool.fetch(SELECT_PAGE_AFTER, tenant_id, after, limit + 1)
            has_more = len(rows) > limit
            rows = rows[:limit]
    return Page([_details(row) for row in rows], has_more)


async def set_dkim_key(
    pool: Pool, domain_id: UUID, key: DkimKey, *, event_data: EventData
) -> DomainDetails | None:
    """Give a domain without a key this one; a domain that has one keeps it. The new DKIM
    record is a change its tenant sees."""
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            SET_DKIM_KEY, domain_id, key.selector, key.private_key_pem, key.public_key
        )
        changed = await _updated(conn, row, event_data)
        if changed is not None:
            return changed
        # Another process was first, or the domain is gone.
        found = await conn.fetchrow(SELECT_DOMAIN, domain_id)
    return _details(found) if found else None


async def record_check(
    pool: Pool,
    tenant_id: UUID,
    domain_id: UUID,
    *,
    status: str,
    verified: bool | None,
    records: Sequence[dict[str, Any]],
    event_data: EventData,
) -> DomainDetails | None:
    """Store a check's outcome. Conflict when it would verify a name another tenant has
    verified meanwhile (the other's key was published, then this one's: one of them holds)."""
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        if verified:
            await conn.execute(LOCK_DOMAINS)
            if await conn.fetchval(SELECT_VERIFIED_ELSEWHERE, tenant_id, domain_id):
                raise Conflict("this domain is verified by another account; remove it there first")
        row = await conn.fetchrow(
            RECORD_CHECK, tenant_id, domain_id, status, list(records), verified
        )
        return await _updated(conn, row, event_data)


async def update_receiving(
    pool: Pool,
    tenant_id: UUID,
    domain_id: UUID,
    *,
    receiving: bool,
    reply_domain: str | None,
    event_data: EventData,
) -> DomainDetails | None:
    """Turn receiving on or off and set the reply domain; Conflict if that name is taken."""
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        await conn.execute(LOCK_DOMAINS)
        current = await conn.fetchrow(SELECT_TENANT_DOMAIN, tenant_id, domain_id)
        if current is None:
            return None
        if reply_domain is not None and reply_domain != current["reply_domain"]:
            names = _claimed(current["name"], reply_domain)[1:]
            if await conn.fetchval(SELECT_NAME_TAKEN, names, domain_id, tenant_id):
                raise Conflict(f"{reply_domain} is already in use")
        row = await conn.fetchrow(UPDATE_RECEIVING, tenant_id, domain_id, receiving, reply_domain)
        return await _updated(conn, row, event_data)


async def delete_domain(
    pool: Pool, tenant_id: UUID, domain_id: UUID, *, event_data: EventData
) -> bool:
    """Its routes and the API keys limited to it go with it (ON DELETE CASCADE); domain.deleted
    shows it as it was."""
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(DELETE_DOMAIN, tenant_id, domain_id)
        if row is None:
            return False
        await record_event(conn, tenant_id, DELETED, event_data(_details(row)))
    return True
