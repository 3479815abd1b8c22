"""Reply shapes of real mail programs through the real MX: bare ids separated by commas, and
Message-IDs with comments, each finding the conversation by a stored customer message alone."""

from __future__ import annotations

import secrets

import pytest

from mta.listeners import MXListener
from storage.database import Pool
from tests.conftest import MakeTenant, TenantWorld, message, received_rows, smtp_send


def raw_message(world: TenantWorld, message_id_field: str | None = None, **headers: str) -> bytes:
    """A message with its fields exactly as given (an ISP's comment, a client's commas and all:
    the email package would fold or encode them)."""
    message_id_field = message_id_field or f"<{secrets.token_hex(8)}@mail.example.net>"
    fields = [
        "From: Carol <customer@example.net>",
        f"To: support@{world.name}",
        "Subject: Re: Your order",
        f"Message-ID: {message_id_field}",
        *(f"{name}: {value}" for name, value in headers.items()),
        "Content-Type: text/plain; charset=utf-8",
    ]
    return ("\r\n".join(fields) + "\r\n\r\nWhere is it?\r\n").encode()


async def first_answer(world: TenantWorld, mx: MXListener, pool: Pool, content: bytes) -> dict:
    """The customer's answer to our email's reply address: matched, in its thread."""
    email, token = await world.sent_email()
    sent = await smtp_send(
        mx.port, "customer@example.net", [token.address(world.reply_domain)], content
    )
    [row] = await received_rows(pool, sent.stored_ids)
    assert (row["reply_match_status"], row["thread_id"]) == ("matched", email.thread_id)
    return row


@pytest.mark.parametrize(
    "separator", [",", ", ", ";", " ,\r\n "], ids=["comma", "comma_space", "semicolon", "folded"]
)
async def test_bare_references_separated_by_commas_find_a_stored_customer_message(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant, separator: str
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    first = await first_answer(acme, mx, pool, message(subject="Re: Your order"))
    # The only evidence: the customer's own earlier Message-ID, bare, after an unknown one.
    references = separator.join([f"{secrets.token_hex(6)}@elsewhere.example", first["message_id"]])
    follow_up = raw_message(acme, References=references)

    sent = await smtp_send(mx.port, "customer@example.net", [f"support@{acme.name}"], follow_up)

    [row] = await received_rows(pool, sent.stored_ids)
    assert (row["reply_match_status"], row["match_source"]) == ("matched", "references")
    assert row["thread_id"] == first["thread_id"]


async def test_bare_and_bracketed_references_mixed_are_all_read(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    first = await first_answer(acme, mx, pool, message(subject="Re: Your order"))
    # The customer's id (bare) is the newest; a bracketed unknown one comes before it.
    references = f"<{secrets.token_hex(6)}@elsewhere.example>, {first['message_id']}"
    follow_up = raw_message(acme, References=references)

    sent = await smtp_send(mx.port, "customer@example.net", [f"support@{acme.name}"], follow_up)

    [row] = await received_rows(pool, sent.stored_ids)
    assert (row["reply_match_status"], row["thread_id"]) == ("matched", first["thread_id"])


@pytest.mark.parametrize(
    "comment",
    [
        "(added by postmaster@isp.example)",
        "(added (by the (nested) ISP) here)",
        r"(a \) that does not close \( it)",
        '(a "quoted" word)\r\n\t(and a second, folded)',
    ],
    ids=["plain", "nested", "quoted_pairs", "folded"],
)
async def test_a_commented_message_id_is_stored_as_the_id_and_a_reply_naming_it_matches(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant, comment: str
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    msg_id = f"{secrets.token_hex(6)}@isp.example"
    first = await first_answer(acme, mx, pool, raw_message(acme, f"<{msg_id}> {comment}"))
    assert first["message_id"] == msg_id

    follow_up = message(headers={"In-Reply-To": f"<{msg_id}>"})
    sent = await smtp_send(mx.port, "customer@example.net", [f"support@{acme.name}"], follow_up)

    [row] = await received_rows(pool, sent.stored_ids)
    assert (row["reply_match_status"], row["match_source"]) == ("matched", "in-reply-to")
    assert row["thread_id"] == first["thread_id"]
