"""POST /emails/{id}/reply: the reply stored and built, its fields in both spellings, its
thread, and its Idempotency-Key. Messages are read back from `emails.raw` and parsed with the
standard library's strictest policy."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest

from mta.listeners import MXListener
from storage.database import Pool
from tests.api.sending.emails_client import EmailsApi, count_emails, email, email_row, emails_api
from tests.api.sending.reply_client import post_reply, received_email, reply_body
from tests.api.sending.test_emails import assert_smtp_ready, parsed, text_of
from tests.conftest import ApiServer, MakeTenant, TenantWorld, message, received_rows, smtp_send


async def matched_received(
    world: TenantWorld, client: EmailsApi, pool: Pool, mx: MXListener
) -> tuple[dict[str, Any], str]:
    """An email sent through the API and the customer's answer to its reply address:
    (the sent row, the received email id)."""
    sent = await email_row(pool, await client.sent_id(email(world, subject="Your order")))
    answer = message(
        sender="Carol <customer@example.net>",
        to=sent["reply_address"],
        subject="Re: Your order",
        body="Where is it?\n",
        headers={"In-Reply-To": f"<{sent['message_id']}>", "References": f"<{sent['message_id']}>"},
    )
    delivery = await smtp_send(mx.port, "customer@example.net", [sent["reply_address"]], answer)
    [received_id] = delivery.stored_ids
    return sent, str(received_id)


async def test_reply_answers_id_and_message_id_twice_and_stores_a_tracked_email(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        sent, received_id = await matched_received(acme, client, pool, mx)
        answer = await post_reply(client, received_id, reply_body(acme))
    assert answer.status == 200, answer.body
    assert list(answer.body) == ["id", "messageId", "awsMessageId"]
    # No SES here: awsMessageId repeats the Message-ID, a string as Inbound's SDK types it.
    assert answer.body["awsMessageId"] == answer.body["messageId"]
    row = await email_row(pool, answer.body["id"])
    assert answer.body["messageId"] == row["message_id"]
    assert row["source"] == "reply"
    assert str(row["in_reply_to_received_id"]) == received_id
    assert row["thread_id"] == sent["thread_id"]  # the conversation's thread, not a new one
    assert row["reply_token"] and row["reply_address"].endswith("@" + acme.reply_domain)
    assert row["to_addresses"] == ["customer@example.net"]  # the original's From
    assert row["subject"] == "Re: Your order"
    assert_smtp_ready(row["raw"])
    raw = parsed(row["raw"])
    [received] = await received_rows(pool, [row["in_reply_to_received_id"]])
    assert raw["Message-ID"] == f"<{row['message_id']}>"
    assert raw["X-OpenSend-Reply-Token"] == row["reply_token"]
    assert raw["Reply-To"] == row["reply_address"]
    assert raw["In-Reply-To"] == f"<{received['message_id']}>"
    assert raw["References"] == f"<{sent['message_id']}> <{received['message_id']}>"
    threads = await pool.fetch(
        "SELECT id, last_message_at FROM threads WHERE tenant_id = $1", acme.id
    )
    assert [t["id"] for t in threads] == [sent["thread_id"]]
    assert threads[0]["last_message_at"] >= row["created_at"]


@pytest.mark.parametrize("v2", [False, True], ids=["emails-path", "api-v2-path"])
async def test_both_paths_serve_the_same_operation(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant, v2: bool
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx)
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(client, received, reply_body(acme), v2=v2)
    assert answer.status == 200, answer.body


async def test_unmatched_original_gets_a_new_thread_that_it_joins_too(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    received_id = await received_email(acme, mx)
    [before] = await received_rows(pool, [UUID(received_id)])
    assert (before["reply_match_status"], before["thread_id"]) == ("unmatched", None)
    async with emails_api(api, await acme.api_key()) as client:
        first = await post_reply(client, received_id, reply_body(acme))
        second = await post_reply(client, received_id, reply_body(acme, text="And again."))
    [after] = await received_rows(pool, [before["id"]])
    rows = [await email_row(pool, a.body["id"]) for a in (first, second)]
    assert after["thread_id"] is not None
    assert [r["thread_id"] for r in rows] == [after["thread_id"]] * 2
    assert after["reply_match_status"] == "unmatched"  # how it arrived does not change
    subject = await pool.fetchval("SELECT subject FROM threads WHERE id = $1", after["thread_id"])
    assert subject == "Where is my order?"


async def test_concurrent_first_replies_to_an_unmatched_email_share_one_thread(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    received_id = await received_email(acme, mx)
    async with emails_api(api, await acme.api_key()) as client:
        answers = await asyncio.gather(
            *(post_reply(client, received_id, reply_body(acme, text=f"#{i}")) for i in range(8))
        )
    assert [a.status for a in answers] == [200] * 8
    threads = await pool.fetch("SELECT id FROM threads WHERE tenant_id = $1", acme.id)
    assert len(threads) == 1


async def test_default_recipient_is_the_originals_reply_to(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx, headers={"Reply-To": "Help Desk <desk@example.org>"})
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(client, received, reply_body(acme))
    row = await email_row(pool, answer.body["id"])
    assert row["to_addresses"] == ["desk@example.org"]
    assert parsed(row["raw"])["To"] == "desk@example.org"


async def test_given_fields_replace_the_defaults(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx)
    body = reply_body(
        acme,
        to=["Ann <ann@example.net>", "bob@example.org"],
        cc="cc@example.net",
        bcc=["bcc@example.com"],
        subject="Your order #42",
        html="<p>It ships <b>tomorrow</b>.</p>",
        headers={"X-Ticket": "42"},
        tags=[{"name": "kind", "value": "support"}],
        include_original=False,
    )
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(client, received, body)
    assert answer.status == 200, answer.body
    row = await email_row(pool, answer.body["id"])
    raw = parsed(row["raw"])
    assert raw["To"] == "Ann <ann@example.net>, bob@example.org"
    assert raw["Cc"] == "cc@example.net"
    assert raw["Bcc"] is None and row["bcc_addresses"] == ["bcc@example.com"]
    assert raw["Subject"] == "Your order #42"
    assert raw["X-Ticket"] == "42"
    assert row["tags"] == [{"name": "kind", "value": "support"}]
    assert row["text_body"] == "It ships tomorrow." and "wrote:" not in row["html_body"]
    recipients = await pool.fetch(
        "SELECT recipient FROM deliveries WHERE email_id = $1 ORDER BY recipient", row["id"]
    )
    assert [r["recipient"] for r in recipients] == [
        "ann@example.net",
        "bcc@example.com",
        "bob@example.org",
        "cc@example.net",
    ]


@pytest.mark.parametrize("spelling", ["reply_to", "replyTo"])
async def test_reply_to_in_either_spelling_replaces_the_reply_address(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant, spelling: str
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx)
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(
            client, received, reply_body(acme, **{spelling: [f"help@{acme.name}"]})
        )
    row = await email_row(pool, answer.body["id"])
    assert parsed(row["raw"])["Reply-To"] == f"help@{acme.name}"
    assert row["reply_token"]  # still tracked: the token rides in the Message-ID


@pytest.mark.parametrize("spelling", ["include_original", "includeOriginal"])
async def test_include_original_in_either_spelling_turns_quoting_off(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant, spelling: str
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx)
    async with emails_api(api, await acme.api_key()) as client:
        quiet = await post_reply(client, received, reply_body(acme, **{spelling: False}))
        quoted = await post_reply(client, received, reply_body(acme, **{spelling: True}))
    assert (await email_row(pool, quiet.body["id"]))["text_body"] == "It ships tomorrow."
    assert "> where is my order?" in (await email_row(pool, quoted.body["id"]))["text_body"]


@pytest.mark.parametrize("spelling", ["from_name", "fromName"])
async def test_from_name_in_either_spelling_is_the_display_name(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant, spelling: str
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx)
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(
            client, received, reply_body(acme, **{spelling: "Acme, Inc. Support"})
        )
    row = await email_row(pool, answer.body["id"])
    assert parsed(row["raw"])["From"] == f'"Acme, Inc. Support" <support@{acme.name}>'


async def test_quoting_is_on_by_default_in_text_and_html(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    received = await received_email(
        acme, mx, sender="Carol <customer@example.net>", body="Line 1 <&>\nLine 2\n"
    )
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(
            client, received, reply_body(acme, text="Answer.", html="<p>Answer.</p>")
        )
    raw = parsed((await email_row(pool, answer.body["id"]))["raw"])
    text = raw.get_body(("plain",))
    html = raw.get_body(("html",))
    assert text is not None and html is not None
    lines = text_of(text).split("\n")
    assert lines[0] == "Answer."
    assert lines[2].startswith("On ") and lines[2].endswith(", Carol <customer@example.net> wrote:")
    assert lines[3:5] == ["> Line 1 <&>", "> Line 2"]
    html_text = text_of(html)
    assert "<blockquote" in html_text
    assert "Line 1 &lt;&amp;&gt;<br>" in html_text  # a text original, escaped


async def test_received_message_without_message_id_gets_no_threading_headers(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    """In-Reply-To and References are both left out: there is no parent id to name."""
    acme = await make_tenant()
    raw = (
        f"From: Carol <customer@example.net>\r\nTo: support@{acme.name}\r\n"
        "Subject: No id\r\n\r\nHello\r\n"
    ).encode()
    received = await received_email(acme, mx, raw=raw)
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(client, received, reply_body(acme))
    assert answer.status == 200, answer.body
    message_ = parsed((await email_row(pool, answer.body["id"]))["raw"])
    assert message_["In-Reply-To"] is None and message_["References"] is None
    assert message_["Subject"] == "Re: No id"


async def test_malformed_received_message_can_still_be_answered(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    """Broken MIME (no boundary), an encoded-word subject and a Message-ID without '@'."""
    acme = await make_tenant()
    raw = (
        f"From: customer@example.net\r\nTo: support@{acme.name}\r\n"
        "Subject: =?utf-8?q?Caf=C3=A9?= \x07bell\r\nMessage-ID: <no-at-sign>\r\n"
        "References: garbage <root@example.net> <also garbage\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="missing"\r\n\r\n'
        "no parts at all\r\n"
    ).encode()
    received = await received_email(acme, mx, raw=raw)
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(client, received, reply_body(acme))
    assert answer.status == 200, answer.body
    row = await email_row(pool, answer.body["id"])
    assert_smtp_ready(row["raw"])
    message_ = parsed(row["raw"])
    assert message_["In-Reply-To"] is None and message_["References"] is None
    assert message_["To"] == "customer@example.net"
    assert message_["Subject"].startswith("Re: ")


async def test_simple_mode_refuses_custom_threading_headers_full_mode_uses_them(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx)
    custom = {
        "In-Reply-To": "<mine@example.net>",
        "References": "<root@x.example> <mine@example.net>",
    }
    async with emails_api(api, await acme.api_key()) as client:
        simple = await post_reply(client, received, reply_body(acme, headers=custom))
        full = await post_reply(client, received, reply_body(acme, headers=custom, simple=False))
        attached = await post_reply(
            client,
            received,
            reply_body(
                acme,
                headers=custom,
                attachments=[{"filename": "a.txt", "content": "aGVsbG8="}],
            ),
        )
    assert simple.status == 400
    assert simple.body["error"] == (
        "Custom In-Reply-To or References headers need full mode: send `simple: false`."
    )
    assert full.status == 200 and attached.status == 200  # attachments force full mode
    message_ = parsed((await email_row(pool, full.body["id"]))["raw"])
    assert message_["In-Reply-To"] == "<mine@example.net>"
    assert message_["References"] == custom["References"]


async def test_idempotent_repeat_returns_the_first_answer_and_sends_nothing(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx)
    async with emails_api(api, await acme.api_key()) as client:
        first = await post_reply(client, received, reply_body(acme), idempotency_key="r-1")
        again = await post_reply(client, received, reply_body(acme), idempotency_key="r-1")
        v2 = await post_reply(client, received, reply_body(acme), v2=True, idempotency_key="r-1")
        other = await post_reply(
            client, received, reply_body(acme, text="Different"), idempotency_key="r-1"
        )
    assert first.status == again.status == v2.status == 200
    assert again.body == first.body == v2.body
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert (other.status, other.name) == (409, "invalid_idempotent_request")
    assert other.body["error"] == other.message
    assert await count_emails(pool, acme) == 1


async def test_same_key_on_another_received_email_is_a_different_request(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    one, two = await received_email(acme, mx), await received_email(acme, mx)
    async with emails_api(api, await acme.api_key()) as client:
        first = await post_reply(client, one, reply_body(acme), idempotency_key="same")
        second = await post_reply(client, two, reply_body(acme), idempotency_key="same")
    assert first.status == 200
    assert (second.status, second.name) == (409, "invalid_idempotent_request")


async def test_concurrent_requests_with_one_key_send_once(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx)
    async with emails_api(api, await acme.api_key()) as client:
        answers = await asyncio.gather(
            *(
                post_reply(client, received, reply_body(acme), idempotency_key="burst")
                for _ in range(10)
            )
        )
    ok = [a for a in answers if a.status == 200]
    assert ok and all(a.body == ok[0].body for a in ok)
    assert {a.name for a in answers if a.status != 200} <= {"concurrent_idempotent_requests"}
    assert await count_emails(pool, acme) == 1


async def test_a_failed_request_releases_its_key(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    received = await received_email(acme, mx)
    async with emails_api(api, await acme.api_key()) as client:
        refused = await post_reply(
            client, received, reply_body(acme, text=None), idempotency_key="k"
        )
        fixed = await post_reply(
            client, received, reply_body(acme, text=None, html="<p>x</p>"), idempotency_key="k"
        )
    assert refused.status == 400
    # The key saw a different body first, but failures are not kept: the retry goes through.
    assert fixed.status == 200, fixed.body


async def test_get_email_carries_the_thread_object_oldest_first(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        sent, received_id = await matched_received(acme, client, pool, mx)
        answer = await post_reply(client, received_id, reply_body(acme))
        got = await client.get(answer.body["id"])
    thread = got.body["thread"]
    assert thread["thread_id"] == str(sent["thread_id"])
    assert thread["match_status"] == "matched"
    assert thread["original_email_id"] == str(sent["id"])
    assert "contact_id" in thread
    assert [(m["direction"], m["id"]) for m in thread["messages"]] == [
        ("outbound", str(sent["id"])),
        ("inbound", received_id),
        ("outbound", answer.body["id"]),
    ]
    assert [m["subject"] for m in thread["messages"]] == [
        "Your order",
        "Re: Your order",
        "Re: Your order",
    ]
    assert all({"created_at", "from"} <= set(m) for m in thread["messages"])
