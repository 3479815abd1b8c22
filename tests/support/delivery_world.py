"""What a delivery test needs around the workers: a queue of its own, the workers, remote hosts.

`queue_database` is a fresh, migrated database (the delivery tests' queue is theirs alone, so
no other test's unsent mail is claimed by their workers). `delivery_workers` runs the real
workers in the test's loop, with the settings the test writes, and cancels whatever the test
left in the queue when it ends. `sinks_on_one_port` starts remote hosts on several loopback
addresses sharing one port, as MX hosts share port 25.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mta.delivery.smtp_pool import SmtpPool
from mta.delivery.workers import DeliveryOptions, DeliveryWorkers
from mta.dns import Resolver
from policy.tokens import ReplyTokens
from storage.database import Pool, open_pool
from storage.migrate import migrate
from tests.conftest import make_settings
from tests.support.databases import fresh_database
from tests.support.smtp_sink import Sink

# Small and quick, so retries and polls happen within a test's patience.
FAST = DeliveryOptions(poll_seconds=0.5, queue_stats_seconds=0.2)
CANCEL_LEFTOVERS = """
UPDATE deliveries SET status = 'canceled', lease_token = NULL
WHERE status IN ('queued', 'deferred', 'sending')
"""


@contextlib.asynccontextmanager
async def queue_database(server_url: str) -> AsyncIterator[tuple[str, Pool]]:
    async with fresh_database(server_url) as url:
        await migrate(url)
        pool = await open_pool(url, max_size=10)
        try:
            yield url, pool
        finally:
            await pool.close()


def make_workers(
    pool: Pool,
    url: str,
    tmp: Path,
    *,
    options: DeliveryOptions = FAST,
    smtp: SmtpPool | None = None,
    tokens: ReplyTokens | None = None,
    **env: str,
) -> DeliveryWorkers:
    """The real workers with the settings the test writes, not started yet; with `tokens`,
    every recipient gets its own bounce address (VERP) as the envelope sender."""
    settings = make_settings(tmp, **env)
    resolver = Resolver(settings.dns_servers, lifetime=3.0)
    return DeliveryWorkers(pool, url, settings, resolver, options=options, smtp=smtp, tokens=tokens)


@contextlib.asynccontextmanager
async def delivery_workers(
    pool: Pool,
    url: str,
    tmp: Path,
    *,
    options: DeliveryOptions = FAST,
    smtp: SmtpPool | None = None,
    tokens: ReplyTokens | None = None,
    **env: str,
) -> AsyncIterator[DeliveryWorkers]:
    """Started workers; stopped, and what is left in the queue canceled, at the end."""
    workers = make_workers(pool, url, tmp, options=options, smtp=smtp, tokens=tokens, **env)
    await workers.start()
    try:
        yield workers
    finally:
        await workers.stop(grace=2.0)
        await pool.execute(CANCEL_LEFTOVERS)


@contextlib.asynccontextmanager
async def sinks_on_one_port(*hosts: str, **options: Any) -> AsyncIterator[list[Sink]]:
    """One sink per loopback address, all on the same port (found by trying)."""
    for _ in range(20):
        started: list[Sink] = []
        try:
            first = await Sink.start(hosts[0], 0, **options)
            started.append(first)
            for host in hosts[1:]:
                started.append(await Sink.start(host, first.port, **options))
        except OSError:
            for sink in started:
                await sink.stop()
            continue
        try:
            yield started
        finally:
            for sink in started:
                await sink.stop()
        return
    raise AssertionError("no port free on every address")
