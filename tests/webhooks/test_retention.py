"""The outbox's clean-up deletes finished events past the retention period, and nothing else:
an event with a delivery still to be attempted stays however old it is."""

from __future__ import annotations

import json
import time
from pathlib import Path
from uuid import UUID

from mta.webhooks.retention import prune_once
from policy.domains.dkim_keys import DkimKeyPair
from policy.tokens import ReplyTokens
from storage.database import Pool
from storage.ids import uuid7, uuid7_floor
from tests.webhooks.conftest import Queue
from tests.webhooks.world import api_server, create_webhook, sdk_as, tenant_with_key

DAY_MS = 86_400_000


def minted_days_ago(days: int) -> UUID:
    """A uuid7 as the trigger would have minted it `days` ago (unique: the floor plus noise)."""
    floor = uuid7_floor(int(time.time() * 1000) - days * DAY_MS)
    return UUID(int=floor.int | (uuid7().int & ((1 << 62) - 1)))


async def event_with_delivery(
    pool: Pool, tenant_id: UUID, webhook_id: UUID, days_ago: int, status: str
) -> UUID:
    event_id = minted_days_ago(days_ago)
    await pool.execute(
        "INSERT INTO webhook_events (id, tenant_id, type, data) "
        "VALUES ($1, $2, 'contact.created', $3::jsonb)",
        event_id,
        tenant_id,
        json.dumps({"id": str(event_id)}),
    )
    delivery_id = uuid7()
    await pool.execute(
        "INSERT INTO webhook_deliveries (id, event_id, webhook_id, tenant_id, status, attempts) "
        "VALUES ($1, $2, $3, $4, $5, 1)",
        delivery_id,
        event_id,
        webhook_id,
        tenant_id,
        status,
    )
    await pool.execute(
        "INSERT INTO webhook_attempts (id, delivery_id, status_code, latency_ms) "
        "VALUES ($1, $2, 200, 1.0)",
        uuid7(),
        delivery_id,
    )
    return event_id


async def test_finished_events_past_the_retention_go_with_their_deliveries_and_attempts(
    queue: Queue, tokens: ReplyTokens, dkim_key: DkimKeyPair, tmp_path: Path
) -> None:
    _, pool = queue
    domain, key = await tenant_with_key(pool, dkim_key)
    async with api_server(pool, tokens, tmp_path) as api_url:
        with sdk_as(key, api_url):
            webhook_id, _ = await create_webhook("http://127.0.0.1:9/", ["contact.created"])
    hook = UUID(webhook_id)
    tenant = domain.tenant_id
    old_success = await event_with_delivery(pool, tenant, hook, 40, "success")
    old_failed = await event_with_delivery(pool, tenant, hook, 31, "failed")
    old_retrying = await event_with_delivery(pool, tenant, hook, 40, "attempting")
    old_pending = await event_with_delivery(pool, tenant, hook, 35, "pending")
    recent_success = await event_with_delivery(pool, tenant, hook, 29, "success")

    # Batches of one: the loop goes on until a batch comes back short.
    deleted = await prune_once(pool, keep_seconds=30 * 86_400, batch=1)

    assert deleted == 2
    left = {
        row["id"]
        for row in await pool.fetch("SELECT id FROM webhook_events WHERE tenant_id = $1", tenant)
    }
    assert old_success not in left and old_failed not in left
    assert {old_retrying, old_pending, recent_success} <= left
    orphans = await pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries d WHERE NOT EXISTS "
        "(SELECT 1 FROM webhook_events e WHERE e.id = d.event_id)"
    )
    assert orphans == 0
    attempts = await pool.fetchval(
        "SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d "
        "ON d.id = a.delivery_id WHERE d.webhook_id = $1",
        hook,
    )
    assert attempts == 3
