"""Bounce addresses (VERP), the reading of reports, the bounce taxonomy and what suppresses."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from uuid import UUID, uuid4

import pytest

from policy.bounces.dsn import FailedRecipient, compose_dsn, dsn_for_report, wants_dsn
from policy.bounces.effects import LinkSource, delivery_reports
from policy.bounces.report import read_report
from policy.bounces.taxonomy import BounceSubtype, BounceType, bounce_kind, suppresses
from policy.bounces.verp import (
    BounceVerdict,
    DeliveryEvidence,
    bounce_token_from_local_part,
    mint_bounce_token,
    verify_bounce_token,
)
from policy.tokens import ReplyTokens, TokenFailure

PERMANENT, TRANSIENT = BounceType.PERMANENT, BounceType.TRANSIENT
NO_EMAIL, REJECTED = BounceSubtype.NO_EMAIL, BounceSubtype.CONTENT_REJECTED
TOKENS = ReplyTokens(b"current", [b"previous"])
TENANT = UUID("11111111-1111-1111-1111-111111111111")
OTHER = UUID("22222222-2222-2222-2222-222222222222")
DELIVERY = UUID("33333333-3333-3333-3333-333333333333")


def test_bounce_address_local_part_is_64_octets_and_parses_back() -> None:
    token = mint_bounce_token(TOKENS, TENANT, DELIVERY, "Inbound.Example.com")
    address = token.address("Inbound.Example.com")
    local, domain = address.split("@")
    assert len(local) == 64
    assert domain == "inbound.example.com"
    assert bounce_token_from_local_part(local.upper()) == token


def test_not_a_bounce_address_and_a_malformed_one() -> None:
    assert bounce_token_from_local_part("support") is None
    assert bounce_token_from_local_part("bounce+osb_123") is TokenFailure.MALFORMED


def evidence() -> DeliveryEvidence:
    return DeliveryEvidence(DELIVERY, uuid4(), "gone@example.net", None)


def test_genuine_bounce_token_verifies_for_its_tenant_and_domain() -> None:
    token = mint_bounce_token(TOKENS, TENANT, DELIVERY, "inbound.example.com")
    verdict = verify_bounce_token(TOKENS, token, TENANT, "inbound.example.com", evidence())
    assert verdict.valid


def test_token_minted_with_a_previous_secret_still_verifies() -> None:
    old = ReplyTokens(b"previous")
    token = mint_bounce_token(old, TENANT, DELIVERY, "inbound.example.com")
    assert verify_bounce_token(TOKENS, token, TENANT, "inbound.example.com", evidence()).valid


@pytest.mark.parametrize(
    ("tenant", "domain"),
    [(OTHER, "inbound.example.com"), (TENANT, "inbound.other.example")],
    ids=["other_tenant", "other_domain"],
)
def test_bounce_token_of_another_tenant_or_domain_is_refused(tenant: UUID, domain: str) -> None:
    token = mint_bounce_token(TOKENS, TENANT, DELIVERY, "inbound.example.com")
    verdict = verify_bounce_token(TOKENS, token, tenant, domain, evidence())
    assert (verdict.valid, verdict.failure) == (False, TokenFailure.BAD_SIGNATURE)


def test_bounce_token_without_its_delivery_is_unknown() -> None:
    token = mint_bounce_token(TOKENS, TENANT, DELIVERY, "inbound.example.com")
    verdict = verify_bounce_token(TOKENS, token, TENANT, "inbound.example.com", None)
    assert verdict.failure is TokenFailure.UNKNOWN_EMAIL


@pytest.mark.parametrize(
    ("action", "status", "words", "kind", "suppress"),
    [
        ("failed", "5.1.1", "User unknown", (PERMANENT, NO_EMAIL), True),
        ("failed", "5.1.10", "null MX", (PERMANENT, NO_EMAIL), True),
        (
            "failed",
            "5.0.0",
            "550 No such user",
            (PERMANENT, NO_EMAIL),
            True,
        ),
        (
            "failed",
            "5.2.2",
            "Mailbox full",
            (TRANSIENT, BounceSubtype.MAILBOX_FULL),
            False,
        ),
        (
            "failed",
            "5.7.1",
            "Refused",
            (PERMANENT, REJECTED),
            False,
        ),
        (
            "failed",
            "5.7.1",
            "User unknown",
            (PERMANENT, REJECTED),
            False,
        ),
        ("failed", "4.4.7", "expired", (BounceType.TRANSIENT, BounceSubtype.GENERAL), False),
        ("delayed", "4.1.1", "User unknown", (BounceType.TRANSIENT, BounceSubtype.GENERAL), False),
        ("failed", None, None, (BounceType.UNDETERMINED, BounceSubtype.UNDETERMINED), False),
        ("failed", "5.1.7", "bad sender", (BounceType.PERMANENT, BounceSubtype.GENERAL), False),
    ],
    ids=[
        "unknown_user",
        "null_mx",
        "words_say_unknown",
        "mailbox_full",
        "policy_block",
        "policy_block_whatever_the_words",
        "temporary",
        "delay",
        "nothing_known",
        "sender_address",
    ],
)
def test_bounce_type_and_suppression(
    action: str,
    status: str | None,
    words: str | None,
    kind: tuple[BounceType, BounceSubtype],
    suppress: bool,
) -> None:
    found = bounce_kind(action, status, words)
    assert (found.type, found.subtype) == kind
    assert suppresses(action, status, found) is suppress


DSN = (
    b"From: MAILER-DAEMON@mx.example.net\r\nTo: b@example.com\r\nSubject: failure\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
    b"--B\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n"
    b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
    b"Final-Recipient: rfc822; One@Example.org\r\nAction: failed\r\nStatus: 5.0.0\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
    b"Final-Recipient: rfc822; two@example.org\r\nAction: delayed\r\nStatus: 4.4.1\r\n"
    b"\r\n--B\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Message-ID: <osr_abc@example.com>\r\nX-OpenSend-Reply-Token: osr_abc\r\n\r\nHi\r\n"
    b"--B--\r\n"
)


def test_rfc3464_fields_are_read_per_recipient() -> None:
    report = read_report(DSN)
    assert report.form == "delivery-status"
    first, second = report.recipients
    # A generic Status gives way to the Diagnostic-Code's enhanced code.
    assert (first.address, first.action, first.status) == ("one@example.org", "failed", "5.1.1")
    assert first.remote_mta == "mx.example.net"  # the Reporting-MTA when no Remote-MTA
    assert (second.action, second.status) == ("delayed", "4.4.1")
    assert report.returned_message_id == "osr_abc@example.com"
    assert report.returned_token == "osr_abc"


def test_qmail_text_bounce_names_its_recipient_and_status() -> None:
    content = (
        b"From: MAILER-DAEMON@mail.example.net\r\nTo: b@example.com\r\n"
        b"Subject: failure notice\r\n\r\n"
        b"Hi. This is the qmail-send program at mail.example.net.\r\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
        b"This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
        b"<nobody@example.org>:\r\n192.0.2.1 does not like recipient.\r\n"
        b"Remote host said: 550 5.1.1 <nobody@example.org>: Recipient address rejected\r\n"
        b"Giving up on 192.0.2.1.\r\n\r\n"
        b"--- Below this line is a copy of the message.\r\n\r\n"
        b"Return-Path: <b@example.com>\r\nMessage-ID: <m1@example.com>\r\n\r\nHello\r\n"
    )
    report = read_report(content, ignore_addresses=frozenset({"b@example.com"}))
    [row] = report.recipients
    assert (row.address, row.status, row.action) == ("nobody@example.org", "5.1.1", "failed")
    assert report.returned_message_id == "m1@example.com"


def test_hostile_report_is_read_in_bounded_time() -> None:
    content = b"From: MAILER-DAEMON@x.example\r\nSubject: failure\r\n\r\n" + b"a" * 2_000_000
    report = read_report(content)
    assert report.recipients == ()


def verdict(valid: bool) -> BounceVerdict:
    token = mint_bounce_token(TOKENS, TENANT, DELIVERY, "inbound.example.com")
    if not valid:
        return BounceVerdict(token, TokenFailure.BAD_SIGNATURE)
    return BounceVerdict(token, None, evidence())


def test_a_report_to_a_genuine_bounce_address_names_that_delivery() -> None:
    [found] = delivery_reports(
        read_report(DSN), complaint=False, verdicts=[verdict(True)], returned_email_id=None
    )
    assert (found.source, found.delivery_id, found.bounced) == (
        LinkSource.BOUNCE_ADDRESS,
        DELIVERY,
        True,
    )


def test_a_report_to_a_forged_bounce_address_names_nothing() -> None:
    found = delivery_reports(
        read_report(DSN), complaint=False, verdicts=[verdict(False)], returned_email_id=uuid4()
    )
    assert found == ()


def test_without_a_bounce_address_each_failed_or_delayed_row_is_a_report() -> None:
    email_id = uuid4()
    failed, delayed = delivery_reports(
        read_report(DSN), complaint=False, verdicts=[], returned_email_id=email_id
    )
    assert (failed.source, failed.email_id, failed.recipient) == (
        LinkSource.RETURNED_MESSAGE,
        email_id,
        "one@example.org",
    )
    assert (failed.event, failed.suppress) == ("email.bounced", "bounce")
    assert (delayed.event, delayed.bounced, delayed.suppress) == (
        "email.delivery_delayed",
        False,
        None,
    )


def test_dsns_are_for_submission_mail_with_a_sender_only() -> None:
    assert wants_dsn("smtp", "me@example.com")
    assert not wants_dsn("api", "me@example.com")
    assert not wants_dsn("smtp", "")
    assert not wants_dsn("smtp", "<>")
    assert not wants_dsn("dsn", "")


def test_composed_dsn_reads_back_as_the_rfc3464_report_it_is() -> None:
    composed = compose_dsn(
        email_id=uuid4(),
        hostname="mx.example.net",
        envelope_sender="me@example.com",
        failures=[
            FailedRecipient(
                "gone@example.org", 550, "5.1.1", "no such user", "mx.example.org", False
            ),
            FailedRecipient(
                "slow@example.org", 451, "4.4.1", "no answer\r\nInjected: x", None, True
            ),
        ],
        original_header=b"Message-ID: <m1@example.com>\r\nSubject: Hi",
        date=datetime(2026, 12, 7, tzinfo=UTC),
    )
    report = read_report(composed.raw)
    gone, slow = report.recipients
    assert (gone.address, gone.status, gone.remote_mta) == (
        "gone@example.org",
        "5.1.1",
        "mx.example.org",
    )
    # Given up after the queue's age limit: RFC 3463 X.4.7, whatever the last 4xx said.
    assert (slow.action, slow.status) == ("failed", "5.4.7")
    assert report.returned_message_id == "m1@example.com"
    assert b"\r\nInjected:" not in composed.raw
    assert composed.to == "me@example.com"


@pytest.mark.parametrize(
    ("source", "sender", "owed"),
    [("smtp", "carol@example.org", True), ("api", "carol@example.org", False), ("smtp", "", False)],
    ids=["submission", "api", "null_sender"],
)
def test_a_late_bounce_owes_a_dsn_only_to_a_submission_sender(
    source: str, sender: str, owed: bool
) -> None:
    details = {
        "status": "5.1.1",
        "diagnostic_code": "smtp; 550 5.1.1 <gone@example.net>: User unknown",
        "remote_mta": "dns; mx2.example.net",
    }
    bounce = SimpleNamespace(
        source=source,
        envelope_sender=sender,
        recipient="gone@example.net",
        details=details,
        original_header=b"Subject: Your order",
    )
    made = dsn_for_report(
        bounce, email_id=uuid4(), hostname="mx.opensend.test", date=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert (made is not None) is owed
    if made is not None:
        text = made.raw.decode()
        assert made.to == sender
        assert "Diagnostic-Code: smtp; 550 5.1.1 <gone@example.net>: User unknown" in text
        assert "Remote-MTA: dns; mx2.example.net" in text and "Status: 5.1.1" in text
        assert "Subject: Your order" in text
