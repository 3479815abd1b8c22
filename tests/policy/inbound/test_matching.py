"""Reply matching: what a message offers, in `MATCH_PRECEDENCE`, and which offer holds."""

from __future__ import annotations

from uuid import UUID

import pytest

from policy.inbound.matching import (
    MATCH_PRECEDENCE,
    Candidate,
    KnownMessage,
    Match,
    MatchSource,
    MatchStatus,
    OutboundEvidence,
    candidates,
    decide,
    message_ids,
    verify_token,
)
from policy.inbound.routing import TokenVerdict
from policy.msgid import MAX_FIELD_CHARS
from policy.tokens import ReplyToken, ReplyTokens, TokenFailure

SECRET = b"m" * 32
TENANT = UUID("11111111-2222-4333-8444-555555555555")
OTHER_TENANT = UUID("22222222-2222-4333-8444-555555555555")
REPLY_DOMAIN = "reply.example.com"
EMAIL_A = UUID("aaaaaaaa-0000-4000-8000-000000000001")
EMAIL_B = UUID("bbbbbbbb-0000-4000-8000-000000000002")
THREAD_A = UUID("aaaaaaaa-1111-4111-8111-000000000001")
THREAD_B = UUID("bbbbbbbb-1111-4111-8111-000000000002")
THREAD_KNOWN = UUID("cccccccc-1111-4111-8111-000000000003")

TOKENS = ReplyTokens(SECRET)
TOKEN_A = TOKENS.mint(TENANT, EMAIL_A, REPLY_DOMAIN)
TOKEN_B = TOKENS.mint(TENANT, EMAIL_B, REPLY_DOMAIN)
FOREIGN_TOKEN = TOKENS.mint(OTHER_TENANT, EMAIL_A, REPLY_DOMAIN)


def evidence(
    token: ReplyToken, thread_id: UUID | None, stored_token: str | None = "same"
) -> OutboundEvidence:
    return OutboundEvidence(
        email_id=token.email_id,
        thread_id=thread_id,
        reply_token=str(token) if stored_token == "same" else stored_token,
        reply_domain=REPLY_DOMAIN,
    )


OUTBOUND = {EMAIL_A: evidence(TOKEN_A, THREAD_A), EMAIL_B: evidence(TOKEN_B, THREAD_B)}


def run(offered: list[Candidate], known: dict[str, KnownMessage] | None = None) -> Match:
    return decide(offered, TOKENS, TENANT, OUTBOUND, known or {})


# -- message_ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        pytest.param("<a@example.com>", ["a@example.com"], id="one"),
        pytest.param(
            "<a@example.com> <b@example.com>", ["a@example.com", "b@example.com"], id="two"
        ),
        pytest.param(
            "<a@example.com>\r\n\t<b@example.com>\r\n <c@example.com>",
            ["a@example.com", "b@example.com", "c@example.com"],
            id="folded",
        ),
        pytest.param(
            "<a@example.com><b@example.com>", ["a@example.com", "b@example.com"], id="adjacent"
        ),
        pytest.param(
            "a@example.com b@example.com", ["a@example.com", "b@example.com"], id="no_brackets"
        ),
        pytest.param(
            "a@example.com\r\n b@example.com",
            ["a@example.com", "b@example.com"],
            id="no_brackets_folded",
        ),
        pytest.param("(comment) <a@example.com>", ["a@example.com"], id="comment"),
        # Commas, semicolons and comments in every shape: tests/policy/test_msgid.py.
        pytest.param("", [], id="empty"),
        pytest.param(None, [], id="missing"),
        pytest.param("no ids here", [], id="words"),
    ],
)
def test_message_ids_reads_msg_ids(value: str | None, ids: list[str]) -> None:
    assert message_ids(value) == ids


# -- candidates -------------------------------------------------------------------------------


def test_match_precedence_is_recipient_header_in_reply_to_references() -> None:
    assert MATCH_PRECEDENCE == (
        MatchSource.RECIPIENT,
        MatchSource.REPLY_TOKEN_HEADER,
        MatchSource.IN_REPLY_TO,
        MatchSource.REFERENCES,
    )


def test_candidates_follow_match_precedence() -> None:
    offered = candidates(
        [TokenVerdict(TOKEN_A, None)],
        str(TOKEN_B),
        "<parent@example.org>",
        "<root@example.org>",
    )
    assert [c.source for c in offered] == list(MATCH_PRECEDENCE)


def test_candidates_list_comma_separated_bare_references_newest_first() -> None:
    offered = candidates([], None, None, "root@x.example,middle@x.example, newest@x.example")
    assert [c.message_id for c in offered] == [
        "newest@x.example",
        "middle@x.example",
        "root@x.example",
    ]


def test_candidates_of_a_huge_references_are_its_newest_ids_and_bounded() -> None:
    """A hostile References of a megabyte: only its newest part is read, its newest id first,
    and the cut through an id yields no piece of one."""
    ids = [f"m{n}@x.example" for n in range(60_000)]
    offered = candidates([], None, None, " ".join(f"<{i}>" for i in ids))
    assert [c.message_id for c in offered[:2]] == [ids[-1], ids[-2]]
    assert {c.message_id for c in offered} <= set(ids)
    assert len(offered) <= MAX_FIELD_CHARS // len("<m1@x.example> ")


def test_candidates_of_a_huge_in_reply_to_start_with_its_first_id() -> None:
    offered = candidates([], None, "<a@x.example> " + "<b@x.example> " * 100_000, None)
    assert offered[0].message_id == "a@x.example"
    assert len(offered) <= MAX_FIELD_CHARS // len("<b@x.example> ") + 1


def test_candidates_list_references_newest_first() -> None:
    offered = candidates([], None, None, "<root@x> <middle@x> <newest@x>")
    assert [c.message_id for c in offered] == ["newest@x", "middle@x", "root@x"]
    assert {c.source for c in offered} == {MatchSource.REFERENCES}


def test_candidates_take_tokens_out_of_message_ids() -> None:
    offered = candidates([], None, f"<{TOKEN_A}@send.example.com>", None)
    assert offered == [Candidate(MatchSource.IN_REPLY_TO, token=TOKEN_A)]


def test_candidates_keep_recipient_verdicts() -> None:
    verdict = TokenVerdict(None, TokenFailure.MALFORMED)
    assert candidates([verdict], None, None, None) == [
        Candidate(MatchSource.RECIPIENT, token=None, verdict=verdict)
    ]


def test_candidates_of_a_message_without_links_are_none() -> None:
    assert candidates([], None, None, None) == []


# -- verify_token -----------------------------------------------------------------------------


def test_verify_token_valid_when_signature_and_stored_token_agree() -> None:
    verdict = verify_token(TOKENS, TOKEN_A, TENANT, OUTBOUND[EMAIL_A])
    assert verdict == TokenVerdict(TOKEN_A, None)
    assert verdict.valid


def test_verify_token_bad_signature_for_another_tenants_token() -> None:
    verdict = verify_token(TOKENS, FOREIGN_TOKEN, TENANT, OUTBOUND[EMAIL_A])
    assert verdict.failure is TokenFailure.BAD_SIGNATURE


def test_verify_token_bad_signature_for_a_recipient_at_another_domain() -> None:
    verdict = verify_token(
        TOKENS, TOKEN_A, TENANT, OUTBOUND[EMAIL_A], recipient_domain="reply.example.net"
    )
    assert verdict.failure is TokenFailure.BAD_SIGNATURE


def test_verify_token_bad_signature_for_a_recipient_token_without_email() -> None:
    verdict = verify_token(TOKENS, FOREIGN_TOKEN, TENANT, None, recipient_domain=REPLY_DOMAIN)
    assert verdict.failure is TokenFailure.BAD_SIGNATURE


def test_verify_token_unknown_email_when_no_row_exists() -> None:
    verdict = verify_token(TOKENS, TOKEN_A, TENANT, None, recipient_domain=REPLY_DOMAIN)
    assert verdict.failure is TokenFailure.UNKNOWN_EMAIL


def test_verify_token_unknown_email_for_a_header_token_without_row() -> None:
    verdict = verify_token(TOKENS, TOKEN_A, TENANT, None)
    assert verdict.failure is TokenFailure.UNKNOWN_EMAIL


@pytest.mark.parametrize(
    "stored",
    [pytest.param(None, id="cleared"), pytest.param("osr_replaced", id="replaced")],
)
def test_verify_token_revoked_when_the_stored_token_differs(stored: str | None) -> None:
    verdict = verify_token(TOKENS, TOKEN_A, TENANT, evidence(TOKEN_A, THREAD_A, stored))
    assert verdict.failure is TokenFailure.REVOKED


# -- decide -----------------------------------------------------------------------------------


def test_decide_matches_a_valid_recipient_token() -> None:
    match = run([Candidate(MatchSource.RECIPIENT, TOKEN_A, verdict=TokenVerdict(TOKEN_A, None))])
    assert match == Match(
        MatchStatus.MATCHED,
        MatchSource.RECIPIENT,
        reply_to_email_id=EMAIL_A,
        thread_id=THREAD_A,
        by_token=True,
    )


def test_decide_picks_the_first_candidate_that_holds() -> None:
    offered = candidates([], str(TOKEN_A), f"<{TOKEN_B}@send.example.com>", None)
    match = run(offered)
    assert match.source is MatchSource.REPLY_TOKEN_HEADER
    assert (match.reply_to_email_id, match.thread_id) == (EMAIL_A, THREAD_A)


def test_decide_falls_through_a_failed_recipient_token_to_a_matching_header() -> None:
    offered = candidates([TokenVerdict(TOKEN_B, TokenFailure.REVOKED)], str(TOKEN_A), None, None)
    match = run(offered)
    assert match.status is MatchStatus.MATCHED
    assert match.source is MatchSource.REPLY_TOKEN_HEADER
    assert match.reply_to_email_id == EMAIL_A


def test_decide_matches_a_known_message_id_of_the_thread() -> None:
    known = {"earlier@example.org": KnownMessage(EMAIL_B, THREAD_KNOWN)}
    match = run(candidates([], None, "<earlier@example.org>", None), known)
    assert match == Match(
        MatchStatus.MATCHED,
        MatchSource.IN_REPLY_TO,
        reply_to_email_id=EMAIL_B,
        thread_id=THREAD_KNOWN,
    )


def test_decide_falls_back_to_the_newest_known_reference() -> None:
    known = {
        "root@example.org": KnownMessage(EMAIL_A, THREAD_A),
        "newer@example.org": KnownMessage(EMAIL_B, THREAD_B),
    }
    offered = candidates([], None, "<unknown@x>", "<root@example.org> <newer@example.org>")
    match = run(offered, known)
    assert (match.source, match.thread_id) == (MatchSource.REFERENCES, THREAD_B)


def test_decide_takes_the_newest_reference_whether_a_token_or_a_stored_id() -> None:
    """DESIGN.md section 3: References newest first; each id counts by its token or as a
    stored Message-ID, so the position decides, not the kind of evidence."""
    known = {"customer@example.org": KnownMessage(EMAIL_B, THREAD_KNOWN)}
    ours = f"<{TOKEN_A}@send.example.com>"
    newest_stored = run(candidates([], None, None, f"{ours} <customer@example.org>"), known)
    assert (newest_stored.reply_to_email_id, newest_stored.thread_id) == (EMAIL_B, THREAD_KNOWN)
    newest_token = run(candidates([], None, None, f"<customer@example.org> {ours}"), known)
    assert (newest_token.reply_to_email_id, newest_token.thread_id) == (EMAIL_A, THREAD_A)


def test_decide_takes_a_stored_in_reply_to_before_a_token_in_references() -> None:
    known = {"customer@example.org": KnownMessage(EMAIL_B, THREAD_KNOWN)}
    offered = candidates([], None, "<customer@example.org>", f"<{TOKEN_A}@send.example.com>")
    assert run(offered, known).source is MatchSource.IN_REPLY_TO


def test_decide_opens_threads_of_received_messages_only_when_asked() -> None:
    received = UUID("eeeeeeee-0000-4000-8000-000000000005")
    known = {"loose@example.org": KnownMessage(None, None, received)}
    offered = candidates([], None, "<loose@example.org>", None)
    assert run(offered, known) == Match(MatchStatus.UNMATCHED)
    opened = decide(offered, TOKENS, TENANT, OUTBOUND, known, open_threads=True)
    assert (opened.status, opened.thread_id, opened.received_id) == (
        MatchStatus.MATCHED,
        None,
        received,
    )


def test_decide_ignores_a_known_message_id_without_a_thread() -> None:
    known = {"loose@example.org": KnownMessage(None, None)}
    match = run(candidates([], None, "<loose@example.org>", None), known)
    assert match == Match(MatchStatus.UNMATCHED)


def test_decide_unmatched_keeps_the_first_tokens_failure_and_source() -> None:
    unknown = ReplyToken(UUID("dddddddd-0000-4000-8000-000000000004"), "0" * 20)
    offered = candidates(
        [],
        str(unknown),
        f"<{FOREIGN_TOKEN}@send.example.com>",
        "<nothing@example.org>",
    )
    match = run(offered)
    assert match == Match(
        MatchStatus.UNMATCHED,
        token_failure=TokenFailure.UNKNOWN_EMAIL,
        failure_source=MatchSource.REPLY_TOKEN_HEADER,
    )


def test_decide_unmatched_reports_a_malformed_recipient_first() -> None:
    offered = candidates(
        [TokenVerdict(None, TokenFailure.MALFORMED)],
        None,
        f"<{FOREIGN_TOKEN}@send.example.com>",
        None,
    )
    match = run(offered)
    assert (match.status, match.token_failure, match.failure_source) == (
        MatchStatus.UNMATCHED,
        TokenFailure.MALFORMED,
        MatchSource.RECIPIENT,
    )


def test_decide_another_tenants_token_is_unmatched() -> None:
    offered = candidates([], None, f"<{FOREIGN_TOKEN}@send.example.com>", None)
    match = run(offered)
    assert match.status is MatchStatus.UNMATCHED
    assert match.token_failure is TokenFailure.BAD_SIGNATURE
    assert match.failure_source is MatchSource.IN_REPLY_TO


def test_decide_with_nothing_offered_is_unmatched_without_failure() -> None:
    assert run([]) == Match(MatchStatus.UNMATCHED)
