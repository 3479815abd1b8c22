"""The queue shared by workers on any number of machines: claims, leases, late outcomes, wake-ups.

These drive storage.delivery.queue directly where the point is what two workers see of each other's
rows, and the real workers where the point is how they wake up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from mta.delivery.workers import DeliveryOptions, DeliveryWorkers
from policy.delivery.result import email_status
from storage.database import Pool
from storage.delivery import queue as q
from storage.delivery.writer import OutcomeWriter
from storage.errors import StorageError
from tests.support.delivery_world import delivery_workers, queue_database
from tests.support.queued_mail import (
    Sender,
    deliveries,
    email_row,
    events,
    make_sender,
    poll_until,
    wait_until_final,
)
from tests.support.smtp_sink import Sink

Queue = tuple[str, Pool]


@pytest.fixture(scope="module")
async def queue(database_url: str) -> AsyncIterator[Queue]:
    async with queue_database(database_url) as made:
        yield made


@pytest.fixture
async def sender(queue: Queue) -> Sender:
    return await make_sender(queue[1], dkim=False)


@pytest.fixture(autouse=True)
async def empty_queue(queue: Queue) -> AsyncIterator[None]:
    yield
    await queue[1].execute("UPDATE deliveries SET status = 'canceled' WHERE status <> 'canceled'")


def outcome(claim: q.Claim, delivery: q.ClaimedDelivery, status: str) -> q.Outcome:
    return q.Outcome(
        delivery_id=delivery.id,
        token=claim.token,
        email_id=delivery.email_id,
        tenant_id=delivery.tenant_id,
        recipient=delivery.recipient,
        status=status,
        code=250 if status == "delivered" else 451,
        enhanced="2.0.0" if status == "delivered" else "4.0.0",
        response="ok",
        remote_host="test",
        retry_in=60 if status == "deferred" else None,
    )


async def test_concurrent_claims_never_hand_out_a_row_twice(queue: Queue, sender: Sender) -> None:
    _, pool = queue
    ids = [await sender.queue([f"r{n}@example.net"]) for n in range(120)]
    claims = await asyncio.gather(*(q.claim(pool, limit=40, lease_seconds=60) for _ in range(5)))
    claimed = [d.id for c in claims for d in c.deliveries]
    assert len(claimed) == len(set(claimed)) == 120
    assert {d.email_id for c in claims for d in c.deliveries} == set(ids)


async def test_a_claim_carries_the_message_and_its_signing_key(
    queue: Queue, sender: Sender
) -> None:
    _, pool = queue
    email_id = await sender.queue(["a@example.net", "b@example.org"])
    claim = await q.claim(pool, limit=10, lease_seconds=60)
    assert sorted(d.recipient_domain for d in claim.deliveries) == ["example.net", "example.org"]
    message = claim.messages[email_id]
    assert message.sender == sender.address
    assert message.raw is not None and b"Subject: Your order" in message.raw
    assert message.domain == sender.domain.name
    rows = await deliveries(pool, email_id)
    assert {row["status"] for row in rows.values()} == {"sending"}
    assert all(row["lease_token"] == claim.token for row in rows.values())


async def test_rows_of_a_worker_that_died_are_claimed_again_when_the_lease_runs_out(
    queue: Queue, sender: Sender
) -> None:
    _, pool = queue
    email_id = await sender.queue(["late@example.net"])
    dead = await q.claim(pool, limit=10, lease_seconds=0.5)
    assert len(dead.deliveries) == 1
    assert (await q.claim(pool, limit=10, lease_seconds=60)).deliveries == []  # leased
    await asyncio.sleep(0.6)
    alive = await q.claim(pool, limit=10, lease_seconds=60)
    assert [d.email_id for d in alive.deliveries] == [email_id]
    assert alive.token != dead.token


async def test_a_reclaim_counts_against_a_row_only_if_its_own_attempt_began(
    queue: Queue, sender: Sender
) -> None:
    """Rows claimed beside a message that kills its worker are not failed with it: after the
    first reclaim, a row's lease running out counts only if its attempt was marked begun."""
    _, pool = queue
    cursed = await sender.queue(["cursed@example.net"])
    innocent = await sender.queue(["innocent@example.net"])

    async def reclaimed() -> dict[str, q.ClaimedDelivery]:
        await asyncio.sleep(0.3)
        claim = await q.claim(pool, limit=10, lease_seconds=0.2)
        return {d.recipient: d for d in claim.deliveries}

    await q.claim(pool, limit=10, lease_seconds=0.2)
    first = await reclaimed()
    assert {r: d.reclaims for r, d in first.items()} == {
        "cursed@example.net": 1,
        "innocent@example.net": 1,
    }
    claim_token = (await deliveries(pool, cursed))["cursed@example.net"]["lease_token"]
    await q.mark_attempt_began(pool, claim_token, [first["cursed@example.net"].id])
    second = await reclaimed()
    assert {r: d.reclaims for r, d in second.items()} == {
        "cursed@example.net": 2,
        "innocent@example.net": 1,
    }
    rows = {**await deliveries(pool, cursed), **await deliveries(pool, innocent)}
    assert not any(row["attempt_began"] for row in rows.values())  # every claim clears it


async def test_a_late_outcome_from_a_worker_whose_lease_was_taken_changes_nothing(
    queue: Queue, sender: Sender
) -> None:
    _, pool = queue
    email_id = await sender.queue(["race@example.net"])
    slow = await q.claim(pool, limit=10, lease_seconds=0.2)
    await asyncio.sleep(0.3)
    fast = await q.claim(pool, limit=10, lease_seconds=60)
    applied = await q.record_outcomes(
        pool, [outcome(fast, fast.deliveries[0], "delivered")], email_status
    )
    assert applied == {fast.deliveries[0].id}
    late = await q.record_outcomes(
        pool, [outcome(slow, slow.deliveries[0], "deferred")], email_status
    )
    assert late == set()
    row = (await deliveries(pool, email_id))["race@example.net"]
    assert (row["status"], row["attempts"]) == ("delivered", 1)
    assert [e["type"] for e in await events(pool, email_id)] == ["email.sent", "email.delivered"]


async def test_renewed_leases_keep_a_slow_workers_rows(queue: Queue, sender: Sender) -> None:
    _, pool = queue
    await sender.queue(["slow@example.net"])
    mine = await q.claim(pool, limit=10, lease_seconds=0.5)
    for _ in range(3):
        await asyncio.sleep(0.3)
        await q.renew_leases(pool, [mine.token], 0.5)
    assert (await q.claim(pool, limit=10, lease_seconds=60)).deliveries == []


async def test_released_rows_are_due_again_at_once(queue: Queue, sender: Sender) -> None:
    _, pool = queue
    email_id = await sender.queue(["back@example.net"])
    mine = await q.claim(pool, limit=10, lease_seconds=60)
    await q.release(pool, mine.token, [d.id for d in mine.deliveries])
    row = (await deliveries(pool, email_id))["back@example.net"]
    assert (row["status"], row["lease_token"], row["attempts"]) == ("queued", None, 0)
    again = await q.claim(pool, limit=10, lease_seconds=60)
    assert [d.email_id for d in again.deliveries] == [email_id]


async def test_concurrent_outcomes_for_one_email_roll_up_to_its_final_status(
    queue: Queue, sender: Sender
) -> None:
    """Two workers finishing two recipients of one email at once: the email's status counts
    both, whichever commits last (its row lock orders them)."""
    _, pool = queue
    email_id = await sender.queue(["one@example.net", "two@example.org"])
    first = await q.claim(pool, limit=1, lease_seconds=60)
    second = await q.claim(pool, limit=1, lease_seconds=60)
    await asyncio.gather(
        q.record_outcomes(pool, [outcome(first, first.deliveries[0], "delivered")], email_status),
        q.record_outcomes(pool, [outcome(second, second.deliveries[0], "bounced")], email_status),
    )
    assert (await email_row(pool, email_id))["status"] == "partially_bounced"


async def test_queue_stats_count_rows_by_state_and_the_oldest_due(
    queue: Queue, sender: Sender
) -> None:
    _, pool = queue
    await sender.queue(["s1@example.net", "s2@example.net"])
    await pool.execute(
        "UPDATE deliveries SET next_attempt_at = now() - interval '90 seconds' "
        "WHERE recipient = 's1@example.net' AND status = 'queued'"
    )
    stats = await q.queue_stats(pool)
    assert stats.depth["queued"] == 2
    assert 90 <= stats.oldest_due_seconds < 120


async def test_a_notify_wakes_the_workers_long_before_their_poll(
    queue: Queue, sender: Sender, tmp_path: Path
) -> None:
    url, pool = queue
    sink = await Sink.start()
    slow_poll = DeliveryOptions(poll_seconds=60.0)
    env = {"OPENSEND_TRANSPORTS": f"example.net=127.0.0.1:{sink.port}"}
    try:
        async with delivery_workers(pool, url, tmp_path, options=slow_poll, **env) as workers:
            await _listening(workers)
            async with asyncio.timeout(10):  # far below the 60 s poll
                await wait_until_final(pool, await sender.queue(["now@example.net"]))
    finally:
        await sink.stop()


async def test_the_wake_up_connection_comes_back_after_it_is_killed(
    queue: Queue, sender: Sender, tmp_path: Path
) -> None:
    url, pool = queue
    sink = await Sink.start()
    slow_poll = DeliveryOptions(poll_seconds=60.0)
    env = {"OPENSEND_TRANSPORTS": f"example.net=127.0.0.1:{sink.port}"}
    try:
        async with delivery_workers(pool, url, tmp_path, options=slow_poll, **env) as workers:
            await _listening(workers)
            killed = await pool.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
            assert killed == 1
            await poll_until(lambda: workers.listener.connections == 2)
            await _listening(workers)
            async with asyncio.timeout(10):  # far below the 60 s poll
                await wait_until_final(pool, await sender.queue(["after@example.net"]))
    finally:
        await sink.stop()


async def _listening(workers: DeliveryWorkers) -> None:
    async with asyncio.timeout(10):
        await workers.listener.connected.wait()


async def test_an_outcome_the_database_refuses_for_good_fails_instead_of_holding_the_writer(
    queue: Queue, sender: Sender
) -> None:
    """Alone and refused for what it holds (here a NUL, which no text column takes), it was
    retried forever, and with it every outcome behind it in the writer; the rest go on."""
    _, pool = queue
    await sender.queue(["a@example.net", "b@example.net"])
    claim = await q.claim(pool, limit=10, lease_seconds=60)
    bad, good = claim.deliveries
    writer = OutcomeWriter(pool, email_status)
    refused = replace(outcome(claim, bad, "delivered"), response="ok\x00")
    results = await asyncio.wait_for(
        asyncio.gather(
            writer.write([refused]),
            writer.write([outcome(claim, good, "delivered")]),
            return_exceptions=True,
        ),
        timeout=60,  # a hang is the failure; no assertion depends on the time
    )
    assert isinstance(results[0], StorageError) and not results[0].temporary
    assert results[1] == {good.id}
    rows = await deliveries(pool, bad.email_id)
    assert (rows[bad.recipient]["status"], rows[good.recipient]["status"]) == (
        "sending",  # its lease runs out and another attempt records it
        "delivered",
    )
