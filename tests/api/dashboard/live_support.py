"""What the webhook page tests share: an attempt heard as the dashboard hears it (the NOTIFY of
migration 0017), and an email event that a subscribed endpoint turns into a delivery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg

from policy.webhooks.events import EmailEvent
from storage.dashboard.live import CHANNEL, Announcement, parse
from storage.webhooks.events import record_email_event
from tests.conftest import TenantWorld

# Only stops a hung test; no assertion depends on it.
WAIT_SECONDS = 60.0


class Heard:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Announcement] = asyncio.Queue()

    def _on(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        announcement = parse(payload)
        if announcement is not None:
            self.queue.put_nowait(announcement)

    async def attempt_on(self, webhook_id: UUID) -> Announcement:
        """The next attempt announced for this webhook (others' announcements are skipped)."""
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                heard = await self.queue.get()
                if heard.kind == "attempt" and heard.subject_id == webhook_id:
                    return heard


@contextlib.asynccontextmanager
async def listening(database_url: str) -> AsyncIterator[Heard]:
    heard = Heard()
    conn = await asyncpg.connect(database_url)
    await conn.add_listener(CHANNEL, heard._on)
    try:
        yield heard
    finally:
        await conn.close()


async def delivered_event(world: TenantWorld) -> UUID:
    """An email.delivered event of one of the tenant's emails, as the delivery path records it."""
    email, _token = await world.sent_email()
    async with world.pool.acquire() as conn, conn.transaction():
        await record_email_event(
            conn, world.id, email.id, EmailEvent.DELIVERED, recipient="customer@example.net"
        )
    return email.id
