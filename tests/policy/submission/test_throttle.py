"""Failed logins: each next failure answered later, then the address locked out for a while;
records forgotten once old; IPv6 clients counted by their /64."""

from __future__ import annotations

import pytest

from policy import replies
from policy.submission.throttle import (
    MAX_DELAY_SECONDS,
    AuthLimits,
    FailureRecord,
    Outcome,
    after_failure,
    after_success,
    before_login,
    client_key,
    current,
    delay_for,
    lookup_failed,
)

LIMITS = AuthLimits(max_failures=5, lockout_seconds=900.0, first_delay_seconds=1.0)


def fail(times: int, *, start: float = 0.0, limits: AuthLimits = LIMITS) -> FailureRecord | None:
    record: FailureRecord | None = None
    for n in range(times):
        record = after_failure(record, start + n, limits).record
    return record


def test_each_failure_is_answered_535_after_twice_the_delay_of_the_one_before() -> None:
    record = None
    delays = []
    for n in range(4):
        verdict = after_failure(record, float(n), LIMITS)
        assert (verdict.outcome, verdict.reply, verdict.close) == (
            Outcome.FAILURE,
            replies.S535_AUTH_INVALID,
            False,
        )
        delays.append(verdict.delay)
        record = verdict.record
    assert delays == [1.0, 2.0, 4.0, 8.0]


def test_the_failure_that_reaches_the_limit_locks_out_with_421_and_closes() -> None:
    verdict = after_failure(fail(4), 10.0, LIMITS)
    assert verdict.outcome is Outcome.LOCKOUT
    assert verdict.reply is replies.S421_AUTH_LOCKOUT
    assert verdict.close and verdict.delay == 0.0
    assert verdict.record == FailureRecord(5, 10.0, locked_until=910.0)


def test_a_locked_out_address_is_refused_454_until_the_lockout_ends() -> None:
    locked = after_failure(fail(4), 10.0, LIMITS).record
    refused = before_login(locked, 909.9, LIMITS)
    assert refused is not None and refused.reply is replies.S454_AUTH_LOCKED_OUT
    assert refused.outcome is Outcome.LOCKED_OUT
    assert before_login(locked, 910.0, LIMITS) is None
    assert current(locked, 910.0, LIMITS) is None  # and the count starts again


def test_failures_are_forgotten_once_the_lockout_period_has_passed_since_the_last() -> None:
    record = fail(4)
    assert current(record, 3.0 + 899.0, LIMITS) == record
    later = after_failure(record, 3.0 + 900.0, LIMITS)
    assert (later.outcome, later.delay) == (Outcome.FAILURE, 1.0)
    assert later.record == FailureRecord(1, 903.0)


def test_a_success_keeps_the_failures_of_the_address() -> None:
    record = fail(3)
    verdict = after_success(record, 5.0, LIMITS)
    assert (verdict.outcome, verdict.reply) == (Outcome.SUCCESS, replies.S235_AUTH_OK)
    assert verdict.record == record
    assert after_failure(verdict.record, 6.0, LIMITS).delay == 8.0


def test_a_lookup_failure_changes_nothing() -> None:
    record = fail(2)
    verdict = lookup_failed(record, 3.0, LIMITS)
    assert (verdict.outcome, verdict.reply) == (Outcome.UNAVAILABLE, replies.S454_AUTH_TEMPORARY)
    assert verdict.record == record


def test_delays_stop_growing_at_the_cap_and_zero_turns_them_off() -> None:
    assert delay_for(40, LIMITS) == MAX_DELAY_SECONDS
    off = AuthLimits(max_failures=100, lockout_seconds=60.0, first_delay_seconds=0.0)
    assert [delay_for(n, off) for n in (1, 2, 50)] == [0.0, 0.0, 0.0]


def test_a_limit_of_one_locks_out_at_the_first_failure() -> None:
    one = AuthLimits(max_failures=1, lockout_seconds=60.0, first_delay_seconds=1.0)
    assert after_failure(None, 0.0, one).outcome is Outcome.LOCKOUT


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        (None, "unknown"),
    ],
    ids=["ipv4", "ipv6", "ipv6_same_network", "ipv4_mapped", "ipv6_scoped", "unknown"],
)
def test_addresses_are_counted_per_ipv4_address_and_per_ipv6_64(ip: str | None, key: str) -> None:
    assert client_key(ip) == key
