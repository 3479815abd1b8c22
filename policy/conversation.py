"""Which conversation an outbound message joins: the thread of the stored message it answers.

POST /emails, the submission ports and POST /emails/{id}/reply all ask `outbound_thread`, so an
answer joins its conversation however it was sent, with the precedence of inbound matching.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from policy.inbound.matching import Match, MatchStatus, candidates, decide
from policy.inbound.pipeline import EvidenceLookups, evidence_of, known_message
from policy.tokens import ReplyTokens


class ThreadLookups(EvidenceLookups, Protocol):
    """storage.sending.replies.ThreadLookups: the inbound matcher's evidence, and opening a
    thread."""

    async def open_thread(
        self, tenant_id: UUID, received_id: UUID, new_thread_id: UUID
    ) -> UUID | None:
        """The received email's thread, made first if it has none; None: no such email."""
        ...


@dataclass(frozen=True, slots=True)
class Answered:
    """The conversation an outbound message joins."""

    thread_id: UUID
    received_id: UUID | None  # the received email it answers, when that is what decided


async def outbound_thread(
    lookups: ThreadLookups,
    tokens: ReplyTokens,
    tenant_id: UUID,
    *,
    in_reply_to: str | None,
    references: str | None,
    new_thread_id: Callable[[], UUID],
    answering: UUID | None = None,
) -> Answered | None:
    """The thread of the stored message (sent or received, matched or not) this one answers.

    The received email named by id (`answering`, the one POST /emails/{id}/reply answers) is
    the most specific evidence; then In-Reply-To, then References newest first, each id by the
    token it carries or as a stored Message-ID of this tenant only, as inbound matching reads
    them (DESIGN.md section 3). A received message without a thread gets one
    (a `new_thread_id()`), so that it and its answer are one conversation from then on. None: the
    message answers nothing stored, and starts a conversation of its own. Nothing is looked up
    for a message that names no message.
    """
    if answering is None and not in_reply_to and not references:
        return None  # most sent mail: nothing named, nothing to parse or look up
    offered = candidates([], None, in_reply_to, references)
    email_ids = sorted({c.token.email_id for c in offered if c.token is not None})
    message_ids = [c.message_id for c in offered if c.message_id is not None]
    received_ids = [answering] if answering is not None else []
    if not email_ids and not message_ids and not received_ids:
        return None
    facts = await lookups.match_evidence(tenant_id, email_ids, message_ids, received_ids)
    named = facts.answered.get(answering) if answering is not None else None
    if named is not None:
        known = known_message(named)
        match = Match(MatchStatus.MATCHED, thread_id=known.thread_id, received_id=known.received_id)
    else:
        outbound, known_ids = evidence_of(facts)
        match = decide(offered, tokens, tenant_id, outbound, known_ids, open_threads=True)
    if match.status is not MatchStatus.MATCHED:
        return None
    if match.thread_id is not None:
        return Answered(match.thread_id, match.received_id)
    if match.received_id is None:
        return None  # an email of ours sent without a thread (no receiving on its domain)
    thread_id = await lookups.open_thread(tenant_id, match.received_id, new_thread_id())
    return Answered(thread_id, match.received_id) if thread_id is not None else None
