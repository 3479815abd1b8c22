"""Triage by hand: an unmatched received message linked to one of the tenant's sent emails
joins that email's conversation, and the audit table records who did it and when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors
from storage.ids import uuid7


class Linked(StrEnum):
    LINKED = "linked"
    NO_MESSAGE = "no_message"  # no such received message of this tenant
    ALREADY_MATCHED = "already_matched"
    NO_EMAIL = "no_email"  # no such sent email of this tenant
    NO_CONVERSATION = "no_conversation"  # the email was sent untracked: it has no thread


@dataclass(frozen=True, slots=True)
class AuditEntry:
    user_email: str
    action: str
    received_id: UUID | None
    email_id: UUID | None
    created_at: datetime


SELECT_MESSAGE = """
SELECT reply_match_status FROM received_emails WHERE tenant_id = $1 AND id = $2 FOR UPDATE
"""
SELECT_EMAIL = "SELECT thread_id FROM emails WHERE tenant_id = $1 AND id = $2"
LINK = """
UPDATE received_emails
SET reply_match_status = 'matched', reply_to_email_id = $3, thread_id = $4, match_source = 'manual'
WHERE tenant_id = $1 AND id = $2
"""
TOUCH_THREAD = """
UPDATE threads SET last_message_at = greatest(last_message_at, now())
WHERE tenant_id = $1 AND id = $2
"""
INSERT_AUDIT = """
INSERT INTO dashboard_audit (id, tenant_id, user_id, user_email, action, received_id, email_id)
VALUES ($1, $2, $3, $4, 'link_received_to_email', $5, $6)
"""
SELECT_AUDIT = """
SELECT user_email, action, received_id, email_id, created_at FROM dashboard_audit
WHERE tenant_id = $1 AND received_id = $2 ORDER BY created_at
"""


async def link_to_email(
    pool: Pool,
    tenant_id: UUID,
    received_id: UUID,
    email_id: UUID,
    *,
    user_id: UUID,
    user_email: str,
) -> Linked:
    """One transaction: the message is locked, checked still unmatched, linked, audited."""
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        status = await conn.fetchval(SELECT_MESSAGE, tenant_id, received_id)
        if status is None:
            return Linked.NO_MESSAGE
        if status != "unmatched":
            return Linked.ALREADY_MATCHED
        email = await conn.fetchrow(SELECT_EMAIL, tenant_id, email_id)
        if email is None:
            return Linked.NO_EMAIL
        if email["thread_id"] is None:
            return Linked.NO_CONVERSATION
        await conn.execute(LINK, tenant_id, received_id, email_id, email["thread_id"])
        await conn.execute(TOUCH_THREAD, tenant_id, email["thread_id"])
        await conn.execute(
            INSERT_AUDIT, uuid7(), tenant_id, user_id, user_email, received_id, email_id
        )
    return Linked.LINKED


async def audit_of(pool: Pool, tenant_id: UUID, received_id: UUID) -> list[AuditEntry]:
    async with storage_errors():
        rows = await pool.fetch(SELECT_AUDIT, tenant_id, received_id)
    return [AuditEntry(**dict(row)) for row in rows]
