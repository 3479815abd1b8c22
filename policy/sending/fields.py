"""The fields of a send request one by one: header safety, mailboxes, the caller's headers,
attachments and tags. Pure functions; `policy.sending.request` puts them together into an email.

Every refusal is a `Refusal` naming the field (`to[2]`, `headers.X-Ref`, `attachments[0].path`)
and saying what is wrong in words a person can act on; `Problem` says which error it is.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MAX_HEADERS = 50
MAX_TAGS = 50


class Problem(StrEnum):
    """The kind of refusal; the API maps each to one entry of its error catalogue."""

    INVALID = "invalid"  # 400 validation_error
    MISSING = "missing"  # 422 missing_required_field
    FROM_ADDRESS = "from_address"  # 422 invalid_from_address
    ATTACHMENT = "attachment"  # 422 invalid_attachment
    SENDER_DOMAIN = "sender_domain"  # 403 validation_error


class Refusal(Exception):
    def __init__(self, problem: Problem, field: str, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Mailbox:
    name: str  # display name, "" when none
    address: str  # addr-spec, as given
    given: str  # the field as the caller wrote it, trimmed

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes
    content_id: str | None  # set: an inline part, referenced from the HTML as cid:<content_id>


# -- header-bound text -------------------------------------------------------------------------

_LINE_BREAKS = re.compile(r"[\r\n\x00]")
_CONTROLS = re.compile(r"[\x01-\x08\x0b-\x1f\x7f]")


def header_safe(value: str, field: str) -> str:
    """Refuse what would end a header field early or smuggle another (RFC 5322 section 2.2)."""
    if _LINE_BREAKS.search(value):
        raise Refusal(
            Problem.INVALID, field, f"`{field}` must not contain line breaks (CR, LF) or NUL."
        )
    if _CONTROLS.search(value):
        raise Refusal(Problem.INVALID, field, f"`{field}` must not contain control characters.")
    return value


# -- addresses (RFC 5322 section 3.4.1, dot-atom local parts; RFC 5321 section 4.5.3.1 sizes) ---
# ASCII only: outbound SMTPUTF8 (RFC 6531) is not offered, so an internationalised domain is
# given in its A-label (xn--) form; quoted local parts are refused as MX-side relay tricks are.

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_LOCAL_PART = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_NAME_ADDR = re.compile(r"(?s)(.*?)\s*<([^<>]*)>")
# One mailbox as a field may hold it on its own line (RFC 5322 section 2.1.1: 998 octets).
MAX_MAILBOX_CHARS = 998
_FORMAT = (
    "The email address needs to follow the `email@example.com` or `Name <email@example.com>` "
    "format."
)


def valid_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    if not at or len(local.encode()) > 64 or len(address) > 254 or len(domain) > 253:
        return False
    labels = domain.split(".")
    return (
        _LOCAL_PART.fullmatch(local) is not None
        and len(labels) >= 2
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


def parse_mailbox(value: Any, field: str, problem: Problem = Problem.INVALID) -> Mailbox:
    if not isinstance(value, str):
        raise Refusal(Problem.INVALID, field, f"`{field}` must be a string.")
    given = header_safe(value, field).strip()
    if len(given) > MAX_MAILBOX_CHARS:
        # Before any pattern reads it: "Name <addr>" is matched lazily, which a run of many
        # thousand spaces makes quadratic, holding the event loop.
        raise Refusal(problem, field, f"`{field}` is longer than {MAX_MAILBOX_CHARS} characters.")
    found = _NAME_ADDR.fullmatch(given)
    name, address = (found.group(1).strip(), found.group(2).strip()) if found else ("", given)
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1])  # a quoted-string, unquoted
    if not valid_address(address):
        raise Refusal(problem, field, f"Invalid `{field}` field. {_FORMAT}")
    return Mailbox(name, address, given)


# Addresses in one field of a request (`to`, `cc`, `bcc`, `reply_to`): Resend's 50 recipients
# for the three together, and as many for Reply-To. Counted before any is parsed, so a request
# with millions of them is refused at once instead of holding the event loop.
MAX_ADDRESSES_PER_FIELD = 50


def too_many_addresses(field: str, count: int) -> str | None:
    """What to tell a caller whose `field` lists `count` addresses, or None if that is fine."""
    if count <= MAX_ADDRESSES_PER_FIELD:
        return None
    return f"`{field}` lists {count} addresses; at most {MAX_ADDRESSES_PER_FIELD} are allowed."


def parse_mailboxes(body: Mapping[str, Any], field: str) -> tuple[Mailbox, ...]:
    value = body.get(field)
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise Refusal(Problem.INVALID, field, f"`{field}` must be a string or a list of strings.")
    too_many = too_many_addresses(field, len(items))
    if too_many is not None:
        raise Refusal(Problem.INVALID, field, too_many)
    return tuple(parse_mailbox(item, f"{field}[{i}]") for i, item in enumerate(items))


# -- caller's headers --------------------------------------------------------------------------

# Header fields the server writes. Each lowercase name maps to what the caller should do instead.
OWNED_HEADERS: Mapping[str, str] = {
    "from": "use the `from` field",
    "to": "use the `to` field",
    "cc": "use the `cc` field",
    "bcc": "use the `bcc` field",
    "reply-to": "use the `reply_to` field",
    "subject": "use the `subject` field",
    "sender": "it is set by the server",
    "date": "it is set by the server",
    "message-id": "it carries the reply token",
    "x-opensend-reply-token": "it carries the reply token",
    "return-path": "the receiving server adds it (RFC 5321 section 4.4)",
    "received": "the servers on the way add it (RFC 5321 section 4.4)",
    "dkim-signature": "the server signs at delivery (RFC 6376)",
    "arc-seal": "it is added by forwarders (RFC 8617)",
    "arc-message-signature": "it is added by forwarders (RFC 8617)",
    "arc-authentication-results": "it is added by forwarders (RFC 8617)",
    "authentication-results": "the receiving server adds it (RFC 8601)",
    "mime-version": "the server builds the MIME structure",
    "content-type": "the server builds the MIME structure",
    "content-transfer-encoding": "the server builds the MIME structure",
    "content-disposition": "the server builds the MIME structure",
    "content-id": "use an attachment's `content_id`",
}
# In-Reply-To and References are the caller's on purpose: they thread the message into an
# existing conversation in the recipient's mail client (RFC 5322 section 3.6.4). We never set
# them on a new message, so nothing of ours is overwritten; they must hold message identifiers.
_MSG_ID_LIST = re.compile(r"\s*(?:<[^<>\s@]+@[^<>\s@]+>\s*)+")
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]{1,76}")  # ftext, RFC 5322 section 3.6.8


def parse_headers(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise Refusal(Problem.INVALID, "headers", "`headers` must be an object of strings.")
    if len(value) > MAX_HEADERS:
        raise Refusal(Problem.INVALID, "headers", f"At most {MAX_HEADERS} `headers` are allowed.")
    headers: dict[str, tuple[str, str]] = {}
    for name, text in value.items():
        header_safe(name, "headers")
        if not _FIELD_NAME.fullmatch(name):
            raise Refusal(
                Problem.INVALID,
                f"headers.{name}",
                f"Header name `{name}` is not valid: use printable ASCII without spaces or "
                "colons, at most 76 characters (RFC 5322 section 3.6.8).",
            )
        lowered = name.lower()
        if lowered in OWNED_HEADERS or lowered.startswith("x-opensend-"):
            hint = OWNED_HEADERS.get(lowered, "the server owns the X-OpenSend- headers")
            raise Refusal(
                Problem.INVALID, f"headers.{name}", f"Header `{name}` cannot be set: {hint}."
            )
        if lowered in headers:
            raise Refusal(Problem.INVALID, f"headers.{name}", f"Header `{name}` is given twice.")
        field = f"headers.{name}"
        if not isinstance(text, str):
            raise Refusal(Problem.INVALID, field, f"`{field}` must be a string.")
        header_safe(text, field)
        if len(name) + 2 + len(text.encode()) > 998:
            raise Refusal(Problem.INVALID, field, f"`{field}` is longer than 998 octets.")
        if lowered in ("in-reply-to", "references") and not _MSG_ID_LIST.fullmatch(text):
            raise Refusal(
                Problem.INVALID, field, f"`{field}` must be message IDs such as <id@example.com>."
            )
        headers[lowered] = (name, text)
    return tuple(headers.values())


# -- attachments -------------------------------------------------------------------------------

_MIME_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}")  # RFC 6838
_CONTENT_ID = re.compile(rf"[.@{_ATEXT}]{{1,128}}")


def parse_attachment(item: Any, index: int) -> Attachment:
    field = f"attachments[{index}]"
    if not isinstance(item, dict):
        raise Refusal(Problem.ATTACHMENT, field, f"`{field}` must be an object.")
    if item.get("path") is not None:
        raise Refusal(
            Problem.ATTACHMENT,
            f"{field}.path",
            f"`{field}.path` is not supported: this server does not fetch URLs. "
            "Send the file itself, base64-encoded, in `content`.",
        )
    content = decode_content(item.get("content"), f"{field}.content")
    filename = item.get("filename")
    if not isinstance(filename, str) or not filename.strip():
        raise Refusal(Problem.ATTACHMENT, f"{field}.filename", f"`{field}.filename` is required.")
    header_safe(filename, f"{field}.filename")
    if len(filename) > 255:
        raise Refusal(
            Problem.INVALID, f"{field}.filename", f"`{field}.filename` is over 255 characters."
        )
    content_type = item.get("content_type")
    if content_type is None:
        content_type = mimetypes.guess_type(filename, strict=False)[0] or "application/octet-stream"
    if not isinstance(content_type, str) or not _MIME_TYPE.fullmatch(
        header_safe(content_type, f"{field}.content_type")
    ):
        raise Refusal(
            Problem.INVALID,
            f"{field}.content_type",
            f"`{field}.content_type` must be a media type such as `application/pdf`.",
        )
    content_id = item.get("content_id", item.get("inline_content_id"))
    if content_id is not None:
        if not isinstance(content_id, str):
            raise Refusal(Problem.INVALID, f"{field}.content_id", "`content_id` must be a string.")
        header_safe(content_id, f"{field}.content_id")
        if not _CONTENT_ID.fullmatch(content_id):
            raise Refusal(
                Problem.INVALID,
                f"{field}.content_id",
                f"`{field}.content_id` may hold letters, digits and !#$%&'*+-/=?^_`{{|}}~.@ "
                "only, at most 128 characters.",
            )
    return Attachment(filename.strip(), content_type.lower(), content, content_id)


def decode_content(value: Any, field: str) -> bytes:
    """Base64 text, or the SDK's list of byte values (`list(open(f, "rb").read())`)."""
    if value is None:
        raise Refusal(Problem.ATTACHMENT, field, "Attachment must have either a content or path.")
    if isinstance(value, list):
        if all(isinstance(b, int) and 0 <= b <= 255 for b in value):
            return bytes(value)
        raise Refusal(Problem.ATTACHMENT, field, f"`{field}` must hold byte values 0 to 255.")
    if isinstance(value, str):
        try:
            return base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            pass
    raise Refusal(Problem.ATTACHMENT, field, f"`{field}` must be base64-encoded.")


# -- tags -------------------------------------------------------------------------------------

_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")  # Resend's rule for tag names and values


def parse_tags(value: Any) -> tuple[tuple[str, str | None], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise Refusal(Problem.INVALID, "tags", f"`tags` must be a list of at most {MAX_TAGS}.")
    tags: list[tuple[str, str | None]] = []
    for index, tag in enumerate(value):
        if not isinstance(tag, dict):
            raise Refusal(Problem.INVALID, f"tags[{index}]", "Each tag must be {name, value}.")
        parts: list[str | None] = []
        for key in ("name", "value"):
            field, text = f"tags[{index}].{key}", tag.get(key)
            if text is None and key == "value":
                parts.append(None)
                continue
            if not isinstance(text, str) or not _TAG.fullmatch(header_safe(text, field)):
                raise Refusal(
                    Problem.INVALID,
                    field,
                    f"`{field}` can only contain ASCII letters (a-z, A-Z), numbers (0-9), "
                    "underscores (_), or dashes (-), at most 256 characters.",
                )
            parts.append(text)
        tags.append((str(parts[0]), parts[1]))
    return tuple(tags)
