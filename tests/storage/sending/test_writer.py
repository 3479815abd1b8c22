"""The sending API's group commit (storage.sending.writer) against a real PostgreSQL.

A group is one statement over arrays (one pipelined statement per email when it holds a
reply or large messages), one transaction in one round trip. These tests form groups on
purpose (one flush at a time: the first request goes alone, the ones that arrive meanwhile go
together) and check the promises the HTTP API and the submission ports build on: every request
stored exactly once or told why not, nothing of a failed group left half-written, and one
wake-up for the delivery workers per group.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from storage.database import Pool
from storage.errors import Conflict, StorageError
from storage.ids import uuid7
from storage.sending import idempotency
from storage.sending import writer as sending_writer
from storage.sending.emails import (
    DELIVERY_CHANNEL,
    Completion,
    DomainState,
    NewEmail,
    Stored,
    insert_emails,
)
from storage.sending.writer import EmailWriter
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


async def rows_of(pool: Pool, email: NewEmail) -> dict[str, Any]:
    """Everything stored for the email, its ids and times left out, to compare two emails."""
    skip = {"id", "email_id", "thread_id", "created_at", "queued_at", "last_message_at"}

    def kept(row: Any) -> dict[str, Any]:
        return {k: v for k, v in dict(row).items() if k not in skip and "message_id" not in k}

    emails = await pool.fetch("SELECT * FROM emails WHERE id = $1", email.id)
    queue = await pool.fetch(
        "SELECT * FROM deliveries WHERE email_id = $1 ORDER BY recipient", email.id
    )
    events = await pool.fetch("SELECT * FROM email_events WHERE email_id = $1", email.id)
    threads = await pool.fetch("SELECT * FROM threads WHERE id = $1", email.thread_id)
    return {
        "emails": [kept(r) for r in emails],
        "deliveries": [kept(r) for r in queue],
        "events": [kept(r) for r in events],
        "threads": [kept(r) for r in threads],
    }


def rich(email: NewEmail) -> NewEmail:
    """Tracked and scheduled, with every list and JSON column filled with awkward text."""
    return replace(
        email,
        to=["a@example.net", "B <b@example.net>", 'NULL, "q\\" <n@example.net>'],
        cc=["Zoë 😀 <c@example.org>"],
        bcc=["d@example.com"],
        reply_to=["{r}@example.net"],
        subject="Grüße, \"quoted\" {braces} and 'ticks' \\ back",
        html='<p>{"json-like": [1, 2]}</p>',
        headers={"X-Ref": "{1,2}", "In-Reply-To": "<x@y>"},
        attachments=[{"filename": "a,b.txt", "content_type": "text/plain", "size": 3}],
        tags=[{"name": "k", "value": "v"}],
        recipients=["a@example.net", "b@example.net", "c@example.org", "D@Example.COM"],
        scheduled_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def plain(email: NewEmail) -> NewEmail:
    """Untracked, due now, no bodies, empty lists, no domain state to check."""
    return replace(
        email,
        thread_id=None,
        reply_token=None,
        reply_address=None,
        reply_domain=None,
        html=None,
        text=None,
        domain_state=None,
    )


@pytest.mark.parametrize("shape", [rich, plain], ids=["rich", "plain"])
async def test_an_email_stored_in_a_group_is_stored_as_one_stored_alone(
    pool: Pool, make_tenant: MakeTenant, shape: Callable[[NewEmail], NewEmail]
) -> None:
    """A group is one statement over arrays (INSERT_EMAIL_GROUP); an email alone is one
    INSERT_EMAIL. Every column of every row they write must be the same."""
    world = await make_tenant()
    writer = EmailWriter(pool, max_inflight=1)
    alone, grouped = shape(await new_email(pool, world)), shape(await new_email(pool, world))
    assert await insert_emails(pool, [alone])
    filler = [await new_email(pool, world) for _ in range(3)]
    async with asyncio.timeout(WAIT_SECONDS):
        outcomes = await asyncio.gather(
            writer.store([filler[0]], None),
            writer.store([filler[1]], None),
            writer.store([grouped], None),
            writer.store([filler[2]], None),
        )
    assert outcomes == [Stored.STORED] * 4
    assert (writer.groups_stored, writer.groups_split) == (1, 0)
    stored_alone, stored_grouped = await rows_of(pool, alone), await rows_of(pool, grouped)
    if grouped.scheduled_at is None:  # due now(): each transaction's own
        for row in (*stored_alone["deliveries"], *stored_grouped["deliveries"]):
            row.pop("next_attempt_at")
    assert stored_grouped == stored_alone
    threads = 1 if grouped.thread_id else 0
    assert [len(rows) for rows in stored_grouped.values()] == [
        1,
        len(grouped.recipients),
        1,
        threads,
    ]


async def test_a_group_of_large_messages_goes_statement_by_statement(
    pool: Pool, make_tenant: MakeTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ONE_STATEMENT_BYTES a group is not one protocol message (PostgreSQL refuses one
    over 1 GiB); it is still one transaction, and every request is stored."""
    monkeypatch.setattr(sending_writer, "ONE_STATEMENT_BYTES", 1000)
    # Were the group sent as one statement after all, this would fail it.
    monkeypatch.setattr(sending_writer, "INSERT_EMAIL_GROUP", "SELECT opensend_group_abort()")
    world = await make_tenant()
    writer = EmailWriter(pool, max_inflight=1)
    emails = [await new_email(pool, world) for _ in range(4)]
    emails[2] = rich(replace(emails[2], raw=emails[2].raw + b"X" * 2000))
    async with asyncio.timeout(WAIT_SECONDS):
        outcomes = await asyncio.gather(*(writer.store([email], None) for email in emails))
    assert outcomes == [Stored.STORED] * 4
    assert (writer.groups_stored, writer.groups_split) == (1, 0)
    for email in emails:
        emails_rows, _threads, queue, events = await stored(pool, email)
        assert (emails_rows, queue, events) == (1, len(email.recipients), 1)


async def test_a_value_that_cannot_be_encoded_fails_its_request_alone(
    pool: Pool, make_tenant: MakeTenant
) -> None:
    """A tag value JSON cannot write: its request is refused, not its group."""
    world = await make_tenant()
    writer = EmailWriter(pool, max_inflight=1)
    first, before, after = [await new_email(pool, world) for _ in range(3)]
    bad = replace(await new_email(pool, world), tags=[{"name": "k", "value": object()}])
    async with asyncio.timeout(WAIT_SECONDS):
        outcomes = await asyncio.gather(
            *(writer.store([email], None) for email in (first, before, bad, after)),
            return_exceptions=True,
        )
    assert outcomes[:2] == [Stored.STORED, Stored.STORED] and outcomes[3] is Stored.STORED
    assert isinstance(outcomes[2], StorageError) and not outcomes[2].temporary
    assert (writer.groups_stored, writer.groups_split) == (0, 1)
    assert await stored(pool, bad) == (0, 0, 0, 0)


async def test_a_lost_idempotency_claim_in_a_group_loses_only_its_request(
    pool: Pool, make_tenant: MakeTenant
) -> None:
    world = await make_tenant()
    writer = EmailWriter(pool, max_inflight=1)
    first, kept, lost, other = [await new_email(pool, world) for _ in range(4)]
    claims = []
    for key in ("kept", "lost"):
        claim = await idempotency.claim(pool, world.id, key, "POST /emails", f"hash-{key}")
        assert isinstance(claim, idempotency.Claim)
        claims.append(claim)
    # Taken over meanwhile (as an abandoned claim is): `lost`'s completion finds nothing.
    await pool.execute(
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = 'lost'", world.id
    )

    def done(claim: idempotency.Claim) -> Completion:
        return Completion(claim.key, claim.claimed_at, 200, {"id": claim.key})

    async with asyncio.timeout(WAIT_SECONDS):
        outcomes = await asyncio.gather(
            writer.store([first], None),
            writer.store([kept], done(claims[0])),
            writer.store([lost], done(claims[1])),
            writer.store([other], None),
        )
    assert outcomes == [Stored.STORED, Stored.STORED, Stored.LOST_CLAIM, Stored.STORED]
    assert (writer.groups_stored, writer.groups_split) == (0, 1)
    assert await stored(pool, lost) == (0, 0, 0, 0)
    row = await pool.fetchrow(
        "SELECT state, response FROM idempotency_keys WHERE tenant_id = $1 AND key = 'kept'",
        world.id,
    )
    assert row is not None and (row["state"], row["response"]) == ("done", {"id": "kept"})


async def test_a_group_with_a_reply_touches_its_thread_and_stores_every_email(
    pool: Pool, make_tenant: MakeTenant
) -> None:
    """A reply joins an existing thread (thread_exists): its group goes statement by statement,
    threads locked in id order, and still as one transaction."""
    world = await make_tenant()
    writer = EmailWriter(pool, max_inflight=1)
    thread_id = uuid7()
    await pool.execute(
        "INSERT INTO threads (id, tenant_id, subject, last_message_at)"
        " VALUES ($1, $2, 'Earlier', now() - interval '1 day')",
        thread_id,
        world.id,
    )
    reply = replace(await new_email(pool, world), thread_id=thread_id, thread_exists=True)
    first, other = await new_email(pool, world), await new_email(pool, world)
    async with asyncio.timeout(WAIT_SECONDS):
        outcomes = await asyncio.gather(
            writer.store([first], None), writer.store([reply], None), writer.store([other], None)
        )
    assert outcomes == [Stored.STORED] * 3
    assert (writer.groups_stored, writer.groups_split) == (1, 0)
    touched = await pool.fetchval(
        "SELECT last_message_at > now() - interval '1 hour' FROM threads WHERE id = $1", thread_id
    )
    assert touched is True
    assert (await stored(pool, reply))[0] == 1 and await stored(pool, other) == (1, 1, 1, 1)


async def test_a_group_cut_off_mid_statement_stores_nothing_and_its_retry_stores_once(
    pool: Pool, database_url: str, make_tenant: MakeTenant
) -> None:
    """The backend of a lone insert, then that of the group formed behind it, each waiting
    inside its statement, is killed (pg_terminate_backend): every request hears a temporary
    error, nothing of theirs is stored, and storing them again stores each exactly once."""
    world = await make_tenant()
    writer = EmailWriter(pool, max_inflight=1)
    emails = [await new_email(pool, world) for _ in range(4)]
    blocker = await asyncpg.connect(database_url)

    async def kill_inserts_waiting() -> int:
        """Terminate every backend waiting on a lock here: only the inserts do. (Inside a
        pipeline, before its Sync, pg_stat_activity may show such a backend as idle.)"""
        killed = await blocker.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
        return len(killed)

    try:
        # The inserts' foreign-key checks take KEY SHARE on the tenant's row: hold it exclusively.
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", world.id)
        async with asyncio.timeout(WAIT_SECONDS):
            pending = asyncio.gather(
                *(writer.store([email], None) for email in emails), return_exceptions=True
            )
            killed = 0
            while not pending.done():  # no event says a backend started waiting: look
                killed += await kill_inserts_waiting()
                await asyncio.sleep(0.01)
            outcomes = pending.result()
        await transaction.rollback()
        assert killed == 2  # the first request's insert, alone, then its group's
    finally:
        await blocker.close()
    assert all(isinstance(o, StorageError) and o.temporary for o in outcomes), outcomes
    for email in emails:
        assert await stored(pool, email) == (0, 0, 0, 0)
    async with asyncio.timeout(WAIT_SECONDS):
        retried = await asyncio.gather(*(writer.store([email], None) for email in emails))
    assert retried == [Stored.STORED] * 4
    for email in emails:
        assert await stored(pool, email) == (1, 1, 1, 1)
