"""POST /events/inbound: a provider's raw MIME lands in port 25's pipeline, and only once.

The real API on loopback, the real PostgreSQL, real MIME; each test reads as the behaviour it
specifies: what is stored for which tenant, how it is matched, and what a refusal says.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import pytest

from api.app import make_app
from mta.dns import Resolver
from policy.tokens import ReplyTokens
from storage.database import Pool
from tests.conftest import (
    TEST_SECRET,
    ApiServer,
    MakeTenant,
    StartApi,
    make_settings,
    message,
    received_rows,
)
from tests.support.outage_api import api_on_own_cluster

TOKEN = "ingest-" + "x" * 32


async def post(
    base_url: str,
    *,
    json: dict[str, Any] | None = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base_url}/events/inbound",
            json=json,
            data=raw,
            headers=({"Content-Type": "message/rfc822"} if raw is not None else {})
            | (headers or {}),
            params=params,
        ) as response,
    ):
        return response.status, await response.json()


def stored_ids(body: dict[str, Any]) -> list[UUID]:
    return [UUID(email["id"]) for email in body["emails"]]


# -- What is stored ----------------------------------------------------------------------------


async def test_raw_mime_for_a_routed_address_is_stored_202_like_port_25(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    content = message(to=f"support@{acme.name}", subject="A question")

    status, body = await post(
        api.url,
        raw=content,
        headers={
            "X-OpenSend-Recipients": f"support@{acme.name}",
            "X-OpenSend-Mail-From": "<a@x.net>",
        },
    )

    assert status == 202, body
    assert (body["object"], body["duplicate"], body["refused"]) == ("inbound_event", False, [])
    [row] = await received_rows(pool, stored_ids(body))
    assert (row["tenant_id"], row["rcpt_to"], row["mail_from"]) == (
        acme.id,
        [f"support@{acme.name}"],
        "a@x.net",
    )
    assert bytes(row["raw"]) == content
    assert row["subject"] == "A question"
    assert row["reply_match_status"] == "unmatched"
    assert row["received_header"].startswith("Received: from unknown ([127.0.0.1])")
    assert " with HTTP id " in row["received_header"]
    assert (row["ingest_source"], row["ingest_event_id"]) == (None, None)


async def test_json_form_reply_with_a_valid_token_is_matched_to_its_email_and_thread(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email()
    reply_address = token.address(acme.reply_domain)
    content = message(
        to=reply_address,
        subject="Re: Your order",
        headers={"In-Reply-To": f"<{email.message_id}>"},
    )

    status, body = await post(
        api.url,
        json={"raw_mime": content.decode(), "recipients": [reply_address], "event_id": "ev-1a"},
    )

    assert status == 202, body
    [row] = await received_rows(pool, stored_ids(body))
    assert (row["reply_match_status"], row["reply_to_email_id"], row["thread_id"]) == (
        "matched",
        email.id,
        email.thread_id,
    )
    assert row["match_source"] == "recipient"
    assert body["emails"][0]["reply_match_status"] == "matched"


async def test_base64_form_keeps_8bit_bytes_exactly(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    content = (
        b"From: a@example.net\r\nTo: x@" + acme.name.encode() + b"\r\nSubject: caf\xc3\xa9\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nna\xc3\xafve \xff bytes\r\n"
    )
    status, body = await post(
        api.url,
        json={
            "raw_mime_base64": base64.b64encode(content).decode(),
            "recipients": [f"x@{acme.name}"],
        },
    )
    assert status == 202, body
    [row] = await received_rows(pool, stored_ids(body))
    assert bytes(row["raw"]) == content


async def test_tampered_token_is_stored_unmatched_with_its_failure(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    _email, token = await acme.sent_email()
    forged = token.address(acme.reply_domain).replace(token.signature, "0" * 20)
    status, body = await post(
        api.url, json={"raw_mime": message(to=forged).decode(), "recipients": [forged]}
    )
    assert status == 202, body
    [row] = await received_rows(pool, stored_ids(body))
    assert (row["tenant_id"], row["reply_match_status"], row["token_failure"]) == (
        acme.id,
        "unmatched",
        "bad_signature",
    )


async def test_other_tenants_token_is_stored_unmatched_for_the_recipient_domains_tenant(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    _email, acme_token = await acme.sent_email()
    # Acme's token, but at Globex's reply domain: the address belongs to Globex.
    address = acme_token.address(globex.reply_domain)
    status, body = await post(
        api.url, json={"raw_mime": message(to=address).decode(), "recipients": [address]}
    )
    assert status == 202, body
    [row] = await received_rows(pool, stored_ids(body))
    assert (row["tenant_id"], row["reply_match_status"], row["reply_to_email_id"]) == (
        globex.id,
        "unmatched",
        None,
    )
    assert row["token_failure"] == "bad_signature"


async def test_message_for_two_tenants_is_stored_once_for_each(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme, globex = await make_tenant(catch_all=True), await make_tenant(catch_all=True)
    recipients = [f"sales@{acme.name}", f"sales@{globex.name}"]
    status, body = await post(
        api.url,
        json={"raw_mime": message(to=", ".join(recipients)).decode(), "recipients": recipients},
    )
    assert status == 202, body
    rows = await received_rows(pool, stored_ids(body))
    assert sorted((r["tenant_id"], tuple(r["rcpt_to"])) for r in rows) == sorted(
        [(acme.id, (recipients[0],)), (globex.id, (recipients[1],))]
    )


async def test_malformed_message_without_message_id_is_stored_with_what_could_be_parsed(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    content = (
        b'From: \r\nSubject: =?bogus?Q?x\r\nContent-Type: multipart/mixed; boundary="b"\r\n'
        b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nunterminated part"
    )
    status, body = await post(
        api.url, raw=content, params={"recipient": f"x@{acme.name}", "event_id": "malformed-1"}
    )
    assert status == 202, body
    [row] = await received_rows(pool, stored_ids(body))
    assert row["message_id"] is None
    assert bytes(row["raw"]) == content
    assert row["parse_defects"]


# -- A provider's retry ------------------------------------------------------------------------


async def test_retry_with_the_same_event_id_stores_nothing_twice(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme, globex = await make_tenant(catch_all=True), await make_tenant(catch_all=True)
    event = {
        "raw_mime": message(to=f"a@{acme.name}").decode(),
        "recipients": [f"a@{acme.name}", f"b@{globex.name}"],
        "event_id": f"evt-{secrets.token_hex(6)}",
    }
    first_status, first = await post(api.url, json=event)
    again_status, again = await post(api.url, json=event)

    assert (first_status, again_status) == (202, 202)
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert sorted(stored_ids(again)) == sorted(stored_ids(first))
    count = await pool.fetchval(
        "SELECT count(*) FROM received_emails WHERE ingest_event_id = $1", event["event_id"]
    )
    assert count == 2  # one per tenant, once


async def test_the_same_event_id_for_another_tenants_mail_is_stored_not_taken_for_a_retry(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    """Event ids are unique per tenant: two providers reusing "1" must not lose either's mail."""
    acme, globex = await make_tenant(catch_all=True), await make_tenant(catch_all=True)
    event_id = f"evt-{secrets.token_hex(6)}"
    first_status, first = await post(
        api.url,
        json={
            "raw_mime": message().decode(),
            "recipients": [f"a@{acme.name}"],
            "event_id": event_id,
        },
    )
    second_status, second = await post(
        api.url,
        json={
            "raw_mime": message().decode(),
            "recipients": [f"b@{globex.name}"],
            "event_id": event_id,
        },
    )
    assert (first_status, second_status) == (202, 202)
    assert (first["duplicate"], second["duplicate"]) == (False, False)
    [row] = await received_rows(pool, stored_ids(second))
    assert row["tenant_id"] == globex.id
    assert stored_ids(first) != stored_ids(second)


async def test_concurrent_retries_of_one_event_store_it_once(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    event = {
        "raw_mime": message(to=f"a@{acme.name}").decode(),
        "recipients": [f"a@{acme.name}"],
        "event_id": f"evt-{secrets.token_hex(6)}",
    }
    answers = await asyncio.gather(*(post(api.url, json=event) for _ in range(8)))
    assert {status for status, _ in answers} == {202}
    assert sum(not body["duplicate"] for _, body in answers) == 1
    assert len({tuple(stored_ids(body)) for _, body in answers}) == 1
    count = await pool.fetchval(
        "SELECT count(*) FROM received_emails WHERE ingest_event_id = $1", event["event_id"]
    )
    assert count == 1


# -- Refusals ----------------------------------------------------------------------------------


async def test_unrouted_mail_without_a_token_is_refused_422_as_missing_domain(
    api: ApiServer, pool: Pool
) -> None:
    before = await pool.fetchval("SELECT count(*) FROM received_emails")
    status, body = await post(
        api.url,
        json={"raw_mime": message().decode(), "recipients": ["someone@elsewhere.example"]},
    )
    assert (status, body["name"]) == (422, "recipients_refused")
    assert body["refused"] == [
        {
            "recipient": "someone@elsewhere.example",
            "reason": "missing-domain",
            "message": body["refused"][0]["message"],
        }
    ]
    assert "someone@elsewhere.example (missing-domain)" in body["message"]
    assert await pool.fetchval("SELECT count(*) FROM received_emails") == before


async def test_partly_routed_event_stores_the_routed_copy_and_lists_the_refused(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    recipients = [f"support@{acme.name}", f"nobody@{acme.name}", "x@elsewhere.example"]
    status, body = await post(
        api.url, json={"raw_mime": message().decode(), "recipients": recipients}
    )
    assert status == 202, body
    [row] = await received_rows(pool, stored_ids(body))
    assert row["rcpt_to"] == [f"support@{acme.name}"]
    assert [(r["recipient"], r["reason"]) for r in body["refused"]] == [
        (f"nobody@{acme.name}", "no-route"),
        ("x@elsewhere.example", "missing-domain"),
    ]


@pytest.mark.parametrize(
    ("event", "status", "name", "words"),
    [
        pytest.param(
            {"recipients": ["a@b.test"]}, 422, "missing_required_field", "raw_mime", id="no_mime"
        ),
        pytest.param(
            {"raw_mime": "x", "raw_mime_base64": "eA==", "recipients": ["a@b.test"]},
            422,
            "missing_required_field",
            "exactly one",
            id="both_forms",
        ),
        pytest.param(
            {"raw_mime_base64": "not base64!", "recipients": ["a@b.test"]},
            400,
            "validation_error",
            "not valid base64",
            id="bad_base64",
        ),
        pytest.param(  # was a 500 (found by tests/api/openapi/test_fuzz.py)
            {"raw_mime_base64": "é", "recipients": ["a@b.test"]},
            400,
            "validation_error",
            "not valid base64",
            id="non_ascii_base64",
        ),
        pytest.param({"raw_mime": "x"}, 422, "missing_required_field", "recipients", id="no_rcpt"),
        pytest.param(
            {"raw_mime": "x", "recipients": "a@b.test", "event_id": "a\r\nX-Evil: 1"},
            400,
            "validation_error",
            "event_id",
            id="event_id_with_crlf",
        ),
        pytest.param(
            {"raw_mime": "x", "recipients": ["a@b.test"], "event_id": "e" * 257},
            400,
            "validation_error",
            "event_id",
            id="event_id_too_long",
        ),
        pytest.param(
            {"raw_mime": "", "recipients": ["a@b.test"]},
            422,
            "missing_required_field",
            "empty",
            id="empty_mime",
        ),
    ],
)
async def test_malformed_event_is_refused_with_the_field_named(
    api: ApiServer, event: dict[str, Any], status: int, name: str, words: str
) -> None:
    got_status, body = await post(api.url, json=event)
    assert (got_status, body["name"]) == (status, name), body
    assert words in body["message"]


async def test_invalid_json_is_refused_400(api: ApiServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{api.url}/events/inbound",
            data=b"{not json",
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 400
        assert (await response.json())["message"] == "Invalid JSON in request body"


async def test_raw_post_without_recipients_says_where_to_put_them(api: ApiServer) -> None:
    status, body = await post(api.url, raw=message())
    assert (status, body["name"]) == (422, "missing_required_field")
    assert "X-OpenSend-Recipients" in body["message"]


async def test_oversize_message_is_refused_413(
    start_test_api: StartApi, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    small = await start_test_api(OPENSEND_MAX_MESSAGE_SIZE="2000")
    content = message(to=f"x@{acme.name}", body="y" * 3000)
    status, body = await post(small.url, raw=content, params={"recipient": f"x@{acme.name}"})
    assert status == 413
    assert "at most 2000" in body["message"]


async def test_looping_message_is_refused_422(api: ApiServer, make_tenant: MakeTenant) -> None:
    acme = await make_tenant(catch_all=True)
    trace = b"".join(
        b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n" for _ in range(51)
    )
    status, body = await post(
        api.url, raw=trace + message(to=f"x@{acme.name}"), params={"recipient": f"x@{acme.name}"}
    )
    assert (status, body["name"]) == (422, "mail_loop")


async def test_too_many_recipients_is_refused_422(
    start_test_api: StartApi, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    few = await start_test_api(OPENSEND_MAX_RECIPIENTS="2")
    recipients = [f"r{i}@{acme.name}" for i in range(3)]
    status, body = await post(
        few.url, json={"raw_mime": message().decode(), "recipients": recipients}
    )
    assert (status, body["name"]) == (422, "too_many_recipients")


# -- The provider's token ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "status", "name"),
    [
        pytest.param(None, 401, "missing_ingester_token", id="none"),
        pytest.param("Bearer wrong-token", 403, "invalid_ingester_token", id="wrong"),
        pytest.param("Bearer " + TOKEN[:-1], 403, "invalid_ingester_token", id="prefix"),
        pytest.param("Token " + TOKEN, 401, "missing_ingester_token", id="other_scheme"),
    ],
)
async def test_configured_token_is_required(
    start_test_api: StartApi,
    make_tenant: MakeTenant,
    pool: Pool,
    authorization: str | None,
    status: int,
    name: str,
) -> None:
    acme = await make_tenant(catch_all=True)
    guarded = await start_test_api(INGESTER_INBOUND_TOKEN=TOKEN)
    before = await pool.fetchval("SELECT count(*) FROM received_emails")
    got, body = await post(
        guarded.url,
        json={"raw_mime": message().decode(), "recipients": [f"x@{acme.name}"]},
        headers={"Authorization": authorization} if authorization else None,
    )
    assert (got, body["name"]) == (status, name)
    assert await pool.fetchval("SELECT count(*) FROM received_emails") == before


async def test_missing_token_is_challenged_for_http_basic(start_test_api: StartApi) -> None:
    """RFC 9110 section 11.6.1; SNS sends the credentials of its endpoint URL only when asked."""
    guarded = await start_test_api(INGESTER_INBOUND_TOKEN=TOKEN)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{guarded.url}/events/inbound", json={}) as response,
    ):
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith('Basic realm="opensend-ingester"')


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer " + TOKEN, id="bearer"),
        # SNS and similar put credentials in the endpoint URL: HTTP Basic, any user name.
        pytest.param(
            "Basic " + base64.b64encode(f"sns:{TOKEN}".encode()).decode(), id="basic_userinfo"
        ),
    ],
)
async def test_right_token_is_accepted(
    start_test_api: StartApi, make_tenant: MakeTenant, authorization: str
) -> None:
    acme = await make_tenant(catch_all=True)
    guarded = await start_test_api(INGESTER_INBOUND_TOKEN=TOKEN)
    status, body = await post(
        guarded.url,
        json={"raw_mime": message().decode(), "recipients": [f"x@{acme.name}"]},
        headers={"Authorization": authorization},
    )
    assert status == 202, body


async def test_production_without_a_token_does_not_serve_the_ingester(
    pool: Pool, tokens: ReplyTokens, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path,
        OPENSEND_ENV="production",
        OPENSEND_DATABASE_URL="postgresql://unused@127.0.0.1/unused",
        OPENSEND_REPLY_TOKEN_SECRET=TEST_SECRET,
    )
    app = make_app(pool, settings, tokens, Resolver(settings.dns_servers))
    assert not any(
        r.resource is not None and r.resource.canonical == "/events/inbound"
        for r in app.router.routes()
    )
    with_token = make_settings(
        tmp_path,
        OPENSEND_ENV="production",
        OPENSEND_DATABASE_URL="postgresql://unused@127.0.0.1/unused",
        INGESTER_INBOUND_TOKEN=TOKEN,
    )
    app = make_app(pool, with_token, tokens, Resolver(with_token.dns_servers))
    assert any(
        r.resource is not None and r.resource.canonical == "/events/inbound"
        for r in app.router.routes()
    )


# -- Storage trouble ---------------------------------------------------------------------------


async def test_database_down_is_503_and_the_providers_retry_stores_it_once(
    tmp_path: Path, tokens: ReplyTokens
) -> None:
    async with api_on_own_cluster(tmp_path, tokens) as api:
        event = {
            "raw_mime": message(to=f"x@{api.world.name}").decode(),
            "recipients": [f"x@{api.world.name}"],
            "event_id": "outage-1",
        }
        await api.cluster.stop()
        down_status, down = await post(api.url, json=event)
        await api.cluster.start()
        up_status, up = await post(api.url, json=event)
        again_status, again = await post(api.url, json=event)
        count = await api.pool.fetchval("SELECT count(*) FROM received_emails")
    assert (down_status, down["name"]) == (503, "application_error")
    assert (up_status, up["duplicate"]) == (202, False)
    assert (again_status, again["duplicate"]) == (202, True)
    assert count == 1
