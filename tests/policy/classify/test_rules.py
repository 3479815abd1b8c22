"""The classification rules (policy/classify): each rule on the message it is for, the order of
the table, and the known false positives written down as specifications."""

from __future__ import annotations

import pytest

from policy.bounces.report import read_report
from policy.classify.rules import CLASSIFY_RULES, MailClass, classify
from policy.classify.signals import first_look, read_signals, wants_report
from policy.inbound.message import parse_message
from tests.conftest import message


def classify_message(
    content: bytes,
    *,
    mail_from: str = "customer@example.net",
    matched: bool = False,
    matched_by_token: bool = False,
) -> tuple[MailClass, str]:
    parsed = parse_message(content)
    report = None
    if wants_report(parsed.headers, mail_from=mail_from, from_address=parsed.from_address):
        report = read_report(content, ignore_addresses=frozenset({"support@example.com"}))
    found = classify(
        read_signals(
            parsed.headers,
            mail_from=mail_from,
            from_address=parsed.from_address,
            subject=parsed.subject,
            text=parsed.text,
            in_reply_to=parsed.in_reply_to,
            matched=matched,
            matched_by_token=matched_by_token,
            report=report,
        )
    )
    return found.kind, found.reason


DSN = (
    b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
    b"To: bounce@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\n"
    b"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
    b"--B\r\nContent-Type: text/plain\r\n\r\nI could not deliver your message.\r\n"
    b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
    b"Final-Recipient: rfc822; gone@example.org\r\nAction: {action}\r\nStatus: {status}\r\n"
    b"Remote-MTA: dns; mx.example.org\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 <gone@example.org>: Recipient address rejected\r\n"
    b"\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    b"Message-ID: <osr_0123@example.com>\r\nSubject: Hello\r\n\r\n--B--\r\n"
)


def dsn(action: bytes = b"failed", status: bytes = b"5.1.1") -> bytes:
    return DSN.replace(b"{action}", action).replace(b"{status}", status)


ARF = (
    b"From: abuse@isp.example\r\nTo: fbl@example.com\r\nSubject: complaint\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; "
    b'boundary="F"\r\n\r\n--F\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n'
    b"--F\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: {type}\r\n"
    b"User-Agent: isp/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: reader@isp.example\r\n"
    b"\r\n--F\r\nContent-Type: message/rfc822\r\n\r\nFrom: news@example.com\r\n"
    b"Message-ID: <abc@example.com>\r\n\r\nBuy now\r\n--F--\r\n"
)


def test_every_rule_has_a_distinct_name() -> None:
    names = [name for name, _rule, _kind in CLASSIFY_RULES]
    assert len(names) == len(set(names))


def test_a_plain_message_is_human() -> None:
    assert classify_message(message()) == (MailClass.HUMAN, "no_rule")


def test_rfc3464_failed_dsn_is_a_bounce_even_with_auto_submitted() -> None:
    assert classify_message(dsn(), mail_from="") == (MailClass.BOUNCE, "dsn_failure")


def test_rfc3464_delayed_dsn_is_a_bounce() -> None:
    kind, reason = classify_message(dsn(b"delayed", b"4.4.7"), mail_from="")
    assert (kind, reason) == (MailClass.BOUNCE, "dsn_failure")


def test_success_dsn_is_auto_generated_not_a_bounce() -> None:
    kind, reason = classify_message(dsn(b"delivered", b"2.0.0"), mail_from="")
    assert (kind, reason) == (MailClass.AUTO_GENERATED, "dsn_success")


def test_arf_abuse_report_is_a_complaint() -> None:
    content = ARF.replace(b"{type}", b"abuse")
    assert classify_message(content) == (MailClass.COMPLAINT, "arf_complaint")


def test_arf_auth_failure_report_is_auto_generated() -> None:
    content = ARF.replace(b"{type}", b"auth-failure")
    assert classify_message(content) == (MailClass.AUTO_GENERATED, "arf_auth_failure")


def test_text_bounce_from_the_null_sender_with_a_status_is_a_bounce() -> None:
    content = (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: support@example.com\r\n"
        b"Subject: Mail delivery failed: returning message to sender\r\n\r\n"
        b"This message was created automatically by mail delivery software.\r\n\r\n"
        b"A message that you sent could not be delivered to one or more of its\r\n"
        b"recipients. This is a permanent error. The following address(es) failed:\r\n\r\n"
        b"  gone@example.org\r\n    host mx.example.org [192.0.2.1]\r\n"
        b"    SMTP error from remote mail server after RCPT TO:<gone@example.org>:\r\n"
        b"    550 5.1.1 User unknown\r\n\r\n"
        b"------ This is a copy of the message, including all the headers. ------\r\n"
        b"Message-ID: <osr_1@example.com>\r\nFrom: support@example.com\r\n\r\nHello\r\n"
    )
    assert classify_message(content, mail_from="") == (
        MailClass.BOUNCE,
        "returned_by_mail_system",
    )


def test_out_of_office_from_the_null_sender_quoting_an_address_is_no_bounce() -> None:
    content = message(
        sender="someone@example.org",
        subject="Automatic reply: Your order",
        body="I am out of the office until Monday. For urgent matters write to bob@example.org.",
        headers={"Auto-Submitted": "auto-replied"},
    )
    kind, reason = classify_message(content, mail_from="")
    assert (kind, reason) == (MailClass.AUTO_REPLY, "auto_submitted_replied")


@pytest.mark.parametrize(
    ("headers", "subject", "reason"),
    [
        ({"Auto-Submitted": "auto-replied"}, "Re: Hello", "auto_submitted_replied"),
        ({"X-Autoreply": "yes"}, "Re: Hello", "vendor_auto_reply"),
        ({"X-Autorespond": "Hello"}, "Re: Hello", "vendor_auto_reply"),
        ({"X-Autoresponder": "1"}, "Re: Hello", "vendor_auto_reply"),
        ({"Precedence": "auto_reply"}, "Re: Hello", "vendor_auto_reply"),
        ({}, "Automatic reply: Hello", "exchange_out_of_office"),
        ({}, "Automatische Antwort: Hello", "exchange_out_of_office"),
        ({}, "Out of Office: Hello", "exchange_out_of_office"),
    ],
    ids=[
        "rfc3834",
        "x_autoreply",
        "x_autorespond",
        "x_autoresponder",
        "precedence_auto_reply",
        "exchange",
        "exchange_german",
        "legacy_exchange",
    ],
)
def test_auto_reply_markers(headers: dict[str, str], subject: str, reason: str) -> None:
    content = message(subject=subject, headers=headers)
    assert classify_message(content) == (MailClass.AUTO_REPLY, reason)


def test_auto_generated_in_reply_to_our_message_is_an_auto_reply() -> None:
    content = message(headers={"Auto-Submitted": "auto-generated", "In-Reply-To": "<a@b.example>"})
    assert classify_message(content) == (MailClass.AUTO_REPLY, "auto_submitted_in_reply")


def test_auto_generated_notification_is_auto_generated() -> None:
    content = message(headers={"Auto-Submitted": "auto-notified"})
    assert classify_message(content) == (MailClass.AUTO_GENERATED, "auto_submitted_other")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Precedence": "bulk"}, "precedence_bulk"),
        ({"Precedence": "list"}, "precedence_bulk"),
        ({"Precedence": "junk"}, "precedence_bulk"),
        ({"List-Id": "<news.example.org>"}, "list_headers"),
        ({"List-Unsubscribe": "<mailto:u@example.org>"}, "list_headers"),
    ],
    ids=["bulk", "list", "junk", "list_id", "list_unsubscribe"],
)
def test_lists_and_bulk_mail_are_auto_generated(headers: dict[str, str], reason: str) -> None:
    assert classify_message(message(headers=headers)) == (MailClass.AUTO_GENERATED, reason)


def test_x_auto_response_suppress_does_not_mark_an_auto_reply() -> None:
    # Outlook adds it to ordinary mail: it asks others not to auto-reply, nothing more.
    content = message(subject="Re: Hello", headers={"X-Auto-Response-Suppress": "All"})
    assert classify_message(content) == (MailClass.HUMAN, "no_rule")


def test_auto_submitted_no_is_a_person() -> None:
    assert classify_message(message(headers={"Auto-Submitted": "no"}))[0] is MailClass.HUMAN


def test_helpdesk_agent_reply_with_our_token_and_own_words_stays_a_reply() -> None:
    content = message(
        subject="Re: Your order",
        body="Hi, your refund went out today.\n\n> earlier message\n",
        headers={"Auto-Submitted": "auto-generated", "In-Reply-To": "<osr_x@example.com>"},
    )
    assert classify_message(content, matched=True, matched_by_token=True) == (
        MailClass.HUMAN,
        "helpdesk_reply_with_token",
    )


def test_helpdesk_style_message_without_a_genuine_token_is_automatic() -> None:
    content = message(
        subject="Re: Your order",
        body="Hi, your refund went out today.",
        headers={"Auto-Submitted": "auto-generated", "In-Reply-To": "<x@example.com>"},
    )
    kind, _reason = classify_message(content, matched=True, matched_by_token=False)
    assert kind is MailClass.AUTO_REPLY


def test_helpdesk_style_message_with_only_quoted_text_is_automatic() -> None:
    content = message(
        body="> earlier message\n> more\n",
        headers={"Auto-Submitted": "auto-generated", "In-Reply-To": "<osr_x@example.com>"},
    )
    kind, _reason = classify_message(content, matched=True, matched_by_token=True)
    assert kind is MailClass.AUTO_REPLY


def test_ordinary_mail_is_not_parsed_as_a_report() -> None:
    parsed = parse_message(message())
    assert not wants_report(parsed.headers, mail_from="a@example.net", from_address="a@x.example")


@pytest.mark.parametrize(
    "headers",
    [
        {"Auto-Submitted": "auto-replied"},
        {"Auto-Submitted": "no"},
        {"X-Autoreply": "yes"},
        {"X-Autorespond": "x"},
        {"X-Autoresponder": "x"},
        {"Precedence": "bulk"},
        {"List-Id": "<l.example.org>"},
        {"List-Unsubscribe": "<mailto:u@example.org>"},
        {"List-Post": "<mailto:l@example.org>"},
    ],
    ids=lambda h: next(iter(h)).lower(),
)
def test_the_fast_path_never_skips_a_field_a_rule_reads(headers: dict[str, str]) -> None:
    # `plain` lets the MX skip the rules: it must be False whenever a rule could fire.
    parsed = parse_message(message(headers=headers))
    look = first_look(
        parsed.headers, mail_from="a@example.net", from_address="a@example.net", subject="Hi"
    )
    assert not look.plain


def test_the_fast_path_takes_plain_mail_and_sees_auto_reply_subjects() -> None:
    parsed = parse_message(message(headers={"X-Auto-Response-Suppress": "All"}))
    plain = first_look(parsed.headers, mail_from="a@x.example", from_address=None, subject="Hi")
    assert plain.plain and not plain.wants_report
    ooo = first_look([], mail_from="a@x.example", from_address=None, subject="Automatic reply: x")
    assert not ooo.plain
    bounce = first_look([], mail_from="", from_address=None, subject="Hi")
    assert bounce.wants_report
