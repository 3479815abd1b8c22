"""`opensend serve`: every part in one event loop per process, and a graceful stop on SIGTERM.

The MTA part is the MX, the submission ports (587 STARTTLS, 465 implicit TLS) and the delivery
workers; the API part is the HTTP application.

With OPENSEND_MX_PROCESSES above 1, extra processes share the MX port (SO_REUSEPORT) so the SMTP
protocol work uses more than one core; each has its own loop and pool, and Postgres is the only
thing they share. The authentication checks of received mail run in one more process, beside
the delivery workers' but apart from the MX's (see mta/authcheck_worker.py); of several nodes,
one checks at a time and the others wait for its advisory lock. Prometheus samples
from all of them are merged through a shared directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from api.app import make_app, make_ops_app
from mta.authcheck import Authenticator
from mta.authcheck_worker import AuthCheckWorkers
from mta.delivery import DeliveryWorkers
from mta.dns import BlockingResolver, Resolver
from mta.logs import configure_logging
from mta.server import MXListener, SubmissionListeners, start_mx, start_submission
from mta.tls import submission_tls_context
from policy.settings import ListenAddress, Settings
from policy.tokens import ReplyTokens
from storage.database import open_pool
from storage.local_secret import load_or_create_secret
from storage.migrate import migrate

log = logging.getLogger(__name__)

# How long in-flight SMTP transactions may take to finish after SIGTERM; systemd's
# TimeoutStopSec must be longer.
DRAIN_GRACE_SECONDS = 30.0
# The auth-check process yields the CPU to the MX, delivery and Postgres whenever they want it;
# its work waits without harm, theirs has someone waiting on the other end. SCHED_IDLE
# (sched(7)) runs it only on CPU time no other process asks for, and a waking MX process takes
# the core from it at once: at nice 10 alone the checks, filling the gaps of a burst, still cost
# the MX 16 to 30% of its rate on 2 cores, at SCHED_IDLE about half that (tests/perf/README.md).
# Nice 10 where SCHED_IDLE is not available (not Linux, or a sandbox that forbids it).
AUTH_CHECK_NICENESS = 10
# A child process that died is started again after this long, doubling up to the maximum.
RESTART_FIRST_SECONDS = 1.0
RESTART_MAX_SECONDS = 60.0


def reply_tokens(settings: Settings) -> ReplyTokens:
    # Production has an explicit secret (policy.settings refuses to start without one).
    secret = settings.reply_token_secret or load_or_create_secret(settings.data_dir)
    return ReplyTokens(secret, settings.reply_token_secrets_previous)


def run_in_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run on uvloop where available: the SMTP protocol loop is the MX's bottleneck."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        asyncio.run(main())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def _stop_on_signals() -> asyncio.Event:
    """Set on SIGTERM or SIGINT. Installed before any listener starts, so a signal that arrives
    while starting still leads to a graceful drain instead of the default abrupt exit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


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
    stop = _stop_on_signals()
    await migrate(url, wait=60.0)  # the database may still be starting at boot
    pool = await open_pool(url, max_size=_pool_size(settings))
    tokens = reply_tokens(settings)
    runners: list[web.AppRunner] = []
    listener: MXListener | None = None
    submission: SubmissionListeners | None = None
    delivery: DeliveryWorkers | None = None
    workers: list[multiprocessing.process.BaseProcess] = []
    supervisor: asyncio.Task[None] | None = None
    try:
        if only in (None, "mta"):
            shared = settings.mx_processes > 1
            listener = await start_mx(settings, pool, tokens, reuse_port=shared)
            # Submission runs in this process only: its login failures are counted in one place.
            submission = await start_submission(
                settings, pool, tokens, submission_tls_context(settings)
            )
            workers = _start_mx_workers(settings, url)
            if deliver:
                delivery = DeliveryWorkers(
                    pool, url, settings, Resolver(settings.dns_servers), tokens=tokens
                )
                await delivery.start()
        # The checks of received mail: beside the MX unless OPENSEND_AUTH_CHECKS=off, or alone
        # (`--only authcheck`) on a host of their own, which needs nothing but the database.
        checks_here = only == "authcheck" or (
            only in (None, "mta") and settings.auth_checks and check_auth
        )
        if checks_here:
            supervisor = asyncio.get_running_loop().create_task(
                _supervise(lambda: _start_auth_checker(settings, url), workers)
            )
            supervisor.add_done_callback(_report_if_failed)
        if only in (None, "api"):
            app = make_app(pool, settings, tokens, Resolver(settings.dns_servers))
            runners.append(await _start_http(app, settings.api_listen))
        else:
            runners.append(await _start_http(make_ops_app(pool), settings.metrics_listen))
        log.info("OpenSend ready", extra={"parts": only or "all", "env": settings.env.value})
        await stop.wait()
        log.info("stopping: finishing transactions in flight")
    finally:
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)
        # Sessions in flight on both sides finish together within the one grace period.
        await asyncio.gather(
            *([listener.drain(DRAIN_GRACE_SECONDS)] if listener is not None else []),
            *([submission.drain(DRAIN_GRACE_SECONDS)] if submission is not None else []),
            *([delivery.stop(DRAIN_GRACE_SECONDS)] if delivery is not None else []),
        )
        for runner in runners:
            await runner.cleanup()
        for worker in workers:
            await asyncio.get_running_loop().run_in_executor(
                None, worker.join, DRAIN_GRACE_SECONDS + 5
            )
        await pool.close()


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
    configure_logging(settings.log_level, settings.log_format)
    _lower_cpu_priority()  # first: the threads started later inherit it

    async def main() -> None:
        stop = _stop_on_signals()
        pool = await open_pool(url, min_size=1, max_size=4)
        resolver = BlockingResolver(settings.dns_servers)
        checkers = AuthCheckWorkers(
            pool,
            Authenticator(resolver, hostname=settings.hostname),
            authserv_id=settings.hostname,
        )
        await checkers.start()
        try:
            await _until_stopped_or_orphaned(stop, parent_pid)
        finally:
            await checkers.stop(DRAIN_GRACE_SECONDS)
            await pool.close()

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


async def _until_stopped_or_orphaned(stop: asyncio.Event, parent_pid: int) -> None:
    """Also stop when orphaned: the parent died without telling us."""
    while not stop.is_set() and os.getppid() == parent_pid:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


def _start_mx_workers(settings: Settings, url: str) -> list[multiprocessing.process.BaseProcess]:
    context = multiprocessing.get_context("spawn")
    workers: list[multiprocessing.process.BaseProcess] = []
    for number in range(1, settings.mx_processes):
        worker = context.Process(
            target=mx_worker_main, args=(settings, url, os.getpid()), name=f"opensend-mx-{number}"
        )
        worker.start()
        workers.append(worker)
    return workers


def mx_worker_main(settings: Settings, url: str, parent_pid: int) -> None:
    """An extra MX process: the listener only, on the shared port, until SIGTERM or orphaned."""
    configure_logging(settings.log_level, settings.log_format)

    async def main() -> None:
        stop = _stop_on_signals()
        pool = await open_pool(url, max_size=_pool_size(settings))
        listener = await start_mx(settings, pool, reply_tokens(settings), reuse_port=True)
        try:
            await _until_stopped_or_orphaned(stop, parent_pid)
        finally:
            await listener.drain(DRAIN_GRACE_SECONDS)
            await pool.close()

    run_in_loop(main)
