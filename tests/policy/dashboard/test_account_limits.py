"""Failed sign-ins per account: free ones, then a doubling wait, never a lockout."""

from __future__ import annotations

from policy.dashboard.account_limits import (
    FIRST_WAIT_SECONDS,
    FORGET_AFTER_SECONDS,
    FREE_FAILURES,
    MAX_WAIT_SECONDS,
    AccountFailures,
    account_key,
    after_failure,
    slowed,
    wait_before_check,
)


def failures(count: int, at: float = 100.0) -> AccountFailures:
    record = None
    for _ in range(count):
        record = after_failure(record, at)
    assert record is not None
    return record


def test_the_free_failures_cost_no_wait_and_the_next_wait_doubles_up_to_a_minute() -> None:
    assert wait_before_check(None, 100.0) == 0.0
    assert wait_before_check(failures(FREE_FAILURES - 1), 100.0) == 0.0
    assert not slowed(failures(FREE_FAILURES - 1), 100.0)
    assert wait_before_check(failures(FREE_FAILURES), 100.0) == FIRST_WAIT_SECONDS
    assert wait_before_check(failures(FREE_FAILURES + 1), 100.0) == 2 * FIRST_WAIT_SECONDS
    assert wait_before_check(failures(FREE_FAILURES + 1), 101.0) == 2 * FIRST_WAIT_SECONDS - 1
    assert wait_before_check(failures(FREE_FAILURES + 50), 100.0) == MAX_WAIT_SECONDS
    assert wait_before_check(failures(FREE_FAILURES + 50), 100.0 + MAX_WAIT_SECONDS) == 0.0
    assert slowed(failures(FREE_FAILURES), 100.0)


def test_failures_are_forgotten_after_a_quiet_quarter_hour() -> None:
    record = failures(FREE_FAILURES + 3)
    later = 100.0 + FORGET_AFTER_SECONDS + 1
    assert wait_before_check(record, later) == 0.0 and not slowed(record, later)
    assert after_failure(record, later).failures == 1


def test_an_account_is_its_address_in_any_case() -> None:
    assert account_key("  Ann@Example.COM ") == account_key("ann@example.com")
