"""The webhook delivery process beside the MTA: the workers alone, at a lower CPU priority.

Accepting mail comes first: an SMTP client waits on the MX, while an event waits safely in the
outbox. At nice 10 the workers get about a tenth of a busy CPU (CFS weights 110 against 1024),
so a burst of mail slows notices down instead of the MX, and they catch up after it; on an idle
host they run at once. `opensend serve --only webhooks` runs the same workers in its own main
process instead, at normal priority, on hosts of their own.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from pathlib import Path

from api.http_client import LookupResolver
from mta.dns import Resolver
from mta.event_loop import run_in_loop
from mta.logs import configure_logging
from mta.stopping import (
    die_with_parent,
    drain_within,
    session_grace,
    stop_on_signals,
    until_stopped_or_orphaned,
)
from mta.webhooks.worker import WebhookWorkers
from policy.settings import Settings
from storage.database import Pool, open_pool

log = logging.getLogger(__name__)

WEBHOOK_NICENESS = 10


def workers_for(settings: Settings, pool: Pool, url: str) -> WebhookWorkers:
    """The workers as serve builds them, in whichever process runs them."""
    return WebhookWorkers(
        pool,
        url,
        settings.webhooks,
        LookupResolver(Resolver(settings.dns_servers)),
        require_https=settings.production,
    )


def start_webhook_process(settings: Settings, url: str) -> multiprocessing.process.BaseProcess:
    context = multiprocessing.get_context("spawn")
    child = context.Process(
        target=webhook_process_main, args=(settings, url, os.getpid()), name="opensend-webhooks"
    )
    child.start()
    return child


# What ps, top and /proc/<pid>/comm show for it (the kernel keeps 15 bytes).
PROCESS_NAME = "opensend-webhooks"[:15]


def _name_process() -> None:
    """Tell this process apart from the other spawned children in ps and top (Linux only)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(PROCESS_NAME)


def webhook_process_main(settings: Settings, url: str, parent_pid: int) -> None:
    """Until SIGTERM (requests under way finish within the bounded drain) or orphaned, and never
    past the parent's death (mta.stopping)."""
    die_with_parent(parent_pid)
    configure_logging(settings.log_level, settings.log_format)
    _name_process()
    try:
        os.nice(WEBHOOK_NICENESS)
    except OSError as error:  # a sandbox that forbids setpriority(2): same work, same priority
        log.warning("webhooks run at normal CPU priority", extra={"error": str(error)})

    async def main() -> None:
        stop = stop_on_signals(settings.shutdown_drain)
        pool = await open_pool(url, min_size=1, max_size=4)
        workers = workers_for(settings, pool, url)
        await workers.start()
        try:
            await until_stopped_or_orphaned(stop, parent_pid)
        finally:

            async def stop_workers() -> None:
                await workers.stop(session_grace(settings.shutdown_drain))

            await drain_within(
                settings.shutdown_drain, pool, [("finishing webhook deliveries", stop_workers)]
            )

    run_in_loop(main)
