"""Optional two-factor sign-in: RFC 6238 codes (pyotp), 30-second steps, one step of drift
either way (section 5.2); the matched step is returned so storage refuses a replay."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta

import pyotp

ISSUER = "OpenSend"
DRIFT_STEPS = 1


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, email: str) -> str:
    """The otpauth:// URI an authenticator app reads (as a QR code or typed in)."""
    uri: str = pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)
    return uri


def matching_step(secret: str, code: str, now: datetime | None = None) -> int | None:
    """The time step whose code this is (now, or one step either side), or None."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    now = now or datetime.now(UTC)
    for drift in range(-DRIFT_STEPS, DRIFT_STEPS + 1):
        moment = now + timedelta(seconds=drift * totp.interval)
        if hmac.compare_digest(totp.at(moment), code):
            return int(totp.timecode(moment))
    return None
