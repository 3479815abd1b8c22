"""Read what the matcher and the stored row need from a raw message, never refusing it.

Malformed MIME is stored raw with whatever could be read (DESIGN.md 7), so every step here is
tolerant. `compat32` is used on purpose: `email.policy.default` costs ~0.75 ms per message, which
alone would cap the MX near 1,000 messages/s; compat32 plus explicit decoding costs a fraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from typing import Any


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


def clean_text(value: str) -> str:
    """Text PostgreSQL can store: undecodable bytes become U+FFFD, NUL is dropped."""
    if any("\udc80" <= c <= "\udcff" for c in value):
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value.replace("\x00", "")


def decode_words(value: str | None) -> str | None:
    """RFC 2047 encoded-words into text; on any error, the raw value."""
    if value is None:
        return None
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
    except LookupError:  # an unknown charset name
        text = payload.decode("utf-8", "replace")
    return clean_text(text.replace("\r\n", "\n"))


def _walk(part: Message, index: str, out: dict[str, Any]) -> None:
    if part.is_multipart():
        children = part.get_payload()
        if isinstance(children, list):
            for number, child in enumerate(children, 1):
                if isinstance(child, Message):
                    _walk(child, f"{index}.{number}" if index else str(number), out)
        return
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
    content_id = part.get("Content-ID")
    out["attachments"].append(
        Attachment(
            filename=decode_words(filename) if filename else None,
            content_type=content_type,
            size=len(payload) if isinstance(payload, bytes) else 0,
            content_id=content_id.strip().strip("<>") if content_id else None,
            disposition=disposition,
            part=index or "1",
        )
    )


def parse_message(raw: bytes) -> ParsedMessage:
    message = message_from_bytes(raw, policy=compat32)
    headers = [(clean_text(k), clean_text(str(v))) for k, v in message.items()]

    def first(name: str) -> str | None:
        value = message.get(name)
        return clean_text(str(value)) if value is not None else None

    def every(name: str) -> list[str]:
        return [clean_text(str(v)) for v in message.get_all(name, [])]

    from_name, from_address = parseaddr(first("From") or "")
    date: datetime | None = None
    date_header = first("Date")
    if date_header:
        try:
            date = parsedate_to_datetime(date_header)
            if date.tzinfo is None:
                date = None  # RFC 5322 3.3 "-0000": no zone known, do not guess
        except (TypeError, ValueError, IndexError):
            date = None

    body: dict[str, Any] = {"text": None, "html": None, "attachments": []}
    try:
        _walk(message, "", body)
    except (LookupError, ValueError, AssertionError) as error:
        message.defects.append(error)  # type: ignore[arg-type]

    message_id = first("Message-ID")
    return ParsedMessage(
        headers=headers,
        message_id=(message_id.strip().strip("<>").strip() or None) if message_id else None,
        in_reply_to=first("In-Reply-To"),
        references=first("References"),
        reply_token_header=first("X-OpenSend-Reply-Token"),
        subject=decode_words(first("Subject")),
        from_address=clean_text(from_address) if "@" in from_address else None,
        from_name=decode_words(from_name) or None,
        to=_addresses(every("To")),
        cc=_addresses(every("Cc")),
        reply_to=_addresses(every("Reply-To")),
        date=date,
        auto_submitted=first("Auto-Submitted"),
        received_count=len(message.get_all("Received", [])),
        text=body["text"],
        html=body["html"],
        attachments=body["attachments"],
        defects=[type(d).__name__ for d in message.defects],
    )
