"""Long lines in a submitted message (RFC 5322 section 2.1.1): the parts that hold them are
re-encoded, everything else keeps its bytes, and a header line over the limit is refused."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy.submission.long_lines import (
    MAX_LINE,
    MAX_NESTING,
    HeaderLineTooLong,
    NestingTooDeep,
    fit_line_lengths,
)

LONG = "word " * 300  # 1,500 characters on one line


def longest(raw: bytes) -> int:
    return max(len(line) for line in raw.split(b"\r\n"))


def parsed(raw: bytes) -> EmailMessage:
    """The message as the email package reads it, with LF line ends (as its content has)."""
    raw = raw.replace(b"\r\n", b"\n")
    message = message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_message_within_the_limit_is_returned_as_it_is() -> None:
    raw = b"From: a@example.com\r\nSubject: s\r\n\r\n" + b"x" * MAX_LINE + b"\r\n"
    assert fit_line_lengths(raw) is raw


def test_a_long_plain_text_line_becomes_quoted_printable_with_the_same_text() -> None:
    raw = f"From: a@example.com\r\nSubject: s\r\n\r\nHello,\r\n{LONG}\r\nBye\r\n".encode()

    fitted = fit_line_lengths(raw)

    assert longest(fitted) <= 78  # RFC 5322 section 2.1.1: the SHOULD
    assert fitted.startswith(b"From: a@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n")
    message = parsed(fitted)
    assert message["Content-Transfer-Encoding"] == "quoted-printable"
    assert message.get_content() == f"Hello,\n{LONG}\nBye\n"


def test_only_the_part_with_the_long_line_is_re_encoded_in_a_multipart() -> None:
    text_part = (
        b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
        + "Grüße, short lines only\r\n".encode()
    )
    html = f"<p>{LONG}é</p>"
    raw = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
        b"preamble\r\n--b1\r\n" + text_part + b"--b1  \r\n"
        b"Content-Type: text/html; charset=utf-8; format=flowed\r\n"
        b"Content-Transfer-Encoding: 8bit\r\nContent-ID: <x@y>\r\n\r\n"
        + html.encode()
        + b"\r\n--b1--\r\nepilogue\r\n"
    )

    fitted = fit_line_lengths(raw)

    assert longest(fitted) <= 78  # RFC 5322 section 2.1.1: the SHOULD
    assert b"preamble\r\n--b1\r\n" + text_part + b"--b1  \r\n" in fitted  # untouched bytes
    assert fitted.endswith(b"\r\n--b1--\r\nepilogue\r\n")
    [plain, rich] = parsed(fitted).iter_parts()
    assert plain.get_content() == "Grüße, short lines only"  # its CRLF is the delimiter's
    assert rich["Content-Transfer-Encoding"] == "quoted-printable"
    assert rich["Content-ID"] == "<x@y>"
    assert rich.get_param("format") == "flowed"
    assert rich.get_content_charset() == "utf-8"
    assert rich.get_content() == html


def test_a_long_line_in_a_binary_part_becomes_base64() -> None:
    data = bytes(range(256)) * 8
    raw = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        + data.replace(b"\r", b"").replace(b"\n", b"")
        + b"\r\n--m--\r\n"
    )

    fitted = fit_line_lengths(raw)

    assert longest(fitted) <= 78  # RFC 5322 section 2.1.1: the SHOULD
    [part] = parsed(fitted).iter_parts()
    assert part["Content-Transfer-Encoding"] == "base64"
    assert part.get_content() == data.replace(b"\r", b"").replace(b"\n", b"")


def test_quoted_printable_without_soft_breaks_is_encoded_again() -> None:
    raw = (
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + b"caf=C3=A9 " * 200 + b"\r\n"
    )

    fitted = fit_line_lengths(raw)

    assert longest(fitted) <= 78  # RFC 5322 section 2.1.1: the SHOULD
    assert parsed(fitted).get_content() == "café " * 200 + "\n"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"Subject: " + b"x" * 1000 + b"\r\n\r\nbody\r\n", id="top_level"),
        pytest.param(
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
            b"X-Long: " + b"y" * 1000 + b"\r\n\r\n" + b"z" * 1200 + b"\r\n--m--\r\n",
            id="in_a_part",
        ),
    ],
)
def test_a_header_line_over_the_limit_cannot_be_fitted(raw: bytes) -> None:
    with pytest.raises(HeaderLineTooLong):
        fit_line_lengths(raw)


@given(st.lists(st.text(min_size=0, max_size=2500), min_size=1, max_size=5))
def test_any_text_comes_out_in_short_lines_and_reads_the_same(lines: list[str]) -> None:
    text = "\n".join(line.replace("\r", " ").replace("\n", " ") for line in lines) + "\n"
    raw = b"From: a@example.com\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text.replace(
        "\n", "\r\n"
    ).encode("utf-8", "surrogatepass")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates are not text a client can send

    fitted = fit_line_lengths(raw)

    assert longest(fitted) <= MAX_LINE
    assert parsed(fitted).get_content() == text


def nested(depth: int) -> bytes:
    """A long line under `depth` levels of multipart/mixed."""
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    return b"MIME-Version: 1.0\r\n" + opening + b"\r\n" + b"x" * 1200 + closing


def test_a_long_line_under_the_nesting_limit_is_fitted_and_deeper_is_refused() -> None:
    """Postfix's mime_nesting_limit; deeper, each level would be one more pass (and recursion)."""
    assert longest(fit_line_lengths(nested(MAX_NESTING))) <= 78
    with pytest.raises(NestingTooDeep):
        fit_line_lengths(nested(3000))


def test_a_long_line_in_a_forwarded_message_is_fitted_inside_it() -> None:
    raw = (
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\n"
        + LONG.encode()
        + b"\r\n--m--\r\n"
    )

    fitted = fit_line_lengths(raw)

    assert longest(fitted) <= 78
    [part] = parsed(fitted).iter_parts()
    [inner] = part.iter_parts()
    assert inner["Subject"] == "inner"
    assert inner["MIME-Version"] == "1.0"
    assert inner.get_content() == LONG
