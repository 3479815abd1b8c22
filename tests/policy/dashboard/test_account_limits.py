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
    refusal_wait,
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
    assert wait_before_check(failures(FREE_FAILURES), 100.0) == FIRST_WAIT_SECONDS
    assert wait_before_check(failures(FREE_FAILURES + 1), 100.0) == 2 * FIRST_WAIT_SECONDS
    assert wait_before_check(failures(FREE_FAILURES + 1), 101.0) == 2 * FIRST_WAIT_SECONDS - 1
    assert wait_before_check(failures(FREE_FAILURES + 50), 100.0) == MAX_WAIT_SECONDS
    assert wait_before_check(failures(FREE_FAILURES + 50), 100.0 + MAX_WAIT_SECONDS) == 0.0


def test_failures_are_forgotten_after_a_quiet_quarter_hour() -> None:
    record = failures(FREE_FAILURES + 3)
    later = 100.0 + FORGET_AFTER_SECONDS + 1
    assert wait_before_check(record, later) == 0.0 and refusal_wait(record, 1, later) is None
    assert after_failure(record, later).failures == 1


def test_checks_under_way_count_against_the_failures_left() -> None:
    """Sign-ins sent together: no more are checked at once than failures are left."""
    assert refusal_wait(None, 0, 100.0) is None
    assert refusal_wait(None, FREE_FAILURES - 1, 100.0) is None
    assert refusal_wait(None, FREE_FAILURES, 100.0) == 1.0
    assert refusal_wait(failures(FREE_FAILURES - 2), 1, 100.0) is None
    assert refusal_wait(failures(FREE_FAILURES - 1), 1, 100.0) == 1.0
    assert refusal_wait(failures(FREE_FAILURES), 0, 100.0) == FIRST_WAIT_SECONDS


def test_an_account_key_is_a_fixed_size_digest_of_the_address_as_compared() -> None:
    assert account_key("ann@example.com") == account_key("ann@example.com")
    assert account_key("ann@example.com") != account_key("ann@example.org")
    assert len(account_key("x" * 10_000)) == 64
