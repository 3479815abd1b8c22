"""`opensend serve` runs the authentication checks: in a process of its own, beside the MX,
started again if it dies, its counters merged into the server's /metrics."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import psutil
import pytest

from mta.serve import WEBHOOK_PROCESS_NAME
from policy.domains.dkim_keys import DkimKeyPair
from storage.account import directory
from storage.database import Pool
from tests.conftest import DOMAIN_VIEW, smtp_send
from tests.support.delivery_world import queue_database
from tests.support.dns_server import LoopbackDNSServer
from tests.support.mail_auth import AuthSender, mail
from tests.support.opensend_cli import OpenSendServer, opensend_server, server_env

WAIT_SECONDS = 60.0  # only stops a hung test; no assertion depends on it


@pytest.fixture(scope="module")
async def own_database(database_url: str) -> AsyncIterator[tuple[str, Pool]]:
    """The server's auth checker checks every new message of its database: this one's."""
    async with queue_database(database_url) as made:
        yield made


async def receiving_domain(pool: Pool) -> str:
    tenant = await directory.create_tenant(pool, "serve-authcheck")
    await directory.add_domain(
        pool,
        tenant.id,
        "receiver.test",
        receiving=True,
        reply_domain=None,
        verified=True,
        event_data=DOMAIN_VIEW.event_data,
    )
    await directory.add_route(pool, tenant.id, "*@receiver.test", None)
    return "receiver.test"


async def checked_row(pool: Pool, email_id: UUID) -> dict[str, Any]:
    """The row once the server's workers have checked it (they write it; no event says so)."""
    for _ in range(int(WAIT_SECONDS / 0.05)):
        row = await pool.fetchrow(
            "SELECT results, header FROM received_auth_results WHERE received_id = $1",
            email_id,
        )
        if row is not None:
            return dict(row)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{email_id} was never checked")


async def spawned_children(server: OpenSendServer) -> list[psutil.Process]:
    """The children multiprocessing spawned (beside its resource tracker), but the webhook
    process: once that one has named itself (it does so as it starts; no event says when)."""
    async with asyncio.timeout(60):
        while True:
            children = [
                c
                for c in psutil.Process(server.process.pid).children()
                if "spawn_main" in " ".join(c.cmdline())
            ]
            if any(c.name() == WEBHOOK_PROCESS_NAME for c in children):
                return [c for c in children if c.name() != WEBHOOK_PROCESS_NAME]
            await asyncio.sleep(0.05)


async def auth_checker(server: OpenSendServer) -> psutil.Process:
    """With one MX process, the one other spawned child is the auth checker."""
    [child] = await spawned_children(server)
    return child


async def metrics_text(port: int) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        assert r.status == 200
        return await r.text()


async def metrics_showing(port: int, sample: str) -> str:
    """The exposition once it holds `sample`: the checker counts a result only after its results
    commit, so a busy machine may show the row before the counter (no event says so)."""
    for _ in range(int(WAIT_SECONDS / 0.05)):
        exposition = await metrics_text(port)
        if sample in exposition:
            return exposition
        await asyncio.sleep(0.05)
    raise AssertionError(f"{sample!r} never appeared in /metrics")


@pytest.mark.slow
async def test_serve_checks_received_mail_and_restarts_a_dead_checker(
    own_database: tuple[str, Pool], dns: LoopbackDNSServer, dkim_key: DkimKeyPair, tmp_path: Path
) -> None:
    url, pool = own_database
    domain = await receiving_domain(pool)
    sender = AuthSender("sender-x.example", dns.zone, dkim_key)
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all", dmarc="v=DMARC1; p=reject")
    env = server_env(tmp_path / "data", url, OPENSEND_DNS_SERVERS=dns.address)
    async with opensend_server(env, tmp_path / "serve.log") as server:
        signed = sender.sign(mail(sender.address))
        first = await smtp_send(server.mx_port, sender.address, [f"a@{domain}"], signed)
        row = await checked_row(pool, first.stored_ids[0])
        assert row["results"]["dmarc"]["result"] == "pass"
        assert row["header"].startswith("mx.opensend.test; spf=pass")
        dkim_pass = 'opensend_authcheck_results_total{method="dkim",result="pass"} 1.0'
        exposition = await metrics_showing(server.metrics_port, dkim_pass)
        assert "opensend_authcheck_backlog_messages" in exposition

        checker = await auth_checker(server)
        # Runs only on CPU time the MX, delivery and PostgreSQL leave.
        assert os.sched_getscheduler(checker.pid) == os.SCHED_IDLE
        checker.kill()
        second = await smtp_send(server.mx_port, sender.address, [f"b@{domain}"], signed)
        # Stored at once; checked once the supervisor has started a new checker, which takes the
        # lock the killed one held: PostgreSQL released it with its session.
        assert second.stored_ids
        assert (await checked_row(pool, second.stored_ids[0]))["results"] is not None
        assert (await auth_checker(server)).pid != checker.pid

        server.signal(signal.SIGTERM)
        assert await server.exit_code() == 0, server.output()
    assert "a child process died; starting it again" in server.output()


@pytest.mark.slow
async def test_checks_can_run_on_a_host_of_their_own_and_not_beside_the_mx(
    own_database: tuple[str, Pool], dns: LoopbackDNSServer, dkim_key: DkimKeyPair, tmp_path: Path
) -> None:
    """OPENSEND_AUTH_CHECKS=off on the MX host; `serve --only authcheck` elsewhere checks its
    mail, with nothing shared but the database."""
    url, pool = own_database
    domain = "receiver.test"  # made by the test above, in this module's database
    if await directory.find_domain(pool, domain) is None:
        domain = await receiving_domain(pool)
    sender = AuthSender("sender-y.example", dns.zone, dkim_key)
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all", dmarc="v=DMARC1; p=none")
    mx_env = server_env(
        tmp_path / "mx", url, OPENSEND_DNS_SERVERS=dns.address, OPENSEND_AUTH_CHECKS="off"
    )
    checker_env = server_env(tmp_path / "checker", url, OPENSEND_DNS_SERVERS=dns.address)
    async with opensend_server(mx_env, tmp_path / "mx.log") as mx:
        assert await spawned_children(mx) == []
        sent = await smtp_send(mx.mx_port, sender.address, [f"c@{domain}"], mail(sender.address))
        async with opensend_server(
            checker_env, tmp_path / "checker.log", only="authcheck"
        ) as checker:
            row = await checked_row(pool, sent.stored_ids[0])
            assert row["results"]["spf"]["result"] == "pass"
            checker.signal(signal.SIGTERM)
            assert await checker.exit_code() == 0, checker.output()
        mx.signal(signal.SIGTERM)
        assert await mx.exit_code() == 0, mx.output()
