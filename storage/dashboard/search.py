"""The dashboard's search of sent emails: `to:`, `from:`, `subject:`, `status:`, `has:reply`
and free words, one tenant at a time, newest first, a keyset page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors
from storage.inbound.received import readable


@dataclass(frozen=True, slots=True)
class EmailQuery:
    """None means "any"; text is matched as a case-insensitive substring."""

    to: str | None = None
    sender: str | None = None
    subject: str | None = None
    status: str | None = None
    has_reply: bool = False
    words: str | None = None  # in the subject or any recipient
    domain: str | None = None  # the sending domain, exactly
    tag: str | None = None  # a tag's name, exactly
    sent_after: datetime | None = None  # inclusive
    sent_before: datetime | None = None  # exclusive


def _like(value: str | None) -> str | None:
    if value is None:
        return None
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Each condition is a no-op when its parameter is NULL (one prepared statement for every
# combination); the keyset cursor ($8, $9) is the last row's (created_at, id).
SEARCH = f"""
SELECT e.id, e.from_header, e.from_address, e.to_addresses, e.subject, e.created_at, e.status,
       e.last_event, e.thread_id, e.reply_address,
       EXISTS (SELECT 1 FROM received_emails r
               WHERE r.tenant_id = e.tenant_id AND r.reply_to_email_id = e.id
                 AND {readable("r")}) AS has_reply
FROM emails e
WHERE e.tenant_id = $1
  AND ($2::text IS NULL OR array_to_string(e.to_addresses, ' ') ILIKE $2)
  AND ($3::text IS NULL OR coalesce(e.from_header, e.from_address) ILIKE $3)
  AND ($4::text IS NULL OR e.subject ILIKE $4)
  AND ($5::text IS NULL OR e.status = $5
       OR e.last_event = 'email.' || $5)
  AND (NOT $6 OR EXISTS (SELECT 1 FROM received_emails r
                         WHERE r.tenant_id = e.tenant_id AND r.reply_to_email_id = e.id
                           AND {readable("r")}))
  AND ($7::text IS NULL OR e.subject ILIKE $7 OR array_to_string(e.to_addresses, ' ') ILIKE $7)
  AND ($8::timestamptz IS NULL OR (e.created_at, e.id) < ($8, $9::uuid))
  AND ($11::text IS NULL OR lower(split_part(e.from_address, '@', 2)) = $11)
  AND ($12::text IS NULL OR e.tags @> jsonb_build_array(jsonb_build_object('name', $12::text)))
  AND ($13::timestamptz IS NULL OR e.created_at >= $13)
  AND ($14::timestamptz IS NULL OR e.created_at < $14)
ORDER BY e.created_at DESC, e.id DESC
LIMIT $10
"""
SELECT_CURSOR = "SELECT created_at, id FROM emails WHERE tenant_id = $1 AND id = $2"


async def search_emails(
    pool: Pool, tenant_id: UUID, query: EmailQuery, *, limit: int, after: UUID | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """One page, newest first, and whether more follow. An unknown cursor starts over."""
    async with storage_errors(), pool.acquire() as conn:
        cursor = None
        if after is not None:
            cursor = await conn.fetchrow(SELECT_CURSOR, tenant_id, after)
        rows = await conn.fetch(
            SEARCH,
            tenant_id,
            _like(query.to),
            _like(query.sender),
            _like(query.subject),
            query.status,
            query.has_reply,
            _like(query.words),
            cursor["created_at"] if cursor else None,
            cursor["id"] if cursor else None,
            limit + 1,
            query.domain,
            query.tag,
            query.sent_after,
            query.sent_before,
        )
    return [dict(r) for r in rows[:limit]], len(rows) > limit
