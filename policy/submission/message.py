"""Message submission (RFC 6409): what a logged-in client may send, and the copy we deliver.

The sender checks are the sending API's (`policy.sending.request.check_sender`), applied to the
envelope sender at MAIL FROM and to the From: field after DATA, each rendered as an SMTP reply.
`submitted_email` keeps the client's message as written, tracked like an API send: the trace
field on top, the reply address as Reply-To unless the client chose one, our reply token, a
Message-ID and Date only where the client gave none (RFC 6409 section 8), and no Bcc field.
Pure functions: the domains are looked up by the caller and passed in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, getaddresses
from typing import Any
from uuid import UUID

from policy import replies
from policy.inbound.message import ParsedMessage, decode_words
from policy.replies import Reply
from policy.sending.compose import Tracking
from policy.sending.fields import Mailbox, Refusal, valid_address
from policy.sending.request import SenderDomain, check_sender

CRLF = b"\r\n"
# Header fields the server owns in the delivered copy: a Bcc or Resent-Bcc field would show the
# blind recipients to everyone (RFC 5322 sections 3.6.3 and 3.6.6), and X-OpenSend- fields carry
# our token.
_DROPPED = (b"bcc", b"resent-bcc")
_OWNED_PREFIX = b"x-opensend-"


@dataclass(frozen=True, slots=True)
class SenderVerdict:
    reply: Reply
    domain: SenderDomain | None  # the verified domain, when accepted
    reason: str  # internal: for logs and the metrics label, never shown to the client

    @property
    def accepted(self) -> bool:
        return self.domain is not None


def envelope_sender(address: str) -> Mailbox | None:
    """The MAIL FROM address as a mailbox; None for the null path or a malformed address.

    The null reverse-path (RFC 5321 section 4.5.5) is for bounces, which an MTA sends, not a
    client; and the sender's domain must be known to sign the message (RFC 6376)."""
    if address in ("", "<>") or not valid_address(address):
        return None
    return Mailbox("", address, address)


@dataclass(frozen=True, slots=True)
class _Refusals:
    """The replies of one sender check: no usable address, a key limited to another domain,
    a domain that is not a verified one of the account."""

    no_address: Reply
    key_domain: Reply
    unverified_domain: Reply


_ENVELOPE_SENDER = _Refusals(
    replies.S553_SENDER_NOT_ALLOWED,
    replies.S553_SENDER_KEY_DOMAIN,
    replies.S553_SENDER_UNVERIFIED_DOMAIN,
)
_FROM_FIELD = _Refusals(
    replies.S553_FROM_NOT_ALLOWED, replies.S553_FROM_KEY_DOMAIN, replies.S553_FROM_UNVERIFIED_DOMAIN
)


def _judge(
    mailbox: Mailbox | None,
    found: SenderDomain | None,
    key_domain_id: UUID | None,
    refusals: _Refusals,
) -> SenderVerdict:
    if mailbox is None:
        return SenderVerdict(refusals.no_address, None, "no_address")
    try:
        domain = check_sender(mailbox, found, key_domain_id)
    except Refusal:
        if found is not None and found.sendable:  # the domain is fine; the key is limited
            reply = refusals.key_domain.format(domain=mailbox.domain)
            return SenderVerdict(reply, None, "key_domain")
        reply = refusals.unverified_domain.format(domain=mailbox.domain)
        return SenderVerdict(reply, None, "unverified_domain")
    return SenderVerdict(replies.S250_SENDER_OK, domain, "verified_domain")


def judge_envelope_sender(
    mailbox: Mailbox | None, found: SenderDomain | None, key_domain_id: UUID | None
) -> SenderVerdict:
    """MAIL FROM must be on a verified domain of the account (and of a domain-limited key)."""
    return _judge(mailbox, found, key_domain_id, _ENVELOPE_SENDER)


def from_mailbox(parsed: ParsedMessage) -> Mailbox | None:
    """The one author of the message (RFC 5322 section 3.6.2); None when the message has no
    From: field, several, or one naming several mailboxes (which would need a Sender: field
    whose domain we would have to check too)."""
    values = [value for name, value in parsed.headers if name.lower() == "from"]
    if len(values) != 1:
        return None
    found = [(name, address) for name, address in getaddresses(values) if address]
    if len(found) != 1 or not valid_address(found[0][1]):
        return None
    name, address = found[0]
    return Mailbox(decode_words(name) or "", address, decode_words(values[0]) or address)


def judge_from(
    mailbox: Mailbox | None, found: SenderDomain | None, key_domain_id: UUID | None
) -> SenderVerdict:
    """The From: field, checked as MAIL FROM is: recipients see it, and DMARC aligns with it."""
    return _judge(mailbox, found, key_domain_id, _FROM_FIELD)


def recipient_reply(address: str, accepted: Sequence[str], limit: int) -> Reply:
    """Any domain may be a recipient's once the client has logged in; the address must be one
    the delivery can use (the sending API's rule) and the transaction within the MX's limit."""
    if len(accepted) >= limit:
        return replies.S452_TOO_MANY_RECIPIENTS
    if not valid_address(address):
        return replies.S501_SYNTAX_ADDRESS
    return replies.S250_RECIPIENT_OK


def add_recipient(address: str, accepted: list[str]) -> None:
    """An address given twice (in any case) is delivered once."""
    if address.lower() not in {known.lower() for known in accepted}:
        accepted.append(address)


# -- the delivered copy ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubmittedEmail:
    """The client's message as we store and deliver it, with what GET /emails shows of it."""

    raw: bytes
    message_id: str  # without angle brackets
    from_header: str
    to: list[str]
    cc: list[str]
    bcc: list[str]  # envelope recipients named in neither To nor Cc
    reply_to: list[str]
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str]
    attachments: list[dict[str, Any]]


def header_fields(raw: bytes) -> tuple[list[bytes], bytes]:
    """The header fields (each with its folded lines and CRLFs) and the rest: the blank line
    and the body, byte for byte (RFC 5322 sections 2.1 and 2.2.3)."""
    if raw.startswith(CRLF):
        return [], raw
    end = raw.find(b"\r\n\r\n")
    head, rest = (raw, b"") if end < 0 else (raw[: end + 2], raw[end + 2 :])
    fields: list[bytes] = []
    for line in head.split(CRLF)[:-1] if head.endswith(CRLF) else head.split(CRLF):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line + CRLF
        else:
            fields.append(line + CRLF)
    return fields, rest


# RFC 5322 sections 2.2 and 3.6.8: a field name is printable US-ASCII but ":", then the colon.
_FIELD_NAME = re.compile(rb"[!-9;-~]+:")


def malformed_field(raw: bytes) -> bool:
    """Whether a header line is not `name:` as RFC 5322 writes it.

    The obsolete "From :" (section 4.5) is still read as a From field by some receivers while
    Python's parser ends the header block there: the two views of one message would then
    disagree on its author, so a submitted message must use the one syntax they share."""
    fields, _rest = header_fields(raw)
    return any(_FIELD_NAME.match(field) is None for field in fields)


def _name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def _kept(name: bytes, replace_message_id: bool) -> bool:
    if name in _DROPPED or name.startswith(_OWNED_PREFIX):
        return False
    return not (replace_message_id and name == b"message-id")


def submitted_email(
    raw: bytes,
    parsed: ParsedMessage,
    tracking: Tracking,
    *,
    author: Mailbox,
    envelope: Sequence[str],
    trace: str,
    date: datetime,
) -> SubmittedEmail:
    """The copy to store and deliver; `trace` is our Received field (RFC 5321 section 4.4)."""
    fields, rest = header_fields(raw)
    names = [_name(field) for field in fields]
    # A Message-ID the parser could not read (over 998 octets) is replaced, not doubled.
    message_id = parsed.message_id or tracking.message_id
    replace_id = parsed.message_id is None
    kept = [field for field, name in zip(fields, names, strict=True) if _kept(name, replace_id)]
    added: list[str] = []
    if b"date" not in names:
        added.append(f"Date: {format_datetime(date)}")  # RFC 6409 section 8.2
    if replace_id:
        added.append(f"Message-ID: <{message_id}>")  # RFC 6409 section 8.3
    if b"reply-to" not in names and tracking.reply_address is not None:
        added.append(f"Reply-To: {tracking.reply_address}")  # the client's own wins
    if tracking.reply_token is not None:
        added.append(f"X-OpenSend-Reply-Token: {tracking.reply_token}")
    head = trace.encode() + CRLF + b"".join(kept) + "".join(f"{a}\r\n" for a in added).encode()
    shown = {address.lower() for address in (*parsed.to, *parsed.cc)}
    threading = {"In-Reply-To": parsed.in_reply_to, "References": parsed.references}
    return SubmittedEmail(
        raw=head + rest,
        message_id=message_id,
        from_header=author.given,
        to=list(parsed.to),
        cc=list(parsed.cc),
        bcc=[address for address in envelope if address.lower() not in shown],
        reply_to=list(parsed.reply_to),
        subject=parsed.subject or "",
        text=parsed.text,
        html=parsed.html,
        headers={name: value for name, value in threading.items() if value},
        attachments=[
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "content_id": a.content_id,
            }
            for a in parsed.attachments
        ],
    )
