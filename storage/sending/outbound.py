"""Outbound emails and their threads: the rows that reply tracking mints and later reads."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors
from storage.ids import uuid7


@dataclass(frozen=True, slots=True)
class TrackedEmail:
    id: UUID
    tenant_id: UUID
    thread_id: UUID
    message_id: str
    reply_token: str | None
    reply_address: str | None
    reply_domain: str | None


INSERT_THREAD = "INSERT INTO threads (id, tenant_id, subject) VALUES ($1, $2, $3)"
INSERT_EMAIL = """
INSERT INTO emails (id, tenant_id, thread_id, from_address, to_addresses, subject, message_id,
                    reply_token, reply_address, reply_domain)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""
REVOKE_TOKEN = "UPDATE emails SET reply_token = NULL WHERE tenant_id = $1 AND id = $2"


def new_email_id() -> UUID:
    return uuid7()


async def insert_tracked_email(
    pool: Pool,
    *,
    email_id: UUID,
    tenant_id: UUID,
    thread_id: UUID | None,
    from_address: str,
    to: list[str],
    subject: str | None,
    message_id: str,
    reply_token: str | None,
    reply_address: str | None,
    reply_domain: str | None,
) -> TrackedEmail:
    """One outbound email and, unless it continues one, a new thread, in one transaction."""
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        if thread_id is None:
            thread_id = uuid7()
            await conn.execute(INSERT_THREAD, thread_id, tenant_id, subject)
        await conn.execute(
            INSERT_EMAIL,
            email_id,
            tenant_id,
            thread_id,
            from_address,
            to,
            subject,
            message_id,
            reply_token,
            reply_address,
            reply_domain,
        )
    return TrackedEmail(
        email_id, tenant_id, thread_id, message_id, reply_token, reply_address, reply_domain
    )


async def revoke_reply_token(pool: Pool, tenant_id: UUID, email_id: UUID) -> None:
    async with storage_errors():
        await pool.execute(REVOKE_TOKEN, tenant_id, email_id)
