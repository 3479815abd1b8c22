"""The outbound message as `policy.sending.compose` builds it, held to RFC 5322 and MIME by reading
it back with the standard library's strictest policy; the reply-tracking identity it carries."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import compat32
from email.policy import default as default_policy
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.sending.compose import Tracking, compose, fold, mint_tracking
from policy.sending.fields import Mailbox
from policy.sending.request import EmailDraft, parse_email
from policy.tokens import ReplyTokens, parse_token

TOKENS = ReplyTokens(b"k" * 32)
TENANT = UUID("11111111-2222-4333-8444-555555555555")
EMAIL = UUID("0123456789abcdef0123456789abcdef")
THREAD = UUID("fedcba98-7654-4321-8fed-cba987654321")
NOW = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
TRACKED = mint_tracking(
    TOKENS,
    tenant_id=TENANT,
    email_id=EMAIL,
    sending_domain="Acme.example",
    reply_domain="inbound.acme.example",
    thread_id=THREAD,
)
PLAIN = mint_tracking(
    TOKENS,
    tenant_id=TENANT,
    email_id=EMAIL,
    sending_domain="acme.example",
    reply_domain=None,
    thread_id=THREAD,
)


def draft(**fields: object) -> EmailDraft:
    body: dict[str, object] = {
        "from": "Acme <support@acme.example>",
        "to": "ann@example.net",
        "subject": "Hello",
        "text": "Hi Ann\n",
    }
    for name, value in fields.items():
        name = "from" if name == "sender" else name
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return parse_email(body, NOW)


def build(d: EmailDraft, tracking: Tracking = TRACKED) -> EmailMessage:
    raw = compose(d, tracking, NOW)
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", raw) is None, "bare CR or LF"
    assert raw.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    message = message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    for part in message.walk():
        assert not part.defects, (part.get_content_type(), part.defects)
    return message


_WORD = r"=\?utf-8\?b\?([A-Za-z0-9+/=]*)\?="


def display_name(message: EmailMessage) -> str:
    """The From display name, with encoded-words decoded as RFC 2047 section 6.2 says: the
    white space between two of them is not part of the text. Both of the email package's
    decoders add a space there (even reading the package's own output), so the words are
    decoded here; names without encoded-words are read by the modern parser."""
    raw = message_from_bytes(message.as_bytes(), policy=compat32)["From"]
    if "=?" not in raw:
        name: str = message["From"].addresses[0].display_name
        return name
    phrase = re.sub(r"\r?\n", "", raw).strip().rpartition(" <")[0]
    # The package may write a leading ASCII run as a plain atom ("000 =?utf-8?b?...?="): the
    # space between an atom and an encoded-word is text, the one between two words is not.
    decoded, end = b"", 0
    for word in re.finditer(_WORD, phrase):
        between = phrase[end : word.start()]
        if not (end and between.strip(" \t") == ""):
            decoded += between.encode()
        decoded += base64.b64decode(word.group(1))
        end = word.end()
    assert end, phrase
    return (decoded + phrase[end:].encode()).decode()


def text_of(part: EmailMessage) -> str:
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def test_tracking_puts_the_token_in_message_id_reply_address_and_our_header() -> None:
    token = parse_token(TRACKED.reply_token or "")
    assert token is not None and token.email_id == EMAIL
    assert TOKENS.signature_valid(token, TENANT, "inbound.acme.example")
    assert TRACKED.message_id == f"{token}@acme.example"
    assert TRACKED.reply_address == f"reply+{token}@inbound.acme.example"
    assert len(TRACKED.reply_address.split("@")[0]) == 63  # RFC 5321's 64 octets, with room
    message = build(draft())
    assert message["Message-ID"] == f"<{TRACKED.message_id}>"
    assert message["Reply-To"] == TRACKED.reply_address
    assert message["X-OpenSend-Reply-Token"] == str(token)


def test_untracked_message_has_a_plain_message_id_and_no_token() -> None:
    assert (PLAIN.reply_token, PLAIN.reply_address, PLAIN.thread_id) == (None, None, None)
    message = build(draft(), PLAIN)
    assert message["Message-ID"] == f"<{EMAIL}@acme.example>"
    assert message["Reply-To"] is None and message["X-OpenSend-Reply-Token"] is None


def test_header_fields_are_the_rfc_5322_set_with_no_bcc() -> None:
    message = build(draft(cc="cc@example.org", bcc=["hidden@example.com"]))
    assert list(message.keys())[:7] == [
        "From",
        "To",
        "Cc",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
    ]
    assert message["Date"] == "Sun, 22 Nov 2026 09:30:00 +0000"
    assert message["MIME-Version"] == "1.0"
    assert message["Bcc"] is None
    assert "hidden@example.com" not in message.as_string()


@pytest.mark.parametrize(
    ("text", "html", "structure"),
    [
        ("Hi\n", None, ["text/plain"]),
        (None, "<p>Hi</p>", ["text/html"]),
        ("Hi\n", "<p>Hi</p>", ["multipart/alternative", "text/plain", "text/html"]),
    ],
    ids=["text", "html", "both"],
)
def test_bodies_make_one_part_or_an_alternative_plainest_first(
    text: str | None, html: str | None, structure: list[str]
) -> None:
    message = build(draft(text=text, html=html))
    assert [p.get_content_type() for p in message.walk()] == structure


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("plain ascii\nlines\n", "7bit"),
        ("Grüße aus Köln\n", "quoted-printable"),
        ("x" * 2000 + "\n", "quoted-printable"),  # over 998 octets on one line
        ("nul\x00inside\n", "quoted-printable"),
        ("trailing space   \nand = sign\n", "7bit"),
    ],
    ids=["ascii", "utf8", "long_line", "nul", "spaces"],
)
def test_text_is_7bit_when_it_fits_else_quoted_printable(text: str, encoding: str) -> None:
    message = build(draft(text=text))
    assert message["Content-Transfer-Encoding"] == encoding
    assert text_of(message) == text


def test_bare_cr_and_lf_in_bodies_become_crlf() -> None:
    message = build(draft(text="one\rtwo\nthree\r\nfour", html="<p>a</p>\r<p>b</p>\n"))
    text, html = message.iter_parts()
    assert text_of(text) == "one\ntwo\nthree\nfour"
    assert text_of(html) == "<p>a</p>\n<p>b</p>\n"


def test_long_subject_is_folded_and_unfolds_to_itself() -> None:
    subject = "A fairly long subject line " * 8
    raw = compose(draft(subject=subject), TRACKED, NOW)
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    field = re.search(r"^Subject:.*?(?=\r\n\S)", head, re.S | re.M)
    assert field is not None
    assert all(len(line) <= 78 for line in field.group(0).split("\r\n"))
    assert build(draft(subject=subject))["Subject"] == subject
    assert fold("Subject", "short") == "Subject: short"


@pytest.mark.parametrize(
    "subject",
    ["Grüße – € 50 ✓", "looks like =?utf-8?q?an_encoded_word?= but is not", "日本語の件名" * 10],
    ids=["latin", "fake_encoded_word", "long_cjk"],
)
def test_non_ascii_or_tricky_subjects_survive_as_encoded_words(subject: str) -> None:
    assert build(draft(subject=subject))["Subject"] == subject


@pytest.mark.parametrize(
    "subject",
    ["x" * 998, "word " + "y" * 990, "z" * 989],
    ids=["one_word", "long_word", "just_fits"],
)
def test_a_word_too_long_for_one_line_is_encoded_so_no_line_passes_998(subject: str) -> None:
    """Folding happens only at white space (RFC 5322 section 2.1.1): "Subject: " and 998 octets
    of one word would be a line of 1,007. `build` checks every line."""
    assert build(draft(subject=subject))["Subject"] == subject


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("=?utf-8?b?Y2VvQGJhbmsuY29tIDxjZW9AYmFuay5jb20+?=", id="an_encoded_word"),
        pytest.param("Support =?utf-8?q?ceo=40bank.example?=", id="one_inside_a_phrase"),
        pytest.param("Acme Support Team " * 30, id="longer_than_a_line"),
    ],
)
def test_a_name_that_reads_as_an_encoded_word_or_is_very_long_is_encoded_as_it_is(
    name: str,
) -> None:
    """Written as given, "=?utf-8?b?...?=" would be shown decoded: "ceo@bank.com <ceo@bank.com>"
    on a message from our domain."""
    sent = draft(sender=f'"{name.strip()}" <support@acme.example>')
    message = build(sent)  # checks the lines and that it parses without defects
    assert message["From"].addresses[0].addr_spec == "support@acme.example"
    # Read from the bytes as written (the modern parser would re-encode what it decoded).
    as_written = message_from_bytes(compose(sent, TRACKED, NOW), EmailMessage, policy=compat32)
    assert display_name(as_written) == name.strip()


def test_long_non_ascii_name_is_several_encoded_words_of_at_most_75_characters() -> None:
    name = "Ünïcödé Cüstömer Sërvïcé Dëpärtmënt " * 3
    message = build(draft(sender=f"{name.strip()} <support@acme.example>"))
    raw = message_from_bytes(message.as_bytes(), policy=compat32)["From"]
    words = re.findall(r"=\?[^?]+\?b\?[^?]*\?=", raw)
    assert len(words) > 2 and all(len(w) <= 75 for w in words)
    assert display_name(message) == name.strip()


def test_display_names_are_quoted_or_encoded_as_needed() -> None:
    message = build(
        draft(
            sender='"Acme, Inc. \\"Support\\"" <support@acme.example>',
            to=["Zoë <zoe@example.net>", "<plain@example.net>", "Bob Smith <bob@example.org>"],
        )
    )
    assert message["From"].addresses[0].display_name == 'Acme, Inc. "Support"'
    names = [(a.display_name, a.addr_spec) for a in message["To"].addresses]
    assert names == [
        ("Zoë", "zoe@example.net"),
        ("", "plain@example.net"),
        ("Bob Smith", "bob@example.org"),
    ]


def test_many_recipients_fold_after_commas() -> None:
    to = [f"Recipient Number {i} <r{i}@example.net>" for i in range(20)]
    message = build(draft(to=to))
    assert len(message["To"].addresses) == 20


def test_inline_parts_go_with_the_html_in_related_and_files_in_mixed() -> None:
    d = draft(
        text="t",
        html='<img src="cid:logo">',
        attachments=[
            {"filename": "logo.png", "content": "iVBORw0KGgo=", "content_id": "logo"},
            {"filename": "a.txt", "content": "aGk="},
        ],
    )
    message = build(d)
    assert [p.get_content_type() for p in message.walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/png",
        "text/plain",
    ]
    related = next(p for p in message.walk() if p.get_content_type() == "multipart/related")
    assert related.get_param("type") == "text/html"


def test_inline_part_without_html_is_an_inline_attachment() -> None:
    message = build(
        draft(attachments=[{"filename": "x.png", "content": "aGk=", "content_id": "x"}])
    )
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "image/png"]
    assert parts[1].get_content_disposition() == "inline" and parts[1]["Content-ID"] == "<x>"


@pytest.mark.parametrize(
    "filename",
    ['quote " and back\\slash.dat', "Überweisung März.pdf", "名前" * 40 + ".pdf"],
    ids=["escapes", "latin", "long_rfc2231_sections"],
)
def test_attachment_filenames_survive(filename: str) -> None:
    message = build(draft(attachments=[{"filename": filename, "content": "aGk="}]))
    attachment = next(iter(message.iter_attachments()))
    assert attachment.get_filename() == filename
    assert attachment.get_content() == b"hi"


def test_a_boundary_found_in_a_part_is_replaced() -> None:
    seen = iter(["=_clash", "=_fresh"])
    d = EmailDraft(
        sender=Mailbox("", "a@acme.example", "a@acme.example"),
        to=(Mailbox("", "b@example.net", "b@example.net"),),
        cc=(),
        bcc=(),
        reply_to=(),
        subject="s",
        text="a line with =_clash in it\n",
        html="<p>x</p>",
        headers=(),
        attachments=(),
        tags=(),
        scheduled_at=None,
    )
    raw = compose(d, TRACKED, NOW, boundaries=lambda: next(seen))
    assert b'boundary="=_fresh"' in raw and b'boundary="=_clash"' not in raw


def test_callers_headers_are_written_folded() -> None:
    references = " ".join(f"<id{i}@example.net>" for i in range(12))
    message = build(draft(headers={"References": references, "X-Note": "Grüße"}))
    assert message["References"] == references
    assert message["X-Note"] == "Grüße"


def test_attachment_bytes_round_trip_exactly() -> None:
    blob = bytes(range(256)) * 40
    message = build(draft(attachments=[{"filename": "blob.bin", "content": list(blob)}]))
    attachment = next(iter(message.iter_attachments()))
    assert attachment.get_content_type() == "application/octet-stream"
    assert attachment.get_content() == blob


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


# White space at either end of a subject is folding white space to a reader (RFC 5322 3.2.2).
_LINE = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=200).map(str.strip)
# Python's address parser turns any Unicode space in a display name into ' ' when it reads
# one back; only the plain space is a fair test of ours.
_NAME = st.text(
    st.one_of(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), st.just(" ")),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(text=_TEXT, html=_TEXT, subject=_LINE, name=_NAME)
def test_any_text_builds_a_valid_message_that_reads_back(
    text: str, html: str, subject: str, name: str
) -> None:
    d = EmailDraft(
        sender=Mailbox(name.strip(), "support@acme.example", "support@acme.example"),
        to=(Mailbox("", "ann@example.net", "ann@example.net"),),
        cc=(),
        bcc=(),
        reply_to=(),
        subject=subject,
        text=text or None,
        html=html or None,
        headers=(),
        attachments=(),
        tags=(),
        scheduled_at=None,
    )
    message = build(d)
    assert message["Subject"] == d.subject
    assert display_name(message) == d.sender.name
    for subtype, sent in (("plain", d.text), ("html", d.html)):
        if sent is None:
            continue
        part = message.get_body((subtype,))
        assert part is not None
        expected = re.sub(r"\r\n|\r", "\n", sent)
        # A message of one part gains the final line end that SMTP needs.
        assert text_of(part) in (expected, expected + "\n")
