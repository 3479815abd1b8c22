"""An email's delivery timeline for its page: every event per recipient, oldest first, with
what the remote said (code, enhanced code, words, MX host) as the delivery workers stored it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    type: str  # email.sent, email.delivered, email.delivery_delayed, email.bounced, ...
    recipient: str | None
    data: dict[str, Any]
    created_at: datetime


SELECT_EVENTS = """
SELECT type, recipient, data, created_at FROM email_events
WHERE tenant_id = $1 AND email_id = $2 ORDER BY created_at, id
"""


async def email_timeline(pool: Pool, tenant_id: UUID, email_id: UUID) -> list[TimelineEvent]:
    async with storage_errors():
        rows = await pool.fetch(SELECT_EVENTS, tenant_id, email_id)
    return [TimelineEvent(**dict(row)) for row in rows]
