"""When a temporarily failed delivery is tried again, and when it is given up: the backoff table.

Pure arithmetic on the operator's OPENSEND_RETRY_SCHEDULE and OPENSEND_MAX_QUEUE_AGE; the
worker passes in how many attempts were made and how old the message is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """After a temporary failure: try again in `delay` seconds, or give up (`expired`)."""

    expired: bool
    delay: int


def retry_delay(schedule: Sequence[int], attempts: int) -> int:
    """Seconds to wait after the `attempts`-th attempt (1 = the first) failed temporarily.

    The table is read in order and its last step repeats: with `1m,5m,15m,1h,4h,12h` the first
    failure waits a minute, the sixth and every later one twelve hours. RFC 5321 section
    4.5.4.1 asks for at least 30 minutes between retries of one destination; the default's first
    short steps only catch greylisting (typically 1 to 5 minutes), and the step sizes grow as
    the section suggests.
    """
    if not schedule:
        raise ValueError("a retry schedule needs at least one step")
    if attempts < 1:
        raise ValueError("a delay follows an attempt; attempts starts at 1")
    return schedule[min(attempts - 1, len(schedule) - 1)]


def plan_retry(
    schedule: Sequence[int], attempts: int, age_seconds: float, max_age_seconds: int
) -> RetryPlan:
    """Retry later, or give up because the message has been queued for too long.

    RFC 5321 section 4.5.4.1: "the give-up time generally needs to be at least 4-5 days". The
    age is checked when an attempt fails, as Postfix checks maximal_queue_lifetime: a message
    that failed just under the limit gets one more attempt, which may land after it.
    """
    if age_seconds >= max_age_seconds:
        return RetryPlan(expired=True, delay=0)
    return RetryPlan(expired=False, delay=retry_delay(schedule, attempts))
