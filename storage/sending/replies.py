"""What answering a stored message reads and writes beyond the send pipeline: the thread an
answer joins (however it is sent), and the tenant's monthly sending limit.

The reply itself is stored by storage.sending.emails (one statement, group-committed) like any
email.
"""

from __future__ import annotations

from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors
from storage.inbound.inbox import EvidenceLookups

# The received row is locked so that two first replies to the same unmatched message agree on
# one thread instead of each opening its own.
LOCK_RECEIVED_THREAD = """
SELECT thread_id, subject FROM received_emails WHERE tenant_id = $1 AND id = $2 FOR UPDATE
"""
INSERT_THREAD = "INSERT INTO threads (id, tenant_id, subject) VALUES ($1, $2, $3)"
ADOPT_THREAD = "UPDATE received_emails SET thread_id = $3 WHERE tenant_id = $1 AND id = $2"

# Counting stops at the limit (the inner LIMIT), so a tenant with a million emails this month
# costs what one at its limit does: an index range scan on emails_tenant_recent. The month is
# the calendar month in UTC. NULL: no limit, nothing counted.
LIMIT_REACHED = """
SELECT t.monthly_send_limit IS NOT NULL AND (
    SELECT count(*) FROM (
        SELECT 1 FROM emails e
        WHERE e.tenant_id = t.id
          AND e.created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        LIMIT t.monthly_send_limit
    ) AS this_month
) >= t.monthly_send_limit AS reached
FROM tenants t WHERE t.id = $1
"""
SET_LIMIT = "UPDATE tenants SET monthly_send_limit = $2 WHERE id = $1"
SELECT_LIMIT = "SELECT monthly_send_limit FROM tenants WHERE id = $1"


async def thread_for_reply(
    pool: Pool, tenant_id: UUID, received_id: UUID, new_thread_id: UUID
) -> UUID | None:
    """The received email's thread; an unmatched one gets a new thread first (named by its
    subject), so that it and every reply to it are one conversation from then on. None: no
    such received email."""
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(LOCK_RECEIVED_THREAD, tenant_id, received_id)
        if row is None:
            return None
        if row["thread_id"] is not None:
            thread_id: UUID = row["thread_id"]
            return thread_id
        await conn.execute(INSERT_THREAD, new_thread_id, tenant_id, row["subject"])
        await conn.execute(ADOPT_THREAD, tenant_id, received_id, new_thread_id)
        return new_thread_id


class ThreadLookups(EvidenceLookups):
    """What `policy.conversation.outbound_thread` looks up and writes, on one pool."""

    async def open_thread(
        self, tenant_id: UUID, received_id: UUID, new_thread_id: UUID
    ) -> UUID | None:
        return await thread_for_reply(self._pool, tenant_id, received_id, new_thread_id)


async def sending_limit_reached(pool: Pool, tenant_id: UUID) -> bool:
    """Whether the tenant's emails this month have reached its plan's limit (a soft limit:
    concurrent requests checked at the same moment may pass it by a few)."""
    async with storage_errors():
        reached = await pool.fetchval(LIMIT_REACHED, tenant_id)
    return bool(reached)


async def sending_limit(pool: Pool, tenant_id: UUID) -> int | None:
    """The tenant's monthly limit; None: unlimited (or no such tenant)."""
    async with storage_errors():
        limit: int | None = await pool.fetchval(SELECT_LIMIT, tenant_id)
    return limit


async def set_sending_limit(pool: Pool, tenant_id: UUID, limit: int | None) -> None:
    async with storage_errors():
        await pool.execute(SET_LIMIT, tenant_id, limit)
