"""Reply tokens: mint and verify `osr_<eid>_<sig>` exactly as DESIGN.md section 4 specifies.

The signature is the first 80 bits of HMAC-SHA256 over tenant, email and reply domain, so a token
is only good for the tenant and domain it was minted for. Comparison is constant-time; previous
secrets verify (never mint) so a secret can be rotated without orphaning conversations.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

TOKEN_PREFIX = "osr_"
REPLY_LOCAL_PREFIX = "reply+"
SIGNATURE_HEX_DIGITS = 20

# Lowercase hex survives MTAs that fold case, and parsing accepts either case (DESIGN.md 4).
_TOKEN_PATTERN = re.compile(r"osr_([0-9a-f]{32})_([0-9a-f]{20})(?![0-9a-z])", re.IGNORECASE)
_TOKEN_EXACT = re.compile(r"osr_([0-9a-f]{32})_([0-9a-f]{20})", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ReplyToken:
    email_id: UUID
    signature: str

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}{self.email_id.hex}_{self.signature}"

    def address(self, reply_domain: str) -> str:
        # 6 + 4 + 32 + 1 + 20 = 63 octets of local part, within RFC 5321 section 4.5.3.1.1's 64.
        return f"{REPLY_LOCAL_PREFIX}{self}@{reply_domain.lower()}"


class TokenFailure(StrEnum):
    """Why a token did not match; stored with the received message for the operator's audit."""

    MALFORMED = "malformed"  # looks like reply+osr_ but is not a well-formed token
    BAD_SIGNATURE = "bad_signature"  # tampered, minted for another tenant or another domain
    UNKNOWN_EMAIL = "unknown_email"  # signature fine but no such outbound email for this tenant
    REVOKED = "revoked"  # the email's stored token was cleared or replaced


def parse_token(text: str) -> ReplyToken | None:
    """A token that is the whole of `text` (case-insensitive), or None."""
    found = _TOKEN_EXACT.fullmatch(text.strip())
    if found is None:
        return None
    return ReplyToken(UUID(hex=found.group(1).lower()), found.group(2).lower())


def find_tokens(text: str) -> list[ReplyToken]:
    """Every token inside `text`, in order: Message-IDs such as `<osr_..._...@example.com>`."""
    return [
        ReplyToken(UUID(hex=m.group(1).lower()), m.group(2).lower())
        for m in _TOKEN_PATTERN.finditer(text)
    ]


def token_from_local_part(local_part: str) -> ReplyToken | TokenFailure | None:
    """None when the local part is not a reply address at all; MALFORMED when it tries to be."""
    if not local_part.lower().startswith(REPLY_LOCAL_PREFIX + TOKEN_PREFIX):
        return None
    token = parse_token(local_part[len(REPLY_LOCAL_PREFIX) :])
    return TokenFailure.MALFORMED if token is None else token


class ReplyTokens:
    """Mints with the current secret; verifies with the current and every previous secret."""

    def __init__(self, secret: bytes, previous: Sequence[bytes] = ()) -> None:
        if not secret:
            raise ValueError("a reply token secret is required")
        self._current = secret
        self._all = (secret, *previous)

    @property
    def secrets(self) -> tuple[bytes, ...]:
        """The current secret first, then the previous ones: what other signatures (download
        links, policy.download_links) are keyed and rotated with."""
        return self._all

    @staticmethod
    def _signature(secret: bytes, tenant_id: UUID, email_id: UUID, reply_domain: str) -> str:
        message = f"v1:{tenant_id}:{email_id.hex}:{reply_domain.lower()}".encode()
        # hmac.digest: OpenSSL's one-shot HMAC, a fraction of hmac.new's cost per token.
        return hmac.digest(secret, message, "sha256").hex()[:SIGNATURE_HEX_DIGITS]

    def mint(self, tenant_id: UUID, email_id: UUID, reply_domain: str) -> ReplyToken:
        return ReplyToken(
            email_id, self._signature(self._current, tenant_id, email_id, reply_domain)
        )

    def sign(self, message: str) -> str:
        """The signature of another kind of token (bounce addresses: policy.bounces.verp),
        made like a reply token's: the first 80 bits of HMAC-SHA256 with the current secret."""
        return _hmac_hex(self._current, message)

    def check(self, message: str, signature: str) -> bool:
        """Constant-time, against the current and every previous secret."""
        valid = False
        for secret in self._all:
            valid |= hmac.compare_digest(_hmac_hex(secret, message), signature)
        return valid

    def signature_valid(self, token: ReplyToken, tenant_id: UUID, reply_domain: str) -> bool:
        # Every secret is tried, whatever the outcome, so timing says nothing about which matched.
        valid = False
        for secret in self._all:
            expected = self._signature(secret, tenant_id, token.email_id, reply_domain)
            valid |= hmac.compare_digest(expected, token.signature)
        return valid


def _hmac_hex(secret: bytes, message: str) -> str:
    return hmac.digest(secret, message.encode(), "sha256").hex()[:SIGNATURE_HEX_DIGITS]
