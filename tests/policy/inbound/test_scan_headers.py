"""scan_headers: the header fields the MX reads before its 250 when the body is parsed later.

What it returns must be exactly what the full parse says about the same fields, or the decisions
made before the 250 (routing, matching, the class) would differ from the idle MX's; anything it
cannot read so is None, and the MX parses in full.
"""

from __future__ import annotations

import pytest

from policy.inbound.message import parse_message, scan_headers

# The fields decided on before the 250, and the ones left for the fill-in.
READ_BEFORE_THE_250 = (
    "headers",
    "message_id",
    "in_reply_to",
    "references",
    "reply_token_header",
    "subject",
    "from_address",
    "auto_submitted",
    "received_count",
)

PLAIN = (
    b"Received: from a.example.net ([192.0.2.1])\r\n\tby mx.example.com; Mon, 7 Dec 2026 12:00:00"
    b" +0000\r\n"
    b"Received: from b.example.net\r\n"
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: support@example.com, Bob <bob@example.com>\r\n"
    b"Cc: carol@example.net\r\n"
    b"Subject: =?utf-8?q?Caf=C3=A9?= and a folded\r\n  subject line   \r\n"
    b"Date: Mon, 7 Dec 2026 12:00:00 +0000\r\n"
    b"Message-ID: <abc.123@example.org> (a comment)\r\n"
    b"In-Reply-To: <parent@example.com>\r\n"
    b"References: <root@example.com>\r\n <parent@example.com>\r\n"
    b"X-OpenSend-Reply-Token: v1.abc\r\n"
    b"X-Empty:\r\n"
    b"X-Folded-Empty:\r\n\tcontinued\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=b1\r\n"
    b"\r\n"
    b"--b1\r\nContent-Type: text/plain\r\n\r\nHello\r\n"
    b"--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf"
    b"\r\n\r\nJVBERi0=\r\n--b1--\r\n"
)


@pytest.mark.parametrize(
    "raw",
    [
        PLAIN,
        b"Subject: no body\r\n\r\n",
        b"From: x@example.org\r\nMessage-ID: <" + b"x" * 1200 + b"@example.org>\r\n\r\nbody\r\n",
        b"Subject:   spaces  \r\nsubject: a second\r\n\r\nbody\r\n",
    ],
    ids=["multipart", "empty_body", "over_long_message_id", "repeated_field"],
)
def test_scan_reads_the_fields_decided_before_the_250_as_the_full_parse_does(raw: bytes) -> None:
    scanned = scan_headers(raw)
    full = parse_message(raw)
    assert scanned is not None
    assert not scanned.complete and full.complete
    for name in READ_BEFORE_THE_250:
        assert getattr(scanned, name) == getattr(full, name), name


def test_scan_leaves_the_body_and_the_address_lists_for_the_fill_in() -> None:
    scanned = scan_headers(PLAIN)
    assert scanned is not None
    assert (scanned.text, scanned.html, scanned.attachments) == (None, None, [])
    assert (scanned.to, scanned.cc, scanned.reply_to) == ([], [], [])
    assert (scanned.from_name, scanned.date) == (None, None)


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: caf\xc3\xa9\r\n\r\nbody\r\n",
        b"Subject: bare\nFrom: a@example.org\r\n\r\nbody\r\n",
        b"Subject: stray\rcr\r\n\r\nbody\r\n",
        b" continued: first\r\nSubject: x\r\n\r\nbody\r\n",
        b"From alice@example.org Mon Dec  7 12:00:00 2026\r\nSubject: x\r\n\r\nbody\r\n",
        b"Subject: x\r\nnot a field\r\n\r\nbody\r\n",
        b"Subject : spaced name\r\n\r\nbody\r\n",
        b"Subject: no separator\r\n",
        b"\r\nbody only\r\n",
    ],
    ids=[
        "eight_bit",
        "bare_lf",
        "stray_cr",
        "continuation_first",
        "mbox_from_line",
        "line_without_colon",
        "space_before_colon",
        "no_blank_line",
        "no_header",
    ],
)
def test_scan_declines_what_it_cannot_read_exactly_so(raw: bytes) -> None:
    assert scan_headers(raw) is None
