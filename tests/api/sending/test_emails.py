"""POST /emails: what an accepted email leaves behind, and the message built for it.

The stored rows (email, thread, one queue row per envelope recipient, the event) and the raw
message are read back from PostgreSQL; the message is parsed with the standard library's
strictest policy, and its reply token is checked the way the MX will check it.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import asyncpg

from policy.tokens import ReplyTokens, parse_token
from storage.account import directory
from storage.database import Pool
from tests.api.sending.emails_client import (
    deliveries,
    email,
    email_row,
    emails_api,
    events,
)
from tests.conftest import DOMAIN_VIEW, ApiServer, MakeTenant


def parsed(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    return message


def text_of(part: EmailMessage) -> str:
    """A text part's content with the wire's CRLF line ends read as newlines."""
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def assert_smtp_ready(raw: bytes) -> None:
    """CRLF only, no line over 998 octets (RFC 5322 section 2.1.1), and no parse defects."""
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", raw) is None
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    message = parsed(raw)
    for part in message.walk():
        assert not part.defects, (part.get_content_type(), part.defects)


async def test_accepted_email_answers_its_id_after_storing_every_row(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        answer = await client.send(
            email(
                acme,
                to=["Ann <ann@example.net>", "bob@example.org"],
                cc="ANN@example.net",
                bcc=["carol@example.com"],
            )
        )
    assert answer.status == 200
    assert list(answer.body) == ["id"]
    row = await email_row(pool, answer.body["id"])
    assert (row["status"], row["last_event"], row["source"]) == ("sent", "email.sent", "api")
    assert row["tenant_id"] == acme.id and row["domain_id"] == acme.domain.id
    assert row["to_addresses"] == ["Ann <ann@example.net>", "bob@example.org"]
    assert row["bcc_addresses"] == ["carol@example.com"]
    queue = await deliveries(pool, answer.body["id"])
    # ann@ and ANN@ are one envelope recipient (compared without case).
    assert [(d["recipient"], d["recipient_domain"], d["status"]) for d in queue] == [
        ("ann@example.net", "example.net", "queued"),
        ("bob@example.org", "example.org", "queued"),
        ("carol@example.com", "example.com", "queued"),
    ]
    assert all(abs(d["next_attempt_at"] - row["created_at"]) < timedelta(seconds=5) for d in queue)
    assert await events(pool, answer.body["id"]) == ["email.sent"]
    thread = await pool.fetchrow("SELECT * FROM threads WHERE id = $1", row["thread_id"])
    assert thread is not None and thread["tenant_id"] == acme.id


async def test_tracked_email_carries_its_token_in_message_id_reply_to_and_our_header(
    api: ApiServer, pool: Pool, tokens: ReplyTokens, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(email(acme, cc=["Dee <dee@example.org>"], bcc="x@e.net"))
    row = await email_row(pool, email_id)
    token = parse_token(row["reply_token"])
    assert token is not None and token.email_id.hex == email_id.replace("-", "")
    assert tokens.signature_valid(token, acme.id, acme.reply_domain)
    assert row["reply_domain"] == f"inbound.{acme.name}"
    assert row["reply_address"] == f"reply+{token}@inbound.{acme.name}"
    assert row["message_id"] == f"{token}@{acme.name}"
    raw = bytes(row["raw"])
    assert_smtp_ready(raw)
    message = parsed(raw)
    assert message["Message-ID"] == f"<{token}@{acme.name}>"
    assert message["Reply-To"] == row["reply_address"]
    assert message["X-OpenSend-Reply-Token"] == str(token)
    assert message["From"] == f"Acme Support <support@{acme.name}>"
    assert message["To"] == "customer@example.net"
    assert message["Cc"] == "Dee <dee@example.org>"
    assert message["Bcc"] is None and b"x@e.net" not in raw
    assert message["MIME-Version"] == "1.0" and message["Date"] is not None
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert text_of(text) == "Hello,\nyour order is on its way.\n"
    assert html.get_content_type() == "text/html"


async def test_callers_reply_to_wins_and_the_token_still_travels(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(email(acme, reply_to=["Help <help@example.com>"]))
    row = await email_row(pool, email_id)
    message = parsed(bytes(row["raw"]))
    assert message["Reply-To"] == "Help <help@example.com>"
    assert message["X-OpenSend-Reply-Token"] == row["reply_token"]
    assert message["Message-ID"] == f"<{row['reply_token']}@{acme.name}>"
    assert row["reply_address"] is not None and row["reply_to_addresses"] == [
        "Help <help@example.com>"
    ]


async def test_domain_without_receiving_gets_a_plain_message_id_and_no_token(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    quiet = await make_tenant(receiving=False, reply_subdomain=False)
    async with emails_api(api, await quiet.api_key()) as client:
        email_id = await client.sent_id(email(quiet))
    row = await email_row(pool, email_id)
    assert row["message_id"] == f"{email_id}@{quiet.name}"
    assert (row["reply_token"], row["reply_address"], row["thread_id"]) == (None, None, None)
    message = parsed(bytes(row["raw"]))
    assert message["Message-ID"] == f"<{email_id}@{quiet.name}>"
    assert message["X-OpenSend-Reply-Token"] is None and message["Reply-To"] is None


async def test_reply_address_uses_the_domain_itself_when_it_has_no_reply_subdomain(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(reply_subdomain=False)
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(email(acme))
    row = await email_row(pool, email_id)
    assert row["reply_domain"] == acme.name
    assert row["reply_address"].endswith(f"@{acme.name}")


async def test_non_ascii_names_and_subject_are_encoded_words_that_decode_back(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    subject = "Ihre Bestellung über 50 € ist unterwegs – Lieferung morgen früh, versprochen"
    body = email(
        acme,
        sender=f"Zoë Müller <zoe@{acme.name}>",
        to=['"Doe, John" <john@example.net>', "Jörg <jorg@example.net>"],
        subject=subject,
        text="Grüße\n",
    )
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(body)
    raw = bytes((await email_row(pool, email_id))["raw"])
    assert raw.isascii()  # RFC 2047 words and quoted-printable: nothing 8-bit left
    assert_smtp_ready(raw)
    message = parsed(raw)
    assert message["Subject"] == subject
    assert message["From"].addresses[0].display_name == "Zoë Müller"
    assert [a.display_name for a in message["To"].addresses] == ["Doe, John", "Jörg"]
    text = message.get_body(("plain",))
    assert text is not None and text_of(text) == "Grüße\n"


async def test_bare_address_from_works_and_is_returned_as_given(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(email(acme, sender=f"orders@{acme.name}", html=None))
        got = await client.get(email_id)
    assert got.body["from"] == f"orders@{acme.name}"
    message = parsed(bytes((await email_row(pool, email_id))["raw"]))
    assert message["From"] == f"orders@{acme.name}"
    assert message.get_content_type() == "text/plain"


async def test_attachments_inline_and_regular_make_mixed_related_alternative(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    pdf = b"%PDF-1.4\n" + b"x" * 5000
    body = email(
        acme,
        html='<p>Logo: <img src="cid:logo"></p>',
        attachments=[
            {"filename": "logo.png", "content": list(png), "content_id": "logo"},
            {
                "filename": "Rechnung für März.pdf",
                "content": __import__("base64").b64encode(pdf).decode(),
                "content_type": "application/pdf",
            },
        ],
    )
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(body)
    row = await email_row(pool, email_id)
    assert row["attachments"] == [
        {
            "filename": "logo.png",
            "content_type": "image/png",
            "size": len(png),
            "content_id": "logo",
        },
        {
            "filename": "Rechnung für März.pdf",
            "content_type": "application/pdf",
            "size": len(pdf),
            "content_id": None,
        },
    ]
    raw = bytes(row["raw"])
    assert_smtp_ready(raw)
    message = parsed(raw)
    structure = [part.get_content_type() for part in message.walk()]
    assert structure == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/png",
        "application/pdf",
    ]
    parts = {part.get_content_type(): part for part in message.walk()}
    assert parts["image/png"]["Content-ID"] == "<logo>"
    assert parts["image/png"].get_content_disposition() == "inline"
    assert parts["image/png"].get_content() == png
    assert parts["application/pdf"].get_filename() == "Rechnung für März.pdf"
    assert parts["application/pdf"].get_content() == pdf


async def test_headers_and_tags_are_stored_and_the_headers_written(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    headers = {
        "X-Entity-Ref-ID": "123",
        "List-Unsubscribe": "<https://acme.example/unsubscribe?u=1>",
        "In-Reply-To": "<earlier@example.net>",
        "References": "<first@example.net> <earlier@example.net>",
    }
    tags = [{"name": "category", "value": "confirm_email"}, {"name": "beta"}]
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(email(acme, headers=headers, tags=tags))
        got = await client.get(email_id)
    row = await email_row(pool, email_id)
    assert row["headers"] == headers
    assert row["tags"] == [
        {"name": "category", "value": "confirm_email"},
        {"name": "beta", "value": None},
    ]
    assert got.body["tags"] == row["tags"]
    message = parsed(bytes(row["raw"]))
    for name, value in headers.items():
        assert message[name] == value


async def test_scheduled_email_waits_in_the_queue_until_its_time(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(email(acme, scheduled_at=when.isoformat()))
        relative_id = await client.sent_id(email(acme, scheduled_at="in 10 min"))
        past_id = await client.sent_id(email(acme, scheduled_at="2020-01-01T00:00:00Z"))
        got = await client.get(email_id)
    row = await email_row(pool, email_id)
    assert (row["status"], row["last_event"], row["scheduled_at"]) == (
        "scheduled",
        "email.scheduled",
        when,
    )
    assert [d["next_attempt_at"] for d in await deliveries(pool, email_id)] == [when]
    assert await events(pool, email_id) == ["email.scheduled"]
    assert (got.body["last_event"], got.body["scheduled_at"]) == ("scheduled", when.isoformat())
    relative = await email_row(pool, relative_id)
    expected = datetime.now(UTC) + timedelta(minutes=10)
    assert abs(relative["scheduled_at"] - expected) < timedelta(seconds=30)
    past = await email_row(pool, past_id)  # a time already gone means now
    assert (past["status"], past["scheduled_at"]) == ("sent", None)


async def test_commit_wakes_the_delivery_workers(
    api: ApiServer, database_url: str, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    woken: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    try:
        await listener.add_listener(
            "opensend_deliveries", lambda *args: woken.put_nowait(str(args[2]))
        )
        async with emails_api(api, await acme.api_key()) as client:
            await client.sent_id(email(acme))
        assert await asyncio.wait_for(woken.get(), timeout=10) == "opensend_deliveries"
    finally:
        await listener.close()


async def test_domain_limited_sending_key_sends_only_from_its_domain(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    other = await directory.add_domain(
        pool,
        acme.id,
        f"other-{acme.name}",
        receiving=False,
        reply_domain=None,
        verified=True,
        event_data=DOMAIN_VIEW.event_data,
    )
    _, key = await directory.create_api_key(pool, acme.id, "limited", "sending_access", other.id)
    async with emails_api(api, key) as client:
        allowed = await client.send(email(acme, sender=f"news@{other.name}"))
        refused = await client.send(email(acme))
        reading = await client.get(allowed.body["id"])
    assert allowed.status == 200
    assert (refused.status, refused.name) == (403, "validation_error")
    assert f"{acme.name} is not it" in refused.message
    assert (reading.status, reading.name) == (401, "restricted_api_key")


async def test_emails_from_other_tenants_or_unverified_domains_are_403(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    pending = await make_tenant(verified=False)
    async with emails_api(api, await acme.api_key()) as client:
        answers: dict[str, Any] = {
            "other tenant's": await client.send(email(globex)),
            "unknown": await client.send(email(acme, sender="me@nowhere.example")),
        }
    async with emails_api(api, await pending.api_key()) as client:
        answers["unverified"] = await client.send(email(pending))
    for case, answer in answers.items():
        assert (answer.status, answer.name) == (403, "validation_error"), case
    assert answers["unverified"].message == (
        f"The {pending.name} domain is not verified. Please, add and verify your domain "
        "(POST /domains, then POST /domains/{id}/verify)."
    )


async def test_domain_changed_since_it_was_cached_is_read_again_before_sending(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    """Sender domains are cached for a few seconds; the insert checks the row is unchanged,
    so receiving switched off or verification lost applies to the very next email."""
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        tracked = await client.sent_id(email(acme))  # the domain is now cached
        await pool.execute(
            "UPDATE domains SET receiving_enabled = false WHERE id = $1", acme.domain.id
        )
        untracked = await client.sent_id(email(acme))
        await pool.execute(
            "UPDATE domains SET verified = false, status = 'failed' WHERE id = $1",
            acme.domain.id,
        )
        refused = await client.send(email(acme))
    assert (await email_row(pool, tracked))["reply_token"] is not None
    assert (await email_row(pool, untracked))["reply_token"] is None
    assert (refused.status, refused.name) == (403, "validation_error")


async def test_concurrent_sends_share_commits_yet_each_is_stored_once_as_sent(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    """Many requests at once are committed in groups (storage.sending.writer); a group with
    one email that cannot be stored (here: a domain changed under the cache) is split up."""
    acme, globex = await make_tenant(), await make_tenant()
    async with (
        emails_api(api, await acme.api_key()) as acme_client,
        emails_api(api, await globex.api_key()) as globex_client,
    ):
        await globex_client.sent_id(email(globex))  # globex's domain is cached from here
        await pool.execute("UPDATE domains SET reply_domain = NULL WHERE id = $1", globex.domain.id)
        sends = [
            (acme_client if i % 2 else globex_client).send(
                email(acme if i % 2 else globex, subject=f"n{i}", to=f"r{i}@example.net"),
                **({"idempotency_key": f"k{i}"} if i % 3 == 0 else {}),
            )
            for i in range(40)
        ]
        answers = await asyncio.gather(*sends)
    assert [a.status for a in answers] == [200] * 40
    for i, answer in enumerate(answers):
        row = await email_row(pool, answer.body["id"])
        assert row["subject"] == f"n{i}"
        assert row["tenant_id"] == (acme.id if i % 2 else globex.id)
        if i % 2 == 0:  # built again from the fresh row: replies now go to the domain itself
            assert row["reply_domain"] == globex.name
        queue = await deliveries(pool, answer.body["id"])
        assert [d["recipient"] for d in queue] == [f"r{i}@example.net"]
        assert await events(pool, answer.body["id"]) == ["email.sent"]
