"""A stop always ends: `opensend serve` drains within OPENSEND_SHUTDOWN_DRAIN_SECONDS even with
its database gone, then terminates its pool; its children never outlive it, even SIGKILLed, and
an extra MX process that dies is started again.

The server runs as operators run it (a subprocess) on a cluster of its own that the test stops.
Every wait is bounded far above the drain's bound, only to stop a hung test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import psutil
import pytest

from mta.stopping import EXIT_FORCED, drain_within
from storage.account import directory
from storage.database import open_pool
from storage.migrate import migrate
from tests.conftest import DOMAIN_VIEW, TEST_SECRET, message, smtp_send
from tests.mta.mx.test_faults import data_block, open_transaction
from tests.support.databases import Cluster, disposable_cluster
from tests.support.opensend_cli import OpenSendServer, opensend_server, server_env

DRAIN_SECONDS = 3  # the bound under test, small so the test is quick
WAIT_SECONDS = 120.0  # only stops a hung test; far above the bound plus its margin
DOMAIN = "stop.test"


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """A cluster of the test's own, migrated, with one routed receiving domain."""
    async with disposable_cluster() as made:
        await migrate(made.url)
        pool = await open_pool(made.url, min_size=1, max_size=2)
        try:
            tenant = await directory.create_tenant(pool, "stop")
            await directory.add_domain(
                pool,
                tenant.id,
                DOMAIN,
                receiving=True,
                reply_domain=None,
                verified=True,
                event_data=DOMAIN_VIEW.event_data,
            )
            await directory.add_route(pool, tenant.id, f"*@{DOMAIN}", None)
        finally:
            await pool.close()
        yield made


def stop_env(tmp_path: Path, cluster: Cluster, **settings: str) -> dict[str, str]:
    return server_env(
        tmp_path / "data",
        cluster.url,
        OPENSEND_REPLY_TOKEN_SECRET=TEST_SECRET,
        OPENSEND_SHUTDOWN_DRAIN_SECONDS=str(DRAIN_SECONDS),
        OPENSEND_LOG_LEVEL="INFO",
        **settings,
    )


async def keep_sending(port: int, stop: asyncio.Event) -> None:
    """MX load: one message after another until told to stop; refusals and cut connections
    are what a stopping server gives, and are not this test's subject."""
    number = 0
    while not stop.is_set():
        number += 1
        with contextlib.suppress(Exception):
            content = message(to=f"load@{DOMAIN}", subject=f"load {number}")
            await smtp_send(port, "c@example.net", [f"load@{DOMAIN}"], content)


def descendants(server: OpenSendServer) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children(recursive=True)


async def until_gone(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still running once every one has ended, or the bound has passed."""
    _, alive = await asyncio.to_thread(psutil.wait_procs, processes, WAIT_SECONDS)
    return list(alive)


@pytest.mark.slow
async def test_sigterm_after_the_database_stopped_under_load_exits_within_the_drain(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = stop_env(tmp_path, cluster)
    async with opensend_server(env, tmp_path / "serve.log") as server:
        children = descendants(server)
        assert children, "the auth checker runs beside the MX"
        stop_load = asyncio.Event()
        load = [asyncio.create_task(keep_sending(server.mx_port, stop_load)) for _ in range(4)]
        # One transaction left in DATA, its end never sent: the drain waits for it, not forever.
        stalled = await open_transaction(server.mx_port, "c@example.net", [f"x@{DOMAIN}"])
        assert (await stalled.command("DATA")).code == 354
        block = data_block(message(to=f"x@{DOMAIN}"))
        await stalled.send_raw(block[: len(block) // 2])

        await cluster.stop()
        server.signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(server.process.wait(), WAIT_SECONDS)
        stop_load.set()
        await asyncio.gather(*load, return_exceptions=True)
        await stalled.close()
        left = await until_gone(children)

    assert exit_code == 0, server.output()
    assert "stopping: finishing transactions in flight" in server.output()
    assert not left, f"children outlived the server: {left}"


@pytest.mark.slow
@pytest.mark.parametrize("database", ["up", "gone"])
async def test_children_do_not_outlive_a_sigkilled_server(
    cluster: Cluster, tmp_path: Path, database: str
) -> None:
    """The auth checker, the webhook workers and an extra MX process, with their database up or
    gone (then they would be retrying it): each ends when the server is killed."""
    env = stop_env(tmp_path, cluster, OPENSEND_MX_PROCESSES="2")
    async with opensend_server(env, tmp_path / "serve.log") as server:
        children = descendants(server)
        spawned = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
        assert len(spawned) == 3, children  # the checker, the webhook workers, one MX worker
        if database == "gone":
            await cluster.stop()
        server.signal(signal.SIGKILL)
        assert await server.exit_code() == -signal.SIGKILL
        left = await until_gone(children)
    assert not left, f"children outlived the server: {left}"


async def test_a_drain_past_its_bound_terminates_the_pool_naming_what_was_held(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A step that holds a connection and never ends: the stop still returns, with the pool
    terminated and the held connection logged."""
    pool = await open_pool(database_url, min_size=1, max_size=2)
    held = await pool.acquire()
    forever = asyncio.Event()

    async def never_ends() -> None:
        await forever.wait()

    with caplog.at_level(logging.WARNING, logger="mta.stopping"):
        await asyncio.wait_for(
            drain_within(0.2, pool, [("a step that never ends", never_ends)]), WAIT_SECONDS
        )
    assert pool.is_closing()
    with pytest.raises(asyncpg.InterfaceError):  # taken from its user, not waited for
        await held.fetchval("SELECT 1")
    [record] = [r for r in caplog.records if "OPENSEND_SHUTDOWN_DRAIN_SECONDS" in r.message]
    assert record.waiting_for == "a step that never ends"
    assert record.connections_held == 1


def mx_listeners(server: OpenSendServer) -> list[psutil.Process]:
    """The server's processes that listen on its MX port (SO_REUSEPORT: one socket each)."""
    listening = []
    for process in [psutil.Process(server.process.pid), *descendants(server)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            connections = process.net_connections(kind="tcp")
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == server.mx_port
                for c in connections
            ):
                listening.append(process)
    return listening


async def until_listeners(server: OpenSendServer, count: int) -> list[psutil.Process]:
    """Polled: no event tells that a process has bound the port."""
    for _ in range(int(WAIT_SECONDS / 0.2)):
        found = mx_listeners(server)
        if len(found) == count:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"{count} processes never listened on the MX port:\n{server.output()}")


@pytest.mark.slow
async def test_an_extra_mx_process_that_dies_while_the_database_is_away_is_started_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Found by the soak test: an extra MX process started while the database was away exited
    at once and was never started again, leaving the port one process short until a restart."""
    env = stop_env(tmp_path, cluster, OPENSEND_MX_PROCESSES="2")
    async with opensend_server(env, tmp_path / "serve.log") as server:
        listeners = await until_listeners(server, 2)
        [worker] = [p for p in listeners if p.pid != server.process.pid]
        await cluster.stop()
        worker.kill()
        await asyncio.to_thread(worker.wait, WAIT_SECONDS)
        await cluster.start()
        again = await until_listeners(server, 2)
        assert worker.pid not in {p.pid for p in again}
        sent = await smtp_send(server.mx_port, "c@example.net", [f"x@{DOMAIN}"], message())
        assert sent.data is not None and sent.data[0] == 250, sent
        server.signal(signal.SIGTERM)
        assert await server.exit_code() == 0, server.output()
    assert "child=opensend-mx-1" in server.output()


# A process whose loop never comes back once told to stop: the watchdog must end it.
STUCK_AFTER_SIGTERM = """
import asyncio, sys, time
from mta.stopping import stop_on_signals

async def main():
    stop = stop_on_signals(0.1)
    print("ready", flush=True)
    await stop.wait()
    time.sleep(3600)  # the loop blocked: no drain step can run, nor the pool's terminate

asyncio.run(main())
"""


@pytest.mark.slow
async def test_a_process_stuck_after_sigterm_is_ended_by_the_exit_watchdog() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        STUCK_AFTER_SIGTERM,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), WAIT_SECONDS) == b"ready\n"
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), WAIT_SECONDS)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == EXIT_FORCED
    assert b"the stop did not end within" in stderr
