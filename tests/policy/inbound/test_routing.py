"""RCPT TO decisions, one test per row of `RCPT_CHECKS`, plus the protocol layer's verdicts."""

from __future__ import annotations

from uuid import UUID

import pytest

from policy import replies
from policy.inbound.addresses import Mailbox
from policy.inbound.routing import (
    RCPT_CHECKS,
    Action,
    DomainRouting,
    RcptInput,
    RouteKind,
    TokenVerdict,
    decide_rcpt,
    rcpt_lookup_failed,
    rcpt_over_limit,
    rcpt_syntax_rejected,
    route_candidates,
)
from policy.tokens import ReplyToken, TokenFailure

TENANT = UUID("11111111-2222-4333-8444-555555555555")
DOMAIN_ID = UUID("aaaaaaaa-2222-4333-8444-555555555555")
TOKEN = ReplyToken(UUID("0123456789abcdef0123456789abcdef"), "0123456789abcdef0123")


def routing(
    kind: RouteKind | None, address: str | None = None, target: str | None = None
) -> DomainRouting:
    return DomainRouting(
        tenant_id=TENANT,
        domain_id=DOMAIN_ID,
        domain="example.com",
        reply_domain="reply.example.com",
        route_kind=kind,
        route_address=address,
        route_target=target,
    )


def test_rcpt_checks_run_in_the_designed_order() -> None:
    assert [name for name, _check in RCPT_CHECKS] == [
        "domain_known",
        "reply_token",
        "bounce_token",
        "route",
    ]


# -- 1. domain_known --------------------------------------------------------------------------


def test_rcpt_to_unknown_domain_is_refused_550_relay_denied() -> None:
    decision = decide_rcpt(RcptInput(Mailbox("alice", "elsewhere.example"), None, None))
    assert decision.action is Action.REJECT
    assert decision.reply == replies.S550_RELAY_DENIED
    assert decision.check == "domain_known"
    assert decision.reason == "missing_domain"
    assert decision.tenant_id is None


def test_reply_address_at_unknown_domain_is_still_relay_denied() -> None:
    verdict = TokenVerdict(TOKEN, None)
    decision = decide_rcpt(RcptInput(Mailbox(f"reply+{TOKEN}", "elsewhere.example"), None, verdict))
    assert decision.reply == replies.S550_RELAY_DENIED


# -- 2. reply_token ---------------------------------------------------------------------------


def test_reply_address_with_valid_token_is_accepted_with_its_verdict() -> None:
    mailbox = Mailbox(f"reply+{TOKEN}", "reply.example.com")
    verdict = TokenVerdict(TOKEN, None)
    decision = decide_rcpt(RcptInput(mailbox, routing(None), verdict))
    assert decision.action is Action.ACCEPT
    assert decision.reply == replies.S250_RECIPIENT_OK
    assert decision.check == "reply_token"
    assert decision.reason == "token_valid"
    assert decision.tenant_id == TENANT
    assert decision.route_kind is RouteKind.REPLY_TOKEN
    assert decision.delivered_to == mailbox.address
    assert decision.token == verdict


@pytest.mark.parametrize(
    "verdict",
    [
        pytest.param(TokenVerdict(TOKEN, TokenFailure.BAD_SIGNATURE), id="bad_signature"),
        pytest.param(TokenVerdict(TOKEN, TokenFailure.UNKNOWN_EMAIL), id="unknown_email"),
        pytest.param(TokenVerdict(TOKEN, TokenFailure.REVOKED), id="revoked"),
        pytest.param(TokenVerdict(None, TokenFailure.MALFORMED), id="malformed"),
    ],
)
def test_reply_address_with_invalid_token_is_accepted_to_be_stored_unmatched(
    verdict: TokenVerdict,
) -> None:
    mailbox = Mailbox("reply+osr_whatever", "reply.example.com")
    decision = decide_rcpt(RcptInput(mailbox, routing(None), verdict))
    assert decision.action is Action.ACCEPT
    assert decision.reply == replies.S250_RECIPIENT_OK
    assert decision.check == "reply_token"
    assert decision.reason == f"token_{verdict.failure}"
    assert decision.tenant_id == TENANT
    assert decision.token == verdict


# -- 3. route ---------------------------------------------------------------------------------


def test_rcpt_to_address_without_route_is_refused_550_no_such_user() -> None:
    decision = decide_rcpt(RcptInput(Mailbox("nobody", "example.com"), routing(None), None))
    assert decision.action is Action.REJECT
    assert decision.reply == replies.S550_NO_SUCH_USER
    assert decision.check == "route"
    assert decision.reason == "no_route"


@pytest.mark.parametrize(
    ("route", "delivered_to"),
    [
        pytest.param(
            routing(RouteKind.EXACT, "alice@example.com"), "alice@example.com", id="exact"
        ),
        pytest.param(
            routing(RouteKind.ALIAS, "alice@example.com", "team@example.org"),
            "team@example.org",
            id="alias",
        ),
        pytest.param(
            routing(RouteKind.CATCH_ALL, "*@example.com"), "alice@example.com", id="catch_all"
        ),
    ],
)
def test_rcpt_to_routed_address_is_accepted(route: DomainRouting, delivered_to: str) -> None:
    mailbox = Mailbox("alice", "example.com")
    decision = decide_rcpt(RcptInput(mailbox, route, None))
    assert decision.action is Action.ACCEPT
    assert decision.reply == replies.S250_RECIPIENT_OK
    assert decision.check == "route"
    assert decision.reason == f"route_{route.route_kind}"
    assert decision.tenant_id == TENANT
    assert decision.route_kind is route.route_kind
    assert decision.mailbox == mailbox
    assert decision.delivered_to == delivered_to
    assert decision.token is None


# -- route candidates -------------------------------------------------------------------------


def test_route_candidates_are_exact_then_without_detail_then_catch_all() -> None:
    assert route_candidates(Mailbox("alice+news", "example.com")) == [
        "alice+news@example.com",
        "alice@example.com",
        "*@example.com",
    ]


def test_route_candidates_without_detail_are_exact_then_catch_all() -> None:
    assert route_candidates(Mailbox("alice", "example.com")) == [
        "alice@example.com",
        "*@example.com",
    ]


# -- verdicts made before the table ------------------------------------------------------------


def test_bad_address_syntax_is_refused_501() -> None:
    decision = rcpt_syntax_rejected()
    assert decision.action is Action.REJECT
    assert decision.reply == replies.S501_SYNTAX_ADDRESS


def test_too_many_recipients_is_deferred_452_4_5_3() -> None:
    decision = rcpt_over_limit()
    assert decision.action is Action.DEFER
    assert (decision.reply.code, decision.reply.enhanced) == (452, "4.5.3")
    assert decision.reply.temporary


def test_failed_lookup_is_a_temporary_451_never_a_5xx() -> None:
    decision = rcpt_lookup_failed()
    assert decision.action is Action.DEFER
    assert decision.reply.code == 451
    assert decision.reply.enhanced.startswith("4.")
    assert decision.reply.temporary
