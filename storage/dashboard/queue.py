"""The queue page: a tenant's deferred deliveries with their last error and next retry; retry
now (due at once, the workers woken) and cancel, for one or several at once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from storage.database import Pool
from storage.delivery.queue import NOTIFY_CHANNEL
from storage.errors import storage_errors
from storage.ids import uuid7


@dataclass(frozen=True, slots=True)
class Deferred:
    id: UUID
    email_id: UUID
    subject: str | None
    recipient: str
    attempts: int
    last_code: int | None
    last_enhanced: str | None
    last_response: str | None
    remote_host: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime


_DEFERRED = """
SELECT d.id, d.email_id, e.subject, d.recipient, d.attempts, d.last_code, d.last_enhanced,
       d.last_response, d.remote_host, d.last_attempt_at, d.next_attempt_at
FROM deliveries d JOIN emails e ON e.id = d.email_id
WHERE d.tenant_id = $1 AND d.status = 'deferred'
"""
LIST_DEFERRED = _DEFERRED + "ORDER BY d.next_attempt_at, d.id LIMIT $2"
LIST_DEFERRED_OF_EMAIL = _DEFERRED + "AND d.email_id = $2 ORDER BY d.recipient"
# Only deferred rows: a row being sent holds a worker's lease and is not ours to move.
RETRY_NOW = f"""
WITH moved AS (
    UPDATE deliveries SET next_attempt_at = now()
    WHERE tenant_id = $1 AND id = ANY($2::uuid[]) AND status = 'deferred'
    RETURNING id
)
SELECT (SELECT count(*) FROM moved)::int AS n, pg_notify('{NOTIFY_CHANNEL}', '') AS notified
"""
# A canceled recipient gets an email.canceled event; an email none of whose recipients is
# still on its way or delivered becomes canceled itself.
CANCEL = """
WITH stopped AS (
    UPDATE deliveries SET status = 'canceled', finished_at = now(), next_attempt_at = now()
    WHERE tenant_id = $1 AND id = ANY($2::uuid[]) AND status = 'deferred'
    RETURNING id, email_id, recipient
), events AS (
    INSERT INTO email_events (id, tenant_id, email_id, type, recipient)
    SELECT ids.event_id, $1, s.email_id, 'email.canceled', s.recipient
    FROM stopped s JOIN unnest($2::uuid[], $3::uuid[]) AS ids (delivery_id, event_id)
         ON ids.delivery_id = s.id
), emails AS (
    UPDATE emails e SET status = 'canceled', last_event = 'email.canceled'
    WHERE e.id IN (SELECT email_id FROM stopped)
      AND NOT EXISTS (SELECT 1 FROM deliveries d
                      WHERE d.email_id = e.id AND d.id NOT IN (SELECT id FROM stopped)
                        AND d.status IN ('queued', 'deferred', 'sending', 'delivered'))
)
SELECT count(*)::int FROM stopped
"""


async def list_deferred(pool: Pool, tenant_id: UUID, *, limit: int) -> list[Deferred]:
    async with storage_errors():
        rows = await pool.fetch(LIST_DEFERRED, tenant_id, limit)
    return [Deferred(**dict(row)) for row in rows]


async def deferred_of_email(pool: Pool, tenant_id: UUID, email_id: UUID) -> list[Deferred]:
    async with storage_errors():
        rows = await pool.fetch(LIST_DEFERRED_OF_EMAIL, tenant_id, email_id)
    return [Deferred(**dict(row)) for row in rows]


async def retry_now(pool: Pool, tenant_id: UUID, delivery_ids: list[UUID]) -> int:
    async with storage_errors():
        row = await pool.fetchrow(RETRY_NOW, tenant_id, delivery_ids)
    return int(row["n"])


async def cancel(pool: Pool, tenant_id: UUID, delivery_ids: list[UUID]) -> int:
    event_ids = [uuid7() for _ in delivery_ids]
    async with storage_errors():
        count = await pool.fetchval(CANCEL, tenant_id, delivery_ids, event_ids)
    return int(count)
