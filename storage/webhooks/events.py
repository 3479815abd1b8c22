"""The hooks for events that no trigger writes: email events that other parts report
(suppressions, complaints, failures), and events whose data is shaped in Python (domain.*).

Call them inside the transaction that makes the change (pass its connection): `record_email_event`
writes the row to `email_events`, and the outbox trigger (migration 0013) turns it into a
webhook event for every subscribed endpoint; `record_event` writes the webhook event itself,
through the same SQL functions as the triggers. Either way in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncpg

from storage.errors import storage_errors
from storage.ids import uuid7

# Migration 0013's functions, which the triggers use too: nothing is written unless the tenant
# has an enabled webhook subscribed to the type; then the event, one delivery per such webhook,
# and the workers' wake-up at COMMIT.
INSERT_EVENT = """
SELECT opensend_webhook_event($1, $2, $3::jsonb) WHERE opensend_webhook_subscribed($1, $2)
"""
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


async def record_event(
    conn: asyncpg.Connection, tenant_id: UUID, kind: str, data: Mapping[str, Any]
) -> None:
    """A webhook event of `kind` with `data` as its payload's `data`, already in its final
    shape, if the tenant subscribed to it."""
    async with storage_errors():
        await conn.execute(INSERT_EVENT, tenant_id, kind, dict(data))
