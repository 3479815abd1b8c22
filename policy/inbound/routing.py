"""RCPT TO decisions: whether this MX takes mail for a recipient, and for which tenant.

The checks run in the order of `RCPT_CHECKS`; the first that answers decides. Lookups are done by
the caller and passed in as values, so every verdict here is a pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from policy import replies
from policy.bounces.verp import BounceVerdict
from policy.inbound.addresses import Mailbox
from policy.replies import Reply
from policy.tokens import ReplyToken, TokenFailure


class Action(StrEnum):
    ACCEPT = "accept"
    DEFER = "defer"
    REJECT = "reject"


class RouteKind(StrEnum):
    EXACT = "exact"
    ALIAS = "alias"
    CATCH_ALL = "catch_all"
    REPLY_TOKEN = "reply_token"
    BOUNCE_TOKEN = "bounce_token"


@dataclass(frozen=True, slots=True)
class DomainRouting:
    """What the directory knows about a recipient's domain and address (None: domain unknown)."""

    tenant_id: UUID
    domain_id: UUID
    domain: str  # the tenant's domain
    reply_domain: str | None  # its reply subdomain, when it has one
    route_kind: RouteKind | None  # the best route for the address, if any
    route_address: str | None  # the address or `*@domain` of that route
    route_target: str | None  # an alias's destination


@dataclass(frozen=True, slots=True)
class TokenVerdict:
    token: ReplyToken | None
    failure: TokenFailure | None

    @property
    def valid(self) -> bool:
        return self.token is not None and self.failure is None


@dataclass(frozen=True, slots=True)
class RcptInput:
    mailbox: Mailbox
    routing: DomainRouting | None
    token: TokenVerdict | None  # set when the local part is a reply+osr_ address
    bounce: BounceVerdict | None = None  # set when the local part is a bounce+osb_ address


@dataclass(frozen=True, slots=True)
class RcptDecision:
    action: Action
    reply: Reply
    check: str
    reason: str  # internal, for logs and the metrics label; never shown to the client
    mailbox: Mailbox | None = None
    tenant_id: UUID | None = None
    route_kind: RouteKind | None = None
    delivered_to: str | None = None  # the address the message is stored under (alias target)
    token: TokenVerdict | None = None
    bounce: BounceVerdict | None = None


def _reject(reply: Reply, check: str, reason: str) -> RcptDecision:
    return RcptDecision(Action.REJECT, reply, check, reason)


def check_domain_known(rcpt: RcptInput) -> RcptDecision | None:
    # Port 25 never relays (DESIGN.md 7): a domain that is not a verified receiving domain or reply
    # domain of some tenant is refused outright. The source document calls this "missing-domain".
    if rcpt.routing is None:
        return _reject(replies.S550_RELAY_DENIED, "domain_known", "missing_domain")
    return None


def check_reply_token(rcpt: RcptInput) -> RcptDecision | None:
    # A reply address is accepted whatever its token's verdict: an invalid or foreign token is
    # stored unmatched for the tenant that owns the recipient domain, never bounced, so a forged
    # token tells its sender nothing and a stale one still reaches a person.
    if rcpt.token is None or rcpt.routing is None:
        return None
    reason = "token_valid" if rcpt.token.valid else f"token_{rcpt.token.failure}"
    return RcptDecision(
        Action.ACCEPT,
        replies.S250_RECIPIENT_OK,
        "reply_token",
        reason,
        mailbox=rcpt.mailbox,
        tenant_id=rcpt.routing.tenant_id,
        route_kind=RouteKind.REPLY_TOKEN,
        delivered_to=rcpt.mailbox.address,
        token=rcpt.token,
    )


def check_bounce_token(rcpt: RcptInput) -> RcptDecision | None:
    # A bounce address (VERP) is accepted whatever its verdict, like a reply address: a forged
    # one, or one naming another tenant's delivery, is stored for the recipient domain's tenant
    # and links to nothing, and its sender learns nothing.
    if rcpt.bounce is None or rcpt.routing is None:
        return None
    reason = "bounce_valid" if rcpt.bounce.valid else f"bounce_{rcpt.bounce.failure}"
    return RcptDecision(
        Action.ACCEPT,
        replies.S250_RECIPIENT_OK,
        "bounce_token",
        reason,
        mailbox=rcpt.mailbox,
        tenant_id=rcpt.routing.tenant_id,
        route_kind=RouteKind.BOUNCE_TOKEN,
        delivered_to=rcpt.mailbox.address,
        bounce=rcpt.bounce,
    )


def check_route(rcpt: RcptInput) -> RcptDecision | None:
    routing = rcpt.routing
    if routing is None or routing.route_kind is None:
        return _reject(replies.S550_NO_SUCH_USER, "route", "no_route")
    delivered_to = routing.route_target or rcpt.mailbox.address
    return RcptDecision(
        Action.ACCEPT,
        replies.S250_RECIPIENT_OK,
        "route",
        f"route_{routing.route_kind}",
        mailbox=rcpt.mailbox,
        tenant_id=routing.tenant_id,
        route_kind=routing.route_kind,
        delivered_to=delivered_to,
    )


# The RCPT checks, in order. Address syntax and the recipient limit are checked before these, by
# the protocol layer, because they need no lookup.
RCPT_CHECKS: tuple[tuple[str, Callable[[RcptInput], RcptDecision | None]], ...] = (
    # 1. The domain must belong to a tenant, verified, with receiving on (else: relay denied).
    ("domain_known", check_domain_known),
    # 2. reply+osr_… at a known domain: accepted, the token's verdict travels with the envelope.
    ("reply_token", check_reply_token),
    # 3. bounce+osb_… at a known domain: accepted, the delivery it names travels with it.
    ("bounce_token", check_bounce_token),
    # 4. Anything else needs a route: exact address, alias, or the domain's catch-all.
    ("route", check_route),
)


def decide_rcpt(rcpt: RcptInput) -> RcptDecision:
    for _name, check in RCPT_CHECKS:
        decision = check(rcpt)
        if decision is not None:
            return decision
    raise AssertionError("check_route always decides")  # pragma: no cover


def route_candidates(mailbox: Mailbox) -> list[str]:
    """Route addresses to look up, best first: exact, without +detail, the catch-all."""
    candidates = [mailbox.address]
    if mailbox.base_local != mailbox.local:
        candidates.append(f"{mailbox.base_local}@{mailbox.domain}")
    candidates.append(f"*@{mailbox.domain}")
    return candidates


def rcpt_syntax_rejected() -> RcptDecision:
    return _reject(replies.S501_SYNTAX_ADDRESS, "address_syntax", "bad_syntax")


def rcpt_over_limit() -> RcptDecision:
    return RcptDecision(
        Action.DEFER, replies.S452_TOO_MANY_RECIPIENTS, "recipient_limit", "too_many_recipients"
    )


def rcpt_lookup_failed() -> RcptDecision:
    # Postfix's "as late as possible" rule: a lookup that could not be made is never a 5xx.
    return RcptDecision(Action.DEFER, replies.S451_TEMP_LOOKUP, "lookup", "lookup_failed")
