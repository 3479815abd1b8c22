"""The hook for email events that other parts report: suppressions, complaints, failures.

Call `record_email_event` inside the transaction that makes the change (pass its connection):
the row goes to `email_events`, and the outbox trigger (migration 0013) turns it into a
webhook event for every subscribed endpoint, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncpg

from storage.errors import storage_errors
from storage.ids import uuid7

INSERT_EMAIL_EVENT = """
INSERT INTO email_events (id, tenant_id, email_id, type, recipient, data)
VALUES ($1, $2, $3, $4, $5, $6)
"""


async def record_email_event(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    email_id: UUID,
    kind: str,
    *,
    recipient: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> UUID:
    """`kind` is a policy.webhooks.events.EmailEvent. `data` carries the details the payload
    shows: email.suppressed `{"type", "message"}`, email.failed `{"reason"}`, email.bounced
    `{"code", "enhanced_code", "response"}`."""
    event_id = uuid7()
    async with storage_errors():
        await conn.execute(
            INSERT_EMAIL_EVENT,
            event_id,
            tenant_id,
            email_id,
            str(kind),
            recipient,
            dict(data or {}),
        )
    return event_id
