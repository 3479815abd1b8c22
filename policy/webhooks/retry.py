"""When a failed webhook delivery is tried again, when it is given up, and when its endpoint is.

The schedule is a table of waits after each failed attempt (Resend's by default, settable as
OPENSEND_WEBHOOK_RETRY_SCHEDULE); a delivery whose every wait has been used is failed.
"""

from __future__ import annotations

from dataclasses import dataclass

# Resend's waits after attempt 1, 2, ... (resend.com/docs/webhooks/retries-and-replays).
RESEND_SCHEDULE: tuple[int, ...] = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
# An endpoint that has failed every attempt for this long is disabled (visible in the API).
DISABLE_AFTER_SECONDS = 5 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Next:
    """What follows one attempt: success, a retry in `retry_in` seconds, or failed."""

    status: str  # success, attempting, failed
    retry_in: int | None = None


def after_attempt(succeeded: bool, attempts: int, schedule: tuple[int, ...]) -> Next:
    """`attempts` counts the one just made (1 for the first)."""
    if succeeded:
        return Next("success")
    if attempts <= len(schedule):
        return Next("attempting", schedule[attempts - 1])
    return Next("failed")


def succeeded(status_code: int | None) -> bool:
    """Any 2xx within the timeout is a success; a redirect is not followed, so it is a failure."""
    return status_code is not None and 200 <= status_code < 300
