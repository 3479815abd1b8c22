"""Live updates: a reply matched by the MX and a delivery's change of state reach an open
Server-Sent Events stream of the same tenant (PostgreSQL LISTEN/NOTIFY), and no other's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from api.dashboard import live
from mta.listeners import MXListener
from policy.dashboard.sessions import COOKIE_NAME
from tests.api.dashboard.support import make_user, reader, reply_through_mx, session
from tests.conftest import ApiServer, MakeTenant, TenantWorld


@asynccontextmanager
async def event_stream(
    api: ApiServer, world: TenantWorld, http: aiohttp.ClientSession
) -> AsyncIterator[aiohttp.StreamReader]:
    me = reader(api.url, http)
    await me.sign_in(await make_user(world))
    headers = {"Cookie": f"{COOKIE_NAME}={me.cookie}", "Accept": "text/event-stream"}
    async with http.get(api.url + "/dashboard/events", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert await next_event(response.content) == ("ready", "ready")
        yield response.content


async def sent_with_a_delivery(world: TenantWorld) -> Any:
    """A sent email with one delivery row, whose changes of state are announced."""
    email, _token = await world.sent_email()
    await world.pool.execute(
        "INSERT INTO deliveries (id, email_id, tenant_id, recipient, recipient_domain) "
        "VALUES (gen_random_uuid(), $1, $2, 'customer@example.net', 'example.net')",
        email.id,
        world.id,
    )
    return email


async def next_event(stream: aiohttp.StreamReader) -> tuple[str, str]:
    """The next event's name and data (pings, which are comments, are passed over)."""
    name, data = "message", ""
    while True:
        line = (await stream.readline()).decode().rstrip("\r\n")
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data = line.split(":", 1)[1].strip()
        elif line == "" and data:
            return name, data


async def test_a_matched_reply_is_announced_to_its_tenant_only(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme, other = await make_tenant(), await make_tenant()
    theirs, their_token = await other.sent_email()
    ours, token = await acme.sent_email()
    async with session() as http, event_stream(api, acme, http) as events:
        await reply_through_mx(mx.port, their_token.address(other.reply_domain), text="theirs")
        await reply_through_mx(mx.port, token.address(acme.reply_domain), text="ours")
        # Had the other tenant's reply been announced here, it would come first.
        assert await next_event(events) == ("reply", str(ours.id))
    assert theirs.id != ours.id


async def test_a_delivery_changing_state_is_announced(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    email = await sent_with_a_delivery(acme)
    async with session() as http, event_stream(api, acme, http) as events:
        await acme.pool.execute(
            "UPDATE deliveries SET status = 'deferred' WHERE email_id = $1", email.id
        )
        assert await next_event(events) == ("delivery", str(email.id))


async def test_the_event_stream_needs_a_session(api: ApiServer) -> None:
    async with session() as http, http.get(api.url + "/dashboard/events") as response:
        assert response.status == 403


async def test_a_stream_ends_soon_after_its_session_is_revoked(
    api: ApiServer, make_tenant: MakeTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's promise: a revoked session's cookie stops working at once; an open stream
    is checked again at each keepalive (made short here) and closed."""
    monkeypatch.setattr(live, "KEEPALIVE_SECONDS", 1.0)
    acme = await make_tenant()
    email = await sent_with_a_delivery(acme)

    async def keep_it_busy() -> None:
        """An announcement more often than the keepalive: the stream is never idle."""
        for status in ["deferred", "queued"] * 300:
            await acme.pool.execute(
                "UPDATE deliveries SET status = $2 WHERE email_id = $1", email.id, status
            )
            await asyncio.sleep(0.05)

    async with session() as http, event_stream(api, acme, http) as events:
        busy = asyncio.create_task(keep_it_busy())
        await acme.pool.execute(
            "UPDATE dashboard_sessions SET revoked_at = now() WHERE tenant_id = $1", acme.id
        )
        try:
            async with asyncio.timeout(30):
                await events.read()  # to the end of the stream: the server closed it
        finally:
            busy.cancel()
    assert events.at_eof()
