"""What a reply to a received email says: its threading headers, subject, recipients and quote.

Pure functions over the original's stored fields; `api.sending.replies` feeds the result to the same
send pipeline as POST /emails. Refusals are `ReplyRefusal`s carrying Inbound's exact texts.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from enum import StrEnum
from typing import Any

from policy.msgid import MAX_FIELD_CHARS, first_msg_ids, msg_ids, newest_msg_ids
from policy.sending.fields import MAX_MAILBOX_CHARS, too_many_addresses, valid_address

# RFC 5322 section 3.6.4: msg-id is "<" id-left "@" id-right ">". Ids that do not have this
# shape (some old clients write them) cannot be repeated in our References field, which
# policy.sending.fields holds to the same shape.
_BARE_MSG_ID = re.compile(r"[^<>\s@]+@[^<>\s@]+")
# "Re:", "RE :", "re:" and the like already mark a reply (RFC 5322 section 3.6.5 suggests
# "Re: " once); "Aw:"/"Sv:" and other languages' markers are left alone.
_REPLY_PREFIX = re.compile(r"\s*re\s*:", re.IGNORECASE)
_NAME_ADDR = re.compile(r"(?s)(.*?)\s*<([^<>]*)>\s*")
_BODY = re.compile(r"(?is)<body\b[^>]*>(.*)</body\s*>")
_TAGS = re.compile(r"(?s)<[^>]*>")
_BREAKS = re.compile(r"\r\n|\r|\n")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MAX_SUBJECT = 998  # one unfolded line (RFC 5322 section 2.1.1), as policy.sending.request allows

# A References field must stay one sane header line: under 998 octets unfolded (the limit
# policy.sending.fields applies to every caller header, RFC 5322 section 2.1.1) and at most
# this many ids. RFC 5322 section 3.6.4 lets a long list be trimmed; the first id (the
# conversation's root) and the most recent ones are what threading clients use.
MAX_REFERENCES = 20
MAX_REFERENCES_OCTETS = 998 - len("References: ")


class Refused(StrEnum):
    """Which row of Inbound's error table a refusal is."""

    FROM_REQUIRED = "From address is required"
    CONTENT_REQUIRED = "Either html or text content must be provided"
    NO_RECIPIENT = "Cannot determine recipient email address"
    INVALID_ADDRESS = "Invalid email format: "
    INVALID_FIELD = "invalid field"  # not in the table: a field of the wrong type or shape


class ReplyRefusal(Exception):
    def __init__(self, reason: Refused, detail: str = "") -> None:
        message = reason.value + detail if reason is Refused.INVALID_ADDRESS else detail
        super().__init__(message or reason.value)
        self.reason = reason
        self.message = message or reason.value


@dataclass(frozen=True, slots=True)
class Original:
    """The received email being answered, as storage.inbound.received has it."""

    message_id: str | None  # without angle brackets
    references: str | None  # the field as received
    subject: str | None
    from_address: str | None
    from_name: str | None
    reply_to_addresses: Sequence[str]
    date: datetime  # its Date field, else when we received it
    text: str | None
    html: str | None


# -- the request's fields, both spellings -------------------------------------------------------

# Inbound takes snake_case (legacy) and camelCase (Resend's); the first found wins, in this order.
DUAL_NAMES: Mapping[str, tuple[str, ...]] = {
    "from_name": ("from_name", "fromName"),
    "reply_to": ("reply_to", "replyTo"),
    "include_original": ("include_original", "includeOriginal"),
}


def field(body: Mapping[str, Any], name: str) -> Any:
    for spelling in DUAL_NAMES.get(name, (name,)):
        if body.get(spelling) is not None:
            return body[spelling]
    return None


def flag(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = field(body, name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ReplyRefusal(Refused.INVALID_FIELD, f"`{name}` must be true or false.")
    return value


def addresses(value: Any, name: str) -> list[str]:
    """A string or a list of strings, each `email@domain` or `Name <email@domain>`."""
    if value is None or value == "":
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ReplyRefusal(
            Refused.INVALID_FIELD, f"`{name}` must be a string or a list of strings."
        )
    too_many = too_many_addresses(name, len(items))
    if too_many is not None:
        raise ReplyRefusal(Refused.INVALID_FIELD, too_many)
    if not all(isinstance(item, str) for item in items):
        raise ReplyRefusal(
            Refused.INVALID_FIELD, f"`{name}` must be a string or a list of strings."
        )
    for item in items:
        address_of(item)
    return [item.strip() for item in items]


def address_of(given: str) -> str:
    """The addr-spec of a mailbox, or Inbound's "Invalid email format: <given>"."""
    if len(given) > MAX_MAILBOX_CHARS:  # before the lazy pattern, which long runs make slow
        raise ReplyRefusal(Refused.INVALID_ADDRESS, given[:100] + "...")
    found = _NAME_ADDR.fullmatch(given)
    address = found.group(2).strip() if found else given.strip()
    if not valid_address(address):
        raise ReplyRefusal(Refused.INVALID_ADDRESS, given)
    return address


def sender(body: Mapping[str, Any]) -> str:
    """The From mailbox: `from`, with `from_name` replacing its display name when given."""
    given = body.get("from")
    if given is None or given == "":
        raise ReplyRefusal(Refused.FROM_REQUIRED)
    if not isinstance(given, str):
        raise ReplyRefusal(Refused.INVALID_FIELD, "`from` must be a string.")
    address = address_of(given)
    name = field(body, "from_name")
    if name is None or name == "":
        return given.strip()
    if not isinstance(name, str):
        raise ReplyRefusal(Refused.INVALID_FIELD, "`from_name` must be a string.")
    # A quoted-string always (RFC 5322 section 3.2.4): a name may hold specials such as "," or ".".
    escaped = name.strip().replace("\\", "\\\\").replace('"', '\\"')
    mailbox = f'"{escaped}" <{address}>'
    if len(mailbox) > MAX_MAILBOX_CHARS:
        raise ReplyRefusal(
            Refused.INVALID_FIELD,
            f"`from_name` is too long: with `from`, it must fit in {MAX_MAILBOX_CHARS} characters.",
        )
    return mailbox


# -- threading (RFC 5322 section 3.6.4) ---------------------------------------------------------


def message_ids(field_text: str | None) -> list[str]:
    """The msg-ids of an In-Reply-To or References field, without brackets, in order; only
    those our own References field can repeat (`id-left "@" id-right`). Of a field too long
    to keep whole, only its root and newest ids, which is all `references` keeps, read from
    each end (policy.msgid.MAX_FIELD_CHARS) instead of walked through."""
    if field_text is not None and len(field_text) > 2 * MAX_FIELD_CHARS:
        head = [msg_id for msg_id in first_msg_ids(field_text) if _BARE_MSG_ID.fullmatch(msg_id)]
        tail = newest_msg_ids(field_text)
        return head[:1] + [msg_id for msg_id in tail if _BARE_MSG_ID.fullmatch(msg_id)]
    return [msg_id for msg_id in msg_ids(field_text) if _BARE_MSG_ID.fullmatch(msg_id)]


def references(original_references: str | None, original_message_id: str | None) -> list[str]:
    """The reply's References: the original's References then its Message-ID, each id once.

    Trimmed when long: the first id (the root of the conversation) and the most recent ones
    that fit both MAX_REFERENCES and MAX_REFERENCES_OCTETS.
    """
    ids = message_ids(original_references)
    if original_message_id and _BARE_MSG_ID.fullmatch(original_message_id):
        ids.append(original_message_id)
    unique = list(dict.fromkeys(ids))
    if not unique:
        return []
    root, rest = unique[0], unique[1:]
    kept: list[str] = []
    size = len(root) + 2
    for msg_id in reversed(rest):
        if len(kept) + 1 >= MAX_REFERENCES or size + 1 + len(msg_id) + 2 > MAX_REFERENCES_OCTETS:
            break
        kept.append(msg_id)
        size += 1 + len(msg_id) + 2
    return [root, *reversed(kept)]


def threading_headers(original: Original) -> dict[str, str]:
    """In-Reply-To and References; none at all when the original had no usable Message-ID
    (a References field without the parent's id would claim a parent it cannot name)."""
    parent = original.message_id
    if not parent or not _BARE_MSG_ID.fullmatch(parent):
        return {}
    ids = references(original.references, parent)
    return {"In-Reply-To": f"<{parent}>", "References": " ".join(f"<{i}>" for i in ids)}


def reply_subject(original_subject: str | None) -> str:
    """The original subject with one "Re: " in front, unless it already starts with one."""
    # A stored subject is decoded text: line breaks and controls would not survive as a field.
    subject = _CONTROLS.sub("", " ".join(_BREAKS.split(original_subject or ""))).strip()
    if not _REPLY_PREFIX.match(subject):
        subject = f"Re: {subject}".rstrip()
    return subject[:MAX_SUBJECT]


def default_recipients(original: Original) -> list[str]:
    """RFC 5322 section 3.6.2: replies go to Reply-To when present, else to From."""
    if original.reply_to_addresses:
        return list(original.reply_to_addresses)
    if original.from_address:
        return [original.from_address]
    raise ReplyRefusal(Refused.NO_RECIPIENT)


# -- quoting the original ------------------------------------------------------------------------


def attribution(original: Original) -> str:
    """`On <date>, <sender> wrote:` with an RFC 5322 date in UTC (section 3.3)."""
    who = original.from_address or "unknown sender"
    if original.from_name:
        who = f"{original.from_name} <{who}>"
    return f"On {format_datetime(original.date.astimezone(UTC))}, {who} wrote:"


def original_text(original: Original) -> str:
    if original.text is not None:
        return original.text
    if original.html is not None:
        # Lightweight: tags dropped, entities decoded; good enough to quote, not to render.
        return html.unescape(_TAGS.sub("", original.html))
    return ""


def quote_text(reply: str, original: Original) -> str:
    """The reply, a blank line, the attribution, and the original with "> " before each line."""
    lines = _BREAKS.split(original_text(original).rstrip("\r\n"))
    quoted = "\n".join(f"> {line}" if line else ">" for line in lines)
    return f"{reply}\n\n{attribution(original)}\n{quoted}\n"


def quote_html(reply: str, original: Original) -> str:
    """The reply, the attribution and the original in a <blockquote>: its HTML body (without
    the document wrapper), else its text escaped with line breaks kept."""
    if original.html is not None:
        found = _BODY.search(original.html)
        quoted = found.group(1) if found else original.html
    else:
        quoted = html.escape(original.text or "").replace("\n", "<br>\n")
    return (
        f"{reply}\n<br>\n<div>{html.escape(attribution(original))}</div>\n"
        '<blockquote style="margin:0 0 0 .8ex;border-left:1px solid #ccc;padding-left:1ex">\n'
        f"{quoted}\n</blockquote>\n"
    )
