"""A contact's conversations for the dashboard: the tenant's threads in which a message from
that contact was received, most recent activity first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors
from storage.inbound.received import readable

MAX_THREADS = 100


@dataclass(frozen=True, slots=True)
class ContactThread:
    id: UUID
    subject: str | None
    last_message_at: datetime


SELECT_THREADS = f"""
SELECT t.id, t.subject, t.last_message_at FROM threads t
WHERE t.tenant_id = $1
  AND t.id IN (SELECT r.thread_id FROM received_emails r
               WHERE r.tenant_id = $1 AND r.contact_id = $2 AND r.thread_id IS NOT NULL
                 AND {readable("r")})
ORDER BY t.last_message_at DESC, t.id DESC
LIMIT $3
"""


async def threads_of_contact(pool: Pool, tenant_id: UUID, contact_id: UUID) -> list[ContactThread]:
    async with storage_errors():
        rows = await pool.fetch(SELECT_THREADS, tenant_id, contact_id, MAX_THREADS)
    return [ContactThread(**dict(row)) for row in rows]
