"""Delivery under faults: a worker killed mid-send, the database lost after the remote's 250, a
graceful stop with sessions in flight. Nothing accepted is lost; nothing is sent twice except
in the one window no MTA can close (see mta/delivery/workers.py):

    the remote host accepted the message, and we died before our COMMIT recorded it.

Then the row's lease runs out, another worker claims it, and the remote gets it once more.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import pytest

from mta import metrics
from mta.delivery.smtp_pool import SmtpPool
from mta.delivery.workers import DeliveryWorkers
from policy.tokens import ReplyTokens
from storage.database import Pool, open_pool
from storage.migrate import migrate
from tests.support.databases import disposable_cluster
from tests.support.delivery_world import (
    CANCEL_LEFTOVERS,
    FAST,
    delivery_workers,
    make_workers,
    queue_database,
)
from tests.support.opensend_cli import opensend_server, server_env
from tests.support.queued_mail import (
    Sender,
    deliveries,
    events,
    make_sender,
    wait_until_final,
)
from tests.support.smtp_sink import Sink

Queue = tuple[str, Pool]
LEASE = "2s"  # how long a killed worker's rows wait before another worker takes them


@pytest.fixture(scope="module")
async def queue(database_url: str) -> AsyncIterator[Queue]:
    async with queue_database(database_url) as made:
        yield made


@pytest.fixture
async def sender(queue: Queue) -> Sender:
    return await make_sender(queue[1], dkim=False)


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    started = await Sink.start()
    yield started
    await started.stop()


async def stop_while_a_transaction_is_in_data(workers: DeliveryWorkers, sink: Sink) -> None:
    """Stop the workers while the sink holds a transaction after DATA (its gate shut), and let
    that transaction complete during the stop."""
    async with asyncio.timeout(30):
        await sink.handler.data_started.wait()
    stopping = asyncio.create_task(workers.stop(grace=10.0))
    await asyncio.sleep(0.2)
    sink.handler.gate.set()
    await stopping


def serve_env(url: str, tmp_path: Path, sink: Sink) -> dict[str, str]:
    return server_env(
        tmp_path,
        url,
        OPENSEND_TRANSPORTS=f"example.net=127.0.0.1:{sink.port}",
        OPENSEND_DELIVERY_LEASE=LEASE,
        OPENSEND_REPLY_TOKEN_SECRET="k" * 40,
    )


@pytest.mark.slow
async def test_a_worker_killed_before_the_remote_accepted_delivers_once_after_restart(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path
) -> None:
    url, pool = queue
    sink.handler.stall_on_data = True  # the remote never answers the final dot
    env = serve_env(url, tmp_path, sink)
    async with opensend_server(env, tmp_path / "first.log") as server:
        email_id = await sender.queue(["kill@example.net"])
        async with asyncio.timeout(30):
            await sink.handler.data_started.wait()
        server.signal(signal.SIGKILL)
        assert await server.exit_code() == -signal.SIGKILL
    row = (await deliveries(pool, email_id))["kill@example.net"]
    assert row["status"] == "sending"  # leased by a dead worker: nobody may touch it yet
    sink.handler.stall_on_data = False
    async with opensend_server(env, tmp_path / "second.log"):
        rows = await wait_until_final(pool, email_id)
    assert rows["kill@example.net"]["status"] == "delivered"
    assert len(sink.received_by("kill@example.net")) == 1
    assert [e["type"] for e in await events(pool, email_id)] == ["email.sent", "email.delivered"]


@pytest.mark.slow
async def test_a_worker_killed_after_the_remote_accepted_sends_at_most_one_duplicate(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path
) -> None:
    """The documented window: the remote has the message (here it stored it, and its 250 never
    reaches us), we have no record of that. The restarted worker sends it once more."""
    url, pool = queue
    sink.handler.record_then_stall = True
    env = serve_env(url, tmp_path, sink)
    async with opensend_server(env, tmp_path / "first.log") as server:
        email_id = await sender.queue(["twice@example.net"])
        async with asyncio.timeout(30):
            await sink.handler.received_one.wait()
        server.signal(signal.SIGKILL)
        await server.exit_code()
    sink.handler.record_then_stall = False
    async with opensend_server(env, tmp_path / "second.log"):
        rows = await wait_until_final(pool, email_id)
    assert rows["twice@example.net"]["status"] == "delivered"
    assert len(sink.received_by("twice@example.net")) == 2  # the one duplicate, no more
    delivered = [e for e in await events(pool, email_id) if e["type"] == "email.delivered"]
    assert len(delivered) == 1


async def test_the_database_lost_after_the_remotes_250_retries_the_commit_not_the_send(
    sink: Sink, tmp_path: Path
) -> None:
    async with disposable_cluster() as cluster:
        await migrate(cluster.url)
        pool = await open_pool(cluster.url, max_size=4)
        try:
            sender = await make_sender(pool, dkim=False)
            sink.handler.gate = asyncio.Event()
            env = {"OPENSEND_TRANSPORTS": f"example.net=127.0.0.1:{sink.port}"}
            async with delivery_workers(pool, cluster.url, tmp_path, **env) as workers:
                email_id = await sender.queue(["outage@example.net"])
                async with asyncio.timeout(30):
                    await sink.handler.data_started.wait()
                await cluster.stop()
                sink.handler.gate.set()  # the remote now says 250; our COMMIT cannot happen
                async with asyncio.timeout(30):
                    await sink.handler.received_one.wait()
                await asyncio.sleep(0.5)  # a few failed commit attempts
                await cluster.start()
                rows = await wait_until_final(pool, email_id)
            assert rows["outage@example.net"]["status"] == "delivered"
            assert len(sink.messages) == 1
            assert workers.writer.retries > 0
        finally:
            await pool.close()


async def test_a_stop_lets_the_transaction_in_flight_finish_and_gives_back_the_rest(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path
) -> None:
    url, pool = queue
    sink.handler.gate = asyncio.Event()
    smtp = SmtpPool(helo="mx.opensend.test", per_host=1)  # the second message waits its turn
    env = {"OPENSEND_TRANSPORTS": f"example.net=127.0.0.1:{sink.port}"}
    first_id = await sender.queue(["first@example.net"])
    waiting_id = await sender.queue(["waiting@example.net"])
    workers = make_workers(pool, url, tmp_path, smtp=smtp, **env)
    await workers.start()
    try:
        await stop_while_a_transaction_is_in_data(workers, sink)
        first = (await deliveries(pool, first_id))["first@example.net"]
        waiting = (await deliveries(pool, waiting_id))["waiting@example.net"]
        assert first["status"] == "delivered"
        assert (waiting["status"], waiting["attempts"], waiting["lease_token"]) == (
            "queued",
            0,
            None,
        )
        assert len(sink.messages) == 1
    finally:
        await pool.execute(CANCEL_LEFTOVERS)


@pytest.mark.slow
async def test_a_stop_between_the_per_recipient_transactions_records_those_sent(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path, tokens: ReplyTokens
) -> None:
    """With bounce addresses (a receiving domain), each recipient has a transaction of its
    own. A stop after the first gave the whole chunk back, the first recipient with it, who
    then got the message twice."""
    url, pool = queue
    sink.handler.gate = asyncio.Event()
    email_id = await sender.queue(["r1@example.net", "r2@example.net"])
    await pool.execute(
        "UPDATE emails SET reply_domain = 'reply.example.test' WHERE id = $1", email_id
    )
    env = {"OPENSEND_TRANSPORTS": f"example.net=127.0.0.1:{sink.port}"}
    workers = make_workers(pool, url, tmp_path, tokens=tokens, **env)
    await workers.start()
    try:
        await stop_while_a_transaction_is_in_data(workers, sink)
        rows = await deliveries(pool, email_id)
        [sent] = sink.messages
        [done] = sent.rcpt_tos
        [left] = {"r1@example.net", "r2@example.net"} - {done}
        assert rows[done]["status"] == "delivered"
        assert (rows[left]["status"], rows[left]["attempts"]) == ("queued", 0)
    finally:
        await pool.execute(CANCEL_LEFTOVERS)


async def test_reclaimed_rows_go_after_the_rest_of_their_claim_each_marked_as_it_begins(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path
) -> None:
    """Rows reclaimed before wait for the rest of their claim and go one group at a time, each
    marked begun just before its attempt, so that a crash counts against what was in flight
    (migration 0022); a row never reclaimed is sent without the extra write."""
    url, pool = queue
    sink.handler.gate = asyncio.Event()
    suspects = [await sender.queue([f"suspect{n}@example.net"]) for n in range(2)]
    fresh = await sender.queue(["fresh@example.net"])
    await pool.execute(
        "UPDATE deliveries SET status = 'sending', lease_until = now() - interval '1 second', "
        "lease_token = gen_random_uuid(), reclaims = 1 WHERE email_id = ANY($1::uuid[])",
        suspects,
    )
    env = {"OPENSEND_TRANSPORTS": f"example.net=127.0.0.1:{sink.port}"}
    async with delivery_workers(pool, url, tmp_path, **env):
        async with asyncio.timeout(30):
            first = await sink.handler.arrivals.get()  # held at the gate
        assert first == ["fresh@example.net"]
        with pytest.raises(TimeoutError):  # the reclaimed rows wait for it
            async with asyncio.timeout(0.5):
                await sink.handler.arrivals.get()
        rows = await deliveries_of(pool, [*suspects, fresh])
        assert not any(row["attempt_began"] for row in rows.values())
        sink.handler.gate.set()
        for email_id in [*suspects, fresh]:
            await wait_until_final(pool, email_id, statuses=("delivered",))
    rows = await deliveries_of(pool, [*suspects, fresh])
    assert {name: row["attempt_began"] for name, row in rows.items()} == {
        "suspect0@example.net": True,
        "suspect1@example.net": True,
        "fresh@example.net": False,
    }
    assert {row["reclaims"] for row in rows.values()} == {0}


async def deliveries_of(pool: Pool, email_ids: list[UUID]) -> dict[str, dict[str, Any]]:
    return {
        r: row for email_id in email_ids for r, row in (await deliveries(pool, email_id)).items()
    }


REFUSE_ONE_OUTCOME = """
CREATE SEQUENCE refused_outcomes;
CREATE FUNCTION refuse_first_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- nextval is not rolled back with the statement: only the first outcome write is refused.
    IF NEW.status = 'delivered' AND nextval('refused_outcomes') = 1 THEN
        RAISE EXCEPTION 'refused for what it holds' USING ERRCODE = '22023';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_first_outcome BEFORE UPDATE ON deliveries
    FOR EACH ROW EXECUTE FUNCTION refuse_first_outcome();
"""
ONE_CLAIM = replace(FAST, batch_size=200)
ALLOW_OUTCOMES = """
DROP TRIGGER refuse_first_outcome ON deliveries;
DROP FUNCTION refuse_first_outcome();
DROP SEQUENCE refused_outcomes;
"""


async def test_an_outcome_the_database_refuses_gives_the_groups_later_chunks_back(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path
) -> None:
    """A group of more than 100 recipients (in a claim of more than 100 rows) is sent 100 at a
    time. When the first chunk's
    outcome is refused for what it holds (SQLSTATE class 22), the chunk stays leased, as it
    must (its remote said 250), but the chunk after it was never attempted: it is due again
    at once, not after the lease (10 minutes here)."""
    url, pool = queue
    recipients = [f"r{n:03}@example.net" for n in range(101)]
    email_id = await sender.queue(recipients)
    await pool.execute(REFUSE_ONE_OUTCOME)
    env = {
        "OPENSEND_TRANSPORTS": f"example.net=127.0.0.1:{sink.port}",
        "OPENSEND_DELIVERY_LEASE": "10m",
    }
    try:
        async with delivery_workers(pool, url, tmp_path, options=ONE_CLAIM, **env):
            async with asyncio.timeout(30):  # generous: the fix makes it due at once
                while True:
                    rows = await deliveries(pool, email_id)
                    if any(r["status"] == "delivered" for r in rows.values()):
                        break
                    await asyncio.sleep(0.05)
    finally:
        await pool.execute(ALLOW_OUTCOMES)
    [sent_first, sent_later] = sink.messages
    assert len(sent_first.rcpt_tos) == 100
    [later] = sent_later.rcpt_tos
    assert rows[later]["status"] == "delivered"
    assert {r["status"] for name, r in rows.items() if name != later} == {"sending"}


@pytest.mark.parametrize(
    ("cut_off_before", "status"), [(3, "delivered"), (4, "bounced")], ids=["fourth", "fifth"]
)
async def test_a_row_whose_attempts_are_cut_off_five_times_is_failed_not_retried_for_ever(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path, cut_off_before: int, status: str
) -> None:
    """Its lease ran out mid-attempt (a message that kills or wedges its worker): after the
    fourth time it is attempted again; after the fifth the next claim fails it, with
    email.failed, instead of trying once more."""
    url, pool = queue
    email_id = await sender.queue(["cursed@example.net"])
    # Claimed and cut off `cut_off_before` times already, and once more now: the lease ran out
    # with its attempt begun (a worker marks a reclaimed row before attempting it).
    await pool.execute(
        "UPDATE deliveries SET status = 'sending', lease_until = now() - interval '1 second', "
        "lease_token = gen_random_uuid(), reclaims = $2, attempt_began = true "
        "WHERE email_id = $1",
        email_id,
        cut_off_before,
    )
    env = {"OPENSEND_TRANSPORTS": f"example.net=127.0.0.1:{sink.port}"}
    given_up = metrics.DELIVERY_RECLAIMS_GIVEN_UP._value.get()
    async with delivery_workers(pool, url, tmp_path, **env):
        rows = await wait_until_final(pool, email_id, statuses=(status,))
    assert metrics.DELIVERY_RECLAIMS_GIVEN_UP._value.get() - given_up == (status == "bounced")
    row = rows["cursed@example.net"]
    assert row["reclaims"] == 0  # every recorded outcome starts the count again
    if status == "delivered":
        assert len(sink.messages) == 1
        return
    assert (row["last_code"], row["last_enhanced"]) == (554, "5.3.0")
    assert "cut off" in row["last_response"]
    assert [e["type"] for e in await events(pool, email_id)][-1] == "email.failed"
    assert sink.messages == []


@pytest.mark.slow
async def test_sigterm_to_the_server_lets_a_delivery_in_flight_finish_and_exits_0(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path
) -> None:
    url, pool = queue
    sink.handler.gate = asyncio.Event()
    env = serve_env(url, tmp_path, sink)
    async with opensend_server(env, tmp_path / "serve.log") as server:
        email_id = await sender.queue(["term@example.net"])
        async with asyncio.timeout(30):
            await sink.handler.data_started.wait()
        exposition = await _metrics(server.metrics_port)
        for name in (
            "opensend_delivery_queue_depth",
            "opensend_delivery_oldest_due_age_seconds",
            "opensend_delivery_attempts_total",
            "opensend_delivery_latency_seconds",
        ):
            assert name in exposition
        server.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        sink.handler.gate.set()
        assert await server.exit_code() == 0, server.output()
    assert (await deliveries(pool, email_id))["term@example.net"]["status"] == "delivered"
    assert len(sink.messages) == 1


async def _metrics(port: int) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        assert r.status == 200
        return await r.text()
