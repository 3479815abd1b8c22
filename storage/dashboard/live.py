"""Live announcements: LISTEN on `opensend_dashboard` (migrations 0016 and 0017's triggers) on a
held pooled connection, fanned out per tenant to the open pages; taken again after a loss."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from storage.database import Pool

log = logging.getLogger(__name__)

CHANNEL = "opensend_dashboard"
RECONNECT_SECONDS = 1.0
# A page that stops reading loses announcements past this rather than growing without bound.
QUEUE_SIZE = 100


@dataclass(frozen=True, slots=True)
class Announcement:
    tenant_id: UUID
    subject_id: UUID  # the email's id (reply, delivery) or the webhook's (attempt)
    kind: str  # reply | delivery | attempt


def parse(payload: str) -> Announcement | None:
    tenant, _, rest = payload.partition(":")
    subject, _, kind = rest.partition(":")
    try:
        return Announcement(UUID(tenant), UUID(subject), kind)
    except ValueError:
        return None


class Announcements:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._listeners: defaultdict[UUID, set[asyncio.Queue[Announcement | None]]] = defaultdict(
            set
        )
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def subscribe(self, tenant_id: UUID) -> Any:
        queue: asyncio.Queue[Announcement | None] = asyncio.Queue(QUEUE_SIZE)
        self._listeners[tenant_id].add(queue)
        try:
            yield queue
        finally:
            self._listeners[tenant_id].discard(queue)
            if not self._listeners[tenant_id]:
                del self._listeners[tenant_id]

    def close(self) -> None:
        """Ends every subscriber's wait (None in its queue): at shutdown, streams must end
        before the server's wait for open requests runs out."""
        for queues in self._listeners.values():
            for queue in queues:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(None)

    def _deliver(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        announcement = parse(payload)
        if announcement is None:
            return
        for queue in self._listeners.get(announcement.tenant_id, ()):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(announcement)

    async def run(self) -> None:
        while True:
            try:
                await self._listen_once()
            except Exception as error:  # nothing may end the listening for good
                log.warning("dashboard announcements lost", extra={"error": str(error)})
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen_once(self) -> None:
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_termination(_conn: Any) -> None:
            if not lost.done():
                lost.set_result(None)

        async with self._pool.acquire() as conn:
            conn.add_termination_listener(on_termination)
            await conn.add_listener(CHANNEL, self._deliver)
            self.listening.set()
            try:
                await lost
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await conn.remove_listener(CHANNEL, self._deliver)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
