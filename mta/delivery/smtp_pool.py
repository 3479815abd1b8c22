"""Open SMTP sessions, shared and capped: reuse for several messages to one host, a cap per
destination host and a cap in all, idle sessions closed after a short while.

Postfix's defaults are the model: 20 connections per destination
(default_destination_concurrency_limit), 100 in all (default_process_limit), and an idle
session kept a few seconds for the next message (smtp_connection_cache_time_limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from collections.abc import Callable

from mta import metrics
from mta.delivery.routes import Hop
from mta.delivery.smtp_client import SessionFailed, SmtpSession, Timeouts
from policy.delivery.result import Stage

PER_HOST_CONNECTIONS = 20
TOTAL_CONNECTIONS = 100
IDLE_SECONDS = 5.0
# A session is not reused forever: Postfix's smtp_connection_reuse_time_limit.
MAX_SESSION_SECONDS = 300.0
# A host that could not be connected to, or would not greet, is tried after the route's other
# hosts for this long (as Exim's per-host retry records do): every message to a domain whose
# primary MX is down would otherwise wait out a connect timeout before reaching the backup.
UNREACHABLE_SECONDS = 60.0
UNREACHABLE_REMEMBERED = 10_000  # hosts at most; past it, the oldest is forgotten

Key = tuple[str, int]


class PoolClosed(Exception):
    """The pool is shutting down: no new session will be handed out."""


class SmtpPool:
    """Sessions are handed straight from the task that finishes with one to a task waiting for
    that host, and a freed connection slot straight to a waiter: no task is woken for nothing,
    however many wait."""

    def __init__(
        self,
        *,
        helo: str,
        timeouts: Timeouts | None = None,
        per_host: int = PER_HOST_CONNECTIONS,
        total: int = TOTAL_CONNECTIONS,
        idle_seconds: float = IDLE_SECONDS,
        unreachable_seconds: float = UNREACHABLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._helo = helo
        self._timeouts = timeouts or Timeouts()
        self._per_host = per_host
        self._total = total
        self._idle_seconds = idle_seconds
        self._idle: dict[Key, list[SmtpSession]] = {}
        self._open: dict[Key, int] = defaultdict(int)  # connecting, busy or idle
        self._open_total = 0
        # Each waiter's future gets an idle session (handed over) or None (a slot reserved
        # for it to open a new connection).
        self._waiters: dict[Key, deque[asyncio.Future[SmtpSession | None]]] = {}
        self._closers: set[asyncio.Task[None]] = set()
        self._closing = False
        self.connections_made = 0
        self._unreachable_seconds = unreachable_seconds
        # One time-to-live for all, so insertion order is expiry order: the oldest go first.
        self._unreachable_until: dict[Key, float] = {}
        self._clock = clock

    def open_count(self, key: Key) -> int:
        return self._open.get(key, 0)

    async def acquire(self, hop: Hop) -> tuple[SmtpSession, bool]:
        """A session to `hop` and whether it was reused; waits while the caps are reached.
        Raises SessionFailed when a new connection cannot be set up, PoolClosed when stopping."""
        key = hop.key
        while True:
            session = await self._session_or_slot(key)
            if session is None:
                break  # a slot is ours: open a new connection
            if await session.ready_for_reuse():
                return session, True
            self._discard(session)
        try:
            session = await SmtpSession.open(hop, helo=self._helo, timeouts=self._timeouts)
        except SessionFailed as failed:
            self._free_slot(key)
            if failed.answer.stage in (Stage.CONNECT, Stage.GREETING):
                self._remember_unreachable(key)
            raise
        except BaseException:
            self._free_slot(key)
            raise
        self._unreachable_until.pop(key, None)
        self.connections_made += 1
        return session, False

    def unreachable(self, hop: Hop) -> bool:
        """Whether a recent connection to `hop` failed: try it after the route's others."""
        until = self._unreachable_until.get(hop.key)
        return until is not None and until > self._clock()

    def _remember_unreachable(self, key: Key) -> None:
        now = self._clock()
        self._unreachable_until.pop(key, None)  # re-inserted last, in expiry order
        remembered = self._unreachable_until
        while remembered:
            oldest = next(iter(remembered))
            if remembered[oldest] > now and len(remembered) < UNREACHABLE_REMEMBERED:
                break
            del remembered[oldest]
        remembered[key] = now + self._unreachable_seconds
        metrics.DELIVERY_UNREACHABLE_HOSTS.inc()

    async def release(self, session: SmtpSession) -> None:
        """To a task waiting for its host, or the idle list, if it can carry another message;
        else closed."""
        fresh = time.monotonic() - session.opened_at < MAX_SESSION_SECONDS
        if session.usable and fresh and not self._closing:
            self._put_idle(session)
        else:
            self._discard(session)

    async def _session_or_slot(self, key: Key) -> SmtpSession | None:
        if self._closing:
            raise PoolClosed
        idle = self._idle.get(key)
        if idle:
            return idle.pop()
        if not self._can_open(key) and self._open_total >= self._total:
            self._close_one_idle()  # a slot held by an idle session to another host
        if self._can_open(key):
            self._reserve(key)
            return None
        waiter: asyncio.Future[SmtpSession | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, deque()).append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # given to us just as we were cancelled: pass it on
                if handed is None:
                    self._free_slot(key)
                else:
                    self._put_idle(handed)
            raise

    def _can_open(self, key: Key) -> bool:
        return self._open.get(key, 0) < self._per_host and self._open_total < self._total

    def _reserve(self, key: Key) -> None:
        self._open[key] += 1
        self._open_total += 1

    def _next_waiter(self, key: Key) -> asyncio.Future[SmtpSession | None] | None:
        waiters = self._waiters.get(key)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                return waiter
        self._waiters.pop(key, None)
        return None

    def _put_idle(self, session: SmtpSession) -> None:
        key = session.hop.key
        waiter = self._next_waiter(key)
        if waiter is not None:
            waiter.set_result(session)
        elif any(self._waiters.values()) and self._open_total >= self._total:
            self._discard(session)  # its slot serves a host that is waiting better
        else:
            self._idle.setdefault(key, []).append(session)

    def _free_slot(self, key: Key) -> None:
        """A connection to `key` is gone, or a reserved slot went unused: give it on."""
        self._open[key] -= 1
        self._open_total -= 1
        if not self._open[key]:
            del self._open[key]
        for candidate in (key, *self._waiters):
            if self._waiters.get(candidate) and self._can_open(candidate):
                waiter = self._next_waiter(candidate)
                if waiter is not None:
                    self._reserve(candidate)
                    waiter.set_result(None)
                    return

    def _discard(self, session: SmtpSession) -> None:
        self._free_slot(session.hop.key)
        self._close_soon(session)

    def _close_one_idle(self) -> bool:
        sessions = [s for idle in self._idle.values() for s in idle]
        if not sessions:
            return False
        oldest = min(sessions, key=lambda s: s.last_used)
        self._idle[oldest.hop.key].remove(oldest)
        self._discard(oldest)
        return True

    def _close_soon(self, session: SmtpSession) -> None:
        task = asyncio.get_running_loop().create_task(session.close())
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def close_idle(self, older_than: float | None = None) -> None:
        """Close sessions idle for longer than `older_than` seconds (default: the idle limit)."""
        limit = self._idle_seconds if older_than is None else older_than
        now = time.monotonic()
        for key, sessions in list(self._idle.items()):
            for session in [s for s in sessions if now - s.last_used >= limit]:
                sessions.remove(session)
                self._discard(session)
            if not sessions:
                self._idle.pop(key, None)

    async def run_janitor(self) -> None:
        while True:
            await asyncio.sleep(max(self._idle_seconds / 2, 0.1))
            await self.close_idle()

    async def stop_waiting(self) -> None:
        """Hand out nothing more: waiters get PoolClosed; sessions in use finish their work."""
        self._closing = True
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(PoolClosed())
        self._waiters.clear()

    async def close(self) -> None:
        await self.stop_waiting()
        await self.close_idle(older_than=0.0)
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._closers, return_exceptions=True)
