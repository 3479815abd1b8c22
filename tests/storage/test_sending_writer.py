"""The sending API's group commit (storage.sending_writer) against a real PostgreSQL.

A group is one pipelined round trip in one implicit transaction. These tests form groups on
purpose (one flush at a time: the first request goes alone, the ones that arrive meanwhile go
together) and check the promises the HTTP API and the submission ports build on: every request
stored exactly once or told why not, nothing of a failed group left half-written, and one
wake-up for the delivery workers per group.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from uuid import UUID

import asyncpg
import pytest

from storage.database import Pool
from storage.errors import Conflict
from storage.ids import uuid7
from storage.sending import DELIVERY_CHANNEL, DomainState, NewEmail, Stored
from storage.sending_writer import EmailWriter
from tests.conftest import MakeTenant, TenantWorld

# Only stops a hung test; no assertion depends on it.
WAIT_SECONDS = 30.0


async def new_email(
    pool: Pool, world: TenantWorld, *, stale: bool = False, email_id: UUID | None = None
) -> NewEmail:
    """A tracked email of `world`'s verified domain, built from the domain row as it is; a
    `stale` one from a read that no longer matches the row (as a cache entry can be), so its
    statement stores nothing."""
    row = await pool.fetchrow(
        "SELECT verified, status, receiving_enabled, reply_domain FROM domains WHERE id = $1",
        world.domain.id,
    )
    assert row is not None
    state = DomainState(**dict(row))
    if stale:
        state = replace(state, verified=not state.verified)
    email_id = email_id or uuid7()
    address = f"support@{world.name}"
    return NewEmail(
        id=email_id,
        tenant_id=world.id,
        domain_id=world.domain.id,
        thread_id=uuid7(),
        from_address=address,
        from_header=f"Support <{address}>",
        to=["customer@example.net"],
        cc=[],
        bcc=[],
        reply_to=[],
        subject="Your order",
        html=None,
        text="Hello\r\n",
        headers={},
        attachments=[],
        tags=[],
        message_id=f"{email_id}@{world.name}",
        reply_token=None,
        reply_address=None,
        reply_domain=None,
        raw=b"From: <" + address.encode() + b">\r\nSubject: Your order\r\n\r\nHello\r\n",
        scheduled_at=None,
        recipients=["customer@example.net"],
        source="smtp",
        domain_state=state,
    )


async def three_and_a_stale_one(
    pool: Pool, world: TenantWorld
) -> tuple[NewEmail, NewEmail, NewEmail, NewEmail]:
    """Four emails of `world`, the third built from a stale domain read."""
    return (
        await new_email(pool, world),
        await new_email(pool, world),
        await new_email(pool, world, stale=True),
        await new_email(pool, world),
    )


async def stored(pool: Pool, email: NewEmail) -> tuple[int, int, int, int]:
    """How many emails, threads, deliveries and events rows the email has."""
    row = await pool.fetchrow(
        """
        SELECT (SELECT count(*) FROM emails WHERE id = $1) AS emails,
               (SELECT count(*) FROM threads WHERE id = $2) AS threads,
               (SELECT count(*) FROM deliveries WHERE email_id = $1) AS deliveries,
               (SELECT count(*) FROM email_events WHERE email_id = $1) AS events
        """,
        email.id,
        email.thread_id,
    )
    assert row is not None
    return row["emails"], row["threads"], row["deliveries"], row["events"]


@pytest.fixture
async def wakeups(database_url: str) -> AsyncIterator[asyncio.Queue[str]]:
    """The delivery workers' channel, as they LISTEN to it."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    conn = await asyncpg.connect(database_url)
    await conn.add_listener(DELIVERY_CHANNEL, lambda *args: queue.put_nowait(args[3]))
    try:
        yield queue
    finally:
        await conn.close()


async def test_a_group_is_stored_whole_in_one_transaction_with_one_wakeup(
    pool: Pool, make_tenant: MakeTenant, wakeups: asyncio.Queue[str]
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    writer = EmailWriter(pool, max_inflight=1)
    emails = [await new_email(pool, acme if i % 2 else globex) for i in range(6)]
    async with asyncio.timeout(WAIT_SECONDS):
        outcomes = await asyncio.gather(*(writer.store([email], None) for email in emails))
        assert outcomes == [Stored.STORED] * 6
        assert (writer.groups_stored, writer.groups_split) == (1, 0)
        for email in emails:
            assert await stored(pool, email) == (1, 1, 1, 1)
        # The first went alone, the other five as one group: a wake-up each, then nothing
        # before a marker sent afterwards (notifications arrive in commit order).
        await pool.execute("SELECT pg_notify($1, 'marker')", DELIVERY_CHANNEL)
        assert [await wakeups.get() for _ in range(3)] == ["", "", "marker"]


async def test_an_email_that_cannot_be_stored_rolls_back_its_group_and_no_other(
    pool: Pool, make_tenant: MakeTenant
) -> None:
    """The stale email aborts the group's transaction (migration 0011); each request of the
    group is then stored alone, so only the stale one is refused, and nothing twice."""
    writer = EmailWriter(pool, max_inflight=1)
    first, before, stale, after = await three_and_a_stale_one(pool, await make_tenant())
    async with asyncio.timeout(WAIT_SECONDS):
        outcomes = await asyncio.gather(
            *(writer.store([email], None) for email in (first, before, stale, after))
        )
    assert outcomes == [Stored.STORED, Stored.STORED, Stored.STALE_DOMAIN, Stored.STORED]
    assert (writer.groups_stored, writer.groups_split) == (0, 1)
    for email in (first, before, after):
        assert await stored(pool, email) == (1, 1, 1, 1)
    assert await stored(pool, stale) == (0, 0, 0, 0)


async def test_a_group_that_fails_midway_leaves_nothing_half_written(
    pool: Pool, make_tenant: MakeTenant
) -> None:
    """A statement of the group fails (its id is taken): the statements before it in the
    pipeline are rolled back with it, so storing them alone afterwards stores each once."""
    world = await make_tenant()
    writer = EmailWriter(pool, max_inflight=1)
    taken = await new_email(pool, world)
    assert await writer.store([taken], None)
    first = await new_email(pool, world)
    before = await new_email(pool, world)
    clash = await new_email(pool, world, email_id=taken.id)
    after = await new_email(pool, world)
    async with asyncio.timeout(WAIT_SECONDS):
        outcomes = await asyncio.gather(
            *(writer.store([email], None) for email in (first, before, clash, after)),
            return_exceptions=True,
        )
    assert outcomes[:2] == [Stored.STORED, Stored.STORED] and outcomes[3] is Stored.STORED
    assert isinstance(outcomes[2], Conflict)
    assert (writer.groups_stored, writer.groups_split) == (0, 1)
    for email in (first, before, after):
        assert await stored(pool, email) == (1, 1, 1, 1)
    # Its id's rows are `taken`'s, one of each; its own thread was never made.
    assert await stored(pool, clash) == (1, 0, 1, 1)


async def test_a_large_group_aborted_by_its_last_email_stores_none_of_it_together(
    pool: Pool, make_tenant: MakeTenant, wakeups: asyncio.Queue[str]
) -> None:
    """Forty emails of 8 KB: asyncpg sends the pipeline in several 32 KB writes, and the
    server has run the first statements before the last arrives; its abort still rolls back
    every one of them, no wake-up is sent for the rolled-back group, and each is then stored
    alone."""
    world = await make_tenant()
    writer = EmailWriter(pool, max_inflight=1)
    padding = b"X" * 78 + b"\r\n"
    emails = [
        replace(email, raw=email.raw + padding * 100)
        for email in [await new_email(pool, world) for _ in range(40)]
    ]
    stale = await new_email(pool, world, stale=True)
    async with asyncio.timeout(WAIT_SECONDS):
        outcomes = await asyncio.gather(
            *(writer.store([email], None) for email in [*emails, stale])
        )
        assert outcomes == [Stored.STORED] * 40 + [Stored.STALE_DOMAIN]
        assert (writer.groups_stored, writer.groups_split) == (0, 1)
        for email in emails:
            assert await stored(pool, email) == (1, 1, 1, 1)
        # A wake-up from the first email (alone) and from each of the other 40 statements run
        # alone after the split (the stale one's too: it commits, storing nothing), none from
        # the aborted group, then the marker.
        await pool.execute("SELECT pg_notify($1, 'marker')", DELIVERY_CHANNEL)
        assert [await wakeups.get() for _ in range(42)] == [""] * 41 + ["marker"]


async def test_a_request_of_several_emails_is_refused_whole_when_one_is_stale(
    pool: Pool, make_tenant: MakeTenant
) -> None:
    """A batch request's emails are all or nothing, in a group as alone: its stale email takes
    its fresh neighbour down with it, and no other request."""
    writer = EmailWriter(pool, max_inflight=1)
    first, fresh, stale, other = await three_and_a_stale_one(pool, await make_tenant())
    async with asyncio.timeout(WAIT_SECONDS):
        outcomes = await asyncio.gather(
            writer.store([first], None),
            writer.store([fresh, stale], None),
            writer.store([other], None),
        )
    assert outcomes == [Stored.STORED, Stored.STALE_DOMAIN, Stored.STORED]
    assert (writer.groups_stored, writer.groups_split) == (0, 1)
    assert await stored(pool, fresh) == (0, 0, 0, 0)
    assert await stored(pool, other) == (1, 1, 1, 1)
