"""Contacts over HTTP: Resend's global-contact shapes, unique per tenant, linked to mail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

import aiohttp
import pytest
import resend

from mta.listeners import MXListener
from tests.conftest import ApiServer, MakeTenant, message, smtp_send


@asynccontextmanager
async def client(api: ApiServer, key: str) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(base_url=api.url, headers=headers) as http:
        yield http


async def call(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    status: int = 200,
    json: dict[str, Any] | None = None,
) -> Any:
    async with http.request(method, path, json=json) as response:
        body = await response.json()
        assert response.status == status, body
        return body


async def test_contact_create_read_update_delete(api: ApiServer, make_tenant: MakeTenant) -> None:
    acme = await make_tenant()
    async with client(api, await acme.api_key()) as http:
        created = await call(
            http,
            "POST",
            "/contacts",
            201,
            {"email": "  Steve@Example.COM ", "first_name": "Steve", "lastName": "Wozniak"},
        )
        contact_id = created["id"]
        by_id = await call(http, "GET", f"/contacts/{contact_id}")
        by_email = await call(http, "GET", "/contacts/STEVE@example.com")
        # Resend's SDKs percent-encode the identifier.
        assert await call(http, "GET", "/contacts/steve%40example.com") == by_email
        updated = await call(
            http,
            "PATCH",
            f"/contacts/{contact_id}",
            json={"email": "steve@example.com", "first_name": None, "unsubscribed": True},
        )
        after_update = await call(http, "GET", f"/contacts/{contact_id}")
        deleted = await call(http, "DELETE", f"/contacts/{contact_id}")
        gone = await call(http, "GET", f"/contacts/{contact_id}", 404)

    assert created["object"] == "contact"
    assert by_id == by_email
    assert by_id == {
        "object": "contact",
        "id": contact_id,
        "email": "steve@example.com",
        "first_name": "Steve",
        "last_name": "Wozniak",
        "created_at": by_id["created_at"],
        "unsubscribed": False,
        "properties": {},  # Resend's SDK types it as always present
    }
    assert updated == {"object": "contact", "id": contact_id}
    # A field left out keeps its value; null clears it; the email in the body only names it.
    assert (after_update["first_name"], after_update["last_name"]) == (None, "Wozniak")
    assert after_update["unsubscribed"] is True
    assert after_update["email"] == "steve@example.com"
    assert deleted == {
        "object": "contact",
        "id": contact_id,
        "contact": contact_id,
        "deleted": True,
    }
    assert gone["name"] == "not_found"


async def test_an_address_is_unique_per_tenant_not_across_tenants(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    async with client(api, await acme.api_key()) as http:
        await call(http, "POST", "/contacts", 201, {"email": "ann@example.net"})
        duplicate = await call(http, "POST", "/contacts", 422, {"email": "ANN@example.net"})
    async with client(api, await globex.api_key()) as http:
        await call(http, "POST", "/contacts", 201, {"email": "ann@example.net"})

    assert duplicate["name"] == "invalid_parameter"
    assert duplicate["message"] == "A contact with the email `ann@example.net` already exists."


@pytest.mark.parametrize(
    ("body", "status", "name"),
    [
        ({}, 422, "missing_required_field"),
        ({"email": " "}, 422, "missing_required_field"),
        ({"email": "not an address"}, 400, "validation_error"),
        ({"email": "a@b@example.net"}, 400, "validation_error"),
        ({"email": 42}, 400, "validation_error"),
        ({"email": "a@example.net", "unsubscribed": "yes"}, 400, "validation_error"),
        ({"email": "a@example.net", "first_name": ["x"]}, 400, "validation_error"),
    ],
    ids=[
        "no_email",
        "blank_email",
        "email_with_spaces",
        "two_at_signs",
        "email_not_a_string",
        "unsubscribed_not_a_boolean",
        "name_not_a_string",
    ],
)
async def test_invalid_contact_is_refused_with_a_clear_error(
    api: ApiServer, make_tenant: MakeTenant, body: dict[str, Any], status: int, name: str
) -> None:
    acme = await make_tenant()
    async with client(api, await acme.api_key()) as http:
        refused = await call(http, "POST", "/contacts", status, body)
    assert refused["name"] == name
    assert "`" in refused["message"]


async def test_contacts_are_listed_newest_first_a_page_at_a_time(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with client(api, await acme.api_key()) as http:
        created = [
            (await call(http, "POST", "/contacts", 201, {"email": f"c{n}@example.net"}))["id"]
            for n in range(5)
        ]
        everything = await call(http, "GET", "/contacts")
        # By id: UUIDv7, newest first to the millisecond, and a fixed order within one.
        c4, c3, c2, c1, c0 = order = [c["id"] for c in everything["data"]]
        first = await call(http, "GET", "/contacts?limit=2")
        second = await call(http, "GET", f"/contacts?limit=2&after={c3}")
        back = await call(http, "GET", f"/contacts?limit=2&before={c1}")
        await call(http, "DELETE", f"/contacts/{c2}")
        # A deleted contact's id still works as a cursor.
        past_deleted = await call(http, "GET", f"/contacts?after={c2}")

    assert order == sorted(created, key=UUID, reverse=True)
    assert first["object"] == "list"
    assert ([c["id"] for c in first["data"]], first["has_more"]) == ([c4, c3], True)
    assert ([c["id"] for c in second["data"]], second["has_more"]) == ([c2, c1], True)
    assert ([c["id"] for c in back["data"]], back["has_more"]) == ([c3, c2], True)
    assert [c["id"] for c in past_deleted["data"]] == [c1, c0]


async def test_mail_from_a_contact_is_linked_and_unlinked_when_it_is_deleted(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    async with client(api, await acme.api_key()) as http:
        contact = await call(http, "POST", "/contacts", 201, {"email": "carol@example.net"})
        sent = await smtp_send(
            mx.port,
            "carol@example.net",
            [f"support@{acme.name}"],
            message(sender="Carol <Carol@Example.NET>", to=f"support@{acme.name}"),
        )
        [received_id] = sent.stored_ids
        linked = await call(http, "GET", f"/emails/receiving/{received_id}")
        await call(http, "DELETE", f"/contacts/{contact['id']}")
        unlinked = await call(http, "GET", f"/emails/receiving/{received_id}")

    assert linked["contact_id"] == contact["id"]
    assert linked["thread"]["contact_id"] == contact["id"]
    assert unlinked["contact_id"] is None  # the mail stays; the link goes


async def test_another_tenants_contact_answers_404(api: ApiServer, make_tenant: MakeTenant) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    async with client(api, await acme.api_key()) as http:
        contact = await call(http, "POST", "/contacts", 201, {"email": "dan@example.net"})
    async with client(api, await globex.api_key()) as http:
        for method in ("GET", "PATCH", "DELETE"):
            json = {"first_name": "Mallory"} if method == "PATCH" else None
            refused = await call(http, method, f"/contacts/{contact['id']}", 404, json)
            assert refused["name"] == "not_found"
        await call(http, "GET", "/contacts/dan@example.net", 404)
        await call(http, "GET", f"/contacts/{uuid4()}", 404)
        await call(http, "GET", "/contacts/not-an-id", 404)
        listed = await call(http, "GET", "/contacts")
    async with client(api, await acme.api_key()) as http:
        still = await call(http, "GET", f"/contacts/{contact['id']}")
    assert listed["data"] == []
    assert still["first_name"] is None


async def test_sending_access_key_cannot_manage_contacts(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with client(api, await acme.api_key("sending_access")) as http:
        body = await call(http, "POST", "/contacts", 401, {"email": "a@example.net"})
    assert body["name"] == "restricted_api_key"


async def test_fields_of_resends_contacts_this_server_does_not_keep_are_refused_by_name(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    """Silently dropped, a caller would believe its properties stored; empty ones are fine."""
    acme = await make_tenant()
    async with client(api, await acme.api_key()) as http:
        with_properties = await call(
            http,
            "POST",
            "/contacts",
            400,
            {"email": "p@example.net", "properties": {"plan": "pro"}},
        )
        empty = await call(
            http, "POST", "/contacts", 201, {"email": "e@example.net", "properties": {}}
        )
        with_topics = await call(
            http,
            "PATCH",
            f"/contacts/{empty['id']}",
            400,
            {"topics": [{"id": "t", "subscription": "opt_in"}]},
        )
    assert with_properties["message"].startswith("`properties`: custom contact properties")
    assert with_topics["message"].startswith("`topics`: topics are not supported")


def sdk_round_trip(url: str, key: str) -> dict[str, Any]:
    """The `resend` package's global-contact calls, as an application would make them."""
    resend.api_url, resend.api_key = url, key
    created = resend.Contacts.create({"email": "eve@example.net", "first_name": "Eve"})
    return {
        "created": created,
        "got": resend.Contacts.get(id=created["id"]),
        "got_by_email": resend.Contacts.get(email="eve@example.net"),
        "listed": resend.Contacts.list(),
        "updated": resend.Contacts.update({"id": created["id"], "unsubscribed": True}),
        "removed": resend.Contacts.remove(email="eve@example.net"),
    }


async def test_the_resend_sdk_manages_contacts_unchanged(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    # The SDK is synchronous and the server runs on this loop: call it from a thread.
    calls = await asyncio.to_thread(sdk_round_trip, api.url, await acme.api_key())
    contact_id = calls["created"]["id"]
    assert calls["got"]["email"] == calls["got_by_email"]["email"] == "eve@example.net"
    assert [c["id"] for c in calls["listed"]["data"]] == [contact_id]
    assert calls["updated"]["id"] == contact_id
    assert calls["removed"]["deleted"] is True
