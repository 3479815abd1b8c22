"""Submitted mail lands where POST /emails puts it: the client's message kept as written, reply
tracking added, the deliveries from the envelope alone, shown by GET /emails like any email, and
answered replies matched to it at the MX."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from email import message_from_bytes
from email.message import Message
from email.policy import default
from typing import Any
from uuid import UUID

import aiosmtplib

from mta.listeners import MXListener
from storage.database import Pool
from tests.api.sending.emails_client import email, email_row, emails_api
from tests.conftest import (
    SUBMISSION_HOST,
    ApiServer,
    MakeTenant,
    StartSubmission,
    SubmissionServer,
    TenantWorld,
    message,
    received_rows,
    smtp_send,
)

CLIENT_NAME = "laptop.example.net"


@contextlib.asynccontextmanager
async def logged_in(server: SubmissionServer, key: str) -> AsyncIterator[aiosmtplib.SMTP]:
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=server.starttls_port,
        start_tls=False,
        tls_context=server.client_context(),
        timeout=30,
    )
    await client.connect()
    try:
        await client.ehlo(hostname=CLIENT_NAME)
        await client.starttls(server_hostname=SUBMISSION_HOST)
        await client.ehlo(hostname=CLIENT_NAME)
        await client.auth_plain("laptop", key)
        yield client
    finally:
        with contextlib.suppress(aiosmtplib.SMTPException):
            await client.quit()
        client.close()


async def submit(
    server: SubmissionServer, world: TenantWorld, content: bytes, recipients: Sequence[str]
) -> UUID:
    """One message through port 587 with STARTTLS and AUTH PLAIN; the id from its 250."""
    async with logged_in(server, await world.api_key()) as client:
        _errors, answer = await client.sendmail(f"support@{world.name}", list(recipients), content)
    return UUID(answer.rsplit(" ", 1)[1])


def parsed(raw: bytes) -> Message:
    return message_from_bytes(raw, policy=default)


async def recipients_of(pool: Pool, email_id: UUID) -> list[str]:
    rows = await pool.fetch(
        "SELECT recipient FROM deliveries WHERE email_id = $1 ORDER BY recipient", email_id
    )
    return [row["recipient"] for row in rows]


def client_message(world: TenantWorld, **headers: str) -> bytes:
    """As a mail client writes one: To, Cc and Bcc fields, its own Message-ID, a thread."""
    fields = {
        "Cc": "carol@example.org",
        "Bcc": "hidden@example.com",
        "In-Reply-To": "<earlier@mail.example.net>",
        "References": "<first@mail.example.net> <earlier@mail.example.net>",
        **headers,
    }
    return message(
        sender=f"Acme Support <support@{world.name}>",
        to="Bob <bob@example.net>, header-only@example.net",
        subject="Your order",
        body="Hello Bob,\nyour order has shipped.\n",
        headers=fields,
    )


async def test_submitted_message_is_kept_as_written_and_tracked_like_an_api_send(
    start_test_submission: StartSubmission, make_tenant: MakeTenant, pool: Pool
) -> None:
    server = await start_test_submission()
    acme = await make_tenant()
    content = client_message(acme)
    client_id = parsed(content)["Message-ID"].strip("<>")

    email_id = await submit(
        server, acme, content, ["bob@example.net", "carol@example.org", "hidden@example.com"]
    )

    row = await email_row(pool, str(email_id))
    stored = bytes(row["raw"])
    copy = parsed(stored)
    # Our trace field on top (RFC 5321 section 4.4; ESMTPSA per RFC 3848), the client's
    # fields and body after it, byte for byte, without Bcc.
    first, rest = stored.split(b"\r\n\t", 1)
    assert first.startswith(b"Received: from laptop.example.net ([127.0.0.1])")
    assert b"with ESMTPSA (TLSv1." in rest.split(b"\r\n", 1)[0]
    head, body = content.split(b"\r\n\r\n", 1)
    assert stored.endswith(b"\r\n\r\n" + body)
    kept = [line for line in head.split(b"\r\n") if not line.startswith(b"Bcc:")]
    assert all(line in stored for line in kept)
    assert "Bcc" not in copy
    # Tracking as POST /emails adds it, the client's Message-ID and thread kept.
    assert copy["Message-ID"] == f"<{client_id}>"
    assert copy["In-Reply-To"] == "<earlier@mail.example.net>"
    assert copy["References"] == "<first@mail.example.net> <earlier@mail.example.net>"
    assert copy["Reply-To"] == row["reply_address"]
    assert copy["X-OpenSend-Reply-Token"] == row["reply_token"]
    assert row["reply_address"] == f"reply+{row['reply_token']}@{acme.reply_domain}"
    assert row["thread_id"] is not None
    assert row["message_id"] == client_id
    assert (row["source"], row["status"], row["from_address"]) == (
        "smtp",
        "sent",
        f"support@{acme.name}",
    )
    assert row["from_header"] == f"Acme Support <support@{acme.name}>"
    assert row["to_addresses"] == ["bob@example.net", "header-only@example.net"]
    assert row["cc_addresses"] == ["carol@example.org"]
    assert row["bcc_addresses"] == ["hidden@example.com"]
    assert row["text_body"] == "Hello Bob,\nyour order has shipped.\n"
    assert row["domain_id"] == acme.domain.id
    # The envelope decides delivery: the header-only address is not sent to.
    assert await recipients_of(pool, email_id) == [
        "bob@example.net",
        "carol@example.org",
        "hidden@example.com",
    ]
    thread = await pool.fetchrow(
        "SELECT tenant_id, subject FROM threads WHERE id = $1", row["thread_id"]
    )
    assert (thread["tenant_id"], thread["subject"]) == (acme.id, "Your order")


async def test_message_without_message_id_or_date_gets_ours_carrying_the_reply_token(
    start_test_submission: StartSubmission, make_tenant: MakeTenant, pool: Pool
) -> None:
    server = await start_test_submission()
    acme = await make_tenant()
    bare = (
        f"From: support@{acme.name}\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nbody\r\n"
    ).encode()

    email_id = await submit(server, acme, bare, ["bob@example.net"])

    row = await email_row(pool, str(email_id))
    copy = parsed(bytes(row["raw"]))
    # RFC 6409 sections 8.2 and 8.3: the submission server adds what the client left out.
    assert copy["Message-ID"] == f"<{row['reply_token']}@{acme.name}>"
    assert row["message_id"] == f"{row['reply_token']}@{acme.name}"
    assert copy["Date"] is not None and copy["Date"].datetime is not None
    assert len(copy.get_all("Message-ID") or []) == 1


async def test_the_clients_own_reply_to_wins_and_its_reply_token_field_is_replaced(
    start_test_submission: StartSubmission, make_tenant: MakeTenant, pool: Pool
) -> None:
    server = await start_test_submission()
    acme = await make_tenant()
    forged = "osr_" + "0" * 32 + "_" + "0" * 20
    content = client_message(
        acme, **{"Reply-To": "sales@example.org", "X-OpenSend-Reply-Token": forged}
    )

    email_id = await submit(server, acme, content, ["bob@example.net"])

    row = await email_row(pool, str(email_id))
    copy = parsed(bytes(row["raw"]))
    assert copy.get_all("Reply-To") == ["sales@example.org"]
    assert copy.get_all("X-OpenSend-Reply-Token") == [row["reply_token"]]
    assert row["reply_to_addresses"] == ["sales@example.org"]
    assert row["reply_address"] is not None  # tracked all the same, through Message-ID too


async def test_domain_without_receiving_is_sent_untracked(
    start_test_submission: StartSubmission, make_tenant: MakeTenant, pool: Pool
) -> None:
    server = await start_test_submission()
    plain = await make_tenant(receiving=False, reply_subdomain=False)
    bare = f"From: news@{plain.name}\r\nTo: bob@example.net\r\n\r\nbody\r\n".encode()

    email_id = await submit(server, plain, bare, ["bob@example.net"])

    row = await email_row(pool, str(email_id))
    copy = parsed(bytes(row["raw"]))
    assert (row["reply_token"], row["reply_address"], row["thread_id"]) == (None, None, None)
    assert "Reply-To" not in copy and "X-OpenSend-Reply-Token" not in copy
    assert copy["Message-ID"] == f"<{email_id}@{plain.name}>"


async def test_get_emails_shows_a_submitted_email_in_the_shape_of_an_api_send(
    start_test_submission: StartSubmission, make_tenant: MakeTenant, api: ApiServer
) -> None:
    server = await start_test_submission()
    acme = await make_tenant()
    email_id = await submit(server, acme, client_message(acme), ["bob@example.net"])

    async with emails_api(api, await acme.api_key()) as client:
        api_id = await client.sent_id(email(acme))
        submitted = await client.get(str(email_id))
        sent = await client.get(api_id)
        listed = await client.call("GET", "/emails")

    assert submitted.status == 200
    assert set(submitted.body) == set(sent.body)
    body: dict[str, Any] = submitted.body
    assert body["id"] == str(email_id)
    assert body["from"] == f"Acme Support <support@{acme.name}>"
    assert body["to"] == ["bob@example.net", "header-only@example.net"]
    assert body["cc"] == ["carol@example.org"]
    assert body["bcc"] == []  # hidden@example.com was not an envelope recipient this time
    assert body["subject"] == "Your order"
    assert body["last_event"] == "sent"
    assert body["reply_address"].startswith("reply+osr_")
    assert [d["recipient"] for d in body["deliveries"]] == ["bob@example.net"]
    assert body["thread"]["original_email_id"] == str(email_id)
    assert [item["id"] for item in listed.body["data"]] == [api_id, str(email_id)]


async def test_a_reply_to_a_submitted_message_is_matched_to_it_at_the_mx(
    start_test_submission: StartSubmission,
    make_tenant: MakeTenant,
    mx: MXListener,
    pool: Pool,
) -> None:
    server = await start_test_submission()
    acme = await make_tenant()
    email_id = await submit(server, acme, client_message(acme), ["bob@example.net"])
    row = await email_row(pool, str(email_id))

    answer = message(
        sender="bob@example.net",
        to=row["reply_address"],
        subject="Re: Your order",
        headers={"In-Reply-To": f"<{row['message_id']}>"},
    )
    sent = await smtp_send(mx.port, "bob@example.net", [row["reply_address"]], answer)

    [received] = await received_rows(pool, sent.stored_ids)
    assert received["reply_match_status"] == "matched"
    assert received["reply_to_email_id"] == email_id
    assert received["thread_id"] == row["thread_id"]
