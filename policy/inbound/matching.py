"""Reply matching: which outbound email and thread an inbound message answers, if any.

`candidates()` lists what a message offers, in the precedence of `MATCH_PRECEDENCE`; the caller
looks the candidates up in one go and `decide()` takes the first that holds. A reply to a reply
stays in its thread because Message-IDs of messages already stored for the tenant count too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from policy.inbound.routing import TokenVerdict
from policy.msgid import first_msg_ids, msg_ids, newest_msg_ids
from policy.tokens import ReplyToken, ReplyTokens, TokenFailure, find_tokens


class MatchStatus(StrEnum):
    MATCHED = "matched"
    UNMATCHED = "unmatched"


class MatchSource(StrEnum):
    RECIPIENT = "recipient"
    REPLY_TOKEN_HEADER = "x-opensend-reply-token"
    IN_REPLY_TO = "in-reply-to"
    REFERENCES = "references"


# Where a reply's link to its conversation can be found, most trustworthy first. The recipient
# address was chosen by our own Reply-To; the custom header survives most forwarding; In-Reply-To
# names the one message answered (RFC 5322 section 3.6.4); References, newest first, the thread.
MATCH_PRECEDENCE: tuple[MatchSource, ...] = (
    MatchSource.RECIPIENT,
    MatchSource.REPLY_TOKEN_HEADER,
    MatchSource.IN_REPLY_TO,
    MatchSource.REFERENCES,
)


@dataclass(frozen=True, slots=True)
class Candidate:
    source: MatchSource
    token: ReplyToken | None = None  # a token found in this place
    message_id: str | None = None  # or a Message-ID to look for among stored messages
    verdict: TokenVerdict | None = None  # recipient tokens arrive already verified at RCPT


@dataclass(frozen=True, slots=True)
class OutboundEvidence:
    """The stored outbound email a token names, for the tenant the message is stored under."""

    email_id: UUID
    thread_id: UUID | None
    reply_token: str | None
    reply_domain: str | None


@dataclass(frozen=True, slots=True)
class KnownMessage:
    """A message of this tenant already stored (sent or received) under some Message-ID."""

    # The outbound email it answers: a sent message itself; for a received one, the newest of
    # ours in its thread that has gone out (storage.inbound.inbox.SELECT_MATCH_EVIDENCE).
    reply_to_email_id: UUID | None
    thread_id: UUID | None
    received_id: UUID | None = None  # set when it is a received message


@dataclass(frozen=True, slots=True)
class Match:
    status: MatchStatus
    source: MatchSource | None = None
    reply_to_email_id: UUID | None = None
    thread_id: UUID | None = None
    token_failure: TokenFailure | None = None  # why the first token offered did not hold
    failure_source: MatchSource | None = None
    received_id: UUID | None = None  # the received message that decided, when one did
    by_token: bool = False  # decided by a verified reply token, not by a stored Message-ID


def message_ids(header_value: str | None) -> list[str]:
    """The msg-ids of In-Reply-To or References, without angle brackets or comments, in order
    (RFC 5322 section 3.6.4; bare ids separated by spaces, commas or semicolons count too)."""
    return msg_ids(header_value)


def candidates(
    recipient_tokens: Sequence[TokenVerdict],
    reply_token_header: str | None,
    in_reply_to: str | None,
    references: str | None,
) -> list[Candidate]:
    found: list[Candidate] = [
        Candidate(MatchSource.RECIPIENT, token=v.token, verdict=v) for v in recipient_tokens
    ]
    for token in find_tokens(reply_token_header or ""):
        found.append(Candidate(MatchSource.REPLY_TOKEN_HEADER, token=token))
    for source, ids in (
        # Only the part of each field that can decide is read (policy.msgid.MAX_FIELD_CHARS).
        (MatchSource.IN_REPLY_TO, first_msg_ids(in_reply_to)),
        (MatchSource.REFERENCES, list(reversed(newest_msg_ids(references)))),
    ):
        for msgid in ids:
            tokens = find_tokens(msgid)
            if tokens:
                found.extend(Candidate(source, token=t) for t in tokens)
            else:
                found.append(Candidate(source, message_id=msgid))
    return found


def verify_token(
    tokens: ReplyTokens,
    token: ReplyToken,
    tenant_id: UUID,
    evidence: OutboundEvidence | None,
    recipient_domain: str | None = None,
) -> TokenVerdict:
    """DESIGN.md 4: the HMAC must hold for this tenant AND the email row must carry the token.

    A token in the recipient address must also have been minted for that address's domain; one in
    a header is checked against the reply domain its email was sent with.
    """
    domain = recipient_domain or (evidence.reply_domain if evidence else None)
    if domain is None or not tokens.signature_valid(token, tenant_id, domain):
        failure = TokenFailure.BAD_SIGNATURE if evidence or recipient_domain else None
        return TokenVerdict(token, failure or TokenFailure.UNKNOWN_EMAIL)
    if evidence is None:
        return TokenVerdict(token, TokenFailure.UNKNOWN_EMAIL)
    if evidence.reply_token is None or evidence.reply_token != str(token):
        return TokenVerdict(token, TokenFailure.REVOKED)
    return TokenVerdict(token, None)


def decide(
    offered: Sequence[Candidate],
    tokens: ReplyTokens,
    tenant_id: UUID,
    outbound: Mapping[UUID, OutboundEvidence],
    known: Mapping[str, KnownMessage],
    *,
    open_threads: bool = False,
) -> Match:
    """The first candidate that holds decides; else unmatched with the first token's failure.

    A stored message holds when it is in a thread; with `open_threads` (an answer of ours,
    which may open the thread of a received message that has none) a received one always does.
    """
    first_failure: tuple[TokenFailure, MatchSource] | None = None
    for candidate in offered:
        if candidate.verdict is not None or candidate.token is not None:
            verdict = candidate.verdict
            if verdict is None and candidate.token is not None:
                verdict = verify_token(
                    tokens, candidate.token, tenant_id, outbound.get(candidate.token.email_id)
                )
            assert verdict is not None
            if verdict.valid and candidate.token is not None:
                evidence = outbound.get(candidate.token.email_id)
                return Match(
                    MatchStatus.MATCHED,
                    candidate.source,
                    reply_to_email_id=candidate.token.email_id,
                    thread_id=evidence.thread_id if evidence else None,
                    by_token=True,
                )
            if first_failure is None and verdict.failure is not None:
                first_failure = (verdict.failure, candidate.source)
        elif candidate.message_id is not None:
            message = known.get(candidate.message_id)
            if message is not None and (
                message.thread_id is not None or (open_threads and message.received_id is not None)
            ):
                return Match(
                    MatchStatus.MATCHED,
                    candidate.source,
                    reply_to_email_id=message.reply_to_email_id,
                    thread_id=message.thread_id,
                    received_id=message.received_id,
                )
    if first_failure is None:
        return Match(MatchStatus.UNMATCHED)
    return Match(
        MatchStatus.UNMATCHED, token_failure=first_failure[0], failure_source=first_failure[1]
    )
