"""Signed, expiring download links: what lets a URL stand in for the API key, as Resend's do.

A link names one path of one tenant until a time; its signature is HMAC-SHA256 under the reply
token secret (a message of its own kind, "d1:", so no token can pass for a link), and previous
secrets verify so a rotation does not break the links already handed out.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

# Long enough to fetch what an API answer named, short enough that a link pasted into a log or a
# ticket stops working the same hour. Fetching the email again gives a fresh link.
LINK_LIFETIME = timedelta(hours=1)
SIGNATURE_HEX_DIGITS = 32  # 128 bits


@dataclass(frozen=True, slots=True)
class SignedLink:
    path: str
    tenant_id: UUID
    expires: int  # Unix seconds

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.expires, UTC)


class DownloadLinks:
    """Signs with the current secret; verifies with the current and every previous one."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets or not secrets[0]:
            raise ValueError("a secret is required to sign download links")
        self._secrets = tuple(secrets)

    @staticmethod
    def _signature(secret: bytes, link: SignedLink) -> str:
        message = f"d1:{link.tenant_id}:{link.expires}:{link.path}".encode()
        return hmac.new(secret, message, hashlib.sha256).hexdigest()[:SIGNATURE_HEX_DIGITS]

    def sign(self, tenant_id: UUID, path: str, now: datetime) -> tuple[SignedLink, str]:
        link = SignedLink(path, tenant_id, int((now + LINK_LIFETIME).timestamp()))
        return link, self._signature(self._secrets[0], link)

    def valid(self, link: SignedLink, signature: str, now: datetime) -> bool:
        """Genuine and not expired. Every secret is tried, so timing tells nothing."""
        genuine = False
        for secret in self._secrets:
            genuine |= hmac.compare_digest(self._signature(secret, link), signature)
        return genuine and now.timestamp() < link.expires
