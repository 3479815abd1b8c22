"""Conversations over HTTP: threads by recent activity, each with its messages in time order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

import aiohttp

from mta.listeners import MXListener
from tests.conftest import ApiServer, MakeTenant, TenantWorld, message, smtp_send


@asynccontextmanager
async def client(api: ApiServer, key: str) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(base_url=api.url, headers=headers) as http:
        yield http


async def get_json(http: aiohttp.ClientSession, path: str, status: int = 200) -> Any:
    async with http.get(path) as response:
        body = await response.json()
        assert response.status == status, body
        return body


async def reply(mx: MXListener, address: str, subject: str = "Re: Your order") -> UUID:
    content = message(sender="Carol <customer@example.net>", to=address, subject=subject)
    sent = await smtp_send(mx.port, "customer@example.net", [address], content)
    [stored] = sent.stored_ids
    return stored


async def conversation(world: TenantWorld, subject: str) -> tuple[UUID, UUID, str]:
    """An outbound tracked email: (email id, thread id, reply address)."""
    email, token = await world.sent_email(subject=subject)
    return email.id, email.thread_id, token.address(world.reply_domain)


async def test_thread_detail_has_every_message_oldest_first(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    email_id, thread_id, address = await conversation(acme, "Your order")
    first = await reply(mx, address, "Re: Your order")
    second = await reply(mx, address, "Re: Your order (again)")

    async with client(api, await acme.api_key()) as http:
        thread = await get_json(http, f"/threads/{thread_id}")

    assert thread["object"] == "thread"
    assert thread["id"] == str(thread_id)
    assert thread["subject"] == "Your order"
    assert thread["original_email_id"] == str(email_id)
    assert (thread["message_count"], thread["messages_truncated"]) == (3, False)
    outbound, inbound_1, inbound_2 = thread["messages"]
    assert outbound == {
        "id": str(email_id),
        "direction": "outbound",
        "created_at": outbound["created_at"],
        "from": f"support@{acme.name}",
        "to": ["customer@example.net"],
        "subject": "Your order",
    }
    assert inbound_1["id"] == str(first) and inbound_2["id"] == str(second)
    assert inbound_1["direction"] == inbound_2["direction"] == "inbound"
    assert inbound_1["from"] == "Carol <customer@example.net>"
    assert inbound_1["to"] == [address]
    assert inbound_1["subject"] == "Re: Your order"
    assert inbound_1["reply_match_status"] == "matched"
    assert inbound_1["reply_to_email_id"] == str(email_id)
    assert outbound["created_at"] < inbound_1["created_at"] < inbound_2["created_at"]


async def test_threads_are_listed_by_latest_activity_and_paged(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    _, older, older_address = await conversation(acme, "older")
    _, middle, _ = await conversation(acme, "middle")
    _, newer, _ = await conversation(acme, "newer")
    await reply(mx, older_address)  # the oldest conversation is now the most recently active

    async with client(api, await acme.api_key()) as http:
        everything = await get_json(http, "/threads")
        first = await get_json(http, "/threads?limit=2")
        rest = await get_json(http, f"/threads?limit=2&after={first['data'][-1]['id']}")
        back = await get_json(http, f"/threads?limit=2&before={middle}")

    order = [str(older), str(newer), str(middle)]
    assert everything["object"] == "list"
    assert [t["id"] for t in everything["data"]] == order
    assert [len(t["messages"]) for t in everything["data"]] == [2, 1, 1]
    assert everything["data"][0]["messages"][1]["direction"] == "inbound"
    assert ([t["id"] for t in first["data"]], first["has_more"]) == (order[:2], True)
    assert ([t["id"] for t in rest["data"]], rest["has_more"]) == (order[2:], False)
    assert ([t["id"] for t in back["data"]], back["has_more"]) == (order[:2], False)


async def test_another_tenants_thread_answers_404(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    _, thread_id, address = await conversation(acme, "private")
    await reply(mx, address)

    async with client(api, await globex.api_key()) as http:
        for path in (f"/threads/{thread_id}", f"/threads/{uuid4()}", "/threads/not-a-uuid"):
            assert (await get_json(http, path, status=404))["name"] == "not_found"
        listed = await get_json(http, "/threads")
        cursor = await get_json(http, f"/threads?after={thread_id}", status=422)
    assert listed["data"] == []
    assert cursor["name"] == "invalid_parameter"


async def test_sending_access_key_cannot_read_threads(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with client(api, await acme.api_key("sending_access")) as http:
        body = await get_json(http, "/threads", status=401)
    assert body["name"] == "restricted_api_key"
