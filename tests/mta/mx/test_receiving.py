"""The MX end to end: real SMTP clients on loopback, the real server, a real PostgreSQL.

Each test reads as the behaviour it specifies: who is accepted at RCPT, which tenant gets the
message, and how it is matched to the conversation it answers.
"""

from __future__ import annotations

from uuid import UUID

import pytest

from mta.listeners import MXListener
from policy import replies
from storage.database import Pool
from tests.conftest import MakeTenant, message, received_rows, smtp_send


async def test_rcpt_to_routed_address_is_accepted_and_stored_unmatched(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")

    sent = await smtp_send(
        mx.port,
        "customer@example.net",
        [f"support@{acme.name}"],
        message(to=f"support@{acme.name}", subject="A question"),
    )

    assert sent.recipients[f"support@{acme.name}"][0] == 250
    [row] = await received_rows(pool, sent.stored_ids)
    assert row["tenant_id"] == acme.id
    assert row["rcpt_to"] == [f"support@{acme.name}"]
    assert row["mail_from"] == "customer@example.net"
    assert row["subject"] == "A question"
    assert row["reply_match_status"] == "unmatched"
    assert row["token_failure"] is None
    assert str(row["remote_ip"]) == "127.0.0.1"
    assert row["helo"] == "client.example.net"
    assert row["tls"] is False


async def test_stored_raw_message_is_byte_for_byte_what_was_sent(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    # A dot-stuffed line, 8-bit text and trailing spaces must all survive unchanged.
    content = (
        b"From: a@example.net\r\nTo: x@" + acme.name.encode() + b"\r\nSubject: raw\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b".a line that starts with a dot\r\ncaf\xc3\xa9  \r\n..\r\n"
    )
    sent = await smtp_send(mx.port, "a@example.net", [f"x@{acme.name}"], content)
    [row] = await received_rows(pool, sent.stored_ids)
    assert bytes(row["raw"]) == content
    assert row["size"] == len(content)
    assert row["received_header"].startswith("Received: from client.example.net ([127.0.0.1])")


async def test_rcpt_to_unrouted_domain_is_refused_550_relay_denied(
    mx: MXListener, pool: Pool
) -> None:
    sent = await smtp_send(mx.port, "a@example.net", ["someone@elsewhere.example"], message())
    code, text = sent.recipients["someone@elsewhere.example"]
    assert code == replies.S550_RELAY_DENIED.code
    assert text.startswith(replies.S550_RELAY_DENIED.enhanced)
    assert sent.data is None


async def test_rcpt_to_unverified_or_non_receiving_domain_is_refused(
    mx: MXListener, make_tenant: MakeTenant
) -> None:
    unverified = await make_tenant(verified=False, catch_all=True)
    not_receiving = await make_tenant(receiving=False, catch_all=True)
    for world in (unverified, not_receiving):
        sent = await smtp_send(mx.port, "a@example.net", [f"x@{world.name}"], message())
        assert sent.recipients[f"x@{world.name}"][0] == 550


async def test_rcpt_to_unknown_local_part_is_refused_550_5_1_1(
    mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    sent = await smtp_send(mx.port, "a@example.net", [f"nobody@{acme.name}"], message())
    code, text = sent.recipients[f"nobody@{acme.name}"]
    assert (code, text.split()[0]) == (550, "5.1.1")


async def test_catch_all_alias_and_subaddress_routes(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    await acme.route(f"sales@{acme.name}", to=f"support@{acme.name}")
    other = await make_tenant(catch_all=True)

    sent = await smtp_send(
        mx.port,
        "a@example.net",
        [f"sales@{acme.name}", f"support+billing@{acme.name}", f"anything@{other.name}"],
        message(),
    )
    assert all(code == 250 for code, _ in sent.recipients.values()), sent.recipients
    rows = {r["tenant_id"]: r for r in await received_rows(pool, sent.stored_ids)}
    # The alias is stored under its target; the +detail address as it was written.
    assert rows[acme.id]["rcpt_to"] == [f"support@{acme.name}", f"support+billing@{acme.name}"]
    assert rows[other.id]["rcpt_to"] == [f"anything@{other.name}"]


async def test_reply_to_reply_address_with_valid_token_is_matched(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email()
    reply_address = token.address(acme.reply_domain)

    sent = await smtp_send(
        mx.port,
        "customer@example.net",
        [reply_address],
        message(to=reply_address, subject="Re: Your order"),
    )

    [row] = await received_rows(pool, sent.stored_ids)
    assert row["tenant_id"] == acme.id
    assert row["reply_match_status"] == "matched"
    assert row["match_source"] == "recipient"
    assert row["reply_to_email_id"] == email.id
    assert row["thread_id"] == email.thread_id


async def test_reply_address_is_parsed_case_insensitively(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email()
    shouted = token.address(acme.reply_domain).upper()
    sent = await smtp_send(mx.port, "c@example.net", [shouted], message())
    [row] = await received_rows(pool, sent.stored_ids)
    assert row["reply_match_status"] == "matched"
    assert row["reply_to_email_id"] == email.id


async def test_tampered_token_is_accepted_and_stored_unmatched_with_the_reason(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    _email, token = await acme.sent_email()
    tampered_sig = ("0" if token.signature[0] != "0" else "1") + token.signature[1:]
    address = f"reply+osr_{token.email_id.hex}_{tampered_sig}@{acme.reply_domain}"

    sent = await smtp_send(mx.port, "c@example.net", [address], message())

    assert sent.recipients[address][0] == 250
    [row] = await received_rows(pool, sent.stored_ids)
    assert row["reply_match_status"] == "unmatched"
    assert row["reply_to_email_id"] is None
    assert row["thread_id"] is None
    assert (row["token_failure"], row["token_failure_source"]) == ("bad_signature", "recipient")


async def test_malformed_reply_token_is_stored_unmatched_as_malformed(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    address = f"reply+osr_nothex_1234@{acme.reply_domain}"
    sent = await smtp_send(mx.port, "c@example.net", [address], message())
    [row] = await received_rows(pool, sent.stored_ids)
    assert (row["reply_match_status"], row["token_failure"]) == ("unmatched", "malformed")


async def test_other_tenants_token_at_our_domain_is_stored_unmatched_for_us(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    victim = await make_tenant()
    attacker = await make_tenant()
    victim_email, victim_token = await victim.sent_email()
    # The victim's genuine token, presented at the attacker's reply domain.
    address = f"reply+{victim_token}@{attacker.reply_domain}"

    sent = await smtp_send(mx.port, "c@example.net", [address], message())

    [row] = await received_rows(pool, sent.stored_ids)
    assert row["tenant_id"] == attacker.id
    assert row["reply_match_status"] == "unmatched"
    assert row["reply_to_email_id"] is None
    assert row["token_failure"] == "bad_signature"
    # Nothing of it reaches the victim's thread.
    count = await pool.fetchval(
        "SELECT count(*) FROM received_emails WHERE thread_id = $1", victim_email.thread_id
    )
    assert count == 0


async def test_revoked_token_is_stored_unmatched_as_revoked(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email()
    await pool.execute("UPDATE emails SET reply_token = NULL WHERE id = $1", email.id)
    sent = await smtp_send(mx.port, "c@example.net", [token.address(acme.reply_domain)], message())
    [row] = await received_rows(pool, sent.stored_ids)
    assert (row["reply_match_status"], row["token_failure"]) == ("unmatched", "revoked")


async def test_message_for_two_tenants_is_stored_once_for_each(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    globex = await make_tenant()
    email, token = await globex.sent_email()
    content = message(to=f"team@{acme.name}", subject="For both of you")

    sent = await smtp_send(
        mx.port,
        "c@example.net",
        [f"team@{acme.name}", token.address(globex.reply_domain)],
        content,
    )

    rows = {r["tenant_id"]: r for r in await received_rows(pool, sent.stored_ids)}
    assert set(rows) == {acme.id, globex.id}
    # Each tenant sees only its own envelope recipients, and its own match.
    assert rows[acme.id]["rcpt_to"] == [f"team@{acme.name}"]
    assert rows[acme.id]["reply_match_status"] == "unmatched"
    assert rows[globex.id]["rcpt_to"] == [token.address(globex.reply_domain)]
    assert rows[globex.id]["reply_match_status"] == "matched"
    assert rows[globex.id]["reply_to_email_id"] == email.id
    assert bytes(rows[acme.id]["raw"]) == bytes(rows[globex.id]["raw"]) == content


async def test_bcc_only_recipient_is_stored_like_any_other(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"archive@{acme.name}")
    # The headers name someone else entirely; only the envelope names our address.
    content = message(to="someone@example.org", subject="Bcc'd to you")
    sent = await smtp_send(mx.port, "c@example.net", [f"archive@{acme.name}"], content)
    [row] = await received_rows(pool, sent.stored_ids)
    assert row["rcpt_to"] == [f"archive@{acme.name}"]
    assert row["to_addresses"] == ["someone@example.org"]


async def test_x_opensend_reply_token_header_alone_matches(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    email, token = await acme.sent_email()
    content = message(headers={"X-OpenSend-Reply-Token": str(token)})
    sent = await smtp_send(mx.port, "c@example.net", [f"support@{acme.name}"], content)
    [row] = await received_rows(pool, sent.stored_ids)
    assert (row["reply_match_status"], row["match_source"]) == ("matched", "x-opensend-reply-token")
    assert row["reply_to_email_id"] == email.id
    assert row["thread_id"] == email.thread_id


async def test_in_reply_to_alone_matches_through_the_token_in_the_message_id(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    email, _token = await acme.sent_email()
    content = message(headers={"In-Reply-To": f"<{email.message_id}>"})
    sent = await smtp_send(mx.port, "c@example.net", [f"support@{acme.name}"], content)
    [row] = await received_rows(pool, sent.stored_ids)
    assert (row["reply_match_status"], row["match_source"]) == ("matched", "in-reply-to")
    assert row["reply_to_email_id"] == email.id


async def test_references_alone_matches_and_prefers_the_newest_id(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    older, _ = await acme.sent_email(subject="first")
    newer, _ = await acme.sent_email(subject="second")
    content = message(
        headers={"References": f"<unrelated@example.net> <{older.message_id}> <{newer.message_id}>"}
    )
    sent = await smtp_send(mx.port, "c@example.net", [f"support@{acme.name}"], content)
    [row] = await received_rows(pool, sent.stored_ids)
    assert (row["reply_match_status"], row["match_source"]) == ("matched", "references")
    assert row["reply_to_email_id"] == newer.id


async def test_recipient_token_takes_precedence_over_headers(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    by_address, token = await acme.sent_email(subject="address")
    by_header, _ = await acme.sent_email(subject="header")
    content = message(headers={"In-Reply-To": f"<{by_header.message_id}>"})
    sent = await smtp_send(mx.port, "c@example.net", [token.address(acme.reply_domain)], content)
    [row] = await received_rows(pool, sent.stored_ids)
    assert row["reply_to_email_id"] == by_address.id


async def test_reply_to_a_reply_stays_in_the_thread_through_known_message_ids(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    email, token = await acme.sent_email()
    first = message(subject="Re: Your order")
    first_sent = await smtp_send(
        mx.port, "c@example.net", [token.address(acme.reply_domain)], first
    )
    [first_row] = await received_rows(pool, first_sent.stored_ids)

    # The customer follows up on their own message: only its Message-ID links the two.
    follow_up = message(
        subject="Re: Your order",
        headers={"In-Reply-To": f"<{first_row['message_id']}>"},
    )
    sent = await smtp_send(mx.port, "c@example.net", [f"support@{acme.name}"], follow_up)
    [row] = await received_rows(pool, sent.stored_ids)
    assert row["reply_match_status"] == "matched"
    assert row["thread_id"] == email.thread_id
    assert row["reply_to_email_id"] == email.id


async def test_another_tenants_message_id_does_not_match(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    globex = await make_tenant()
    globex_email, _ = await globex.sent_email()
    content = message(headers={"In-Reply-To": f"<{globex_email.message_id}>"})
    sent = await smtp_send(mx.port, "c@example.net", [f"x@{acme.name}"], content)
    [row] = await received_rows(pool, sent.stored_ids)
    assert row["reply_match_status"] == "unmatched"
    assert row["reply_to_email_id"] is None


async def test_sender_who_is_a_contact_is_linked(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    _email, token = await acme.sent_email()
    contact_id: UUID = await pool.fetchval(
        "INSERT INTO contacts (id, tenant_id, email) VALUES (gen_random_uuid(), $1, $2) "
        "RETURNING id",
        acme.id,
        "customer@example.net",
    )
    content = message(sender="Customer <Customer@Example.net>")
    sent = await smtp_send(mx.port, "c@example.net", [token.address(acme.reply_domain)], content)
    [row] = await received_rows(pool, sent.stored_ids)
    assert row["contact_id"] == contact_id


async def test_malformed_mime_is_stored_raw_not_refused(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    content = (
        b"From: =?utf-8?q?broken\r\nSubject: =?bogus-charset?b?!!!?=\r\n"
        b'Content-Type: multipart/mixed; boundary="never-closed"\r\n'
        b"Date: not a date\r\n\r\n"
        b"--never-closed\r\nContent-Type: text/plain; charset=klingon\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n%%%not base64%%%\r\n"
        b"\xff\xfe binary junk \x00 with a NUL\r\n"
    )
    sent = await smtp_send(mx.port, "c@example.net", [f"x@{acme.name}"], content)
    [row] = await received_rows(pool, sent.stored_ids)
    assert bytes(row["raw"]) == content
    assert row["message_id"] is None
    assert row["sent_at"] is None
    assert row["reply_match_status"] == "unmatched"


async def test_message_without_message_id_is_stored(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    content = b"From: a@example.net\r\nSubject: no id\r\n\r\nbody\r\n"
    sent = await smtp_send(mx.port, "a@example.net", [f"x@{acme.name}"], content)
    [row] = await received_rows(pool, sent.stored_ids)
    assert row["message_id"] is None
    assert row["text_body"] == "body\n"


async def test_bodies_and_attachment_metadata_are_stored(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    from email.message import EmailMessage

    acme = await make_tenant(catch_all=True)
    msg = EmailMessage()
    msg["From"] = "Ann Example <ann@example.net>"
    msg["To"] = f"x@{acme.name}"
    msg["Cc"] = "Bob <bob@example.org>"
    msg["Subject"] = "Invoice é"
    msg.set_content("plain part")
    msg.add_alternative("<p>html part</p>", subtype="html")
    msg.add_attachment(
        b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="invoice.pdf"
    )
    content = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))

    sent = await smtp_send(mx.port, "ann@example.net", [f"x@{acme.name}"], content)
    [row] = await received_rows(pool, sent.stored_ids)
    assert row["subject"] == "Invoice é"
    assert (row["from_address"], row["from_name"]) == ("ann@example.net", "Ann Example")
    assert row["cc_addresses"] == ["bob@example.org"]
    assert row["text_body"].strip() == "plain part"
    assert row["html_body"].strip() == "<p>html part</p>"
    [attachment] = row["attachments"]
    assert attachment["filename"] == "invoice.pdf"
    assert attachment["content_type"] == "application/pdf"
    assert attachment["size"] == len(b"%PDF-1.4 fake")
    assert ["Subject", "Invoice =?utf-8?q?=C3=A9?="] in row["headers"]


async def test_null_reverse_path_bounces_are_accepted(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    sent = await smtp_send(mx.port, "", [f"postmaster@{acme.name}"], message())
    [row] = await received_rows(pool, sent.stored_ids)
    assert row["mail_from"] == ""


def _deeply_nested(levels: int) -> bytes:
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (n, n)
        for n in range(levels)
    )
    tail = b"".join(b"\r\n--b%d--\r\n" % n for n in reversed(range(levels)))
    return b"Subject: nest\r\n" + head + b"Content-Type: text/plain\r\n\r\ndeep" + tail


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(
            b"Subject: x\r\nDate: 1 Jan 99999999999 00:00 +0000\r\n\r\nbody\r\n",
            id="overflowing_date",
        ),
        pytest.param(
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: image/png\r\nContent-ID: <\xff\xfe@x>\r\n\r\nAAAA\r\n--b--\r\n",
            id="eight_bit_content_id",
        ),
        pytest.param(_deeply_nested(1200), id="mime_nested_1200_deep"),
        pytest.param(
            b"Subject: Caf\xc3\xa9 \xff\r\n"
            b"Content-Type: text/plain; charset=idna\r\n\r\n\xc3\xa9\r\n",
            id="utf8_header_and_unreplaceable_charset",
        ),
    ],
)
async def test_hostile_mime_is_stored_never_deferred(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant, content: bytes
) -> None:
    # A parser failure must not turn into a 451 that the sender retries forever.
    acme = await make_tenant(catch_all=True)
    sent = await smtp_send(mx.port, "c@example.net", [f"x@{acme.name}"], content)
    [row] = await received_rows(pool, sent.stored_ids)
    assert bytes(row["raw"]) == content
