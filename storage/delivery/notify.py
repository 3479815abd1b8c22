"""Wake-ups for the delivery workers: LISTEN on a connection of their own, kept alive.

A pooled connection cannot hold a LISTEN (it is handed to other users and reset), so the
listener opens a dedicated one, and opens it again after it is lost. Notifications sent while
it was away are gone: every (re)connection also wakes the worker, which then claims whatever is
due, so nothing waits for the periodic poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from storage.delivery.queue import NOTIFY_CHANNEL
from storage.errors import StorageError, storage_errors

log = logging.getLogger(__name__)

RECONNECT_FIRST_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 5.0
# How often a quiet connection is checked: a half-open TCP connection never reports its loss.
PING_SECONDS = 15.0


class QueueListener:
    def __init__(
        self, url: str, wake: Callable[[], None], *, channel: str = NOTIFY_CHANNEL
    ) -> None:
        self._url = url
        self._wake = wake
        self._channel = channel
        self.connected = asyncio.Event()
        self.connections = 0

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with backoff whenever the connection is lost."""
        delay = RECONNECT_FIRST_SECONDS
        while True:
            try:
                await self._listen_once()
                delay = RECONNECT_FIRST_SECONDS
            except Exception as error:  # nothing may end the listening for good
                log.warning(
                    "delivery wake-up connection lost; reconnecting",
                    extra={"error": str(error), "in": delay},
                    exc_info=None if isinstance(error, StorageError) else error,
                )
            self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def _listen_once(self) -> None:
        lost = asyncio.get_running_loop().create_future()

        def on_notify(*_: Any) -> None:
            self._wake()

        def on_termination(_: asyncpg.Connection) -> None:
            if not lost.done():
                lost.set_result(None)

        async with storage_errors():
            conn: asyncpg.Connection = await asyncpg.connect(self._url, timeout=10)
        try:
            async with storage_errors():
                conn.add_termination_listener(on_termination)
                await conn.add_listener(self._channel, on_notify)
            self.connections += 1
            self.connected.set()
            self._wake()  # whatever was notified while we were away
            while not lost.done():
                done, _ = await asyncio.wait({lost}, timeout=PING_SECONDS)
                if done:
                    break
                async with storage_errors():
                    await conn.fetchval("SELECT 1", timeout=PING_SECONDS)
            raise StorageError("the listening connection was closed", temporary=True)
        finally:
            conn.terminate()
