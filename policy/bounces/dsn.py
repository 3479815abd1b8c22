"""The delivery status notifications we send: RFC 3464 reports for mail accepted on the
submission ports that could not be delivered (a 5xx, or too long in the queue), and for such mail
a remote server bounced after it had accepted it (its report comes back to our bounce address).

Only for submission: API senders learn from events. Never to the null reverse-path (RFC 5321
section 4.5.5: a bounce must not cause another), and a DSN is itself sent from the null path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Any, Protocol
from uuid import UUID

# The returned header is enough to identify the message (RFC 3464 section 2: text/rfc822-headers)
# and keeps the DSN small whatever the original's size.
MAX_RETURNED_HEADER = 64 * 1024
SUBJECT = "Undelivered Mail Returned to Sender"


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    recipient: str
    code: int | None
    enhanced: str | None
    text: str
    remote_host: str | None
    expired: bool  # given up after OPENSEND_MAX_QUEUE_AGE


@dataclass(frozen=True, slots=True)
class Dsn:
    """A DSN to queue: who gets it and its bytes."""

    email_id: UUID
    message_id: str
    to: str
    subject: str
    from_header: str
    raw: bytes


def wants_dsn(source: str, envelope_sender: str) -> bool:
    """Submission mail with a real envelope sender gets DSNs; the API and the null path never."""
    return source == "smtp" and envelope_sender not in ("", "<>")


def _field(value: str) -> str:
    # No line break may reach a header field from the remote's words.
    return " ".join(value.split())


def _status_field(value: str) -> str:
    """A field of the message/delivery-status part, which is 7-bit text (RFC 3464 section
    2.1.3): a remote's non-ASCII words there become "?" (the readable part keeps them)."""
    return _field(value).encode("ascii", "replace").decode("ascii")


def _status(failure: FailedRecipient) -> str:
    if failure.enhanced and failure.enhanced[:1] == "5":
        return failure.enhanced
    # RFC 3463: X.4.7 is "delivery time expired"; a permanent failure without a code is 5.0.0.
    return "5.4.7" if failure.expired else "5.0.0"


def compose_dsn(
    *,
    email_id: UUID,
    hostname: str,
    envelope_sender: str,
    failures: Sequence[FailedRecipient],
    original_header: bytes | None,
    date: datetime,
) -> Dsn:
    """multipart/report; report-type=delivery-status (RFC 3464 section 2 and RFC 6522)."""
    message_id = f"{email_id.hex}@{hostname}"
    boundary = f"=_dsn_{email_id.hex}"
    from_header = f"Mail Delivery System <MAILER-DAEMON@{hostname}>"
    lines = [
        f"From: {from_header}",
        f"To: <{envelope_sender}>",
        f"Subject: {SUBJECT}",
        f"Date: {format_datetime(date)}",
        f"Message-ID: <{message_id}>",
        # RFC 3834 section 5: an automatic reply; nothing should answer it automatically.
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"This is the mail system at {hostname}.",
        "",
        "Your message could not be delivered to one or more recipients.",
        "",
    ]
    for failure in failures:
        reason = "it stayed in the queue too long" if failure.expired else "it was refused"
        lines.append(f"<{failure.recipient}>: {reason}")
        lines.append(f"    {_field(_diagnostic(failure))}")
        lines.append("")
    lines += [
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {hostname}",
        "",
    ]
    for failure in failures:
        lines.append(f"Final-Recipient: rfc822; {failure.recipient}")
        lines.append("Action: failed")
        lines.append(f"Status: {_status(failure)}")
        if failure.remote_host:
            lines.append(f"Remote-MTA: dns; {_status_field(failure.remote_host)}")
        if failure.code is not None and failure.code >= 400:
            lines.append(f"Diagnostic-Code: smtp; {_status_field(_diagnostic(failure))}")
        lines.append("")
    body = "\r\n".join(lines).encode("utf-8")
    if original_header:
        header = original_header[:MAX_RETURNED_HEADER].rstrip(b"\r\n")
        body += (
            f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n".encode()
            + header
            + b"\r\n\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return Dsn(email_id, message_id, envelope_sender, SUBJECT, from_header, body)


def _diagnostic(failure: FailedRecipient) -> str:
    parts = [str(failure.code) if failure.code is not None else "", failure.enhanced or ""]
    parts.append(failure.text)
    return " ".join(p for p in parts if p)


# A Diagnostic-Code as reports write it: "smtp; 550 5.1.1 <a@b>: User unknown" (RFC 3464
# section 2.3.6): the reply code and the enhanced one, if there, then the words.
_DIAGNOSTIC = re.compile(
    r"\s*(?:smtp\s*;)?\s*"
    r"(?:(?P<code>[245]\d\d)(?:[ -]+|$))?"
    r"(?:[245]\.\d{1,3}\.\d{1,3}\s*)?"
    r"(?P<text>.*)",
    re.IGNORECASE | re.DOTALL,
)


class BouncedAfterAcceptance(Protocol):
    """storage.bounces.reports.LateBounce: a report bounced a delivery the remote had accepted."""

    @property
    def source(self) -> str: ...
    @property
    def envelope_sender(self) -> str: ...
    @property
    def recipient(self) -> str: ...
    @property
    def details(self) -> Mapping[str, Any]: ...
    @property
    def original_header(self) -> bytes | None: ...


def dsn_for_report(
    bounce: BouncedAfterAcceptance, *, email_id: UUID, hostname: str, date: datetime
) -> Dsn | None:
    """The DSN owed to the envelope sender of submission mail that a remote server bounced
    after it had said 250 (its report came back to our bounce address, not to the sender, as
    our envelope sender replaced theirs): None for mail that gets no DSN (`wants_dsn`)."""
    if not wants_dsn(bounce.source, bounce.envelope_sender):
        return None
    details = bounce.details
    diagnostic = _DIAGNOSTIC.match(str(details.get("diagnostic_code") or ""))
    assert diagnostic is not None  # every part of the pattern is optional
    remote = str(details.get("remote_mta") or "")
    status = details.get("status")
    failure = FailedRecipient(
        recipient=bounce.recipient,
        code=int(diagnostic["code"]) if diagnostic["code"] else None,
        enhanced=status if isinstance(status, str) else None,
        text=diagnostic["text"].strip(),
        remote_host=remote.partition(";")[2].strip() if ";" in remote else (remote or None),
        expired=False,
    )
    return compose_dsn(
        email_id=email_id,
        hostname=hostname,
        envelope_sender=bounce.envelope_sender,
        failures=[failure],
        original_header=bounce.original_header,
        date=date,
    )


def late_dsn_maker(
    hostname: str, new_id: Callable[[], UUID], now: Callable[[], datetime]
) -> Callable[[BouncedAfterAcceptance], Dsn | None]:
    """What the MX and the ingesters hand storage to make a late bounce's DSN with."""
    return lambda bounce: dsn_for_report(bounce, email_id=new_id(), hostname=hostname, date=now())
