"""Which thread an outbound answer joins: inbound matching's precedence, over a fake of our own
lookups interface (storage.sending.replies.ThreadLookups is exercised end to end in
tests/api/sending/test_answer_threading.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from policy.conversation import Answered, outbound_thread
from policy.tokens import ReplyTokens

TENANT = UUID("11111111-2222-4333-8444-555555555555")
TOKENS = ReplyTokens(b"t" * 32)
REPLY_DOMAIN = "reply.example.com"
EMAIL = UUID("aaaaaaaa-0000-4000-8000-000000000001")
TOKEN = TOKENS.mint(TENANT, EMAIL, REPLY_DOMAIN)
THREAD_OURS = UUID("aaaaaaaa-1111-4111-8111-000000000001")
THREAD_KNOWN = UUID("bbbbbbbb-1111-4111-8111-000000000002")
THREAD_NEW = UUID("cccccccc-1111-4111-8111-000000000003")
RECEIVED = UUID("dddddddd-0000-4000-8000-000000000004")
UNTHREADED = UUID("eeeeeeee-0000-4000-8000-000000000005")


@dataclass(frozen=True)
class Outbound:
    email_id: UUID
    thread_id: UUID | None
    reply_token: str | None
    reply_domain: str | None


@dataclass(frozen=True)
class Known:
    reply_to_email_id: UUID | None
    thread_id: UUID | None
    received_id: UUID | None


@dataclass
class Facts:
    outbound: dict[UUID, Outbound] = field(default_factory=dict)
    known: dict[str, Known] = field(default_factory=dict)
    answered: dict[UUID, Known] = field(default_factory=dict)


@dataclass
class FakeLookups:
    """One tenant's stored messages; records what was asked and which threads were opened."""

    facts: Facts
    asked: list[tuple[list[UUID], list[str], list[UUID]]] = field(default_factory=list)
    opened: list[UUID] = field(default_factory=list)

    async def match_evidence(
        self,
        tenant_id: UUID,
        email_ids: Sequence[UUID],
        message_ids: Sequence[str],
        received_ids: Sequence[UUID] = (),
    ) -> Facts:
        self.asked.append((list(email_ids), list(message_ids), list(received_ids)))
        return Facts(
            {k: v for k, v in self.facts.outbound.items() if k in email_ids},
            {k: v for k, v in self.facts.known.items() if k in message_ids},
            {k: v for k, v in self.facts.answered.items() if k in received_ids},
        )

    async def open_thread(
        self, tenant_id: UUID, received_id: UUID, new_thread_id: UUID
    ) -> UUID | None:
        self.opened.append(received_id)
        return new_thread_id


def stored() -> FakeLookups:
    return FakeLookups(
        Facts(
            outbound={EMAIL: Outbound(EMAIL, THREAD_OURS, str(TOKEN), REPLY_DOMAIN)},
            known={
                "customer@mail.example": Known(EMAIL, THREAD_KNOWN, RECEIVED),
                "loose@mail.example": Known(None, None, UNTHREADED),
                "untracked@send.example": Known(EMAIL, None, None),
            },
            answered={RECEIVED: Known(EMAIL, THREAD_KNOWN, RECEIVED)},
        )
    )


async def thread(
    lookups: FakeLookups,
    in_reply_to: str | None,
    references: str | None,
    answering: UUID | None = None,
) -> Answered | None:
    return await outbound_thread(
        lookups,
        TOKENS,
        TENANT,
        in_reply_to=in_reply_to,
        references=references,
        new_thread_id=lambda: THREAD_NEW,
        answering=answering,
    )


async def test_a_message_naming_no_message_looks_nothing_up() -> None:
    lookups = stored()
    assert await thread(lookups, None, None) is None
    assert lookups.asked == []


async def test_in_reply_to_comes_before_references() -> None:
    ours = f"<{TOKEN}@send.example.com>"
    answered = await thread(stored(), "<customer@mail.example>", ours)
    assert answered == Answered(THREAD_KNOWN, RECEIVED)


async def test_references_newest_first_whatever_the_evidence() -> None:
    # The newest id is a stored customer message; an older one carries our valid token.
    ours = f"<{TOKEN}@send.example.com>"
    answered = await thread(stored(), None, f"{ours} <customer@mail.example>")
    assert answered == Answered(THREAD_KNOWN, RECEIVED)
    # And the other way round: the token, being the newest, wins.
    answered = await thread(stored(), None, f"<customer@mail.example> {ours}")
    assert answered == Answered(THREAD_OURS, None)


async def test_a_received_message_without_a_thread_gets_one_opened() -> None:
    lookups = stored()
    answered = await thread(lookups, "<loose@mail.example>", None)
    assert answered == Answered(THREAD_NEW, UNTHREADED)
    assert lookups.opened == [UNTHREADED]


async def test_an_email_of_ours_without_a_thread_is_passed_over() -> None:
    answered = await thread(stored(), "<untracked@send.example>", "<customer@mail.example>")
    assert answered == Answered(THREAD_KNOWN, RECEIVED)
    assert await thread(stored(), "<untracked@send.example>", None) is None


async def test_a_forged_token_does_not_hold() -> None:
    forged = f"<osr_{EMAIL.hex}_{'0' * 20}@send.example.com>"
    assert await thread(stored(), forged, None) is None


async def test_the_received_email_answered_by_id_comes_first() -> None:
    lookups = stored()
    answered = await thread(lookups, f"<{TOKEN}@send.example.com>", None, answering=RECEIVED)
    assert answered == Answered(THREAD_KNOWN, RECEIVED)
    assert lookups.asked == [([EMAIL], [], [RECEIVED])]


async def test_unknown_ids_answer_nothing() -> None:
    assert await thread(stored(), "<nobody@x.example>", "a@x.example,b@y.example") is None
