"""Standard Webhooks signatures (standardwebhooks.com, the scheme Svix and Resend use).

`webhook-signature` is `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed by the base64
decoded secret after `whsec_`; during a rotation's grace period both secrets sign, the two
signatures space-separated. The same values go out as svix-id/-timestamp/-signature, which the
Resend SDK reads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
# Standard Webhooks asks for 24 to 64 bytes; 32 is what Svix generates.
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    secrets_: Sequence[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The headers of one delivery attempt, signed with every secret in force."""
    value = " ".join(signature(secret, message_id, timestamp, body) for secret in secrets_)
    stamp = str(timestamp)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": stamp,
        "webhook-signature": value,
        "svix-id": message_id,
        "svix-timestamp": stamp,
        "svix-signature": value,
    }
