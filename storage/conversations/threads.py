"""Reads of conversations: a tenant's threads by recent activity, and their messages in order.

A thread's messages live in two tables: what the tenant sent (`emails`) and what came back
(`received_emails`). They are read together, oldest first, always within one tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors
from storage.inbound.received import readable

# A conversation is a handful of messages; a thread someone floods must not become a response
# of unbounded size. Past this, a thread's listing stops (oldest kept) and says it was cut.
MAX_THREAD_MESSAGES = 500


@dataclass(frozen=True, slots=True)
class ThreadMessage:
    thread_id: UUID
    direction: str  # outbound | inbound
    id: UUID
    created_at: datetime
    from_header: str | None  # outbound: the From field as given
    from_name: str | None  # inbound: the From field's display name and address
    from_address: str | None
    to_addresses: list[str]
    subject: str | None
    match_status: str | None  # inbound only
    reply_to_email_id: UUID | None  # inbound only
    classification: str | None  # inbound only: human, auto_reply, bounce, ... (policy.classify)


@dataclass(frozen=True, slots=True)
class Thread:
    id: UUID
    subject: str | None
    created_at: datetime
    last_message_at: datetime
    # The outbound email that opened the conversation.
    original_email_id: UUID | None
    # The contact of the latest inbound message that has one.
    contact_id: UUID | None


@dataclass(frozen=True, slots=True)
class ThreadMessages:
    messages: list[ThreadMessage]
    total: int  # may exceed len(messages): see MAX_THREAD_MESSAGES


THREAD_COLUMNS = f"""
t.id, t.subject, t.created_at, t.last_message_at,
(SELECT e.id FROM emails e WHERE e.tenant_id = t.tenant_id AND e.thread_id = t.id
 ORDER BY e.created_at, e.id LIMIT 1) AS original_email_id,
(SELECT r.contact_id FROM received_emails r
 WHERE r.tenant_id = t.tenant_id AND r.thread_id = t.id AND r.contact_id IS NOT NULL
   AND {readable("r")}
 ORDER BY r.received_at DESC, r.id DESC LIMIT 1) AS contact_id
"""
SELECT_THREAD = "SELECT " + THREAD_COLUMNS + " FROM threads t WHERE t.tenant_id = $1 AND t.id = $2"
# The newest received message of a thread: what "reply to the thread" answers.
SELECT_LATEST_RECEIVED = f"""
SELECT id FROM received_emails WHERE tenant_id = $1 AND thread_id = $2 AND {readable()}
ORDER BY received_at DESC, id DESC LIMIT 1
"""

# Keyset pages on threads_tenant_recent (tenant_id, last_message_at DESC); the id breaks ties
# (one group commit touches many threads at the same instant) with an incremental sort.
_LIST = "SELECT " + THREAD_COLUMNS + " FROM threads t WHERE t.tenant_id = $1 "
LIST_NEWEST = _LIST + "ORDER BY t.last_message_at DESC, t.id DESC LIMIT $2"
LIST_AFTER = (
    _LIST + "AND (t.last_message_at, t.id) < ($3, $4) "
    "ORDER BY t.last_message_at DESC, t.id DESC LIMIT $2"
)
LIST_BEFORE = (
    _LIST + "AND (t.last_message_at, t.id) > ($3, $4) ORDER BY t.last_message_at, t.id LIMIT $2"
)
SELECT_CURSOR = "SELECT last_message_at, id FROM threads WHERE tenant_id = $1 AND id = $2"

# Both directions of every thread asked for, numbered per thread in time order, so the cap
# applies per thread and the total comes back with the rows (indexes emails_thread and
# received_thread).
SELECT_MESSAGES = f"""
SELECT * FROM (
    SELECT m.*,
           row_number() OVER (PARTITION BY m.thread_id ORDER BY m.created_at, m.id) AS position,
           count(*) OVER (PARTITION BY m.thread_id) AS total
    FROM (
        SELECT e.thread_id, 'outbound' AS direction, e.id, e.created_at,
               coalesce(e.from_header, e.from_address) AS from_header,
               NULL::text AS from_name, e.from_address, e.to_addresses, e.subject,
               NULL::text AS match_status, NULL::uuid AS reply_to_email_id,
               NULL::text AS classification
        FROM emails e WHERE e.tenant_id = $1 AND e.thread_id = ANY($2::uuid[])
        UNION ALL
        SELECT r.thread_id, 'inbound', r.id, r.received_at,
               NULL, r.from_name, r.from_address, r.to_addresses, r.subject,
               r.reply_match_status, r.reply_to_email_id, r.classification
        FROM received_emails r WHERE r.tenant_id = $1 AND r.thread_id = ANY($2::uuid[])
          AND {readable("r")}
    ) AS m
) AS numbered
WHERE position <= $3
ORDER BY thread_id, position
"""


def _thread(row: Any) -> Thread:
    return Thread(**{name: row[name] for name in Thread.__dataclass_fields__})


async def get_thread(pool: Pool, tenant_id: UUID, thread_id: UUID) -> Thread | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_THREAD, tenant_id, thread_id)
    return None if row is None else _thread(row)


async def list_threads(
    pool: Pool,
    tenant_id: UUID,
    *,
    limit: int,
    after: UUID | None = None,
    before: UUID | None = None,
) -> tuple[list[Thread], bool] | None:
    """One page, most recent activity first; None when the cursor is not one of the tenant's.

    Activity moves threads: one that gets a message while a client pages jumps to the front,
    so it may be seen twice or not at all by that walk. Ordering by activity means exactly that.
    """
    cursor_id = after or before
    async with storage_errors(), pool.acquire() as conn:
        if cursor_id is None:
            rows = await conn.fetch(LIST_NEWEST, tenant_id, limit + 1)
        else:
            cursor = await conn.fetchrow(SELECT_CURSOR, tenant_id, cursor_id)
            if cursor is None:
                return None
            query = LIST_AFTER if after is not None else LIST_BEFORE
            rows = await conn.fetch(
                query, tenant_id, limit + 1, cursor["last_message_at"], cursor["id"]
            )
    page = [_thread(row) for row in rows[:limit]]
    if before is not None:
        page.reverse()
    return page, len(rows) > limit


async def latest_received(pool: Pool, tenant_id: UUID, thread_id: UUID) -> UUID | None:
    """The id of the thread's newest received message; None: no such thread, or none received."""
    async with storage_errors():
        found: UUID | None = await pool.fetchval(SELECT_LATEST_RECEIVED, tenant_id, thread_id)
    return found


async def thread_messages(
    pool: Pool, tenant_id: UUID, thread_ids: list[UUID]
) -> dict[UUID, ThreadMessages]:
    """The messages of each thread, oldest first (at most MAX_THREAD_MESSAGES each)."""
    messages: dict[UUID, list[ThreadMessage]] = {t: [] for t in thread_ids}
    totals = dict.fromkeys(thread_ids, 0)
    if thread_ids:
        async with storage_errors():
            rows = await pool.fetch(SELECT_MESSAGES, tenant_id, thread_ids, MAX_THREAD_MESSAGES)
        for row in rows:
            messages[row["thread_id"]].append(
                ThreadMessage(**{name: row[name] for name in ThreadMessage.__dataclass_fields__})
            )
            totals[row["thread_id"]] = row["total"]
    return {t: ThreadMessages(messages[t], totals[t]) for t in thread_ids}
