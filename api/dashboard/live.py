"""Live updates by Server-Sent Events: what the database announces for the session's tenant
(a matched reply, a delivery's new state, a webhook attempt), as `event: <kind>`, `data: <id>`."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from aiohttp_sse import sse_response

from api.context import POOL
from api.dashboard.context import ANNOUNCEMENTS, SESSION
from policy.dashboard import sessions as rules
from storage.dashboard import sessions
from storage.errors import StorageError

routes = web.RouteTableDef()

# A ping this often keeps proxies from closing a quiet stream and finds a reader that has gone;
# the loop looks whether the stream and its session still stand as often: a stream outlives a
# sign-out, a revocation or its session's expiry by at most this long.
KEEPALIVE_SECONDS = 15.0
LISTEN_WAIT_SECONDS = 10.0


@routes.get("/events", name="events")
async def events(request: web.Request) -> web.StreamResponse:
    announcements = request.app[ANNOUNCEMENTS]
    secret = request.cookies.get(rules.COOKIE_NAME, "")
    with announcements.subscribe(request[SESSION].tenant_id) as queue:
        async with sse_response(request, ping_interval=KEEPALIVE_SECONDS) as stream:
            # The database connection that LISTENs is taken at startup; a stream opened before
            # it listens waits for it (a while), so "ready" means nothing is missed from here on.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(announcements.listening.wait(), LISTEN_WAIT_SECONDS)
            await stream.send("ready", event="ready")
            loop = asyncio.get_running_loop()
            next_check = loop.time() + KEEPALIVE_SECONDS
            while stream.is_connected():
                try:
                    wait = max(0.0, next_check - loop.time())
                    announcement = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    announcement = None
                else:
                    if announcement is None:  # the server is shutting down
                        break
                # On the clock, not only when idle: a busy tenant's stream has no quiet spell.
                if loop.time() >= next_check:
                    if not await _still_signed_in(request, secret):
                        break
                    next_check = loop.time() + KEEPALIVE_SECONDS
                if announcement is not None:
                    await stream.send(str(announcement.subject_id), event=announcement.kind)
    return stream


async def _still_signed_in(request: web.Request, secret: str) -> bool:
    """Whether the stream's session is still live; not knowing (the database away) ends the
    stream too: the browser reconnects, and the reconnection is checked like any request."""
    try:
        return await sessions.active_session(request.app[POOL], secret) is not None
    except StorageError:
        return False
