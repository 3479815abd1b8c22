"""Read a delivery report: RFC 3464 DSNs, RFC 5965 ARF reports, and the common text-only bounces.

Only messages that look like reports are read here (see policy.classify). The parse is bounded:
the report parts are small, the text forms are read from a capped prefix, and every pattern is
linear (no nested quantifiers), so a hostile message costs no more than its size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from email import message_from_bytes
from email.message import Message
from email.policy import compat32

from policy.bounces.taxonomy import BounceKind, bounce_kind
from policy.text import clean_text

# Human-readable notices are short; the rest of a text bounce is the returned message.
MAX_NOTICE_CHARS = 64 * 1024
MAX_PARTS = 64
MAX_RECIPIENTS = 100

# Parts that carry the returned message (RFC 3464 section 2: message/rfc822 or, when only the
# header is returned, text/rfc822-headers; RFC 6533 adds message/global and its headers).
RETURNED_TYPES = frozenset(
    {"message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers"}
)
STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
FEEDBACK_TYPES = frozenset({"message/feedback-report"})

_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+"
)
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_REPLY_CODE = re.compile(r"(?<![\d.])([45][0-5]\d)(?=[ -])")
_MESSAGE_ID_LINE = re.compile(
    r"^message-id:[ \t]*<?([^<>\s]{1,998})>?", re.IGNORECASE | re.MULTILINE
)
_TOKEN_LINE = re.compile(r"^x-opensend-reply-token:[ \t]*(\S{1,200})", re.IGNORECASE | re.MULTILINE)
# Local parts that a mail system, never a person, writes from (RFC 2142 section 5 for postmaster).
SYSTEM_LOCAL_PARTS = frozenset(
    {"mailer-daemon", "postmaster", "post_master", "mail-daemon", "mailerdaemon", "noreply-dmarc"}
)


@dataclass(frozen=True, slots=True)
class ReportedRecipient:
    """One recipient of a report (RFC 3464 section 2.3 fields, or what a text bounce says)."""

    address: str | None
    action: str | None  # failed, delayed, delivered, relayed, expanded (RFC 3464 2.3.3)
    status: str | None  # RFC 3463 enhanced code
    diagnostic: str | None
    remote_mta: str | None
    kind: BounceKind

    def as_json(self) -> dict[str, str | None]:
        """The fields as stored (jsonb) and shown: text PostgreSQL can hold, without NUL."""
        return {
            "email": _clean(self.address),
            "action": _clean(self.action),
            "status": self.status,
            "diagnostic_code": _clean(self.diagnostic),
            "remote_mta": _clean(self.remote_mta),
            "type": self.kind.type.value,
            "subtype": self.kind.subtype.value,
        }


@dataclass(frozen=True, slots=True)
class Report:
    """What a report says and what it returns; `form` says how it was read."""

    form: str  # delivery-status, feedback-report, disposition-notification, text, none
    recipients: tuple[ReportedRecipient, ...] = ()
    returned: bool = False  # the original message (or its header) came back attached
    returned_message_id: str | None = None
    returned_token: str | None = None
    feedback_type: str | None = None  # ARF Feedback-Type (RFC 5965 section 3.1)
    text_markers: tuple[str, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> tuple[ReportedRecipient, ...]:
        return tuple(r for r in self.recipients if r.action in ("failed", "delayed"))


def _type(part: Message) -> str:
    """The media type; a value broken across lines ("text/plain\\n charset=...") is cut at the
    first white space, as a lenient reader does."""
    kind = part.get_content_type()
    return kind.split(None, 1)[0] if kind else kind


def _clean(value: str | None) -> str | None:
    return clean_text(value) if value else value


def _fields(block: Message) -> dict[str, str]:
    return {name.lower(): " ".join(str(value).split()) for name, value in block.items()}


def _typed_value(value: str | None) -> str | None:
    """`rfc822; user@example.com` -> `user@example.com` (RFC 3464 section 2.3.2's address-type)."""
    if not value:
        return None
    _, _, rest = value.partition(";")
    text = (rest if rest else value).strip().strip("<>").strip()
    return text or None


def _address_of(value: str | None) -> str | None:
    """The mailbox in a recipient field, also when an MTA wrote a pipe or a path around it."""
    text = _typed_value(value)
    if text is None:
        return None
    if text.startswith("@") and ":" in text:
        text = text.split(":", 1)[1]  # RFC 5321 section 4.1.2: a source route is ignored
    dotted = "." in text.rpartition("@")[2]
    if dotted and not any(c.isspace() for c in text) and not text.startswith(("|", "/", "@")):
        return text  # an address as written, a quoted local part included (RFC 5321 4.1.2)
    found = _ADDRESS.search(text[:1024])
    return found.group(0) if found else None


def _status(value: str | None) -> str | None:
    found = _ENHANCED.search(value or "")
    return ".".join(found.groups()) if found else None


def _parts(root: Message) -> list[Message]:
    """The leaves and message parts of the top level, breadth-first and capped."""
    found: list[Message] = []
    queue = [root]
    while queue and len(found) < MAX_PARTS:
        part = queue.pop(0)
        found.append(part)
        if _type(part) in RETURNED_TYPES:
            continue  # the returned message's own parts are not the report's
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            queue.extend(p for p in payload if isinstance(p, Message))
    return found


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw[:MAX_NOTICE_CHARS] if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload[: MAX_NOTICE_CHARS * 4].decode(charset, "replace")[:MAX_NOTICE_CHARS]
    except (LookupError, UnicodeError):
        return payload[: MAX_NOTICE_CHARS * 4].decode("utf-8", "replace")[:MAX_NOTICE_CHARS]


def _returned_ids(part: Message) -> tuple[str | None, str | None]:
    """Message-ID and X-OpenSend-Reply-Token of the returned message (or returned header)."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        inner = payload[0]
        message_id = inner.get("Message-ID")
        token = inner.get("X-OpenSend-Reply-Token")
        return (
            str(message_id).strip().strip("<>") or None if message_id else None,
            str(token).strip() or None if token else None,
        )
    return _ids_in_text(_text(part))


def _ids_in_text(text: str) -> tuple[str | None, str | None]:
    message_id = _MESSAGE_ID_LINE.search(text)
    token = _TOKEN_LINE.search(text)
    return (
        message_id.group(1) if message_id else None,
        token.group(1) if token else None,
    )


def _status_blocks(part: Message) -> list[dict[str, str]]:
    """The field groups of a message/delivery-status part (RFC 3464 section 2.1)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [_fields(block) for block in payload if isinstance(block, Message)]
    # Some MTAs send the fields as one text block: split it on blank lines ourselves.
    blocks = []
    for chunk in re.split(r"\n[ \t]*\n", _text(part).replace("\r\n", "\n")):
        fields: dict[str, str] = {}
        name = None
        for line in chunk.split("\n"):
            if line[:1] in (" ", "\t") and name is not None:
                fields[name] += " " + line.strip()
            elif ":" in line:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                fields[name] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


def _dsn_recipients(blocks: list[dict[str, str]]) -> list[ReportedRecipient]:
    per_message = blocks[0] if blocks else {}
    recipients = []
    for fields in blocks[1:] if len(blocks) > 1 else blocks:
        address = _address_of(fields.get("final-recipient")) or _address_of(
            fields.get("original-recipient")
        )
        action = (fields.get("action") or "").strip().lower() or None
        if address is None and action is None:
            continue
        status = _status(fields.get("status"))
        diagnostic = _typed_value(fields.get("diagnostic-code"))
        if status is None or status.endswith(".0.0"):
            status = _status(diagnostic) or status
        remote = _typed_value(fields.get("remote-mta")) or _typed_value(
            per_message.get("reporting-mta")
        )
        recipients.append(
            ReportedRecipient(
                address=address.lower() if address else None,
                action=action,
                status=status,
                diagnostic=diagnostic,
                remote_mta=remote,
                kind=bounce_kind(action, status, diagnostic),
            )
        )
        if len(recipients) >= MAX_RECIPIENTS:
            break
    return recipients


def read_report(
    raw: bytes,
    *,
    ignore_addresses: frozenset[str] = frozenset(),
    unlikely_addresses: frozenset[str] = frozenset(),
) -> Report:
    """Read the report in `raw`; a message that is no report at all gives form `none`.

    `ignore_addresses` are the report's own addresses (its From, the envelope), which a text
    bounce may mention but which are never the failed recipient; `unlikely_addresses` (its To
    and Cc, normally the original sender) are taken only when the notice names no other.
    """
    try:
        root = message_from_bytes(raw, policy=compat32)
        parts = _parts(root)
    except Exception:  # a parser failure: the message is stored as it is, unread
        return Report("none")
    report_type = (root.get_param("report-type") or "") if root.is_multipart() else ""
    returned_parts = [p for p in parts if _type(p) in RETURNED_TYPES]
    message_id, token = (None, None)
    if returned_parts:
        message_id, token = _returned_ids(returned_parts[0])

    status_parts = [p for p in parts if _type(p) in STATUS_TYPES]
    # Exim and Google name the failed addresses in a field of their own.
    failed_field = " ".join(str(v) for v in root.get_all("X-Failed-Recipients") or [])
    named = [a.group(0).lower() for a in _ADDRESS.finditer(failed_field[:4096])]
    if status_parts:
        recipients = _dsn_recipients(_status_blocks(status_parts[0]))
        if recipients and all(r.address is None for r in recipients):
            # A Final-Recipient that holds no mailbox: the notice's own words name it.
            text_form = _text_form(
                parts, returned_parts, (ignore_addresses, unlikely_addresses), (None, None), named
            )
            if text_form.recipients:
                recipients[0] = replace(recipients[0], address=text_form.recipients[0].address)
        if recipients:
            return Report(
                "delivery-status",
                tuple(recipients),
                bool(returned_parts),
                message_id,
                token,
            )
    feedback_parts = [p for p in parts if _type(p) in FEEDBACK_TYPES]
    if feedback_parts:
        return _feedback(feedback_parts[0], bool(returned_parts), message_id, token)
    if str(report_type).lower() == "disposition-notification":
        return Report("disposition-notification", (), bool(returned_parts), message_id, token)
    returned_to = _returned_to(returned_parts[0]) if returned_parts else None
    if returned_to:
        named.append(returned_to)
    return _text_form(
        parts,
        returned_parts,
        (ignore_addresses, unlikely_addresses),
        (message_id, token),
        named,
    )


def _feedback(part: Message, returned: bool, message_id: str | None, token: str | None) -> Report:
    """RFC 5965 section 3.1: the feedback part names the complainer's address (Original-Rcpt-To,
    or Removal-Recipient for opt-out reports) and the type of feedback."""
    blocks = _status_blocks(part)
    fields: dict[str, str] = {}
    for block in blocks:
        fields.update(block)
    address = (
        _typed_value(fields.get("original-rcpt-to"))
        or _typed_value(fields.get("removal-recipient"))
        or None
    )
    kind = bounce_kind(None, None, None)
    recipient = ReportedRecipient(
        address.lower() if address and "@" in address else None,
        "complained",
        None,
        None,
        _typed_value(fields.get("reporting-mta")),
        kind,
    )
    return Report(
        "feedback-report",
        (recipient,),
        returned,
        message_id,
        token,
        feedback_type=(fields.get("feedback-type") or "").strip().lower() or None,
    )


# Where a text bounce's own words end and the returned message begins: the usual separators of
# the common MTAs, written generically (a line of dashes or a header block), not per sample.
_RETURNED_START = re.compile(
    r"^(?:-{2,}.{0,80}(?:original message|copy of the message|returned message|"
    r"message follows|message headers|below this line).{0,80}$|"
    r"(?:original message headers|returned mail follows|unsent message below|"
    r"the original message was|message text follows).{0,40}$|"
    r"(?:return-path|received):[ \t])",
    re.IGNORECASE | re.MULTILINE,
)


def _notice(text: str) -> str:
    found = _RETURNED_START.search(text)
    return text[: found.start()] if found else text


def _text_form(
    parts: list[Message],
    returned_parts: list[Message],
    ignored: tuple[frozenset[str], frozenset[str]],
    returned_ids: tuple[str | None, str | None],
    named: list[str],
) -> Report:
    """A bounce without a delivery-status part (Exim, qmail, Microsoft 365 and other text forms):
    the failed address is the one X-Failed-Recipients names, else the first address of the
    notice that is not the report's own, else the returned message's To; its status is the first
    enhanced code (else reply code) after it."""
    message_id, token = returned_ids
    texts = [p for p in parts if _type(p) == "text/plain"]
    if not texts and not parts[0].is_multipart() and _type(parts[0]).startswith("multipart/"):
        texts = parts[:1]  # a multipart whose boundary could not be found: read it as text
    if not texts:
        texts = [p for p in parts if _type(p) == "text/html"]
    if not texts:
        return Report("none", (), bool(returned_parts), message_id, token)
    body = _text(texts[0]).replace("\r\n", "\n")
    notice = _notice(body)
    if message_id is None and token is None:
        message_id, token = _ids_in_text(body[len(notice) :])
    recipient = _failed_address(notice, named, *ignored)
    after = notice
    if recipient is not None:
        at = notice.lower().find(recipient)
        after = notice[at + len(recipient) :] if at >= 0 else notice
    if recipient is None:
        return Report("text", (), bool(returned_parts), message_id, token)
    diagnostic = _diagnostic(after) or _diagnostic(notice)
    status = _status(diagnostic) or _status(after)
    if status is None:
        code = _REPLY_CODE.search(diagnostic or after)
        if code is not None:
            status = f"{code.group(1)[0]}.0.0"
    action = "delayed" if _says_delayed(notice) else "failed"
    return Report(
        "text",
        (
            ReportedRecipient(
                recipient,
                action,
                status,
                diagnostic,
                None,
                bounce_kind(action, status, diagnostic or notice),
            ),
        ),
        bool(returned_parts),
        message_id,
        token,
    )


def _failed_address(
    notice: str, named: list[str], ignore: frozenset[str], unlikely: frozenset[str]
) -> str | None:
    if named and named[0] not in ignore:
        first_named = named[0]
        # X-Failed-Recipients comes first; the returned message's To only when nothing else.
        if len(named) > 1 or first_named not in unlikely:
            return first_named
    fallback = None
    for found in _ADDRESS.finditer(notice):
        address = found.group(0).strip(".").lower()
        if address in ignore or address.partition("@")[0] in SYSTEM_LOCAL_PARTS:
            continue
        if address in unlikely:
            fallback = fallback or address
            continue
        return address
    if fallback is not None:
        return fallback
    return named[-1] if named and named[-1] not in ignore else None


def _returned_to(part: Message) -> str | None:
    """The first To address of the returned message (or returned header)."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        value = str(payload[0].get("To") or "")
    else:
        found = _TO_LINE.search(_text(part))
        value = found.group(1) if found else ""
    address = _ADDRESS.search(value[:1024])
    return address.group(0).lower() if address else None


_TO_LINE = re.compile(r"^to:[ \t]*([^\n]{1,998})", re.IGNORECASE | re.MULTILINE)


# A reply code or enhanced code where a diagnostic starts; looked for line by line.
_CODE_START = re.compile(r"(?<![\w.])(?:[45][0-5]\d(?=[ -])|[245]\.\d{1,3}\.\d{1,3}(?![\d.]))")


def _diagnostic(text: str) -> str | None:
    """The first line (from its code on) that carries an SMTP reply or enhanced code."""
    for line in text[:8192].split("\n")[:200]:
        found = _CODE_START.search(line)
        if found is not None:
            return " ".join(line[found.start() :].split())[:400]
    return None


_DELAYED = re.compile(
    r"(?:delivery (?:has been |is )?delayed|not yet been delivered|will (?:keep|continue) "
    r"(?:trying|retrying|to try)|still trying|warning: message)",
    re.IGNORECASE,
)


def _says_delayed(notice: str) -> bool:
    return _DELAYED.search(notice[:4096]) is not None
