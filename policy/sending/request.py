"""What a send request may say: every field of POST /emails checked, nothing sent or stored.

`parse_email` turns a Resend-shaped JSON object into a frozen `EmailDraft` (the fields one by
one are `policy.sending.fields`) or raises `Refusal` naming the field and what is wrong with
it; `check_sender` decides whether the caller may send from the `from` domain. Pure functions:
lookups are done by the caller and passed in.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from policy.sending.fields import (
    Attachment,
    Mailbox,
    Problem,
    Refusal,
    header_safe,
    parse_attachment,
    parse_headers,
    parse_mailbox,
    parse_mailboxes,
    parse_tags,
)

MAX_RECIPIENTS = 50  # to + cc + bcc, as Resend counts them
MAX_SCHEDULE_AHEAD = timedelta(days=30)
MAX_SUBJECT = 998  # one unfolded line of RFC 5322 section 2.1.1
MAX_ATTACHMENTS = 100

_RELATIVE = re.compile(r"in\s+(\d{1,6})\s*(min|mins|minutes?|hours?|hrs?|h|days?|d)", re.I)


@dataclass(frozen=True, slots=True)
class EmailDraft:
    sender: Mailbox
    to: tuple[Mailbox, ...]
    cc: tuple[Mailbox, ...]
    bcc: tuple[Mailbox, ...]
    reply_to: tuple[Mailbox, ...]
    subject: str
    text: str | None
    html: str | None
    headers: tuple[tuple[str, str], ...]
    attachments: tuple[Attachment, ...]
    tags: tuple[tuple[str, str | None], ...]
    scheduled_at: datetime | None  # None: send now (also when the time given has passed)

    @property
    def envelope(self) -> tuple[str, ...]:
        """RCPT TO addresses: to, cc and bcc once each, compared without case."""
        seen: dict[str, str] = {}
        for box in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(box.address.lower(), box.address)
        return tuple(seen.values())


# -- scheduling ------------------------------------------------------------------------------


def parse_scheduled_at(value: Any, now: datetime) -> datetime | None:
    """ISO 8601 with a time zone, or Resend's `in 10 min` form; a past time means now."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Refusal(Problem.INVALID, "scheduled_at", "`scheduled_at` must be a string.")
    relative = _RELATIVE.fullmatch(value.strip())
    when: datetime | None = None
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2).lower()
        step = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
        when = now + amount * step[unit[0]]
    else:
        with contextlib.suppress(ValueError):
            when = datetime.fromisoformat(value.strip())
        if when is None or when.tzinfo is None:
            raise Refusal(
                Problem.INVALID,
                "scheduled_at",
                "`scheduled_at` must be an ISO 8601 date and time with a time zone, such as "
                "2024-08-05T11:52:01.858Z, or a delay such as `in 10 min`.",
            )
    if when - now > MAX_SCHEDULE_AHEAD:
        raise Refusal(
            Problem.INVALID, "scheduled_at", "`scheduled_at` must be at most 30 days ahead."
        )
    return when if when > now else None


# -- the whole request -------------------------------------------------------------------------


def _text(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise Refusal(Problem.INVALID, field, f"`{field}` must be a string.")
    return value


def parse_email(body: Mapping[str, Any], now: datetime, *, batch: bool = False) -> EmailDraft:
    """One email of POST /emails (or one item of POST /emails/batch), checked field by field."""
    for field in ("from", "to", "subject"):
        if body.get(field) in (None, "", []):
            raise Refusal(Problem.MISSING, field, f"Missing `{field}` field.")
    sender = parse_mailbox(body["from"], "from", Problem.FROM_ADDRESS)
    to, cc, bcc = (parse_mailboxes(body, f) for f in ("to", "cc", "bcc"))
    if len(to) + len(cc) + len(bcc) > MAX_RECIPIENTS:
        raise Refusal(
            Problem.INVALID,
            "to",
            f"Too many recipients: {len(to) + len(cc) + len(bcc)} in `to`, `cc` and `bcc`; "
            f"at most {MAX_RECIPIENTS} are allowed per email.",
        )
    subject = header_safe(_text(body, "subject") or "", "subject")
    if len(subject) > MAX_SUBJECT:
        raise Refusal(Problem.INVALID, "subject", f"`subject` is over {MAX_SUBJECT} characters.")
    text, html = _text(body, "text"), _text(body, "html")
    if not text and not html:
        raise Refusal(Problem.MISSING, "html", "Missing `html` or `text` field.")
    if batch:
        for field in ("attachments", "scheduled_at"):
            if body.get(field) is not None:
                raise Refusal(
                    Problem.INVALID, field, f"`{field}` is not supported in batch emails."
                )
    attachments = body.get("attachments") or []
    if not isinstance(attachments, list) or len(attachments) > MAX_ATTACHMENTS:
        raise Refusal(
            Problem.INVALID,
            "attachments",
            f"`attachments` must be a list of at most {MAX_ATTACHMENTS}.",
        )
    return EmailDraft(
        sender=sender,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=parse_mailboxes(body, "reply_to"),
        subject=subject,
        text=text or None,
        html=html or None,
        headers=parse_headers(body.get("headers")),
        attachments=tuple(parse_attachment(a, i) for i, a in enumerate(attachments)),
        tags=parse_tags(body.get("tags")),
        scheduled_at=parse_scheduled_at(body.get("scheduled_at"), now),
    )


# -- who may send from which domain ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SenderDomain:
    """A tenant's domain as the directory has it."""

    id: UUID
    name: str
    verified: bool
    status: str  # Resend's: not_started, pending, verified, failed, temporary_failure
    receiving_enabled: bool
    reply_domain: str | None

    @property
    def sendable(self) -> bool:
        # `verified` is set by `opensend domain add --verified` and by DNS verification, and only
        # a verified claim may send: since any tenant may claim a name nobody has verified
        # (migration 0020), a claim whose check merely went unanswered must not send as the
        # name's owner. Status 'temporary_failure' keeps a verified domain sending while its
        # records are rechecked (Resend's rule); 'failed' stops it.
        return self.verified and self.status != "failed"

    @property
    def effective_reply_domain(self) -> str:
        return self.reply_domain or self.name


def check_sender(
    sender: Mailbox, domain: SenderDomain | None, key_domain_id: UUID | None
) -> SenderDomain:
    """The `from` domain must be a verified domain of the caller's tenant (and of the key's)."""
    if domain is None or not domain.sendable:
        raise Refusal(
            Problem.SENDER_DOMAIN,
            "from",
            f"The {sender.domain} domain is not verified. Please, add and verify your domain "
            "(POST /domains, then POST /domains/{id}/verify).",
        )
    if key_domain_id is not None and key_domain_id != domain.id:
        raise Refusal(
            Problem.SENDER_DOMAIN,
            "from",
            f"This API key may only send from its own domain, and {sender.domain} is not it.",
        )
    return domain
