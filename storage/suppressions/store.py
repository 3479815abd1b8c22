"""The suppression list: one row per tenant and address (lowercase), with what put it there."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from storage.database import Pool
from storage.errors import storage_errors
from storage.ids import uuid7


@dataclass(frozen=True, slots=True)
class Suppression:
    id: UUID
    email: str
    origin: str  # bounce, complaint, manual
    source_id: UUID | None  # the email that bounced or drew the complaint
    created_at: datetime


_COLUMNS = "id, email, origin, source_id, created_at"
# An address already on the list keeps its first entry (Resend: adding again returns it).
INSERT = f"""
WITH new AS (
    INSERT INTO suppressions (id, tenant_id, email, origin, source_id)
    SELECT u.id, $1, u.email, $4, u.source_id
    FROM unnest($2::uuid[], $3::text[], $5::uuid[]) AS u (id, email, source_id)
    ON CONFLICT (tenant_id, email) DO NOTHING
    RETURNING {_COLUMNS}
)
SELECT {_COLUMNS} FROM new
UNION ALL
SELECT {_COLUMNS} FROM suppressions
WHERE tenant_id = $1 AND email = ANY($3::text[]) AND email NOT IN (SELECT email FROM new)
"""
SELECT_BY_ID = f"SELECT {_COLUMNS} FROM suppressions WHERE tenant_id = $1 AND id = $2"
SELECT_BY_EMAIL = f"SELECT {_COLUMNS} FROM suppressions WHERE tenant_id = $1 AND email = $2"
DELETE = f"""
DELETE FROM suppressions
WHERE tenant_id = $1 AND (id = ANY($2::uuid[]) OR email = ANY($3::text[]))
RETURNING {_COLUMNS}
"""
# Keyset pages on suppressions_tenant_id, newest first, like the other lists; $3 narrows them
# to addresses containing it (the dashboard's search), as plain text rather than a LIKE pattern.
_LIST = (
    f"SELECT {_COLUMNS} FROM suppressions"
    " WHERE tenant_id = $1 AND ($2::text IS NULL OR origin = $2)"
    " AND ($3::text IS NULL OR strpos(email, $3) > 0)"
)
LIST_NEWEST = _LIST + " ORDER BY id DESC LIMIT $4"
LIST_AFTER = _LIST + " AND id < $5 ORDER BY id DESC LIMIT $4"
LIST_BEFORE = _LIST + " AND id > $5 ORDER BY id LIMIT $4"
SELECT_EXISTS = "SELECT 1 FROM suppressions WHERE tenant_id = $1 AND id = $2"


def _entry(row: Any) -> Suppression:
    return Suppression(**{name: row[name] for name in Suppression.__dataclass_fields__})


async def suppress(
    conn: Pool | asyncpg.Connection,
    tenant_id: UUID,
    emails: Sequence[str],
    *,
    origin: str,
    source_ids: Sequence[UUID | None] | None = None,
) -> list[Suppression]:
    """Put addresses on the tenant's list; each comes back as its (new or existing) entry."""
    first: dict[str, UUID | None] = {}
    for email, source in zip(
        emails, source_ids if source_ids is not None else [None] * len(emails), strict=True
    ):
        first.setdefault(email.lower(), source)
    lowered = list(first)
    sources = list(first.values())
    async with storage_errors():
        rows = await conn.fetch(
            INSERT, tenant_id, [uuid7() for _ in lowered], lowered, origin, sources
        )
    by_email = {row["email"]: _entry(row) for row in rows}
    return [by_email[email] for email in lowered if email in by_email]


async def find(pool: Pool, tenant_id: UUID, id_or_email: str) -> Suppression | None:
    async with storage_errors():
        if "@" in id_or_email:
            row = await pool.fetchrow(SELECT_BY_EMAIL, tenant_id, id_or_email.lower())
        else:
            row = await pool.fetchrow(SELECT_BY_ID, tenant_id, UUID(id_or_email))
    return None if row is None else _entry(row)


async def remove(
    pool: Pool, tenant_id: UUID, ids: Sequence[UUID], emails: Sequence[str]
) -> list[Suppression]:
    async with storage_errors():
        rows = await pool.fetch(DELETE, tenant_id, list(ids), [e.lower() for e in emails])
    return [_entry(row) for row in rows]


async def list_page(
    pool: Pool,
    tenant_id: UUID,
    *,
    origin: str | None,
    limit: int,
    containing: str | None = None,
    after: UUID | None = None,
    before: UUID | None = None,
) -> tuple[list[Suppression], bool] | None:
    """One page, newest first; None when the cursor is not one of the tenant's entries.
    `containing` keeps the addresses with that text in them (addresses are kept lowercase)."""
    cursor = after or before
    needle = containing.lower() if containing else None
    async with storage_errors(), pool.acquire() as conn:
        if cursor is None:
            rows = await conn.fetch(LIST_NEWEST, tenant_id, origin, needle, limit + 1)
        else:
            if await conn.fetchval(SELECT_EXISTS, tenant_id, cursor) is None:
                return None
            query = LIST_AFTER if after is not None else LIST_BEFORE
            rows = await conn.fetch(query, tenant_id, origin, needle, limit + 1, cursor)
    page = [_entry(row) for row in rows[:limit]]
    if before is not None:
        page.reverse()
    return page, len(rows) > limit
