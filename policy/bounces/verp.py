"""Bounce addresses (VERP): one envelope sender per delivery, `bounce+osb_<did>_<sig>@<reply
domain>`, signed like reply tokens (DESIGN.md section 4, "Bounce addresses").

`<did>` is the delivery row's UUID in 32 lowercase hex; `<sig>` the first 80 bits of
HMAC-SHA256(secret, "b1:<tenant>:<did>:<reply domain>"). 7 + 4 + 32 + 1 + 20 = 64 octets of local
part, RFC 5321 section 4.5.3.1.1's limit exactly. A DSN that comes back to it names one recipient
of one message, whatever the DSN itself says or lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from uuid import UUID

from policy.tokens import ReplyTokens, TokenFailure

BOUNCE_LOCAL_PREFIX = "bounce+"
BOUNCE_TOKEN_PREFIX = "osb_"
_EXACT = re.compile(r"osb_([0-9a-f]{32})_([0-9a-f]{20})", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class BounceToken:
    delivery_id: UUID
    signature: str

    def __str__(self) -> str:
        return f"{BOUNCE_TOKEN_PREFIX}{self.delivery_id.hex}_{self.signature}"

    def address(self, reply_domain: str) -> str:
        return f"{BOUNCE_LOCAL_PREFIX}{self}@{reply_domain.lower()}"


def _message(tenant_id: UUID, delivery_id: UUID, reply_domain: str) -> str:
    return f"b1:{tenant_id}:{delivery_id.hex}:{reply_domain.lower()}"


def mint_bounce_token(
    tokens: ReplyTokens, tenant_id: UUID, delivery_id: UUID, reply_domain: str
) -> BounceToken:
    return BounceToken(delivery_id, tokens.sign(_message(tenant_id, delivery_id, reply_domain)))


def bounce_address(
    tokens: ReplyTokens, tenant_id: UUID, delivery_id: UUID, reply_domain: str
) -> str:
    return mint_bounce_token(tokens, tenant_id, delivery_id, reply_domain).address(reply_domain)


def bounce_token_from_local_part(local_part: str) -> BounceToken | TokenFailure | None:
    """None when the local part is no bounce address; MALFORMED when it tries to be one."""
    if not local_part.lower().startswith(BOUNCE_LOCAL_PREFIX + BOUNCE_TOKEN_PREFIX):
        return None
    found = _EXACT.fullmatch(local_part[len(BOUNCE_LOCAL_PREFIX) :])
    if found is None:
        return TokenFailure.MALFORMED
    return BounceToken(UUID(hex=found.group(1).lower()), found.group(2).lower())


@dataclass(frozen=True, slots=True)
class DeliveryEvidence:
    """The delivery a bounce token names, for the tenant of the recipient domain."""

    delivery_id: UUID
    email_id: UUID
    recipient: str
    thread_id: UUID | None


@dataclass(frozen=True, slots=True)
class BounceVerdict:
    token: BounceToken | None
    failure: TokenFailure | None
    delivery: DeliveryEvidence | None = None

    @property
    def valid(self) -> bool:
        return self.delivery is not None and self.failure is None


def verify_bounce_token(
    tokens: ReplyTokens,
    token: BounceToken,
    tenant_id: UUID,
    recipient_domain: str,
    evidence: DeliveryEvidence | None,
) -> BounceVerdict:
    """The HMAC must hold for the recipient domain's tenant and domain, AND the delivery must be
    that tenant's: a forged address, or one of another tenant, links nothing."""
    if not tokens.check(_message(tenant_id, token.delivery_id, recipient_domain), token.signature):
        return BounceVerdict(token, TokenFailure.BAD_SIGNATURE)
    if evidence is None:
        return BounceVerdict(token, TokenFailure.UNKNOWN_EMAIL)
    return BounceVerdict(token, None, evidence)
