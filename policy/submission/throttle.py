"""Failed submission logins: slow each next failure down, then lock the client's address out.

Pure decisions over a `FailureRecord` the caller keeps per client address (`client_key`):
`before_login` says whether an address may try at all; `after_failure` says how long to wait
before answering 535 (the delay doubles with every failure), or that this failure starts a
lockout (421, connection closed). While locked out an address gets 454 without its credentials
being looked at, so a lockout cannot be used to test keys. Failures are forgotten once
`lockout` seconds have passed since the last one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from policy import replies
from policy.replies import Reply

# Longer than this, and a client's own reply timeout (aiosmtplib: 60 s, RFC 5321 section
# 4.5.3.2 asks clients for 5 minutes only on the final dot) could fire before our answer.
MAX_DELAY_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class AuthLimits:
    max_failures: int  # the failure that reaches this starts a lockout
    lockout_seconds: float  # how long a lockout lasts; also how long failures are remembered
    first_delay_seconds: float  # before the first 535; doubled for each further failure


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """What is remembered of one client address; times are the caller's monotonic clock."""

    failures: int
    last_failure: float
    locked_until: float | None = None


class Outcome(StrEnum):
    """Also the `result` label of the AUTH metric."""

    SUCCESS = "success"
    FAILURE = "failure"  # wrong credentials: 535 after a delay
    LOCKOUT = "lockout"  # wrong credentials, and the last allowed: 421, closed
    LOCKED_OUT = "locked_out"  # refused before looking at the credentials: 454
    UNAVAILABLE = "unavailable"  # the key could not be looked up: 454, not counted


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    outcome: Outcome
    reply: Reply
    record: FailureRecord | None  # what to remember of the address from now on (None: nothing)
    delay: float = 0.0  # seconds to wait before the reply
    close: bool = False  # close the connection after the reply


def client_key(ip: str | None) -> str:
    """The unit a lockout applies to: an IPv4 address, or an IPv6 /64 (RFC 4291 section 2.5.4:
    one interface's network, which a single host can fill with addresses at will)."""
    if ip is None:
        return "unknown"
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def current(record: FailureRecord | None, now: float, limits: AuthLimits) -> FailureRecord | None:
    """The record as it stands at `now`: None once its lockout and its failures have expired."""
    if record is None:
        return None
    if record.locked_until is not None:
        return record if now < record.locked_until else None
    return record if now - record.last_failure < limits.lockout_seconds else None


def before_login(
    record: FailureRecord | None, now: float, limits: AuthLimits
) -> AuthVerdict | None:
    """A refusal while the address is locked out; None when it may present credentials."""
    record = current(record, now, limits)
    if record is None or record.locked_until is None:
        return None
    return AuthVerdict(Outcome.LOCKED_OUT, replies.S454_AUTH_LOCKED_OUT, record)


def delay_for(failures: int, limits: AuthLimits) -> float:
    """Before the 535 of the `failures`-th failure in a row: 1x, 2x, 4x ... the first delay."""
    if failures < 1 or limits.first_delay_seconds <= 0:
        return 0.0
    return min(MAX_DELAY_SECONDS, limits.first_delay_seconds * (1 << min(failures - 1, 16)))


def after_failure(record: FailureRecord | None, now: float, limits: AuthLimits) -> AuthVerdict:
    """Wrong credentials: remember one more failure; slow down, or lock out at the limit."""
    record = current(record, now, limits)
    failures = (record.failures if record is not None else 0) + 1
    if failures >= limits.max_failures:
        locked = FailureRecord(failures, now, locked_until=now + limits.lockout_seconds)
        return AuthVerdict(Outcome.LOCKOUT, replies.S421_AUTH_LOCKOUT, locked, close=True)
    return AuthVerdict(
        Outcome.FAILURE,
        replies.S535_AUTH_INVALID,
        FailureRecord(failures, now),
        delay=delay_for(failures, limits),
    )


def after_success(record: FailureRecord | None, now: float, limits: AuthLimits) -> AuthVerdict:
    """A valid key. Earlier failures are kept until they expire: a valid key of one account
    must not wipe the count of guesses made at others' from the same address."""
    return AuthVerdict(Outcome.SUCCESS, replies.S235_AUTH_OK, current(record, now, limits))


def lookup_failed(record: FailureRecord | None, now: float, limits: AuthLimits) -> AuthVerdict:
    """The key could not be checked (storage trouble): nobody's fault, nothing counted."""
    record = current(record, now, limits)
    return AuthVerdict(Outcome.UNAVAILABLE, replies.S454_AUTH_TEMPORARY, record)
