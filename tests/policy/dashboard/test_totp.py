"""Two-factor codes (RFC 6238): the current step and one either side match; others do not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from policy.dashboard.totp import matching_step, new_secret

NOW = datetime(2026, 12, 7, 8, 0, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "matches"),
    [(-60, False), (-30, True), (0, True), (30, True), (60, False)],
    ids=["two_steps_early", "one_step_early", "now", "one_step_late", "two_steps_late"],
)
def test_a_code_matches_within_one_step_of_drift(seconds: int, matches: bool) -> None:
    secret = new_secret()
    totp = pyotp.TOTP(secret)
    code = totp.at(NOW + timedelta(seconds=seconds))
    step = matching_step(secret, code, NOW)
    if matches:
        assert step == totp.timecode(NOW + timedelta(seconds=seconds))
    else:
        assert step is None


@pytest.mark.parametrize(
    "code", ["", "12345", "1234567", "abcdef"], ids=["empty", "short", "long", "letters"]
)
def test_a_code_that_is_not_six_digits_never_matches(code: str) -> None:
    assert matching_step(new_secret(), code, NOW) is None
