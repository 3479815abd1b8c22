"""Read what the matcher and the stored row need from a raw message, never refusing it.

Malformed MIME is stored raw with whatever could be read (DESIGN.md 7), so every step here is
tolerant. `compat32` is used on purpose: `email.policy.default` costs ~0.75 ms per message, which
alone would cap the MX near 1,000 messages/s; compat32 plus explicit decoding costs a fraction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from typing import Any

from policy.msgid import first_msg_id
from policy.text import clean_text


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int
    content_id: str | None
    disposition: str | None
    part: str  # position in the MIME tree, "1.2", for download by index

    def as_json(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "content_id": self.content_id,
            "content_disposition": self.disposition,
            "part": self.part,
        }


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    headers: list[tuple[str, str]]
    message_id: str | None
    in_reply_to: str | None
    references: str | None
    reply_token_header: str | None
    subject: str | None
    from_address: str | None
    from_name: str | None
    to: list[str]
    cc: list[str]
    reply_to: list[str]
    date: datetime | None
    auto_submitted: str | None
    received_count: int
    text: str | None
    html: str | None
    attachments: list[Attachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    # False for `scan_headers`' reading: the header fields the accept path needs, nothing of
    # the body, and no address lists, sender's name or Date (those are left empty).
    complete: bool = True


def decode_words(value: str | None) -> str | None:
    """RFC 2047 encoded-words into text; on any error, the raw value."""
    if value is None:
        return None
    decoded = value
    if "=?" in value:  # every encoded-word starts so (RFC 2047 section 2); most fields have none
        try:
            decoded = str(make_header(decode_header(value)))
        except (ValueError, LookupError, UnicodeError, AssertionError):
            decoded = value
    return clean_text(" ".join(decoded.split()))


def _addresses(values: list[str]) -> list[str]:
    return [clean_text(addr) for _name, addr in getaddresses(values) if "@" in addr]


def _payload_text(part: Message) -> str | None:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, "replace")
    except (LookupError, UnicodeError):  # an unknown charset, or one that cannot "replace"
        text = payload.decode("utf-8", "replace")
    return clean_text(text.replace("\r\n", "\n"))


# Deeper nesting than this is not mail but an attack on the parser; the raw message is kept.
MAX_MIME_DEPTH = 50

_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _walk(root: Message, out: dict[str, Any], defects: list[str]) -> None:
    """Collect the first text and html parts and every attachment, depth-first, iteratively."""
    stack: list[tuple[Message, str, int]] = [(root, "", 0)]
    while stack:
        part, index, depth = stack.pop()
        if part.is_multipart():
            children = part.get_payload()
            if depth >= MAX_MIME_DEPTH:
                defects.append("MimeTooDeep")
                continue
            if isinstance(children, list):
                numbered = [
                    (child, f"{index}.{n}" if index else str(n), depth + 1)
                    for n, child in enumerate(children, 1)
                    if isinstance(child, Message)
                ]
                stack.extend(reversed(numbered))
            continue
        _leaf(part, index, out)


def _leaf(part: Message, index: str, out: dict[str, Any]) -> None:
    content_type = part.get_content_type()
    disposition = part.get_content_disposition()
    filename = part.get_filename()
    if disposition != "attachment" and filename is None:
        if content_type == "text/plain" and out["text"] is None:
            out["text"] = _payload_text(part)
            return
        if content_type == "text/html" and out["html"] is None:
            out["html"] = _payload_text(part)
            return
    if content_type.startswith("text/") and disposition is None and filename is None:
        return  # further inline text parts are kept in the raw message only
    payload = part.get_payload(decode=True)
    raw_cid = part.get("Content-ID")
    content_id = clean_text(str(raw_cid)).strip().strip("<>") if raw_cid is not None else None
    out["attachments"].append(
        Attachment(
            filename=decode_words(clean_text(str(filename))) if filename else None,
            content_type=content_type,
            size=len(payload) if isinstance(payload, bytes) else 0,
            content_id=content_id or None,
            disposition=disposition,
            part=index or "1",
        )
    )


def _fields(message: Message) -> list[tuple[str, str]]:
    """Header fields as text, unfolded (RFC 5322 section 2.2.3).

    Raw values are read, not `message.get()`: compat32 turns 8-bit values into Header objects
    whose text loses the bytes, and raw UTF-8 headers are legitimate mail (RFC 6532).
    """
    return _unfolded(message.raw_items())


def _unfolded(items: Iterable[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [
        (clean_text(name), clean_text(_FOLD.sub("", str(value))).strip()) for name, value in items
    ]


# A field name as the standard parser takes it: printable US-ASCII but the colon (RFC 5322
# section 2.2, ftext), then the colon. Nothing before it, not even a space.
_FIELD_NAME = re.compile(r"[!-9;-~]+")


def scan_headers(raw: bytes) -> ParsedMessage | None:
    """The header fields of a message, without the standard parser: what the MX needs before
    its 250 when the body's parse is left for after the commit (mta/mx/fill_in.py).

    Only for the everyday header block, which the standard parser (compat32) reads exactly so:
    US-ASCII, CRLF line ends only, every line a `name:` field or a folded continuation, ended
    by an empty line. Anything else is None, and the caller parses in full.
    """
    end = raw.find(b"\r\n\r\n")
    if end <= 0 or not raw[:end].isascii():
        return None
    block = raw[:end].decode("ascii")
    if block.count("\n") != block.count("\r") or block.count("\r\n") != block.count("\n"):
        return None
    items: list[tuple[str, str]] = []
    for line in block.split("\r\n"):
        if line[:1] in (" ", "\t"):
            if not items:
                return None  # a continuation of nothing: the parser calls it a defect
            name, value = items[-1]
            items[-1] = (name, f"{value}\r\n{line}")  # unfolded below, as _fields does
            continue
        name, colon, value = line.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            return None
        items.append((name, value.lstrip(" \t")))
    try:
        return _header_facts(_unfolded(items), [], complete=False)
    except Exception:  # the full parse describes what this could not
        return None


# A From field that is an address alone, `local@domain` or `<local@domain>`, with dot-atoms on
# both sides (RFC 5322 section 3.4.1): what parseaddr returns for it is the address itself.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"<?({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>?")


def _name_and_address(value: str) -> tuple[str, str]:
    """email.utils.parseaddr, read at once for the everyday bare address."""
    plain = _PLAIN_ADDRESS.fullmatch(value)
    if plain is not None and value.startswith("<") == value.endswith(">"):
        return "", plain.group(1)
    return parseaddr(value)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        date = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # RFC 5322 3.3 "-0000": no zone known, so no instant either; do not guess.
    return date if date.tzinfo is not None else None


# RFC 5322 section 2.1.1: no line exceeds 998 characters, so no valid msg-id does either. A
# longer one is hostile or broken; it is kept in the raw message and the headers, not indexed.
MAX_MESSAGE_ID_LENGTH = 998


def _message_id(value: str | None, defects: list[str]) -> str | None:
    # The id itself, not the field: an ISP may add a comment after it (RFC 5322 section 3.6.4
    # allows CFWS around msg-id), and a reply names the id alone.
    message_id = first_msg_id(value)
    if message_id is None:
        return None
    if len(message_id) > MAX_MESSAGE_ID_LENGTH:
        defects.append("MessageIdTooLong")
        return None
    return message_id


def parse_message(raw: bytes) -> ParsedMessage:
    """Never raises: a message the parser cannot read is described by its defects instead."""
    defects: list[str] = []
    try:
        message = message_from_bytes(raw, policy=compat32)
    except RecursionError:
        # The standard parser recurses per MIME level; read the header block only.
        defects.append("MimeTooDeep")
        message = BytesParser(policy=compat32).parsebytes(raw, headersonly=True)
    except Exception as error:  # the last line of defence: a parser bug must not lose mail
        return _unparseable(type(error).__name__)
    try:
        return _describe(message, defects)
    except Exception as error:
        return _unparseable(type(error).__name__)


def _unparseable(reason: str) -> ParsedMessage:
    return ParsedMessage(
        headers=[],
        message_id=None,
        in_reply_to=None,
        references=None,
        reply_token_header=None,
        subject=None,
        from_address=None,
        from_name=None,
        to=[],
        cc=[],
        reply_to=[],
        date=None,
        auto_submitted=None,
        received_count=0,
        text=None,
        html=None,
        attachments=[],
        defects=[f"Unparseable:{reason}"],
    )


def _describe(message: Message, defects: list[str]) -> ParsedMessage:
    headers = _fields(message)
    body: dict[str, Any] = {"text": None, "html": None, "attachments": []}
    try:
        _walk(message, body, defects)
    except (LookupError, ValueError, AssertionError, UnicodeError) as error:
        defects.append(type(error).__name__)
    # The parser's own defects first, then ours (the Message-ID's is added by _header_facts).
    every_defect = [type(d).__name__ for d in message.defects] + defects
    return _header_facts(headers, every_defect, complete=True, body=body)


def _header_facts(
    headers: list[tuple[str, str]],
    defects: list[str],
    *,
    complete: bool,
    body: dict[str, Any] | None = None,
) -> ParsedMessage:
    """What the header fields say, with the `body` the full parse found. Incomplete: the
    fields the accept path reads, and empty address lists, sender's name, Date and body."""
    by_name: dict[str, list[str]] = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(value)

    def first(name: str) -> str | None:
        values = by_name.get(name)
        return values[0] if values else None

    def every(name: str) -> list[str]:
        return by_name.get(name, [])

    from_name, from_address = _name_and_address(first("from") or "")
    return ParsedMessage(
        headers=headers,
        message_id=_message_id(first("message-id"), defects),
        in_reply_to=first("in-reply-to"),
        references=first("references"),
        reply_token_header=first("x-opensend-reply-token"),
        subject=decode_words(first("subject")),
        from_address=clean_text(from_address) if "@" in from_address else None,
        from_name=(decode_words(from_name) or None) if complete else None,
        to=_addresses(every("to")) if complete else [],
        cc=_addresses(every("cc")) if complete else [],
        reply_to=_addresses(every("reply-to")) if complete else [],
        date=_date(first("date")) if complete else None,
        auto_submitted=first("auto-submitted"),
        received_count=len(every("received")),
        text=body["text"] if body else None,
        html=body["html"] if body else None,
        attachments=body["attachments"] if body else [],
        defects=defects,
        complete=complete,
    )
