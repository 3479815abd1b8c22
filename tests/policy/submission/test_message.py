"""Submission policy: who may send (the sending API's own rule, as SMTP replies), and the copy
we deliver: the client's message byte for byte, trace on top, tracking added, no Bcc."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy import replies
from policy.inbound.message import parse_message
from policy.inbound.pipeline import Arrival, received_header
from policy.sending.compose import Tracking
from policy.sending.fields import Mailbox
from policy.sending.request import SenderDomain
from policy.submission.message import (
    add_recipient,
    envelope_sender,
    from_mailbox,
    header_fields,
    judge_envelope_sender,
    judge_from,
    malformed_field,
    recipient_reply,
    submitted_email,
)

DOMAIN = SenderDomain(
    id=uuid.uuid4(),
    name="acme.test",
    verified=True,
    status="verified",
    receiving_enabled=True,
    reply_domain="inbound.acme.test",
)
TOKEN = "osr_" + "a" * 32 + "_" + "b" * 20
TRACKED = Tracking(
    message_id=f"{TOKEN}@acme.test",
    thread_id=uuid.uuid4(),
    reply_token=TOKEN,
    reply_address=f"reply+{TOKEN}@inbound.acme.test",
    reply_domain="inbound.acme.test",
)
UNTRACKED = Tracking(f"{uuid.uuid4()}@acme.test", None, None, None, None)
TRACE = "Received: from laptop ([192.0.2.1])\r\n\tby mx.test (OpenSend) with ESMTPSA id 1; x"
WHEN = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
AUTHOR = Mailbox("", "support@acme.test", "support@acme.test")


def copy_of(raw: bytes, tracking: Tracking = TRACKED, envelope: tuple[str, ...] = ()) -> bytes:
    email = submitted_email(
        raw,
        parse_message(raw),
        tracking,
        author=AUTHOR,
        envelope=envelope or ("bob@example.net",),
        trace=TRACE,
        date=WHEN,
    )
    return email.raw


# -- senders ----------------------------------------------------------------------------------


def test_envelope_sender_on_a_verified_domain_of_the_account_is_accepted() -> None:
    verdict = judge_envelope_sender(envelope_sender("Support@Acme.test"), DOMAIN, None)
    assert verdict.accepted and verdict.domain is DOMAIN
    assert verdict.reply is replies.S250_SENDER_OK


@pytest.mark.parametrize(
    ("address", "found", "reason"),
    [
        ("", None, "no_address"),
        ("<>", None, "no_address"),
        ("not an address", None, "no_address"),
        ("x@other.test", None, "unverified_domain"),
        (
            "x@acme.test",
            SenderDomain(DOMAIN.id, "acme.test", False, "pending", True, None),
            "unverified_domain",
        ),
        (
            "x@acme.test",
            SenderDomain(DOMAIN.id, "acme.test", True, "failed", True, None),
            "unverified_domain",
        ),
    ],
    ids=["empty", "null_path", "malformed", "unknown_domain", "pending_domain", "failed_domain"],
)
def test_envelope_sender_refusals_are_553_5_7_1_and_name_the_domain(
    address: str, found: SenderDomain | None, reason: str
) -> None:
    verdict = judge_envelope_sender(envelope_sender(address), found, None)
    assert not verdict.accepted
    assert (verdict.reply.code, verdict.reply.enhanced) == (553, "5.7.1")
    assert verdict.reason == reason
    if reason == "unverified_domain":
        domain = address.rpartition("@")[2]
        assert f"{domain} is not a verified domain of your account" in verdict.reply.text


def test_a_key_limited_to_another_domain_is_told_so() -> None:
    verdict = judge_from(AUTHOR, DOMAIN, key_domain_id=uuid.uuid4())
    assert not verdict.accepted and verdict.reason == "key_domain"
    assert verdict.reply.text.startswith("Message refused: this API key may only send from")


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("support@acme.test", Mailbox("", "support@acme.test", "support@acme.test")),
        (
            '"Acme, Support" <support@acme.test>',
            Mailbox("Acme, Support", "support@acme.test", '"Acme, Support" <support@acme.test>'),
        ),
        (
            "=?utf-8?b?w4ljb2xl?= <school@acme.test>",
            Mailbox("École", "school@acme.test", "École <school@acme.test>"),
        ),
    ],
    ids=["bare", "quoted_name_with_comma", "encoded_word_name"],
)
def test_the_from_field_names_one_author(field: str, expected: Mailbox) -> None:
    raw = f"From: {field}\r\nSubject: x\r\n\r\nbody\r\n".encode()
    assert from_mailbox(parse_message(raw)) == expected


@pytest.mark.parametrize(
    "head",
    [
        "Subject: no author\r\n",
        "From: a@acme.test, b@acme.test\r\n",
        "From: a@acme.test\r\nFrom: b@acme.test\r\n",
        "From: undisclosed-recipients:;\r\n",
        "From: not an address\r\n",
    ],
    ids=["missing", "two_in_one_field", "two_fields", "empty_group", "no_address"],
)
def test_a_message_without_exactly_one_author_has_none(head: str) -> None:
    parsed = parse_message(f"{head}\r\nbody\r\n".encode())
    assert from_mailbox(parsed) is None
    assert judge_from(None, DOMAIN, None).reply is replies.S553_FROM_NOT_ALLOWED


# -- recipients -------------------------------------------------------------------------------


def test_recipients_are_any_deliverable_address_within_the_limit_once_each() -> None:
    accepted: list[str] = []
    for address in ("a@example.net", "A@Example.NET", "b@example.org"):
        assert recipient_reply(address, accepted, 2) is replies.S250_RECIPIENT_OK
        add_recipient(address, accepted)
    assert accepted == ["a@example.net", "b@example.org"]
    assert recipient_reply("c@example.net", accepted, 2) is replies.S452_TOO_MANY_RECIPIENTS
    # Unlike at the MX, "%" is ordinary atext here (RFC 5322 section 3.2.3): the remote decides.
    assert recipient_reply("a%b@example.net", [], 2) is replies.S250_RECIPIENT_OK
    for trick in ('"a@b"@example.net', "a@[192.0.2.1]", "nobody", "a@b@example.net"):
        assert recipient_reply(trick, [], 2) is replies.S501_SYNTAX_ADDRESS


# -- the delivered copy ------------------------------------------------------------------------

CLIENT = (
    b"From: support@acme.test\r\n"
    b"To: bob@example.net\r\n"
    b"Bcc: hidden@example.com,\r\n"
    b"  other-hidden@example.com\r\n"
    b"Subject: folded\r\n"
    b" subject\r\n"
    b"Message-ID: <mine@laptop.example.net>\r\n"
    b"Date: Sun, 22 Nov 2026 11:00:00 +0000\r\n"
    b"X-OpenSend-Reply-Token: forged\r\n"
    b"\r\n"
    b"Body line\r\n"
    b"\r\n"
    b"Bcc: not a header, part of the body\r\n"
)


def test_the_copy_is_trace_then_the_clients_fields_without_bcc_then_tracking_then_the_body() -> (
    None
):
    assert (
        copy_of(CLIENT)
        == (
            TRACE.encode() + b"\r\n"
            b"From: support@acme.test\r\n"
            b"To: bob@example.net\r\n"
            b"Subject: folded\r\n"
            b" subject\r\n"
            b"Message-ID: <mine@laptop.example.net>\r\n"
            b"Date: Sun, 22 Nov 2026 11:00:00 +0000\r\n"
            b"Reply-To: " + TRACKED.reply_address.encode() + b"\r\n"  # type: ignore[union-attr]
            b"X-OpenSend-Reply-Token: " + TOKEN.encode() + b"\r\n"
            b"\r\n"
            b"Body line\r\n"
            b"\r\n"
            b"Bcc: not a header, part of the body\r\n"
        )
    )


def test_what_the_client_left_out_is_added_and_an_unreadable_message_id_replaced() -> None:
    raw = b"From: support@acme.test\r\nMessage-ID: <" + b"x" * 1000 + b"@a>\r\n\r\nhi\r\n"
    copy = message_from_bytes(copy_of(raw), policy=default)
    assert copy.get_all("Message-ID") == [f"<{TRACKED.message_id}>"]
    assert copy["Date"].datetime == WHEN


def test_an_untracked_domain_gets_no_reply_to_or_token() -> None:
    copy = message_from_bytes(copy_of(b"From: support@acme.test\r\n\r\nhi\r\n", UNTRACKED))
    assert copy["Reply-To"] is None and copy["X-OpenSend-Reply-Token"] is None
    assert copy["Message-ID"] == f"<{UNTRACKED.message_id}>"


def test_what_get_emails_shows_comes_from_the_fields_and_the_envelope() -> None:
    raw = (
        b"From: Acme <support@acme.test>\r\nTo: Bob <bob@example.net>, named@example.net\r\n"
        b"Cc: carol@example.org\r\nReply-To: sales@acme.test\r\nSubject: Hi\r\n"
        b"In-Reply-To: <a@b>\r\nReferences: <z@y> <a@b>\r\n\r\nhello\r\n"
    )
    email = submitted_email(
        raw,
        parse_message(raw),
        TRACKED,
        author=Mailbox("Acme", "support@acme.test", "Acme <support@acme.test>"),
        envelope=["bob@example.net", "CAROL@example.org", "blind@example.com"],
        trace=TRACE,
        date=WHEN,
    )
    assert email.message_id == TRACKED.message_id  # the client gave none
    assert (email.from_header, email.to, email.cc) == (
        "Acme <support@acme.test>",
        ["bob@example.net", "named@example.net"],
        ["carol@example.org"],
    )
    assert email.bcc == ["blind@example.com"]
    assert email.reply_to == ["sales@acme.test"]
    assert email.headers == {"In-Reply-To": "<a@b>", "References": "<z@y> <a@b>"}
    assert (email.subject, email.text) == ("Hi", "hello\n")
    assert b"Reply-To: sales@acme.test\r\n" in email.raw
    assert email.raw.count(b"\r\nReply-To:") == 1


@given(
    body=st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n")),
)
def test_the_body_is_never_touched(body: bytes) -> None:
    raw = b"From: support@acme.test\r\nSubject: x\r\n\r\n" + body
    assert copy_of(raw).endswith(b"\r\n\r\n" + body)


def test_header_fields_keep_folded_lines_with_their_field() -> None:
    fields, rest = header_fields(b"A: 1\r\n 2\r\nB: 3\r\n\r\nbody\r\n")
    assert fields == [b"A: 1\r\n 2\r\n", b"B: 3\r\n"]
    assert rest == b"\r\nbody\r\n"
    assert header_fields(b"\r\nonly a body\r\n") == ([], b"\r\nonly a body\r\n")
    assert header_fields(b"A: 1\r\n") == ([b"A: 1\r\n"], b"")


def test_the_trace_field_says_esmtpsa_and_keeps_control_characters_of_ehlo_out() -> None:
    arrival = Arrival(
        mail_from="support@acme.test",
        peer_ip="192.0.2.1",
        helo="laptop\rX-Injected: yes",  # aiosmtpd keeps a bare CR inside a command line
        tls_version="TLSv1.3",
        hostname="mx.acme.test",
        received_at=WHEN,
        protocol="ESMTPSA",
    )
    trace = received_header(uuid.UUID(int=1), arrival, None)
    assert trace.startswith("Received: from laptop?X-Injected: yes ([192.0.2.1])\r\n\tby ")
    assert "with ESMTPSA (TLSv1.3) id " in trace
    assert trace.count("\r") == 1 and "for <" not in trace


def test_resent_bcc_is_dropped_like_bcc() -> None:
    """RFC 5322 section 3.6.6: Resent-Bcc names blind recipients of a resent message."""
    raw = (
        b"From: support@acme.test\r\nResent-From: support@acme.test\r\n"
        b"Resent-Bcc: hidden@example.net\r\nTo: bob@example.net\r\n\r\nhi\r\n"
    )
    assert b"hidden@example.net" not in copy_of(raw)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"FROM : a@b.test\r\n", id="space_before_colon"),
        pytest.param(b"From\t: a@b.test\r\n", id="tab_before_colon"),
        pytest.param(b"No colon at all\r\n", id="no_colon"),
        pytest.param(b" leading: a folded line with no field\r\n", id="continuation_first"),
        pytest.param(b"Fr\xc3\xb6m: a@b.test\r\n", id="eight_bit_name"),
    ],
)
def test_a_header_line_that_is_not_name_colon_is_malformed(head: bytes) -> None:
    assert malformed_field(head + b"From: a@b.test\r\n\r\nbody\r\n")


def test_well_formed_fields_with_folding_and_a_body_colon_are_not_malformed() -> None:
    raw = b"From: a@b.test\r\nSubject: one\r\n two\r\nX-Y_z: 1\r\n\r\nBody: not a field\r\n"
    assert not malformed_field(raw)
