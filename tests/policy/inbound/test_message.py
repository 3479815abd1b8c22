"""parse_message: what the matcher and the stored row need, from any bytes, never raising.

Malformed mail is stored raw with whatever could be read (DESIGN.md 7), so each test here feeds
a message a real mailer or a hostile one sends and checks that the result is usable and storable.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from policy.inbound.message import ParsedMessage, parse_message


def strings_of(value: Any) -> list[str]:
    """Every string inside a parsed message, however deep."""
    if isinstance(value, str):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [s for f in dataclasses.fields(value) for s in strings_of(getattr(value, f.name))]
    if isinstance(value, list | tuple):
        return [s for item in value for s in strings_of(item)]
    return []


def assert_storable(parsed: ParsedMessage) -> None:
    """PostgreSQL text refuses NUL and anything that is not valid UTF-8 (lone surrogates)."""
    for text in strings_of(parsed):
        assert "\x00" not in text, text
        text.encode("utf-8")  # raises on a lone surrogate


ALTERNATIVE_WITH_ATTACHMENT = b"""\
From: Alice Example <alice@example.org>\r
To: support@example.com, Bob <bob@example.com>\r
Cc: carol@example.net\r
Reply-To: alice+replies@example.org\r
Subject: Quarterly report\r
Date: Tue, 04 Mar 2025 10:15:00 +0100\r
Message-ID: <CAF00D@mail.example.org>\r
In-Reply-To: <parent@example.com>\r
References: <root@example.com> <parent@example.com>\r
X-OpenSend-Reply-Token: osr_0123456789abcdef0123456789abcdef_0123456789abcdef0123\r
Auto-Submitted: no\r
Received: from a by b; Tue, 04 Mar 2025 10:15:01 +0100\r
Received: from c by d; Tue, 04 Mar 2025 10:15:02 +0100\r
MIME-Version: 1.0\r
Content-Type: multipart/mixed; boundary="outer"\r
\r
--outer\r
Content-Type: multipart/alternative; boundary="inner"\r
\r
--inner\r
Content-Type: text/plain; charset=utf-8\r
Content-Transfer-Encoding: quoted-printable\r
\r
Caf=C3=A9 figures attached.\r
--inner\r
Content-Type: text/html; charset=utf-8\r
\r
<p>Caf\xc3\xa9 figures attached.</p>\r
--inner--\r
--outer\r
Content-Type: application/pdf; name="report.pdf"\r
Content-Disposition: attachment; filename="report.pdf"\r
Content-Transfer-Encoding: base64\r
\r
JVBERi0xLjQK\r
--outer\r
Content-Type: image/png\r
Content-Disposition: inline\r
Content-ID: <logo@example.org>\r
Content-Transfer-Encoding: base64\r
\r
iVBORw0KGgo=\r
--outer--\r
"""


def test_multipart_alternative_with_attachment_gives_text_html_and_attachments() -> None:
    parsed = parse_message(ALTERNATIVE_WITH_ATTACHMENT)
    assert parsed.text == "Café figures attached."
    assert parsed.html == "<p>Café figures attached.</p>"
    assert [a.as_json() for a in parsed.attachments] == [
        {
            "filename": "report.pdf",
            "content_type": "application/pdf",
            "size": len(b"%PDF-1.4\n"),
            "content_id": None,
            "content_disposition": "attachment",
            "part": "2",
        },
        {
            "filename": None,
            "content_type": "image/png",
            "size": 8,
            "content_id": "logo@example.org",
            "content_disposition": "inline",
            "part": "3",
        },
    ]
    assert_storable(parsed)


def test_headers_the_matcher_needs_are_read() -> None:
    parsed = parse_message(ALTERNATIVE_WITH_ATTACHMENT)
    assert parsed.message_id == "CAF00D@mail.example.org"
    assert parsed.in_reply_to == "<parent@example.com>"
    assert parsed.references == "<root@example.com> <parent@example.com>"
    assert parsed.reply_token_header == (
        "osr_0123456789abcdef0123456789abcdef_0123456789abcdef0123"
    )
    assert parsed.auto_submitted == "no"
    assert parsed.received_count == 2


def test_addresses_and_date_are_read() -> None:
    parsed = parse_message(ALTERNATIVE_WITH_ATTACHMENT)
    assert (parsed.from_name, parsed.from_address) == ("Alice Example", "alice@example.org")
    assert parsed.to == ["support@example.com", "bob@example.com"]
    assert parsed.cc == ["carol@example.net"]
    assert parsed.reply_to == ["alice+replies@example.org"]
    assert parsed.subject == "Quarterly report"
    assert parsed.date == datetime(2025, 3, 4, 10, 15, tzinfo=timezone(timedelta(hours=1)))


def test_headers_are_kept_in_order() -> None:
    parsed = parse_message(ALTERNATIVE_WITH_ATTACHMENT)
    assert parsed.headers[:2] == [
        ("From", "Alice Example <alice@example.org>"),
        ("To", "support@example.com, Bob <bob@example.com>"),
    ]
    assert len(parsed.headers) == 15


# -- RFC 2047 and RFC 2231 --------------------------------------------------------------------


def test_rfc2047_subject_and_display_name_are_decoded() -> None:
    parsed = parse_message(
        b"From: =?iso-8859-1?q?J=F6rg_M=FCller?= <jorg@example.de>\r\n"
        b"Subject: =?utf-8?q?Caf=C3=A9?=\r\n =?utf-8?b?IGF1IGxhaXQ=?=\r\n"
        b"\r\nbody\r\n"
    )
    assert parsed.subject == "Café au lait"
    assert parsed.from_name == "Jörg Müller"
    assert parsed.from_address == "jorg@example.de"


def test_rfc2047_subject_in_an_unknown_charset_is_kept_raw() -> None:
    parsed = parse_message(b"Subject: =?x-no-such-charset?q?abc?=\r\n\r\n")
    assert parsed.subject == "=?x-no-such-charset?q?abc?="


def test_encoded_attachment_names_are_decoded() -> None:
    parsed = parse_message(
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b'--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="'
        b'=?utf-8?q?r=C3=A9sum=C3=A9.pdf?="\r\n\r\nx\r\n'
        b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;"
        b" filename*=utf-8''na%C3%AFve.pdf\r\n\r\nx\r\n"
        b"--b--\r\n"
    )
    assert [a.filename for a in parsed.attachments] == ["résumé.pdf", "naïve.pdf"]


# -- missing and broken headers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"<abc@isp.example> (added by postmaster@isp.example)", id="comment_after"),
        pytest.param(b"(relayed) <abc@isp.example>", id="comment_before"),
        pytest.param(b"<abc@isp.example>\r\n (added (nested) by\r\n\tthe ISP)", id="folded"),
    ],
)
def test_message_id_is_the_id_without_comments_or_folding(value: bytes) -> None:
    parsed = parse_message(b"Message-ID: " + value + b"\r\nSubject: x\r\n\r\nbody\r\n")
    assert parsed.message_id == "abc@isp.example"


def test_missing_message_id_is_none() -> None:
    parsed = parse_message(b"Subject: hi\r\n\r\nbody\r\n")
    assert parsed.message_id is None
    assert parsed.in_reply_to is None
    assert parsed.references is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"<>", id="empty_brackets"),
        pytest.param(b"   ", id="blank"),
    ],
)
def test_empty_message_id_is_none(value: bytes) -> None:
    assert parse_message(b"Message-ID: " + value + b"\r\n\r\n").message_id is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"yesterday", id="words"),
        pytest.param(b"Mon, 32 Feb 2020 25:61:00 +0000", id="impossible"),
        pytest.param(b"Tue, 1 Jan 10000 00:00:00 +0000", id="year_10000"),
        pytest.param(b"Mon, 1 Jan 2024 00:00:00 -0000", id="unknown_zone"),
        pytest.param(b"", id="empty"),
    ],
)
def test_broken_date_is_none(value: bytes) -> None:
    assert parse_message(b"Date: " + value + b"\r\n\r\nbody\r\n").date is None


def test_date_with_an_overflowing_year_is_none() -> None:
    parsed = parse_message(b"Date: 1 Jan 99999999999 00:00 +0000\r\n\r\nbody\r\n")
    assert parsed.date is None


def test_valid_date_is_timezone_aware() -> None:
    parsed = parse_message(b"Date: Mon, 1 Jan 2024 12:00:00 +0000\r\n\r\n")
    assert parsed.date == datetime(2024, 1, 1, 12, tzinfo=UTC)


# -- charsets and 8-bit -----------------------------------------------------------------------


def test_body_in_an_unknown_charset_is_read_as_utf8() -> None:
    parsed = parse_message(
        b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\ncaf\xc3\xa9 \xff\r\n"
    )
    assert parsed.text == "café \ufffd\n"


def test_body_in_a_charset_that_cannot_replace_is_read_as_utf8() -> None:
    parsed = parse_message(
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=idna\r\n\r\ncaf\xc3\xa9\r\n"
        b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>hi</p>\r\n"
        b"--b--\r\n"
    )
    # The CRLF before a boundary belongs to the boundary (RFC 2046 section 5.1.1).
    assert parsed.text == "café"
    assert parsed.html == "<p>hi</p>"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b"Subject: Caf\xc3\xa9\r\nFrom: J\xc3\xb6rg <j@example.de>\r\n\r\n", id="utf8"
        ),
        pytest.param(b"Subject: Caf\xe9\r\nFrom: J\xf6rg <j@example.de>\r\n\r\n", id="latin1"),
        pytest.param(b"Subject: a\x00b\r\nX-Junk: \xff\xfe\x00\r\n\r\n", id="nul_and_junk"),
        pytest.param(b"Subject: x\r\n\r\nbody \xff\xfe\x00 end\r\n", id="binary_body"),
        pytest.param(
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b'Content-Disposition: attachment; filename="r\xe9\x00sum\xff.pdf"\r\n'
            b"\r\nx\r\n--b--\r\n",
            id="attachment_name",
        ),
    ],
)
def test_eight_bit_headers_give_storable_text(raw: bytes) -> None:
    assert_storable(parse_message(raw))


def test_eight_bit_content_id_gives_storable_text() -> None:
    parsed = parse_message(
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: image/png\r\nContent-ID: <caf\xc3\xa9\x00@x>\r\n\r\nx\r\n--b--\r\n"
    )
    assert [a.content_type for a in parsed.attachments] == ["image/png"]
    assert_storable(parsed)


def test_eight_bit_headers_keep_the_ascii_around_them() -> None:
    parsed = parse_message(b"Subject: Caf\xe9 au lait\r\nFrom: j@example.de\r\n\r\n")
    assert parsed.subject is not None
    assert parsed.subject.startswith("Caf")
    assert parsed.subject.endswith(" au lait")
    assert parsed.from_address == "j@example.de"


def test_utf8_headers_are_read_as_utf8() -> None:
    parsed = parse_message(b"Subject: Caf\xc3\xa9\r\nFrom: J\xc3\xb6rg <j@example.de>\r\n\r\n")
    assert parsed.subject == "Café"
    assert parsed.from_name == "Jörg"


# -- structure --------------------------------------------------------------------------------


def nested_multiparts(depth: int) -> bytes:
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--" % i for i in reversed(range(depth)))
    return b"Subject: deep\r\n" + opening + b"Content-Type: text/plain\r\n\r\ndeep inside" + closing


def test_nested_multiparts_find_the_innermost_text() -> None:
    parsed = parse_message(nested_multiparts(50))
    assert parsed.subject == "deep"
    assert parsed.text == "deep inside"


def test_very_deeply_nested_multiparts_do_not_raise() -> None:
    parsed = parse_message(nested_multiparts(5000))
    assert parsed.subject == "deep"
    assert_storable(parsed)


def test_unterminated_multipart_keeps_what_was_read() -> None:
    parsed = parse_message(
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n"
        b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment\r\n\r\ncut"
    )
    assert parsed.text == "first part"
    assert [a.content_type for a in parsed.attachments] == ["application/pdf"]
    assert parsed.defects


def test_empty_message_parses_to_nothing() -> None:
    parsed = parse_message(b"")
    assert parsed.headers == []
    assert parsed.message_id is None
    assert parsed.subject is None
    assert parsed.from_address is None
    assert parsed.to == []
    assert parsed.date is None
    assert parsed.received_count == 0
    assert not parsed.text
    assert parsed.html is None
    assert parsed.attachments == []
