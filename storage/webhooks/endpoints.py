"""A tenant's webhook endpoints: created, read, listed a page at a time, changed, rotated, deleted.

Every statement names the tenant, so another tenant's id finds nothing (the API's 404).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors
from storage.ids import uuid7
from storage.keyset import IdPages, fetch_page


@dataclass(frozen=True, slots=True)
class Webhook:
    id: UUID
    endpoint: str
    events: list[str]
    status: str
    disabled_reason: str | None
    signing_secret: str
    created_at: datetime
    failing_since: datetime | None  # every attempt since has failed (the failing streak)


COLUMNS = "id, endpoint, events, status, disabled_reason, signing_secret, created_at, failing_since"

INSERT_WEBHOOK = (
    "INSERT INTO webhooks (id, tenant_id, endpoint, events, signing_secret) "
    "VALUES ($1, $2, $3, $4, $5) RETURNING " + COLUMNS
)
SELECT_WEBHOOK = "SELECT " + COLUMNS + " FROM webhooks WHERE tenant_id = $1 AND id = $2"
# A field given as NULL keeps its value. Enabling clears the reason (and the failing streak,
# so a tenant who fixed the endpoint gets five more days); disabling by the tenant says so.
UPDATE_WEBHOOK = (
    "UPDATE webhooks SET endpoint = coalesce($3, endpoint), events = coalesce($4, events), "
    "status = coalesce($5, status), "
    "disabled_reason = CASE $5 WHEN 'enabled' THEN NULL WHEN 'disabled' THEN 'api' "
    "                  ELSE disabled_reason END, "
    "failing_since = CASE WHEN $5 = 'enabled' THEN NULL ELSE failing_since END, "
    "updated_at = now() WHERE tenant_id = $1 AND id = $2 RETURNING " + COLUMNS
)
# The old secret keeps signing for the grace period, beside the new one.
ROTATE_SECRET = (
    "UPDATE webhooks SET previous_secret = signing_secret, "
    "previous_secret_until = now() + make_interval(secs => $4), signing_secret = $3, "
    "updated_at = now() WHERE tenant_id = $1 AND id = $2 RETURNING " + COLUMNS
)
# Its deliveries go with it (they have no foreign key: see the migration).
DELETE_WEBHOOK = """
WITH gone AS (DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2 RETURNING id)
DELETE FROM webhook_deliveries d USING gone WHERE d.webhook_id = gone.id
"""
SELECT_EXISTS = "SELECT EXISTS (SELECT 1 FROM webhooks WHERE tenant_id = $1 AND id = $2)"
PAGES = IdPages.of("webhooks", COLUMNS)


def _webhook(row: Any) -> Webhook:
    return Webhook(**dict(row))


async def create_webhook(
    pool: Pool, tenant_id: UUID, endpoint: str, events: list[str], secret: str
) -> Webhook:
    async with storage_errors():
        row = await pool.fetchrow(INSERT_WEBHOOK, uuid7(), tenant_id, endpoint, events, secret)
    return _webhook(row)


async def get_webhook(pool: Pool, tenant_id: UUID, webhook_id: UUID) -> Webhook | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_WEBHOOK, tenant_id, webhook_id)
    return _webhook(row) if row else None


async def webhook_exists(pool: Pool, tenant_id: UUID, webhook_id: UUID) -> bool:
    async with storage_errors():
        return bool(await pool.fetchval(SELECT_EXISTS, tenant_id, webhook_id))


async def update_webhook(
    pool: Pool,
    tenant_id: UUID,
    webhook_id: UUID,
    *,
    endpoint: str | None,
    events: list[str] | None,
    status: str | None,
) -> Webhook | None:
    async with storage_errors():
        row = await pool.fetchrow(UPDATE_WEBHOOK, tenant_id, webhook_id, endpoint, events, status)
    return _webhook(row) if row else None


async def rotate_secret(
    pool: Pool, tenant_id: UUID, webhook_id: UUID, secret: str, grace_seconds: int
) -> Webhook | None:
    async with storage_errors():
        row = await pool.fetchrow(
            ROTATE_SECRET, tenant_id, webhook_id, secret, float(grace_seconds)
        )
    return _webhook(row) if row else None


async def delete_webhook(pool: Pool, tenant_id: UUID, webhook_id: UUID) -> bool:
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval(SELECT_EXISTS, tenant_id, webhook_id):
            return False
        await conn.execute(DELETE_WEBHOOK, tenant_id, webhook_id)
    return True


async def list_webhooks(
    pool: Pool, tenant_id: UUID, *, limit: int, after: UUID | None, before: UUID | None
) -> tuple[list[Webhook], bool]:
    """One page, newest first, and whether more lie beyond it in the direction of travel."""
    rows, more = await fetch_page(pool, PAGES, tenant_id, limit=limit, after=after, before=before)
    return [_webhook(row) for row in rows], more
