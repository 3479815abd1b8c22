"""What one delivery attempt means for one recipient: delivered, deferred or bounced.

The SMTP client reports what happened (a remote reply at some stage, or a failure of its own:
DNS, connection, timeout); this module decides, and rolls recipients up into the email's status.
Pure: no sockets, no SQL. The answers we write when no remote host replied are catalogued here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from policy.delivery.retry import plan_retry
from policy.replies import Reply
from policy.text import clean_text


class Outcome(StrEnum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"


class Stage(StrEnum):
    """Where in the session an answer came from (RFC 5321 section 3.3 and 4.1.1)."""

    ROUTE = "route"  # before any connection: DNS, routing, our own giving up
    CONNECT = "connect"
    GREETING = "greeting"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


# A failure before MAIL FROM says something about the host or our session with it, never about
# the message: Postfix's smtp_skip_5xx_greeting tries the next host and defers, and its
# smtp_sasl_auth_soft_bounce defers on a refused login (a wrong relay password must not bounce
# every message in the queue).
SESSION_STAGES = frozenset({Stage.CONNECT, Stage.GREETING, Stage.EHLO, Stage.STARTTLS, Stage.AUTH})

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


@dataclass(frozen=True, slots=True)
class SmtpAnswer:
    """The answer that decided a recipient's attempt, as recorded on the delivery row."""

    code: int
    enhanced: str | None
    text: str
    stage: Stage
    remote: bool  # True when a remote host said it; False when we concluded it ourselves

    @classmethod
    def from_reply(cls, code: int, message: str, stage: Stage) -> SmtpAnswer:
        """A remote reply; its enhanced code (RFC 3463) is split off the text when present.
        The text is made storable: a server may answer in Latin-1 or with a NUL, which the
        client decodes as surrogate escapes, and the row must hold it all the same."""
        text = clean_text(message).strip()
        found = _ENHANCED.match(text)
        enhanced = found.group(0) if found else None
        if found:
            text = text[found.end() :].strip()
        return cls(code, enhanced, text, stage, remote=True)

    @classmethod
    def ours(cls, reply: Reply, stage: Stage = Stage.ROUTE, detail: str = "") -> SmtpAnswer:
        text = f"{reply.text}: {detail}" if detail else reply.text
        return cls(reply.code, reply.enhanced, text, stage, remote=False)

    def __str__(self) -> str:
        return " ".join(str(part) for part in (self.code, self.enhanced, self.text) if part)


# Our answers, for outcomes no remote host replied to. Basic and enhanced codes agree in class
# (tests/policy/delivery/test_result.py holds them to it).
NULL_MX = Reply(556, "5.1.10", "Recipient domain does not accept mail (null MX)")  # RFC 7505 3.2
NO_SUCH_DOMAIN = Reply(550, "5.1.2", "Recipient domain does not exist")
NO_MAIL_HOST = Reply(550, "5.1.2", "Recipient domain has no mail server")
MX_HOSTS_UNRESOLVED = Reply(550, "5.4.4", "No address found for any mail server of the domain")
DNS_TEMPORARY = Reply(451, "4.4.3", "Temporary DNS failure looking up the recipient domain")
NO_ANSWER = Reply(451, "4.4.1", "No answer from the recipient's mail server")
CONNECTION_LOST = Reply(451, "4.4.2", "Connection to the recipient's mail server was lost")
TIMED_OUT = Reply(451, "4.4.2", "Timed out waiting for the recipient's mail server")
TLS_UNAVAILABLE = Reply(451, "4.7.0", "The mail server did not offer a required TLS session")
PROTOCOL_ERROR = Reply(451, "4.5.0", "Unexpected reply from the recipient's mail server")
EXPIRED = Reply(550, "5.4.7", "Delivery time expired")  # RFC 3463 X.4.7
MESSAGE_MISSING = Reply(554, "5.6.0", "The message has no content")  # nothing to send, ever
# Every recent attempt was cut off before its outcome was recorded (the worker was killed or
# wedged each time): given up rather than claimed, and perhaps sent, once per lease for ever.
# RFC 3463 X.3.0: other or undefined mail system status.
INTERRUPTED = Reply(
    554, "5.3.0", "Delivery given up: its attempts were cut off before they could be recorded"
)

OWN_ANSWERS: Mapping[str, Reply] = {
    name: value for name, value in globals().items() if isinstance(value, Reply)
}


def classify(answer: SmtpAnswer) -> Outcome:
    """The outcome an answer means before any retry bookkeeping (RFC 5321 section 4.2.1)."""
    if answer.stage in SESSION_STAGES:
        return Outcome.DEFERRED
    if answer.stage is Stage.RCPT and answer.code == 552:
        # RFC 5321 section 4.5.3.1.10: 552 to RCPT is an old way of saying "too many
        # recipients" and must be treated as the temporary 452.
        return Outcome.DEFERRED
    if 200 <= answer.code < 300:
        # Only the reply to the end of DATA accepts a message; earlier 2xx are intermediate.
        return Outcome.DELIVERED if answer.stage is Stage.DATA else Outcome.DEFERRED
    if 500 <= answer.code < 600:
        return Outcome.BOUNCED
    # 4xx, and anything out of protocol (1xx, 3xx where a final reply was due): try again.
    return Outcome.DEFERRED


def another_host_may_take(answer: SmtpAnswer) -> bool:
    """Whether a recipient one host deferred is offered to the next host of the route in the
    same attempt. RFC 5321 section 5.1 has the client try the addresses in order "until a
    delivery attempt succeeds", and Postfix keeps such recipients for a backup host: a primary
    greylisting or over its limits should not hold the mail until the next retry. Never after
    a lost or silent end of DATA: that host may have taken the message, and another copy
    would be a duplicate."""
    if classify(answer) is not Outcome.DEFERRED:
        return False
    return answer.remote or answer.stage is not Stage.DATA


@dataclass(frozen=True, slots=True)
class Verdict:
    """What happens to one recipient after an attempt."""

    outcome: Outcome
    answer: SmtpAnswer
    retry_in: int | None = None  # seconds, when deferred
    expired: bool = False  # bounced because it stayed queued too long


def judge(
    answer: SmtpAnswer,
    *,
    attempts: int,
    age_seconds: float,
    schedule: Sequence[int],
    max_age_seconds: int,
) -> Verdict:
    """Classify, then turn a temporary failure into a retry, or a bounce once it is too old.

    `attempts` counts this one. The remote's last answer is kept on an expired bounce, so the
    sender learns why the mail never went (RFC 3464's Diagnostic-Code is that reply).
    """
    outcome = classify(answer)
    if outcome is not Outcome.DEFERRED:
        return Verdict(outcome, answer)
    plan = plan_retry(schedule, attempts, age_seconds, max_age_seconds)
    if plan.expired:
        return Verdict(Outcome.BOUNCED, answer, expired=True)
    return Verdict(Outcome.DEFERRED, answer, retry_in=plan.delay)


# RFC 3463 subjects (the middle digit of an enhanced code) that say something about the message
# itself or our own sending setup, not about the recipient: our own mail system (X.3, said only
# by us: a remote's X.3 is the recipient's system), media/content (X.6) and security or policy
# (X.7).
_SENDER_SIDE_SUBJECTS = frozenset({"3", "6", "7"})


def failed_not_bounced(verdict: Verdict) -> bool:
    """Whether a permanent failure is Resend's email.failed rather than email.bounced.

    Resend's email.bounced says the recipient's side refused the mail; email.failed says it could
    not be sent because of an error on the sending side. So only our own conclusions (no remote
    host replied) about the message or our setup are failures: a message with nothing to send
    (5.6.0), say. What we conclude about the recipient's domain or route (no such domain, null MX,
    no reachable host, expired while deferred) stays a bounce, as a Postfix DSN would call it.
    """
    answer = verdict.answer
    if verdict.outcome is not Outcome.BOUNCED or answer.remote or verdict.expired:
        return False
    subject = answer.enhanced.split(".")[1] if answer.enhanced else None
    return subject in _SENDER_SIDE_SUBJECTS


class EmailStatus(StrEnum):
    SENT = "sent"
    DELIVERED = "delivered"
    DELIVERY_DELAYED = "delivery_delayed"
    BOUNCED = "bounced"
    PARTIALLY_BOUNCED = "partially_bounced"
    CANCELED = "canceled"
    SUPPRESSED = "suppressed"


def email_status(recipient_states: Mapping[str, int]) -> EmailStatus:
    """An email's status from how many of its recipients are in each delivery state.

    Read top to bottom, first match wins:
      every recipient canceled               -> canceled
      every recipient canceled or suppressed -> suppressed (when one was)
      some still to go, one of them deferred -> delivery_delayed
      some still to go                       -> sent
      all done, none bounced                 -> delivered
      all done, none delivered               -> bounced
      all done, some of each                 -> partially_bounced
    """
    pending = sum(recipient_states.get(s, 0) for s in ("queued", "deferred", "sending"))
    delivered = recipient_states.get("delivered", 0)
    bounced = recipient_states.get("bounced", 0)
    if pending == 0 and delivered == 0 and bounced == 0:
        # A recipient on the suppression list is never attempted (Resend: email.suppressed);
        # otherwise suppressed recipients do not change what the others' outcomes say.
        suppressed = recipient_states.get("suppressed", 0)
        return EmailStatus.SUPPRESSED if suppressed else EmailStatus.CANCELED
    if pending:
        return (
            EmailStatus.DELIVERY_DELAYED if recipient_states.get("deferred") else EmailStatus.SENT
        )
    if bounced == 0:
        return EmailStatus.DELIVERED
    if delivered == 0:
        return EmailStatus.BOUNCED
    return EmailStatus.PARTIALLY_BOUNCED
