"""POST /emails/{id}/reply: every row of Inbound's error table, with its status and exact text.

Rows and where they are tested: 400 "Valid email ID is required", "From address is required",
"Either html or text content must be provided", "Cannot determine recipient email address",
"Invalid email format: <addr>", "Invalid JSON in request body"; 401 "Unauthorized" (missing and
invalid key); 403 "You don't have permission to send from domain: <domain>"; 404 "Email not
found" (unknown, another tenant's, an outbound email's id); 429 the plan's limit; 503 (Inbound's
500) "Failed to send reply. Please try again later." for a storage outage; 500 "Internal server
error". Inbound's 500 "Email service not configured" has no cause here (no outside provider).
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import aiohttp
import pytest

from api.sending import replies as replies_api
from mta.listeners import MXListener
from storage.account import directory
from storage.database import Pool
from storage.errors import StorageUnavailable
from storage.sending import replies
from tests.api.sending.emails_client import count_emails, email, emails_api
from tests.api.sending.reply_client import inbound_error, post_reply, received_email, reply_body
from tests.conftest import DOMAIN_VIEW, ApiServer, MakeTenant


@pytest.mark.parametrize("v2", [False, True], ids=["emails-path", "api-v2-path"])
async def test_malformed_id_is_400_valid_email_id_is_required(
    api: ApiServer, make_tenant: MakeTenant, v2: bool
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(client, "not-an-id", reply_body(acme), v2=v2)
    assert inbound_error(answer) == (
        400,
        "Valid email ID is required",
        "Valid email ID is required",
    )


async def test_unknown_id_is_404_email_not_found(api: ApiServer, make_tenant: MakeTenant) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(client, str(uuid4()), reply_body(acme))
    assert inbound_error(answer) == (404, "Email not found", "Email not found")


async def test_another_tenants_received_email_is_404_and_nothing_is_sent(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    theirs = await received_email(acme, mx)
    async with emails_api(api, await globex.api_key()) as client:
        answer = await post_reply(client, theirs, reply_body(globex))
    assert inbound_error(answer) == (404, "Email not found", "Email not found")
    assert await count_emails(pool, globex) == 0
    assert await count_emails(pool, acme) == 0


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        pytest.param("/emails/{id}/reply", {}, id="emails"),
        pytest.param("/api/v2/emails/{id}/reply", {}, id="api-v2"),
        pytest.param("/api/e2/emails/{id}/reply", {}, id="e2"),
        pytest.param("/api/v2/mail", {"emailId": "{id}"}, id="v2-mail"),
    ],
)
async def test_a_sending_only_key_may_not_reply_401_and_learns_nothing_of_the_email(
    api: ApiServer,
    pool: Pool,
    mx: MXListener,
    make_tenant: MakeTenant,
    path: str,
    extra: dict[str, str],
) -> None:
    """A reply quotes the email it answers: a key that may not read received mail may not
    reply to it either, whether the id exists or not."""
    acme = await make_tenant()
    theirs = await received_email(acme, mx, body="SECRET invoice 4242\n")
    key = await acme.api_key("sending_access")
    answers = []
    async with emails_api(api, key) as client:
        for email_id in (theirs, str(uuid4())):
            body = {**reply_body(acme, to="attacker@example.net"), "textBody": "hi"}
            body.update({name: value.format(id=email_id) for name, value in extra.items()})
            answers.append(await client.call("POST", path.format(id=email_id), body))
    assert [(a.status, a.body["name"]) for a in answers] == [(401, "restricted_api_key")] * 2
    assert await count_emails(pool, acme) == 0


async def test_an_outbound_email_id_is_not_a_received_email_404(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        sent = await client.sent_id(email(acme))
        answer = await post_reply(client, sent, reply_body(acme))
    assert inbound_error(answer)[:2] == (404, "Email not found")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sender": None}, "From address is required"),
        ({"sender": ""}, "From address is required"),
        ({"text": None}, "Either html or text content must be provided"),
        ({"text": "", "html": ""}, "Either html or text content must be provided"),
        ({"to": "nobody"}, "Invalid email format: nobody"),
        ({"to": ["ok@example.net", "Bob <bob@>"]}, "Invalid email format: Bob <bob@>"),
        ({"cc": "x@y"}, "Invalid email format: x@y"),
        ({"bcc": ["no-at.example"]}, "Invalid email format: no-at.example"),
        ({"reply_to": "bad address"}, "Invalid email format: bad address"),
        ({"replyTo": "bad address"}, "Invalid email format: bad address"),
        ({"sender": "Acme <support>"}, "Invalid email format: Acme <support>"),
        # Quotes are escaped in the mailbox: 500 of them make 1,000 characters (it was a 500).
        (
            {"from_name": '"' * 500},
            "`from_name` is too long: with `from`, it must fit in 998 characters.",
        ),
    ],
    ids=[
        "from-missing",
        "from-empty",
        "no-content",
        "empty-content",
        "to",
        "to-list",
        "cc",
        "bcc",
        "reply_to",
        "replyTo",
        "from",
        "from_name-too-long",
    ],
)
async def test_body_refusals_are_400_with_inbounds_text(
    api: ApiServer,
    pool: Pool,
    mx: MXListener,
    make_tenant: MakeTenant,
    fields: dict[str, Any],
    message: str,
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx)
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(client, received, reply_body(acme, **fields))
    assert inbound_error(answer) == (400, message, message)
    assert answer.name == "validation_error"
    assert await count_emails(pool, acme) == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"from": ',
        # Valid JSON syntax, but the escape names no character (RFC 8259 section 8.2).
        b'{"from": "a@example.com", "text": "hi \\udc00"}',
    ],
    ids=["malformed", "lone-surrogate"],
)
async def test_malformed_json_is_400_invalid_json(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant, body: bytes
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx)
    async with emails_api(api, await acme.api_key()) as client:
        answer = await client.call(
            "POST",
            f"/emails/{received}/reply",
            data=body,
            headers={"Content-Type": "application/json"},
        )
    assert inbound_error(answer) == (
        400,
        "Invalid JSON in request body",
        "Invalid JSON in request body",
    )


@pytest.mark.parametrize(
    "authorization", [None, "Bearer re_not_a_key", "Basic abc"], ids=["missing", "invalid", "basic"]
)
async def test_missing_or_invalid_api_key_is_401_unauthorized(
    api: ApiServer, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.post(f"{api.url}/emails/{uuid4()}/reply", json={}) as response,
    ):
        body = await response.json()
    assert response.status == 401
    assert body == {
        "statusCode": 401,
        "name": "unauthorized",
        "message": "Unauthorized",
        "error": "Unauthorized",
    }


async def test_other_routes_keep_resends_authentication_errors(api: ApiServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{api.url}/emails") as response:
        body = await response.json()
    assert (response.status, body["name"]) == (401, "missing_api_key")
    assert "error" not in body


async def test_sending_from_a_domain_not_the_tenants_is_403(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    received = await received_email(acme, mx)
    async with emails_api(api, await acme.api_key()) as client:
        other = await post_reply(client, received, reply_body(acme, sender=f"x@{globex.name}"))
        unknown = await post_reply(client, received, reply_body(acme, sender="x@example.org"))
    message = f"You don't have permission to send from domain: {globex.name}"
    assert inbound_error(other) == (403, message, message)
    assert inbound_error(unknown)[:2] == (
        403,
        "You don't have permission to send from domain: example.org",
    )


async def test_sending_from_an_unverified_domain_is_403(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx)
    pending = f"pending-{acme.name}"
    await directory.add_domain(
        pool,
        acme.id,
        pending,
        receiving=False,
        reply_domain=None,
        verified=False,
        event_data=DOMAIN_VIEW.event_data,
    )
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(client, received, reply_body(acme, sender=f"a@{pending}"))
    assert inbound_error(answer)[:2] == (
        403,
        f"You don't have permission to send from domain: {pending}",
    )


async def test_no_to_and_an_original_without_from_or_reply_to_is_400(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    raw = (
        b"To: support@" + acme.name.encode() + b"\r\nSubject: no sender\r\n"
        b"Message-ID: <nofrom@example.net>\r\n\r\nWho am I?\r\n"
    )
    received = await received_email(acme, mx, raw=raw)
    async with emails_api(api, await acme.api_key()) as client:
        refused = await post_reply(client, received, reply_body(acme))
        explicit = await post_reply(client, received, reply_body(acme, to="carol@example.net"))
    message = "Cannot determine recipient email address"
    assert inbound_error(refused) == (400, message, message)
    assert explicit.status == 200, explicit.body


async def test_the_plans_monthly_limit_answers_429(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx)
    await replies.set_sending_limit(pool, acme.id, 2)
    async with emails_api(api, await acme.api_key()) as client:
        await client.sent_id(email(acme))  # POST /emails counts towards the month too
        first = await post_reply(client, received, reply_body(acme))
        over = await post_reply(client, received, reply_body(acme))
        await replies.set_sending_limit(pool, acme.id, None)
        unlimited = await post_reply(client, received, reply_body(acme))
    assert first.status == 200, first.body
    message = "Email sending limit reached. Please upgrade your plan to send more emails."
    assert inbound_error(over) == (429, message, message)
    assert unlimited.status == 200
    assert await count_emails(pool, acme) == 3


async def test_storage_outage_is_503_failed_to_send_reply(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inbound answers 500; a storage outage is temporary, so 503 (retry later), its text."""
    acme = await make_tenant()
    received = await received_email(acme, mx)

    async def down(*args: Any) -> None:
        raise StorageUnavailable("connection refused")

    monkeypatch.setattr(replies_api.received, "get_received", down)
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(client, received, reply_body(acme))
    message = "Failed to send reply. Please try again later."
    assert inbound_error(answer) == (503, message, message)


async def test_unexpected_failure_is_500_internal_server_error(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx)

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(replies_api, "original_of", broken)
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(client, received, reply_body(acme))
    assert inbound_error(answer) == (500, "Internal server error", "Internal server error")


async def test_idempotency_key_over_256_characters_is_refused(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx)
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(client, received, reply_body(acme), idempotency_key="k" * 257)
    assert answer.status == 400
    assert answer.name == "invalid_idempotency_key"
    assert answer.body["error"] == answer.message
