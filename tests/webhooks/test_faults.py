"""Webhook delivery under faults: a worker killed with SIGKILL in the middle of a POST, the
database stopped while deliveries are in flight, two worker processes on one outbox. Nothing is
lost; a delivery is sent again only when the attempt's outcome was never committed, and then
under the same webhook-id."""

from __future__ import annotations

import asyncio
import secrets
import signal
from pathlib import Path
from uuid import UUID

import aiohttp
import pytest

from policy.webhooks import signing
from storage.account import directory
from storage.conversations import contacts
from storage.database import Pool, open_pool
from storage.migrate import migrate
from storage.webhooks import endpoints, outbox
from tests.support.databases import disposable_cluster
from tests.support.opensend_cli import opensend_server, server_env
from tests.webhooks.conftest import Queue
from tests.webhooks.receiver import WAIT_SECONDS, Receiver, verified
from tests.webhooks.world import webhook_workers


async def subscribed_tenant(pool: Pool, *receivers: Receiver) -> tuple[UUID, list[str]]:
    """A tenant with one webhook per receiver, subscribed to contact.created; their secrets."""
    tenant = await directory.create_tenant(pool, f"t-{secrets.token_hex(4)}")
    found = []
    for receiver in receivers:
        hook = await endpoints.create_webhook(
            pool, tenant.id, receiver.url, ["contact.created"], signing.new_secret()
        )
        found.append(hook.signing_secret)
    return tenant.id, found


async def events(pool: Pool, tenant_id: UUID, count: int) -> None:
    for _ in range(count):
        await contacts.create_contact(
            pool, tenant_id, f"c{secrets.token_hex(6)}@example.net", None, None, False
        )


async def all_succeeded(pool: Pool, tenant_id: UUID, count: int) -> None:
    """Until `count` deliveries of the tenant are recorded as a success (no event announces
    another process's commit)."""
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            done = await pool.fetchval(
                "SELECT count(*) FROM webhook_deliveries "
                "WHERE tenant_id = $1 AND status = 'success'",
                tenant_id,
            )
            if done >= count:
                return
            await asyncio.sleep(0.05)


def worker_env(tmp: Path, url: str, **settings: str) -> dict[str, str]:
    return server_env(
        tmp,
        url,
        OPENSEND_REPLY_TOKEN_SECRET="k" * 40,
        OPENSEND_WEBHOOK_ALLOW_PRIVATE="on",
        **settings,
    )


@pytest.mark.slow
async def test_a_worker_killed_mid_post_delivers_after_restart_under_the_same_id(
    queue: Queue, receiver: Receiver, tmp_path: Path
) -> None:
    url, pool = queue
    tenant_id, [secret] = await subscribed_tenant(pool, receiver)
    receiver.hang = True
    env = worker_env(tmp_path, url, OPENSEND_WEBHOOK_LEASE="3s", OPENSEND_WEBHOOK_TIMEOUT="2s")
    async with opensend_server(env, tmp_path / "first.log", only="webhooks") as first:
        await events(pool, tenant_id, 1)
        [cut] = await receiver.wait_for(1)
        first.process.kill()  # SIGKILL: no drain, no outcome written
        await first.process.wait()
    receiver.hang = False
    env = worker_env(tmp_path, url, OPENSEND_WEBHOOK_LEASE="3s", OPENSEND_WEBHOOK_TIMEOUT="2s")
    async with opensend_server(env, tmp_path / "second.log", only="webhooks"):
        [_, again] = await receiver.wait_for(2)
        await all_succeeded(pool, tenant_id, 1)
    assert again.id == cut.id
    assert verified(again, secret) == verified(cut, secret)
    attempts = await pool.fetch(
        "SELECT status_code FROM webhook_attempts WHERE delivery_id = $1", UUID(again.id)
    )
    assert [a["status_code"] for a in attempts] == [200]  # the killed one never recorded


@pytest.mark.slow
async def test_the_database_stopped_with_deliveries_in_flight_loses_nothing(
    receiver: Receiver, tmp_path: Path
) -> None:
    async with disposable_cluster() as cluster:
        await migrate(cluster.url)
        # Opened as the workers' own pool is (mta/serve.py): their plans, through the outage.
        pool = await open_pool(
            cluster.url, max_size=4, session_settings=outbox.WORKER_SESSION_SETTINGS
        )
        try:
            tenant_id, [secret] = await subscribed_tenant(pool, receiver)
            await events(pool, tenant_id, 10)  # pending before any worker runs
            receiver.gate = asyncio.Event()
            async with webhook_workers(
                pool, cluster.url, tmp_path, OPENSEND_WEBHOOK_ENDPOINT_CONCURRENCY="4"
            ):
                await receiver.wait_for(4)  # four in flight, at the endpoint's cap
                await cluster.stop()
                receiver.gate.set()  # they are answered 200; the outcomes cannot commit yet
                await asyncio.sleep(0.5)  # a few failed commits and claims
                await cluster.start()
                await all_succeeded(pool, tenant_id, 10)
            ids = [p.id for p in receiver.posts]
            assert len(set(ids)) == 10 == len(ids)  # each once: back within the lease
            for post in receiver.posts:
                verified(post, secret)
        finally:
            await pool.close()


@pytest.mark.slow
async def test_two_worker_processes_deliver_each_event_once_per_endpoint(
    queue: Queue, receiver: Receiver, other_receiver: Receiver, tmp_path: Path
) -> None:
    url, pool = queue
    tenant_id, secrets_ = await subscribed_tenant(pool, receiver, other_receiver)
    async with (
        opensend_server(worker_env(tmp_path, url), tmp_path / "one.log", only="webhooks"),
        opensend_server(worker_env(tmp_path, url), tmp_path / "two.log", only="webhooks"),
    ):
        await events(pool, tenant_id, 40)
        await all_succeeded(pool, tenant_id, 80)
    for got, secret in zip((receiver, other_receiver), secrets_, strict=True):
        ids = [p.id for p in got.posts]
        assert len(ids) == len(set(ids)) == 40
        for post in got.posts:
            verified(post, secret)


@pytest.mark.slow
async def test_serve_only_mta_delivers_webhooks_from_its_own_process_and_exports_metrics(
    queue: Queue, receiver: Receiver, tmp_path: Path
) -> None:
    url, pool = queue
    tenant_id, [secret] = await subscribed_tenant(pool, receiver)
    env = worker_env(tmp_path, url, OPENSEND_AUTH_CHECKS="off")
    async with opensend_server(env, tmp_path / "mta.log") as server:
        await events(pool, tenant_id, 3)
        posts = await receiver.wait_for(3)
        await all_succeeded(pool, tenant_id, 3)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{server.metrics_port}/metrics") as answer,
        ):
            exposition = await answer.text()
        server.signal(signal.SIGTERM)
        assert await server.exit_code() == 0, server.output()
    for post in posts:
        verified(post, secret)
    assert 'opensend_webhook_deliveries_total{result="success"} 3.0' in exposition
    assert "opensend_webhook_pending_deliveries" in exposition
