"""The rules of a send request (`policy.sending.request`), as pure functions: addresses, header
safety, owned headers, attachments, tags, scheduling, and who may send from which domain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy.sending.fields import (
    Problem,
    Refusal,
    decode_content,
    header_safe,
    parse_attachment,
    parse_headers,
    parse_mailbox,
    parse_tags,
    valid_address,
)
from policy.sending.request import SenderDomain, check_sender, parse_email, parse_scheduled_at

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DOMAIN_ID = UUID("00000000-0000-4000-8000-000000000001")
OTHER_ID = UUID("00000000-0000-4000-8000-000000000002")


def refusal(call: object, *args: object, **kwargs: object) -> Refusal:
    assert callable(call)
    with pytest.raises(Refusal) as raised:
        call(*args, **kwargs)
    return raised.value


@pytest.mark.parametrize(
    ("given", "name", "address"),
    [
        ("ann@example.net", "", "ann@example.net"),
        ("<ann@example.net>", "", "ann@example.net"),
        ("Ann Lee <ann@example.net>", "Ann Lee", "ann@example.net"),
        ('"Lee, Ann" <ann@example.net>', "Lee, Ann", "ann@example.net"),
        ('"Say \\"hi\\"" <ann@example.net>', 'Say "hi"', "ann@example.net"),
        ("  Zoë   <zoe@Example.NET>  ", "Zoë", "zoe@Example.NET"),
        ("first.last+tag@sub.example.co.uk", "", "first.last+tag@sub.example.co.uk"),
    ],
)
def test_mailboxes_as_resend_accepts_them(given: str, name: str, address: str) -> None:
    box = parse_mailbox(given, "to")
    assert (box.name, box.address, box.given) == (name, address, given.strip())
    assert box.domain == address.rpartition("@")[2].lower()


@pytest.mark.parametrize(
    "address",
    [
        "plain",
        "@example.net",
        "a@",
        "a@example",
        "a..b@example.net",
        ".a@example.net",
        "a@-example.net",
        "a@example-.net",
        "a@example.123",
        "a b@example.net",
        "ä@example.net",
        "a@exämple.net",
        "x" * 65 + "@example.net",
        "a@" + "b" * 64 + ".net",
        "a@" + ".".join(["b" * 60] * 5) + ".net",
    ],
)
def test_addresses_we_cannot_deliver_to_are_refused(address: str) -> None:
    assert not valid_address(address)
    assert refusal(parse_mailbox, address, "cc").message.startswith("Invalid `cc` field.")


def test_longest_local_part_is_fine() -> None:
    assert valid_address("x" * 64 + "@example.net")


def test_from_refusal_is_resends_invalid_from_address() -> None:
    failed = refusal(parse_mailbox, "nobody", "from", Problem.FROM_ADDRESS)
    assert (failed.problem, failed.field) == (Problem.FROM_ADDRESS, "from")


@pytest.mark.parametrize("bad", ["\r", "\n", "\x00", "\x07", "\x1b", "\x7f"])
def test_header_safe_refuses_breaks_nul_and_controls(bad: str) -> None:
    failed = refusal(header_safe, f"a{bad}b", "subject")
    assert (failed.problem, failed.field) == (Problem.INVALID, "subject")


def test_header_safe_keeps_tabs_and_unicode() -> None:
    assert header_safe("a\tb – ü", "subject") == "a\tb – ü"


@given(st.text(), st.sampled_from(["\r", "\n", "\r\n", "\x00"]), st.text())
def test_no_subject_with_a_line_break_gets_through(before: str, brk: str, after: str) -> None:
    body = {"from": "a@acme.example", "to": "b@example.net", "text": "t"}
    with pytest.raises(Refusal) as raised:
        parse_email({**body, "subject": before + brk + after}, NOW)
    assert raised.value.field == "subject"


def test_envelope_is_to_cc_bcc_once_each_without_case() -> None:
    draft = parse_email(
        {
            "from": "a@acme.example",
            "to": ["Ann <ann@example.net>", "bob@example.net"],
            "cc": "ANN@example.net",
            "bcc": ["carol@example.net", "Bob@Example.NET"],
            "subject": "s",
            "text": "t",
        },
        NOW,
    )
    assert draft.envelope == ("ann@example.net", "bob@example.net", "carol@example.net")


@pytest.mark.parametrize(
    "name",
    [
        "Message-ID",
        "message-id",
        "DKIM-Signature",
        "X-OpenSend-Reply-Token",
        "X-OPENSEND-anything",
        "Content-Type",
        "bcc",
    ],
)
def test_owned_headers_are_refused_with_a_hint(name: str) -> None:
    failed = refusal(parse_headers, {name: "x"})
    assert failed.field == f"headers.{name}"
    assert failed.message.startswith(f"Header `{name}` cannot be set: ")


def test_threading_headers_are_the_callers_when_they_hold_message_ids() -> None:
    headers = parse_headers({"In-Reply-To": "<a@b.example>", "References": "<a@b> <c@d>"})
    assert headers == (("In-Reply-To", "<a@b.example>"), ("References", "<a@b> <c@d>"))
    assert refusal(parse_headers, {"References": "<a@b> junk"}).field == "headers.References"


def test_attachment_content_base64_with_line_breaks_or_byte_list() -> None:
    assert decode_content("aGVs\r\nbG8=\n", "c") == b"hello"
    assert decode_content([104, 105], "c") == b"hi"
    assert refusal(decode_content, "aGk", "c").problem is Problem.ATTACHMENT  # bad padding
    assert refusal(decode_content, 42, "c").problem is Problem.ATTACHMENT


def test_attachment_type_is_guessed_from_the_name_and_content_id_has_an_alias() -> None:
    pdf = parse_attachment({"filename": "a.PDF", "content": "aGk="}, 0)
    blob = parse_attachment({"filename": "noext", "content": "aGk="}, 1)
    inline = parse_attachment(
        {"filename": "l.png", "content": "aGk=", "inline_content_id": "logo@acme"}, 2
    )
    assert (pdf.content_type, blob.content_type) == ("application/pdf", "application/octet-stream")
    assert inline.content_id == "logo@acme"


def test_tags_value_is_optional() -> None:
    assert parse_tags([{"name": "a_b-1"}, {"name": "x", "value": "Y-2"}]) == (
        ("a_b-1", None),
        ("x", "Y-2"),
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("in 5 min", NOW + timedelta(minutes=5)),
        ("in 1 minute", NOW + timedelta(minutes=1)),
        ("IN 2 Hours", NOW + timedelta(hours=2)),
        ("in 3 days", NOW + timedelta(days=3)),
        ("2026-11-23T08:00:00Z", datetime(2026, 11, 23, 8, tzinfo=UTC)),
        ("2026-11-23T10:00:00.5+02:00", datetime(2026, 11, 23, 8, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-22T11:59:59Z", None),  # already past: now
        ("in 0 min", None),
    ],
)
def test_scheduled_at_forms(given: str, expected: datetime | None) -> None:
    assert parse_scheduled_at(given, NOW) == expected


@pytest.mark.parametrize(
    "given", ["tomorrow", "2026-11-23T08:00:00", "2026-13-01T00:00:00Z", "in 31 days", "in -1 h"]
)
def test_scheduled_at_refusals(given: str) -> None:
    assert refusal(parse_scheduled_at, given, NOW).field == "scheduled_at"


def test_scheduled_at_keeps_its_zone_and_is_the_same_instant() -> None:
    when = parse_scheduled_at("2026-11-23T10:00:00+02:00", NOW)
    assert when is not None and when.utcoffset() == timezone(timedelta(hours=2)).utcoffset(None)


def domain(verified: bool, status: str) -> SenderDomain:
    return SenderDomain(DOMAIN_ID, "acme.example", verified, status, True, None)


@pytest.mark.parametrize(
    ("verified", "status", "sendable"),
    [
        (True, "verified", True),
        (True, "not_started", True),  # `opensend domain add --verified`
        (True, "temporary_failure", True),  # records being rechecked: keeps sending
        # Unverified claims never send, whatever their last check said: a squatter's claim
        # (migration 0020) whose check went unanswered must not send as the name's owner.
        (False, "verified", False),
        (False, "temporary_failure", False),
        (True, "failed", False),
        (False, "pending", False),
        (False, "not_started", False),
        (False, "failed", False),
    ],
)
def test_which_domains_may_send(verified: bool, status: str, sendable: bool) -> None:
    assert domain(verified, status).sendable is sendable


def test_check_sender_refuses_unknown_unverified_and_other_keys_domains() -> None:
    sender = parse_mailbox("a@acme.example", "from")
    assert check_sender(sender, domain(True, "verified"), None).id == DOMAIN_ID
    assert check_sender(sender, domain(True, "verified"), DOMAIN_ID).id == DOMAIN_ID
    for found, key in ((None, None), (domain(False, "pending"), None)):
        failed = refusal(check_sender, sender, found, key)
        assert failed.problem is Problem.SENDER_DOMAIN
        assert failed.message.startswith("The acme.example domain is not verified.")
    limited = refusal(check_sender, sender, domain(True, "verified"), OTHER_ID)
    assert limited.message.endswith("and acme.example is not it.")


def test_reply_domain_is_the_subdomain_or_the_domain() -> None:
    plain = domain(True, "verified")
    assert plain.effective_reply_domain == "acme.example"
    sub = SenderDomain(DOMAIN_ID, "acme.example", True, "verified", True, "in.acme.example")
    assert sub.effective_reply_domain == "in.acme.example"
