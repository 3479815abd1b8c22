"""Failed dashboard sign-ins counted per account, beside the lockout per client address.

The address lockout (policy.submission.throttle) does not bound guesses spread over many
addresses. Locking the account out instead would let anyone lock a user out of their dashboard
by failing on purpose, so an account is slowed down: past FREE_FAILURES failures, a sign-in for
it is checked only once a wait has passed since its last failure, the wait doubling with each
further failure up to MAX_WAIT_SECONDS. A sign-in sooner is refused without its password being
looked at. FORGET_AFTER_SECONDS without a failure forgets them; a success does not, as they
may be someone else's.

A browser its user signed in from before carries a device token (OWASP's "device cookies"),
and is not slowed: so guessing from elsewhere cannot keep a user out of their own dashboard.

Pure decisions over an `AccountFailures` the caller keeps per account (`account_key`), on the
caller's monotonic clock. Unknown accounts are counted the same way, so the answers do not tell
which addresses have an account.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Above the address lockout's default (OPENSEND_AUTH_MAX_FAILURES, 5): a person mistyping from
# one address meets that first; this bounds what many addresses together may try.
FREE_FAILURES = 10
FIRST_WAIT_SECONDS = 2.0
# At most one guess a minute per account, whatever number of addresses: with a password worth
# the name (and argon2 behind it), years of guessing; for the user, a minute's wait at worst.
MAX_WAIT_SECONDS = 60.0
FORGET_AFTER_SECONDS = 15 * 60.0


@dataclass(frozen=True, slots=True)
class AccountFailures:
    failures: int
    last_failure: float


def account_key(compared_email: str) -> str:
    """The account a sign-in names: its address as the user lookup compares it (the caller
    gets that from the database: PostgreSQL's lower() and Python's differ beyond ASCII), hashed
    to a fixed size whatever was sent."""
    return hashlib.sha256(compared_email.encode("utf-8", "surrogatepass")).hexdigest()


def current(record: AccountFailures | None, now: float) -> AccountFailures | None:
    """The record as it stands at `now`: None once its failures are forgotten."""
    if record is None or now - record.last_failure > FORGET_AFTER_SECONDS:
        return None
    return record


def wait_before_check(record: AccountFailures | None, now: float) -> float:
    """Seconds until a sign-in for the account may be checked; 0 when it may be now."""
    record = current(record, now)
    if record is None or record.failures < FREE_FAILURES:
        return 0.0
    doubled = FIRST_WAIT_SECONDS * 2.0 ** min(record.failures - FREE_FAILURES, 32)
    wait = min(doubled, MAX_WAIT_SECONDS)
    return max(0.0, record.last_failure + wait - now)


def refusal_wait(record: AccountFailures | None, in_flight: int, now: float) -> float | None:
    """None when a sign-in for the account may be checked now; else the seconds to tell the
    person to wait. Beside checks under way, only as many as failures are left before the
    slowdown (a password check takes a while: sign-ins sent together would otherwise all be
    checked before the failures that should have stopped them are counted)."""
    wait = wait_before_check(record, now)
    if wait > 0:
        return wait
    record = current(record, now)
    failed = record.failures if record is not None else 0
    if in_flight and failed + in_flight >= FREE_FAILURES:
        return 1.0
    return None


def after_failure(record: AccountFailures | None, now: float) -> AccountFailures:
    record = current(record, now)
    return AccountFailures((record.failures if record else 0) + 1, now)
