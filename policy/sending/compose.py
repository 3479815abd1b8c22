"""The outbound message, built once: RFC 5322 header fields and a MIME body (RFC 2045-2047).

`mint_tracking` decides the reply-tracking identity of a message (DESIGN.md section 4);
`compose` writes the message as bytes with CRLF line endings, ready to sign and deliver.

Why not `EmailMessage.as_bytes()`: with the modern policy it re-parses every header it folds
and costs about 1.2 ms for a two-part message, more than all the rest of a POST /emails (this
module takes some 25 us). The standard library still does the encodings: RFC 2231 parameters
(`email.utils.encode_rfc2231`), quoted-printable (`binascii.b2a_qp`), base64 and the date
(`email.utils.format_datetime`). The tests parse every message built here back with the email
package's strictest policy (`email.policy.default`) to hold it to the standards.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import encode_rfc2231
from uuid import UUID

from policy.dates import rfc5322_date
from policy.sending.fields import Attachment, Mailbox
from policy.sending.request import EmailDraft
from policy.tokens import ReplyTokens

CRLF = "\r\n"
MAX_LINE = 78  # RFC 5322 section 2.1.1: SHOULD; 998 is the MUST
MAX_OCTETS = 998  # RFC 5322 section 2.1.1: no line longer, CRLF aside
# A display name longer than this is written as encoded-words, which fold; a quoted-string
# or atoms would stand on one line, which a long enough name would take past MAX_OCTETS.
LONGEST_PLAIN_NAME = 200
_BREAKS = re.compile(r"\r\n|\r|\n")
# Atoms separated by single spaces (RFC 5322 section 3.2.3): written as they are.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PHRASE = re.compile(rf"{_ATOM}(?: {_ATOM})*")


@dataclass(frozen=True, slots=True)
class Tracking:
    """A message's identity: Message-ID always; the rest only when replies are tracked."""

    message_id: str  # without angle brackets
    thread_id: UUID | None
    reply_token: str | None
    reply_address: str | None
    reply_domain: str | None


def mint_tracking(
    tokens: ReplyTokens,
    *,
    tenant_id: UUID,
    email_id: UUID,
    sending_domain: str,
    reply_domain: str | None,
    thread_id: UUID,
) -> Tracking:
    """DESIGN.md 4: with receiving on, a token travels in Message-ID, Reply-To and our header.

    `reply_domain` is None for a domain without receiving: a plain `<uuid@domain>` Message-ID.
    """
    domain = sending_domain.lower()
    if reply_domain is None:
        return Tracking(f"{email_id}@{domain}", None, None, None, None)
    token = tokens.mint(tenant_id, email_id, reply_domain)
    return Tracking(
        message_id=f"{token}@{domain}",
        thread_id=thread_id,
        reply_token=str(token),
        reply_address=token.address(reply_domain),
        reply_domain=reply_domain.lower(),
    )


# -- header fields -----------------------------------------------------------------------------


def encoded_words(text: str, room: int = 75) -> str:
    """RFC 2047 "B" encoded-words of UTF-8, each at most 75 characters (section 2), the first
    at most `room`, split between characters, never inside one (section 5). Spaces stay inside
    the words: the folding white space between two encoded-words is not part of the text
    (section 6.2), which is why `email.header.Header`, which folds at spaces, is not used."""
    words: list[str] = []
    chunk, size, limit = "", 0, max(1, (room - 12) // 4) * 3  # 12: "=?utf-8?b?" "?="
    for char in text:
        width = len(char.encode())
        if chunk and size + width > limit:
            words.append(chunk)
            chunk, size, limit = "", 0, 45  # 60 base64 characters: a 72-character word
        chunk += char
        size += width
    words.append(chunk)
    return f"{CRLF} ".join(f"=?utf-8?b?{base64.b64encode(w.encode()).decode()}?=" for w in words)


def fold(name: str, value: str) -> str:
    """`Name: value` folded at spaces to 78 columns; non-ASCII as RFC 2047 encoded-words, and
    so is text with a word too long for one line (RFC 5322 section 2.1.1: folding happens only
    at white space, and no line may pass 998 octets) or that looks like an encoded-word."""
    room = MAX_OCTETS - len(name) - 2
    if not value.isascii() or "=?" in value or any(len(w) > room for w in value.split(" ")):
        return f"{name}: {encoded_words(value, MAX_LINE - len(name) - 2)}"
    lines: list[str] = []
    current = f"{name}:"
    for word in value.split(" "):
        # Fold only before a space that has a word after it: a line of nothing but white
        # space is not allowed in a folded field (RFC 5322 section 3.2.2).
        if word and len(current) + 1 + len(word) > MAX_LINE and current != f"{name}:":
            lines.append(current)
            current = ""
        current += " " + word
    lines.append(current)
    return CRLF.join(lines)


def mailbox_text(box: Mailbox) -> str:
    """`name <address>`: the name as atoms, else a quoted-string (which also keeps runs of
    spaces), else RFC 2047 encoded-words (RFC 5322 section 3.2.5, RFC 2047 section 5)."""
    if not box.name:
        return box.address
    if "=?" in box.name or len(box.name) > LONGEST_PLAIN_NAME:
        # A name that reads as an encoded-word would be shown decoded (RFC 2047 section 6.1),
        # as whatever it says: "=?utf-8?b?...?= <support@ours>" can show "ceo@bank.example".
        return f"{encoded_words(box.name)} <{box.address}>"
    if _PLAIN_PHRASE.fullmatch(box.name):
        return f"{box.name} <{box.address}>"
    if box.name.isascii():
        escaped = box.name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{box.address}>'
    return f"{encoded_words(box.name)} <{box.address}>"


def address_field(name: str, boxes: Sequence[Mailbox]) -> str:
    """An address list folded after its commas (RFC 5322 sections 3.4 and 3.2.2)."""
    lines: list[str] = []
    current = f"{name}:"
    for i, box in enumerate(boxes):
        item = mailbox_text(box) + ("," if i < len(boxes) - 1 else "")
        if len(current) + 1 + len(item) > MAX_LINE and current != f"{name}:":
            lines.append(current)
            current = ""
        current += " " + item
    lines.append(current)
    return CRLF.join(lines)


# -- MIME parts --------------------------------------------------------------------------------

# Characters that keep a text out of 7bit even when it is ASCII (RFC 2045 section 2.7).
_NOT_7BIT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Part:
    headers: str  # header fields, CRLF-separated, no final CRLF
    body: bytes  # CRLF line endings


def quoted_printable(data: bytes) -> bytes:
    """Text as quoted-printable, CRLF line ends. b2a_qp with istext: 76-column soft breaks,
    trailing white space, '=' and controls escaped (RFC 2045 section 6.7). Lines (ended by
    CRLF, CR or LF) are joined with LF for it, then widened to CRLF."""
    lines = re.split(rb"\r\n|\r|\n", data)
    return binascii.b2a_qp(b"\n".join(lines), istext=True).replace(b"\n", b"\r\n")


def base64_lines(data: bytes) -> bytes:
    """Base64 in 76-character lines, CRLF between them (RFC 2045 section 6.8), none after."""
    return base64.encodebytes(data).replace(b"\n", b"\r\n").removesuffix(b"\r\n")


def text_part(text: str, subtype: str) -> Part:
    """UTF-8 text, 7bit when it already fits SMTP (RFC 5322 2.1.1), else quoted-printable."""
    lines = _BREAKS.split(text)
    fits = len(text) <= 998 or max(map(len, lines)) <= 998  # RFC 5322 2.1.1's line limit
    if fits and text.isascii() and not _NOT_7BIT.search(text):
        encoding, body = "7bit", CRLF.join(lines).encode("ascii")
    else:
        encoding, body = "quoted-printable", quoted_printable("\n".join(lines).encode("utf-8"))
    headers = f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
    return Part(headers + f"Content-Transfer-Encoding: {encoding}", body)


def parameter(name: str, value: str) -> str:
    """`; name="value"` on a folded line; non-ASCII per RFC 2231, in sections when long."""
    if value.isascii():
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f';{CRLF} {name}="{escaped}"'
    encoded = encode_rfc2231(value, "utf-8")
    if len(encoded) <= 64:
        return f";{CRLF} {name}*={encoded}"
    sections: list[str] = []
    while encoded:
        cut = min(64, len(encoded))
        while cut < len(encoded) and "%" in encoded[cut - 2 : cut]:
            cut -= 1  # never split a %XX octet (RFC 2231 section 3)
        sections.append(encoded[:cut])
        encoded = encoded[cut:]
    return "".join(f";{CRLF} {name}*{i}*={text}" for i, text in enumerate(sections))


def attachment_part(attachment: Attachment, inline: bool) -> Part:
    disposition = "inline" if inline else "attachment"
    headers = [
        f"Content-Type: {attachment.content_type}{parameter('name', attachment.filename)}",
        f"Content-Disposition: {disposition}{parameter('filename', attachment.filename)}",
        "Content-Transfer-Encoding: base64",
    ]
    if attachment.content_id is not None:
        headers.append(f"Content-ID: <{attachment.content_id}>")  # RFC 2392
    return Part(CRLF.join(headers), base64_lines(attachment.content))


def multipart(
    subtype: str, parts: Sequence[Part], boundaries: Callable[[], str], extra: str = ""
) -> Part:
    """RFC 2046 section 5.1.1, with a boundary that occurs in none of the parts."""
    boundary = boundaries()
    while any(boundary.encode() in part.body for part in parts):
        boundary = boundaries()
    delimiter = f"--{boundary}".encode()
    chunks: list[bytes] = []
    for part in parts:
        chunks += [delimiter, part.headers.encode("ascii"), b"", part.body]
    chunks.append(delimiter + b"--")
    headers = f'Content-Type: multipart/{subtype};{CRLF} boundary="{boundary}"{extra}'
    return Part(headers, b"\r\n".join(chunks))


def new_boundary() -> str:
    # "=_" never occurs in quoted-printable or base64, and 96 random bits make a clash with a
    # 7bit text part as good as impossible; `multipart` checks anyway, so the boundary need not
    # be unguessable: Python's generator, not a system call per message (tests/perf/README.md).
    return f"=_os_{random.getrandbits(96):024x}"


def body_part(draft: EmailDraft, boundaries: Callable[[], str]) -> Part:
    """text and html as multipart/alternative (RFC 2046 5.1.4, plainest first); inline
    attachments with the HTML as multipart/related (RFC 2387); the others in multipart/mixed."""
    has_html = draft.html is not None
    inline = [a for a in draft.attachments if a.content_id is not None and has_html]
    attached = [a for a in draft.attachments if a.content_id is None or not has_html]
    html: Part | None = None
    if draft.html is not None:
        html = text_part(draft.html, "html")
        if inline:
            parts = [html, *(attachment_part(a, True) for a in inline)]
            html = multipart("related", parts, boundaries, f';{CRLF} type="text/html"')
    text = text_part(draft.text, "plain") if draft.text is not None else None
    if text is not None and html is not None:
        body = multipart("alternative", [text, html], boundaries)
    else:
        body = text or html or text_part("", "plain")
    if attached:
        parts = [body, *(attachment_part(a, a.content_id is not None) for a in attached)]
        body = multipart("mixed", parts, boundaries)
    return body


def compose(
    draft: EmailDraft,
    tracking: Tracking,
    date: datetime,
    *,
    boundaries: Callable[[], str] = new_boundary,
) -> bytes:
    """The message as delivered, less the DKIM-Signature the delivery worker adds. No Bcc
    field: blind recipients exist only in the envelope (RFC 5322 section 3.6.3)."""
    reply_to = draft.reply_to
    if not reply_to and tracking.reply_address is not None:
        reply_to = (Mailbox("", tracking.reply_address, tracking.reply_address),)
    fields = [address_field("From", [draft.sender])]
    if draft.to:
        fields.append(address_field("To", draft.to))
    if draft.cc:
        fields.append(address_field("Cc", draft.cc))
    if reply_to:
        fields.append(address_field("Reply-To", reply_to))
    fields += [
        fold("Subject", draft.subject),
        f"Date: {rfc5322_date(date)}",  # RFC 5322 section 3.3
        f"Message-ID: <{tracking.message_id}>",
    ]
    if tracking.reply_token is not None:
        fields.append(f"X-OpenSend-Reply-Token: {tracking.reply_token}")
    fields += [fold(name, value) for name, value in draft.headers]
    body = body_part(draft, boundaries)
    head = CRLF.join([*fields, "MIME-Version: 1.0", body.headers])
    # SMTP carries lines: the message ends with CRLF (RFC 5321 section 4.1.1.4), once.
    end = b"" if body.body.endswith(b"\r\n") else b"\r\n"
    return head.encode("ascii") + b"\r\n\r\n" + body.body + end
