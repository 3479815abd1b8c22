"""The outbox's cycle statement on a real database: the per-endpoint cap across workers, a slot
freed by the outcome recorded in the same cycle, outcomes applied only under their lease, and a
lease that runs out handing the delivery to another worker under the same id."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from api.http_client import LookupResolver
from mta.dns import Resolver
from mta.webhooks.worker import Finished, WebhookWorkers
from storage.account import directory
from storage.conversations import contacts
from storage.database import Pool, open_pool
from storage.ids import uuid7
from storage.webhooks import outbox
from storage.webhooks.outbox import AttemptOutcome, ClaimedDelivery, Cycle
from tests.conftest import make_settings
from tests.support.delivery_world import queue_database
from tests.support.plans import kept_plan, leading_columns, unkeyed_reads
from tests.webhooks.conftest import Queue

CAP = 2
FIVE_DAYS = 5 * 86400


@pytest.fixture(scope="module")
async def queue(database_url: str) -> AsyncIterator[Queue]:
    """This module's own database, its pool opened as the workers' is (WORKER_SESSION_SETTINGS):
    the cycle runs on the plans it runs on in production."""
    async with queue_database(database_url) as (url, _):
        pool = await open_pool(url, max_size=10, session_settings=outbox.WORKER_SESSION_SETTINGS)
        try:
            yield url, pool
        finally:
            await pool.close()


async def endpoint_with_events(pool: Pool, events: int) -> UUID:
    """A tenant with one contact.created endpoint and `events` events due for it."""
    tenant = await directory.create_tenant(pool, f"t-{secrets.token_hex(4)}")
    webhook_id: UUID = await pool.fetchval(
        "INSERT INTO webhooks (id, tenant_id, endpoint, events, signing_secret) "
        "VALUES (opensend_uuid7(), $1, 'http://127.0.0.1:9/hook', '{contact.created}', "
        "'whsec_dGVzdA==') RETURNING id",
        tenant.id,
    )
    for _ in range(events):
        await contacts.create_contact(
            pool, tenant.id, f"c{secrets.token_hex(4)}@example.net", None, None, False
        )
    return webhook_id


Claimed = tuple[ClaimedDelivery, UUID]  # a delivery and its lease token


async def cycle(
    pool: Pool, webhook_id: UUID, done: list[AttemptOutcome], *, lease: int = 60, cap: int = CAP
) -> list[Claimed]:
    """A worker's cycle, seen for one endpoint (other tests' endpoints share the database)."""
    result: Cycle = await outbox.cycle(
        pool,
        done,
        limit=100,
        per_endpoint=cap,
        lease_seconds=lease,
        disable_after_seconds=FIVE_DAYS,
    )
    mine = [d for d in result.claimed if d.webhook_id == webhook_id]
    # Claimed for another test's endpoint: handed back at once, as an abandoned lease would.
    await pool.execute(
        "UPDATE webhook_deliveries SET lease_until = NULL, lease_token = NULL "
        "WHERE lease_token = $1 AND webhook_id <> $2",
        result.token,
        webhook_id,
    )
    return [(d, result.token) for d in mine]


def succeeded(claimed: Claimed) -> AttemptOutcome:
    delivery, token = claimed
    return AttemptOutcome(
        delivery_id=delivery.id,
        token=token,
        status="success",
        retry_in=None,
        attempted_at=datetime.now(UTC),
        status_code=200,
        latency_ms=1.0,
        response="ok",
        error=None,
        succeeded=True,
    )


async def test_two_workers_claiming_at_once_stay_within_the_endpoint_cap(queue: Queue) -> None:
    _, pool = queue
    webhook_id = await endpoint_with_events(pool, 6)
    first, second = await asyncio.gather(cycle(pool, webhook_id, []), cycle(pool, webhook_id, []))
    assert len(first) + len(second) == CAP
    assert not await cycle(pool, webhook_id, [])  # the head is under lease: nothing more


async def test_an_outcome_frees_its_slot_for_the_claim_in_the_same_cycle(queue: Queue) -> None:
    _, pool = queue
    webhook_id = await endpoint_with_events(pool, 5)
    claimed = await cycle(pool, webhook_id, [])
    assert len(claimed) == CAP
    more = await cycle(pool, webhook_id, [succeeded(claimed[0])])
    assert len(more) == 1
    assert {d.id for d, _ in more}.isdisjoint(d.id for d, _ in claimed)
    done = claimed[0][0].id
    status = await pool.fetchval("SELECT status FROM webhook_deliveries WHERE id = $1", done)
    assert status == "success"
    attempts = await pool.fetchval(
        "SELECT count(*) FROM webhook_attempts WHERE delivery_id = $1", done
    )
    assert attempts == 1


async def live_leases(pool: Pool, webhook_id: UUID) -> int:
    """Deliveries of the endpoint in flight now, whoever claimed them."""
    count: int = await pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1 AND lease_until > now()",
        webhook_id,
    )
    return count


async def test_deliveries_written_together_never_put_more_than_the_cap_in_flight(
    queue: Queue,
) -> None:
    """Written in one statement, the deliveries share their due time. With the queue ordered by
    due time alone, each claim's update could move a leased row out of the head in the index's
    order of ties, and the next cycle took another in its place: 35 in flight for a cap of 16."""
    _, pool = queue
    webhook_id = await endpoint_with_events(pool, 0)
    await add_events(pool, webhook_id, 400)
    for _ in range(12):
        await cycle(pool, webhook_id, [], cap=16)
        assert await live_leases(pool, webhook_id) == 16


async def test_a_failing_endpoint_gets_one_request_at_a_time_until_one_succeeds(
    queue: Queue,
) -> None:
    _, pool = queue
    webhook_id = await endpoint_with_events(pool, 0)
    await add_events(pool, webhook_id, 400)  # in one statement: one due time for all
    claimed = await cycle(pool, webhook_id, [], cap=4)
    assert len(claimed) == 4
    # All four fail (retried later): the cycle that records them starts the endpoint's streak,
    # and claims one more, not another four.
    now = datetime.now(UTC)
    (probe,) = await cycle(pool, webhook_id, [attempted(c, now, ok=False) for c in claimed], cap=4)
    for _ in range(6):
        assert not await cycle(pool, webhook_id, [], cap=4)  # the probe is still under way
        assert await live_leases(pool, webhook_id) == 1
    # It succeeds: the streak ends, and the claim beside the outcome takes the cap's four.
    more = await cycle(pool, webhook_id, [succeeded(probe)], cap=4)
    assert len(more) == 4
    failing = await pool.fetchval("SELECT failing_since FROM webhooks WHERE id = $1", webhook_id)
    assert failing is None
    assert await live_leases(pool, webhook_id) == 4


async def test_a_lease_run_out_goes_to_another_worker_and_the_late_outcome_is_only_listed(
    queue: Queue,
) -> None:
    _, pool = queue
    webhook_id = await endpoint_with_events(pool, 1)
    (taken,) = await cycle(pool, webhook_id, [], lease=0)
    late = succeeded(taken)
    (again,) = await cycle(pool, webhook_id, [])  # the lease is over: any worker may take it
    delivery_id = taken[0].id
    assert again[0].id == delivery_id  # the same webhook-id on the wire
    assert again[1] != taken[1]
    await cycle(pool, webhook_id, [late])
    row = await pool.fetchrow(
        "SELECT status, attempts FROM webhook_deliveries WHERE id = $1", delivery_id
    )
    assert (row["status"], row["attempts"]) == ("pending", 0)  # moved on by its holder only
    attempts = await pool.fetchval(
        "SELECT count(*) FROM webhook_attempts WHERE delivery_id = $1", delivery_id
    )
    assert attempts == 1  # the attempt was made, so it is listed
    await cycle(pool, webhook_id, [succeeded(again)])
    status = await pool.fetchval("SELECT status FROM webhook_deliveries WHERE id = $1", delivery_id)
    assert status == "success"


async def test_an_outcome_the_database_refuses_does_not_hold_up_the_others(
    queue: Queue, tmp_path: Path
) -> None:
    url, pool = queue
    webhook_id = await endpoint_with_events(pool, 1)
    (claimed,) = await cycle(pool, webhook_id, [])
    good = succeeded(claimed)
    # An attempt of a delivery that does not exist: its row breaks a foreign key.
    refused = replace(good, delivery_id=uuid7())
    settings = make_settings(tmp_path)
    workers = WebhookWorkers(
        pool,
        url,
        settings.webhooks,
        LookupResolver(Resolver(settings.dns_servers)),
        require_https=False,
    )
    record_by = time.monotonic() + 60
    done, recorded = await workers._cycle(
        [Finished(refused, False, record_by), Finished(good, False, record_by)], 0
    )
    assert [f.outcome for f in recorded] == [good]
    assert done.applied == {claimed[0].id}
    status = await pool.fetchval(
        "SELECT status FROM webhook_deliveries WHERE id = $1", claimed[0].id
    )
    assert status == "success"


# The cycle's arguments as SQL literals: no outcomes, a claim of up to 100 for a lease of 60 s.
NO_OUTCOMES = "('{}','{}','{}','{}','{}','{}','{}','{}','{}','{}','{}',432000,100,60,'%s')"


async def cached_cycle_plan(
    url: str, webhook_id: UUID, settings: dict[str, str] | None
) -> dict[str, Any]:
    """The plan a connection with `settings` keeps for the cycle, made at its sixth cycle (at
    its first under force_generic_plan) with the statistics of that moment."""
    pool = await open_pool(url, min_size=1, max_size=1, session_settings=settings)
    try:
        for _ in range(8):
            await cycle(pool, webhook_id, [])
        return await kept_plan(pool, outbox.cycle_statement(CAP), NO_OUTCOMES % uuid7())
    finally:
        await pool.close()


async def test_the_cycles_cached_plan_reads_deliveries_by_key_whatever_the_statistics(
    database_url: str,
) -> None:
    # PostgreSQL caches a generic plan after five executions, and makes it again after an
    # ANALYZE. Made on an empty outbox (a new server: here a fresh database), the default plan
    # scans the whole of webhook_deliveries at every cycle once a backlog comes; made after an
    # ANALYZE saw a backlog, it could read the due index whole in due order to pick the heads.
    # The workers' connections (WORKER_SESSION_SETTINGS) and the statement keep every read of
    # webhook_deliveries to a key: an outcome's or a head's id, or an endpoint's queue.
    async with queue_database(database_url) as (url, shared):
        webhook_id = await endpoint_with_events(shared, 0)
        indexes = await leading_columns(shared, "webhook_deliveries")

        async def whole_reads(settings: dict[str, str] | None) -> list[str]:
            plan = await cached_cycle_plan(url, webhook_id, settings)
            return unkeyed_reads(plan, "webhook_deliveries", indexes)

        assert await whole_reads(None)  # the defaults: a sequential scan
        assert await whole_reads(outbox.WORKER_SESSION_SETTINGS) == []

        # A backlog, most of it delivered and not yet vacuumed, as autoanalyze sees it in a burst.
        await add_events(shared, webhook_id, 3000)
        await shared.execute(
            "UPDATE webhook_deliveries SET status = 'success' WHERE id IN "
            "(SELECT id FROM webhook_deliveries ORDER BY id LIMIT 2000)"
        )
        await shared.execute("ANALYZE webhook_deliveries")
        assert await whole_reads(outbox.WORKER_SESSION_SETTINGS) == []

        # A burst not sent yet: thousands due for one endpoint, analyzed. (With the cap as a
        # parameter, the kept plan expected a tenth of them as heads and hashed the whole table.)
        await add_events(shared, webhook_id, 6000)
        await shared.execute("ANALYZE webhook_deliveries")
        assert await whole_reads(outbox.WORKER_SESSION_SETTINGS) == []


async def test_the_cycles_kept_plan_looks_the_heads_up_by_key_for_hundreds_of_endpoints(
    database_url: str,
) -> None:
    # A new server where hundreds of endpoints have a few events each: their heads outnumber
    # what a hash join over the whole (small) table costs, and that plan is kept while the
    # table grows. The workers' connections price hash and merge joins out.
    async with queue_database(database_url) as (url, shared):
        webhook_id = await endpoint_with_events(shared, 0)
        await shared.execute(
            "INSERT INTO webhooks (id, tenant_id, endpoint, events, signing_secret) "
            "SELECT opensend_uuid7(), tenant_id, endpoint || '?' || n, events, signing_secret "
            "FROM webhooks, generate_series(1, 299) AS n WHERE id = $1",
            webhook_id,
        )
        await add_events(shared, webhook_id, 3)  # a delivery for each endpoint, each time
        await shared.execute("ANALYZE webhooks")
        await shared.execute("ANALYZE webhook_deliveries")
        plan = await cached_cycle_plan(url, webhook_id, outbox.WORKER_SESSION_SETTINGS)
        indexes = await leading_columns(shared, "webhook_deliveries")
        assert unkeyed_reads(plan, "webhook_deliveries", indexes) == []


async def add_events(pool: Pool, webhook_id: UUID, count: int) -> None:
    """`count` events due for the endpoint, written by the outbox's own function."""
    await pool.execute(
        "SELECT opensend_webhook_event(tenant_id, 'contact.created', '{}'::jsonb) "
        "FROM webhooks, generate_series(1, $2) WHERE id = $1",
        webhook_id,
        count,
    )


def attempted(claimed: Claimed, at: datetime, *, ok: bool) -> AttemptOutcome:
    outcome = replace(succeeded(claimed), attempted_at=at)
    if ok:
        return outcome
    return replace(outcome, status="attempting", retry_in=5, status_code=500, succeeded=False)


async def endpoint_failing_since(pool: Pool, webhook_id: UUID, since: datetime | None) -> None:
    await pool.execute("UPDATE webhooks SET failing_since = $2 WHERE id = $1", webhook_id, since)


async def test_a_cycle_counts_its_attempts_in_order_for_the_failing_streak(queue: Queue) -> None:
    # Recorded one by one, a success ends a streak and a later failure starts a new one; a cycle
    # that records both must come to the same, and disable only on a streak past five days.
    _, pool = queue
    webhook_id = await endpoint_with_events(pool, 6)
    six_days_ago = datetime.now(UTC) - timedelta(days=6)
    now = datetime.now(UTC)

    first, second = await cycle(pool, webhook_id, [])
    await endpoint_failing_since(pool, webhook_id, six_days_ago)
    # The failed ones retry later; the claim beside the outcomes reads the endpoint as failing
    # (one at a time), and healthy again, the cap's two.
    (third,) = await cycle(
        pool,
        webhook_id,
        [attempted(first, now - timedelta(seconds=2), ok=True), attempted(second, now, ok=False)],
    )
    row = await pool.fetchrow(
        "SELECT status, failing_since FROM webhooks WHERE id = $1", webhook_id
    )
    assert (row["status"], row["failing_since"]) == ("enabled", now)

    await endpoint_failing_since(pool, webhook_id, None)
    (fourth,) = await cycle(pool, webhook_id, [])  # the third still under way
    first, second = await cycle(
        pool,
        webhook_id,
        [attempted(third, now - timedelta(seconds=2), ok=False), attempted(fourth, now, ok=True)],
    )
    assert (
        await pool.fetchval("SELECT failing_since FROM webhooks WHERE id = $1", webhook_id) is None
    )

    await endpoint_failing_since(pool, webhook_id, six_days_ago)
    await cycle(pool, webhook_id, [attempted(c, now, ok=False) for c in (first, second)])
    row = await pool.fetchrow(
        "SELECT status, disabled_reason, failing_since FROM webhooks WHERE id = $1", webhook_id
    )
    assert (row["status"], row["disabled_reason"]) == ("disabled", "failing")
    assert row["failing_since"] == six_days_ago
