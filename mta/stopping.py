"""How every process of `opensend serve` stops: a drain bounded by OPENSEND_SHUTDOWN_DRAIN_SECONDS,
then the database pool terminated; and child processes that never outlive their parent.

A stop must always end, whatever the database does: with PostgreSQL gone, asyncpg's
`Pool.close()` waits for every connection to be released and its floor keeps reconnecting, so
after the bound the pool is terminated instead (what was still held is logged). Past the bound
and a margin, a watchdog thread ends the process even if its event loop is stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence

from storage import database
from storage.database import Pool

log = logging.getLogger(__name__)

# After the drain's bound, terminating the pool and closing the loop take a moment; past this
# much longer the watchdog exits the process whatever still runs (a thread blocked in DNS, a
# loop that never yields). systemd's TimeoutStopSec must be above the bound plus this margin.
EXIT_MARGIN_SECONDS = 10.0
# A step still running at the bound is cancelled; how long it may take to unwind, now that the
# pool under it is gone, before the stop moves on without it.
UNWIND_SECONDS = 2.0
# Of the bound, what the sessions and deliveries may use themselves: the rest is for the steps
# after them (closing the HTTP side, the children, the pool), so a drain normally ends on its own.
SESSION_SHARE = 0.75
# prctl(2), linux/prctl.h: a signal for this process when its parent dies.
PR_SET_PDEATHSIG = 1
# What the watchdog exits with: the stop did not finish in order.
EXIT_FORCED = 1

Step = tuple[str, Callable[[], Awaitable[None]]]


def session_grace(drain_seconds: float) -> float:
    """How long SMTP sessions and deliveries in flight may go on once a stop has begun."""
    return drain_seconds * SESSION_SHARE


def stop_on_signals(drain_seconds: float) -> asyncio.Event:
    """Set on SIGTERM or SIGINT, which also arms the exit watchdog. Installed before any
    listener starts, so a signal that arrives while starting still leads to a graceful drain
    instead of the default abrupt exit, and a start that waits on a database that is gone
    still ends within the bound."""
    stop = asyncio.Event()
    watchdog = _ExitWatchdog(drain_seconds + EXIT_MARGIN_SECONDS)
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        stop.set()
        watchdog.arm()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    return stop


async def drain_within(seconds: float, pool: Pool, steps: Sequence[Step]) -> None:
    """Run the stop's steps in order, then close the pool, all within `seconds`. A step that
    fails is logged and the next one runs. Past the bound, the step still running is named in
    the log, the pool is terminated (which also frees a step waiting on the database) and the
    stop goes on without waiting for it."""
    current = ["starting"]

    async def run() -> None:
        for name, step in steps:
            current[0] = name
            try:
                await step()
            except Exception:
                log.exception("a step of the stop failed; going on", extra={"step": name})
        current[0] = "closing the database pool"
        await pool.close()

    task = asyncio.get_running_loop().create_task(run(), name="opensend-stop")
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        if task.exception() is None:
            return
        log.warning("the database pool did not close; terminating it", exc_info=task.exception())
        database.terminate(pool)
        return
    held = database.terminate(pool)
    log.warning(
        "the stop took longer than OPENSEND_SHUTDOWN_DRAIN_SECONDS: database pool terminated",
        extra={"seconds": seconds, "waiting_for": current[0], "connections_held": held},
    )
    task.cancel()
    await asyncio.wait({task}, timeout=UNWIND_SECONDS)


class _ExitWatchdog:
    """Ends the process `seconds` after it is armed, unless it has exited by then."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is not None:
            return  # a second SIGTERM does not push the end further away
        self._timer = threading.Timer(self._seconds, self._exit)
        self._timer.daemon = True
        self._timer.start()

    def _exit(self) -> None:
        # Straight to stderr, not through logging: the thread that is stuck may hold its lock.
        os.write(2, f"the stop did not end within {self._seconds:.0f}s; exiting now\n".encode())
        os._exit(EXIT_FORCED)


def die_with_parent(parent_pid: int) -> None:
    """In a child process, first thing: receive SIGTERM (and so drain within the bound) when
    the parent dies, even by SIGKILL; exit at once if it died before this call."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning(
                "cannot ask to be signalled when the parent dies; polling for it instead",
                extra={"error": os.strerror(ctypes.get_errno())},
            )
    # The parent may have died between fork and prctl: the signal would never come.
    if os.getppid() != parent_pid:
        os._exit(0)


async def until_stopped_or_orphaned(stop: asyncio.Event, parent_pid: int) -> None:
    """Also stop when orphaned: the parent died without telling us."""
    while not stop.is_set() and os.getppid() == parent_pid:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
