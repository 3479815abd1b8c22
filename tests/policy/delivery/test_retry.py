"""The backoff table: each failed attempt's wait, the last step repeating, and the give-up age."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy.delivery.retry import RetryPlan, plan_retry, retry_delay
from policy.settings import DEFAULT_RETRY_SCHEDULE, load_settings

DEFAULT = load_settings({}).retry_schedule  # 1m,5m,15m,1h,4h,12h
FIVE_DAYS = 5 * 86400


def test_default_schedule_is_the_documented_one() -> None:
    assert DEFAULT_RETRY_SCHEDULE == "1m,5m,15m,1h,4h,12h"
    assert DEFAULT == (60, 300, 900, 3600, 14400, 43200)


@pytest.mark.parametrize(
    ("attempts", "wait"),
    [
        pytest.param(1, 60, id="first-failure-waits-a-minute"),
        pytest.param(2, 300, id="second-five-minutes"),
        pytest.param(3, 900, id="third-fifteen-minutes"),
        pytest.param(4, 3600, id="fourth-an-hour"),
        pytest.param(5, 14400, id="fifth-four-hours"),
        pytest.param(6, 43200, id="sixth-twelve-hours"),
        pytest.param(7, 43200, id="seventh-repeats-the-last-step"),
        pytest.param(50, 43200, id="fiftieth-still-the-last-step"),
    ],
)
def test_attempt_n_waits_the_nth_step_of_the_schedule(attempts: int, wait: int) -> None:
    assert retry_delay(DEFAULT, attempts) == wait


def test_a_one_step_schedule_repeats_that_step() -> None:
    assert [retry_delay((1,), n) for n in (1, 2, 3)] == [1, 1, 1]


@pytest.mark.parametrize(("schedule", "attempts"), [((), 1), ((60,), 0)], ids=["empty", "zero"])
def test_nonsense_is_refused(schedule: tuple[int, ...], attempts: int) -> None:
    with pytest.raises(ValueError):
        retry_delay(schedule, attempts)


def test_a_young_message_is_retried_after_its_step() -> None:
    assert plan_retry(DEFAULT, 2, age_seconds=600, max_age_seconds=FIVE_DAYS) == RetryPlan(
        expired=False, delay=300
    )


def test_a_message_at_the_maximum_age_is_given_up() -> None:
    plan = plan_retry(DEFAULT, 9, age_seconds=FIVE_DAYS, max_age_seconds=FIVE_DAYS)
    assert plan.expired


def test_a_message_just_under_the_maximum_age_gets_one_more_attempt() -> None:
    plan = plan_retry(DEFAULT, 9, age_seconds=FIVE_DAYS - 1, max_age_seconds=FIVE_DAYS)
    assert plan == RetryPlan(expired=False, delay=43200)


@given(
    schedule=st.lists(st.integers(1, 10**6), min_size=1, max_size=10).map(tuple),
    attempts=st.integers(1, 1000),
)
def test_every_delay_is_a_step_of_the_schedule_and_the_last_step_repeats(
    schedule: tuple[int, ...], attempts: int
) -> None:
    delay = retry_delay(schedule, attempts)
    assert delay in schedule
    assert delay == schedule[-1] or attempts < len(schedule)
