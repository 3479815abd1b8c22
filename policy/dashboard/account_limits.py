"""Failed dashboard sign-ins counted per account, beside the lockout per client address.

The address lockout (policy.submission.throttle) does not bound guesses spread over many
addresses. Locking the account out instead would let anyone lock a user out of their dashboard
by failing on purpose, so an account is slowed down: past FREE_FAILURES failures, a sign-in for
it is checked only once a wait has passed since its last failure, the wait doubling with each
further failure up to MAX_WAIT_SECONDS. A sign-in sooner is refused without its password being
looked at. A success, or FORGET_AFTER_SECONDS without a failure, forgets them.

Pure decisions over an `AccountFailures` the caller keeps per account (`account_key`), on the
caller's monotonic clock. Unknown accounts are counted the same way, so the answers do not tell
which addresses have an account.
"""

from __future__ import annotations

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


def account_key(email: str) -> str:
    """The account a sign-in names, as the sign-in looks it up (case does not matter)."""
    return email.strip().lower()


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


def slowed(record: AccountFailures | None, now: float) -> bool:
    """Past its free failures: then its sign-ins are checked one at a time."""
    record = current(record, now)
    return record is not None and record.failures >= FREE_FAILURES


def after_failure(record: AccountFailures | None, now: float) -> AccountFailures:
    record = current(record, now)
    return AccountFailures((record.failures if record else 0) + 1, now)
