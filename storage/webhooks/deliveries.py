"""A webhook's events as the API shows them: one per delivery (the id is its webhook-id), its
attempts, and a replay that queues it once more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors


@dataclass(frozen=True, slots=True)
class DeliveredEvent:
    id: UUID  # the delivery's id: webhook-id on the wire
    type: str
    created_at: datetime
    status: str
    next_attempt_at: datetime | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Attempt:
    id: UUID
    attempted_at: datetime
    status_code: int | None
    latency_ms: float
    response: str
    error: str | None


_EVENT_COLUMNS = """
d.id, e.type, e.created_at, d.status,
CASE WHEN d.status IN ('pending', 'attempting') THEN d.next_attempt_at END AS next_attempt_at,
e.data
"""
_SCOPE = "FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id"
SELECT_EVENT = (
    f"SELECT {_EVENT_COLUMNS} {_SCOPE} WHERE d.tenant_id = $1 AND d.webhook_id = $2 AND d.id = $3"
)
LIST_EVENTS_NEWEST = (
    f"SELECT {_EVENT_COLUMNS} {_SCOPE} WHERE d.tenant_id = $1 AND d.webhook_id = $2 "
    "ORDER BY d.id DESC LIMIT $3"
)
LIST_EVENTS_AFTER = (
    f"SELECT {_EVENT_COLUMNS} {_SCOPE} WHERE d.tenant_id = $1 AND d.webhook_id = $2 "
    "AND d.id < $4 ORDER BY d.id DESC LIMIT $3"
)
# Due at once, whatever became of it before; its attempts so far stay listed. The workers are
# woken at COMMIT.
REPLAY = """
UPDATE webhook_deliveries
SET status = 'pending', next_attempt_at = now(), finished_at = NULL,
    lease_until = NULL, lease_token = NULL
WHERE tenant_id = $1 AND webhook_id = $2 AND id = $3
RETURNING id, pg_notify('opensend_webhooks', '') AS notified
"""
SELECT_DELIVERY = (
    "SELECT EXISTS (SELECT 1 FROM webhook_deliveries "
    "WHERE tenant_id = $1 AND webhook_id = $2 AND id = $3)"
)
_ATTEMPT_COLUMNS = "id, attempted_at, status_code, latency_ms, response, error"
LIST_ATTEMPTS_NEWEST = (
    f"SELECT {_ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id = $1 "
    "ORDER BY id DESC LIMIT $2"
)
LIST_ATTEMPTS_AFTER = (
    f"SELECT {_ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id = $1 AND id < $3 "
    "ORDER BY id DESC LIMIT $2"
)


def _event(row: Any) -> DeliveredEvent:
    return DeliveredEvent(**dict(row))


async def get_event(
    pool: Pool, tenant_id: UUID, webhook_id: UUID, event_id: UUID
) -> DeliveredEvent | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_EVENT, tenant_id, webhook_id, event_id)
    return _event(row) if row else None


async def list_events(
    pool: Pool, tenant_id: UUID, webhook_id: UUID, *, limit: int, after: UUID | None
) -> tuple[list[DeliveredEvent], bool]:
    async with storage_errors():
        if after is None:
            rows = await pool.fetch(LIST_EVENTS_NEWEST, tenant_id, webhook_id, limit + 1)
        else:
            rows = await pool.fetch(LIST_EVENTS_AFTER, tenant_id, webhook_id, limit + 1, after)
    return [_event(r) for r in rows[:limit]], len(rows) > limit


async def replay(pool: Pool, tenant_id: UUID, webhook_id: UUID, event_id: UUID) -> bool:
    async with storage_errors():
        row = await pool.fetchrow(REPLAY, tenant_id, webhook_id, event_id)
    return row is not None


async def list_attempts(
    pool: Pool,
    tenant_id: UUID,
    webhook_id: UUID,
    event_id: UUID,
    *,
    limit: int,
    after: UUID | None,
) -> tuple[list[Attempt], bool] | None:
    """Newest first; None when the event is not one of this tenant's webhook's."""
    async with storage_errors(), pool.acquire() as conn:
        if not await conn.fetchval(SELECT_DELIVERY, tenant_id, webhook_id, event_id):
            return None
        if after is None:
            rows = await conn.fetch(LIST_ATTEMPTS_NEWEST, event_id, limit + 1)
        else:
            rows = await conn.fetch(LIST_ATTEMPTS_AFTER, event_id, limit + 1, after)
    return [Attempt(**dict(r)) for r in rows[:limit]], len(rows) > limit
