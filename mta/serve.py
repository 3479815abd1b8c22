"""`opensend serve`: every part in one event loop per process, and a graceful stop on SIGTERM.

The MTA part is the MX, the submission ports (587 STARTTLS, 465 implicit TLS) and the delivery
workers; the API part is the HTTP application.

With OPENSEND_MX_PROCESSES above 1, extra processes share the MX port (SO_REUSEPORT) so the SMTP
protocol work uses more than one core; each has its own loop and pool, and Postgres is the only
thing they share. The authentication checks of received mail run in one more process, beside
the delivery workers' but apart from the MX's (see mta/authcheck/worker.py); of several nodes,
one checks at a time and the others wait for its advisory lock. Webhook deliveries run in
one more process, at a lower CPU priority (WEBHOOK_NICENESS). Every child is started again
when it dies, and ends when this process dies. Prometheus samples from all of them are merged
through a shared directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from api.http_client import LookupResolver
from mta import memory
from mta.authcheck.checks import Authenticator
from mta.authcheck.worker import AuthCheckWorkers
from mta.delivery.workers import DeliveryWorkers
from mta.dns import BlockingResolver, Resolver
from mta.event_loop import run_in_loop
from mta.listeners import MXListener, SubmissionListeners, start_mx, start_submission
from mta.logs import configure_logging
from mta.smtp.tls import submission_tls_context
from mta.stopping import (
    Step,
    die_with_parent,
    drain_within,
    session_grace,
    stop_on_signals,
    until_stopped_or_orphaned,
)
from mta.webhooks.worker import WebhookWorkers
from policy.settings import ListenAddress, Settings
from policy.tokens import ReplyTokens
from storage.authcheck import results as authresults
from storage.database import Pool, open_pool
from storage.local_secret import load_or_create_secret
from storage.migrate import migrate
from storage.webhooks import outbox

log = logging.getLogger(__name__)

# The auth-check process yields the CPU to the MX, delivery and Postgres whenever they want it;
# its work waits without harm, theirs has someone waiting on the other end. SCHED_IDLE
# (sched(7)) runs it only on CPU time no other process asks for, and a waking MX process takes
# the core from it at once: at nice 10 alone the checks, filling the gaps of a burst, still cost
# the MX 16 to 30% of its rate on 2 cores, at SCHED_IDLE about half that (tests/perf/README.md).
# Nice 10 where SCHED_IDLE is not available (not Linux, or a sandbox that forbids it).
AUTH_CHECK_NICENESS = 10
# The webhook process runs at this niceness: accepting mail comes first. An SMTP client waits on
# the MX while an event waits safely in the outbox; at nice 10 the workers get about a tenth of a
# busy CPU (CFS weights 110 against 1024), so a burst of mail slows notices down instead of the MX.
WEBHOOK_NICENESS = 10
# A child process that died is started again after this long, doubling up to the maximum.
RESTART_FIRST_SECONDS = 1.0
RESTART_MAX_SECONDS = 60.0


def reply_tokens(settings: Settings) -> ReplyTokens:
    # Production has an explicit secret (policy.settings refuses to start without one).
    secret = settings.reply_token_secret or load_or_create_secret(settings.data_dir)
    return ReplyTokens(secret, settings.reply_token_secrets_previous)


async def _start_http(app: web.Application, listen: ListenAddress) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, listen.host, listen.port).start()
    log.info("HTTP listening", extra={"address": str(listen)})
    return runner


def _pool_size(settings: Settings) -> int:
    # Each RCPT and DATA holds a connection only for one query or one commit.
    return max(4, min(20, settings.max_connections // 20))


async def serve(
    settings: Settings,
    only: str | None,
    url: str,
    *,
    deliver: bool = True,
    check_auth: bool = True,
) -> None:
    """Run until SIGTERM or SIGINT. `deliver=False` leaves the delivery workers out and
    `check_auth=False` the auth-check process: for the submission benchmark
    (tests/perf/bench_submission.py), which measures the listeners alone."""
    stop = stop_on_signals(settings.shutdown_drain)
    await migrate(url, wait=60.0)  # the database may still be starting at boot
    # `--only webhooks` runs the workers on this pool: their connections' settings.
    session = outbox.WORKER_SESSION_SETTINGS if only == "webhooks" else None
    pool = await open_pool(url, max_size=_pool_size(settings), session_settings=session)
    tokens = reply_tokens(settings)
    runners: list[web.AppRunner] = []
    listener: MXListener | None = None
    submission: SubmissionListeners | None = None
    delivery: DeliveryWorkers | None = None
    webhooks: WebhookWorkers | None = None
    workers: list[multiprocessing.process.BaseProcess] = []
    supervisors: list[asyncio.Task[None]] = []
    try:
        if only in (None, "mta"):
            shared = settings.mx_processes > 1
            listener = await start_mx(settings, pool, tokens, reuse_port=shared)
            # Submission runs in this process only: its login failures are counted in one place.
            submission = await start_submission(
                settings, pool, tokens, submission_tls_context(settings)
            )
            # Each extra MX process is started again if it dies (one that starts while the
            # database is away exits at once), so the port keeps its configured processes.
            for number in range(1, settings.mx_processes):
                start = functools.partial(_start_mx_worker, settings, url, number)
                supervisors.append(_supervised(start, workers))
            if deliver:
                delivery = DeliveryWorkers(
                    pool, url, settings, Resolver(settings.dns_servers), tokens=tokens
                )
                await delivery.start()
        # Webhook delivery: beside the MTA in a process of its own at a lower CPU priority
        # (mail first; WEBHOOK_NICENESS), or here alone (`--only webhooks`).
        if only == "webhooks" and deliver:
            webhooks = webhook_workers(settings, pool, url)
            await webhooks.start()
        elif only in (None, "mta") and deliver and settings.webhooks.beside_mta:
            supervisors.append(_supervised(lambda: start_webhook_process(settings, url), workers))
        # The checks of received mail: beside the MX unless OPENSEND_AUTH_CHECKS=off, or alone
        # (`--only authcheck`) on a host of their own, which needs nothing but the database.
        checks_here = only == "authcheck" or (
            only in (None, "mta") and settings.auth_checks and check_auth
        )
        if checks_here:
            supervisors.append(_supervised(lambda: _start_auth_checker(settings, url), workers))
        # Imported here, not above: every child process (auth checks, webhooks, extra MX
        # processes) starts by importing this module, and none serves HTTP; the API's imports
        # would cost each of them about 20 MiB (tests/perf/README.md, "MX memory").
        from api.app import make_app, make_ops_app

        if only in (None, "api"):
            app = make_app(pool, settings, tokens, Resolver(settings.dns_servers))
            runners.append(await _start_http(app, settings.api_listen))
        else:
            runners.append(await _start_http(make_ops_app(pool), settings.metrics_listen))
        log.info("OpenSend ready", extra={"parts": only or "all", "env": settings.env.value})
        memory.settle_heap()
        await stop.wait()
        log.info("stopping: finishing transactions in flight")
    finally:
        grace = session_grace(settings.shutdown_drain)

        async def stop_children() -> None:
            for supervisor in supervisors:
                supervisor.cancel()
            await asyncio.gather(*supervisors, return_exceptions=True)
            for worker in workers:
                if worker.pid is not None and worker.is_alive():
                    os.kill(worker.pid, signal.SIGTERM)

        async def drain_sessions() -> None:
            # Sessions in flight on both sides finish together within the one grace period.
            await asyncio.gather(
                *([listener.drain(grace)] if listener is not None else []),
                *([submission.drain(grace)] if submission is not None else []),
                *([delivery.stop(grace)] if delivery is not None else []),
                *([webhooks.stop(grace)] if webhooks is not None else []),
            )

        async def close_http() -> None:
            for runner in runners:
                await runner.cleanup()

        async def join_children() -> None:
            await asyncio.gather(*(_exited(worker) for worker in workers))

        steps: list[Step] = [
            ("signalling the child processes", stop_children),
            ("finishing SMTP sessions and deliveries in flight", drain_sessions),
            ("closing the HTTP listener", close_http),
            ("waiting for the child processes", join_children),
        ]
        try:
            await drain_within(settings.shutdown_drain, pool, steps)
        finally:
            for worker in workers:  # each bounds its own drain; one that did not is killed
                if worker.is_alive():
                    log.warning(
                        "a child process outlived the stop; killing it",
                        extra={"child": worker.name, "pid": worker.pid},
                    )
                    worker.kill()


async def _supervise(
    start: Callable[[], multiprocessing.process.BaseProcess],
    workers: list[multiprocessing.process.BaseProcess],
) -> None:
    """Keep one child process running: started now, and again whenever it dies. While it
    runs it is in `workers`, so the stop sequence signals and joins it with the others."""
    loop = asyncio.get_running_loop()
    delay = RESTART_FIRST_SECONDS
    while True:
        child = start()
        workers.append(child)
        started = loop.time()
        await _exited(child)
        workers.remove(child)
        if loop.time() - started > RESTART_MAX_SECONDS:
            delay = RESTART_FIRST_SECONDS  # it had been running well: a fresh failure
        log.error(
            "a child process died; starting it again",
            extra={"child": child.name, "exitcode": child.exitcode, "in": delay},
        )
        await asyncio.sleep(delay)
        delay = min(delay * 2, RESTART_MAX_SECONDS)


def _supervised(
    start: Callable[[], multiprocessing.process.BaseProcess],
    workers: list[multiprocessing.process.BaseProcess],
) -> asyncio.Task[None]:
    supervisor = asyncio.get_running_loop().create_task(_supervise(start, workers))
    supervisor.add_done_callback(_report_if_failed)
    return supervisor


def _report_if_failed(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the child process supervisor failed", exc_info=task.exception())


async def _exited(child: multiprocessing.process.BaseProcess) -> None:
    """Until `child` ends: its sentinel becomes readable then; no thread waits in join()."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(child.sentinel, on_readable)
    try:
        await ended
    finally:
        loop.remove_reader(child.sentinel)
    child.join()


def _start_auth_checker(settings: Settings, url: str) -> multiprocessing.process.BaseProcess:
    context = multiprocessing.get_context("spawn")
    checker = context.Process(
        target=auth_check_main, args=(settings, url, os.getpid()), name="opensend-authcheck"
    )
    checker.start()
    return checker


def auth_check_main(settings: Settings, url: str, parent_pid: int) -> None:
    """The auth-check process: the workers only, until SIGTERM or orphaned."""
    die_with_parent(parent_pid)
    configure_logging(settings.log_level, settings.log_format)
    _lower_cpu_priority()  # first: the threads started later inherit it

    async def main() -> None:
        stop = stop_on_signals(settings.shutdown_drain)
        pool = await open_pool(
            url, min_size=1, max_size=4, session_settings=authresults.CHECKER_SESSION_SETTINGS
        )
        resolver = BlockingResolver(settings.dns_servers)
        checkers = AuthCheckWorkers(
            pool,
            Authenticator(resolver, hostname=settings.hostname),
            authserv_id=settings.hostname,
        )
        await checkers.start()
        memory.settle_heap()
        try:
            await until_stopped_or_orphaned(stop, parent_pid)
        finally:

            async def stop_checks() -> None:
                await checkers.stop(session_grace(settings.shutdown_drain))

            await drain_within(settings.shutdown_drain, pool, [("finishing checks", stop_checks)])

    run_in_loop(main)


def _lower_cpu_priority() -> None:
    """SCHED_IDLE for this thread and the threads it starts, or nice 10 where that fails."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError) as error:
        log.warning("auth checks run at nice 10, not SCHED_IDLE", extra={"error": str(error)})
    try:
        os.nice(AUTH_CHECK_NICENESS)
    except OSError as error:  # a sandbox that forbids setpriority(2): same work, same priority
        log.warning("auth checks run at normal CPU priority", extra={"error": str(error)})


def _start_mx_worker(
    settings: Settings, url: str, number: int
) -> multiprocessing.process.BaseProcess:
    context = multiprocessing.get_context("spawn")
    worker = context.Process(
        target=mx_worker_main, args=(settings, url, os.getpid()), name=f"opensend-mx-{number}"
    )
    worker.start()
    return worker


def mx_worker_main(settings: Settings, url: str, parent_pid: int) -> None:
    """An extra MX process: the listener only, on the shared port, until SIGTERM or orphaned."""
    die_with_parent(parent_pid)
    configure_logging(settings.log_level, settings.log_format)

    async def main() -> None:
        stop = stop_on_signals(settings.shutdown_drain)
        pool = await open_pool(url, max_size=_pool_size(settings))
        listener = await start_mx(settings, pool, reply_tokens(settings), reuse_port=True)
        memory.settle_heap()
        try:
            await until_stopped_or_orphaned(stop, parent_pid)
        finally:

            async def drain_sessions() -> None:
                await listener.drain(session_grace(settings.shutdown_drain))

            await drain_within(
                settings.shutdown_drain, pool, [("finishing SMTP sessions", drain_sessions)]
            )

    run_in_loop(main)


def webhook_workers(settings: Settings, pool: Pool, url: str) -> WebhookWorkers:
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
WEBHOOK_PROCESS_NAME = "opensend-webhooks"[:15]


def _name_process() -> None:
    """Tell this process apart from the other spawned children in ps and top (Linux only)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(WEBHOOK_PROCESS_NAME)


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
        pool = await open_pool(
            url, min_size=1, max_size=4, session_settings=outbox.WORKER_SESSION_SETTINGS
        )
        workers = webhook_workers(settings, pool, url)
        await workers.start()
        memory.settle_heap()
        try:
            await until_stopped_or_orphaned(stop, parent_pid)
        finally:

            async def stop_workers() -> None:
                await workers.stop(session_grace(settings.shutdown_drain))

            await drain_within(
                settings.shutdown_drain, pool, [("finishing webhook deliveries", stop_workers)]
            )

    run_in_loop(main)
