"""The loads of the MX memory benchmark: many sessions open at once, and one large message sent
beside a paced stream of small ones.

Both use smtp_load's client (EHLO, one command at a time, no PIPELINING) on one event loop.
Latency is timed from MAIL FROM to the 250 after DATA, as smtp_load times connection reuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from smtp_load import Load, SmtpError, _close, _open, _transaction, quantile

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_FAILURES = (OSError, EOFError, ValueError, SmtpError)


@dataclass(slots=True)
class HeldRun:
    """`sessions` connections opened and greeted together, then each sending its messages."""

    sessions: int
    opened: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, one per accepted message
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def hold_sessions(
    host: str,
    port: int,
    load: Load,
    run: HeldRun,
    *,
    messages_per_session: int,
    hold_seconds: float,
    when_open: Callable[[], None],
    when_sent: Callable[[], None],
) -> None:
    """Open `run.sessions` sessions (connect, banner, EHLO) and keep every one open; call
    `when_open`; let each send `messages_per_session` messages, all sessions at once; wait
    `hold_seconds` with all still open, call `when_sent`, then QUIT them all."""
    started = time.perf_counter()

    async def connect(number: int) -> Connection | None:
        try:
            return await _open(host, port, load)
        except _FAILURES as exc:
            run.errors.append(f"session {number}: {exc!r}")
            return None

    async def send(conn: Connection, session: int) -> None:
        for n in range(messages_per_session):
            begun = time.perf_counter()
            try:
                await _transaction(*conn, load, session * messages_per_session + n)
            except _FAILURES as exc:
                run.errors.append(f"session {session} message {n}: {exc!r}")
                return
            run.latencies.append(time.perf_counter() - begun)

    conns: list[Connection | None] = []
    try:
        conns = list(await asyncio.gather(*(connect(n) for n in range(run.sessions))))
        live = [conn for conn in conns if conn is not None]
        run.opened = len(live)
        when_open()
        await asyncio.gather(*(send(conn, n) for n, conn in enumerate(live)))
        await asyncio.sleep(hold_seconds)
        when_sent()
    finally:
        await asyncio.gather(*(_close(*conn) for conn in conns if conn is not None))
        run.seconds = time.perf_counter() - started


@dataclass(slots=True)
class StallRun:
    """Small messages (start, end) on the perf_counter clock, and the large ones likewise."""

    small: list[tuple[float, float]] = field(default_factory=list)
    large: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def split(self) -> tuple[list[float], list[float]]:
        """Latencies of the small messages that overlapped a large one in flight (from its
        MAIL FROM to its 250), and of those that did not."""
        during: list[float] = []
        apart: list[float] = []
        for begun, ended in self.small:
            overlaps = any(begun < l_end and ended > l_begun for l_begun, l_end in self.large)
            (during if overlaps else apart).append(ended - begun)
        return during, apart


def summary(latencies: list[float]) -> dict[str, float | int | None]:
    """Count, and p50/p99/max in milliseconds (nearest rank)."""

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    return {
        "count": len(latencies),
        "p50_ms": ms(quantile(latencies, 0.5)),
        "p99_ms": ms(quantile(latencies, 0.99)),
        "max_ms": ms(max(latencies, default=None)),
    }


async def _paced_session(
    host: str, port: int, load: Load, interval: float, stop: asyncio.Event, run: StallRun
) -> None:
    """One small message every `interval` seconds on one connection until `stop` is set.
    A slot missed while a message was late is skipped, not made up for: the load stays paced."""
    try:
        conn = await _open(host, port, load)
    except _FAILURES as exc:
        run.errors.append(f"small session: {exc!r}")
        return
    try:
        # Spread the sessions over one interval, so they do not send in step.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), random.uniform(0, interval))
        next_at = time.perf_counter()
        while not stop.is_set():
            begun = time.perf_counter()
            try:
                await _transaction(*conn, load, len(run.small))
            except _FAILURES as exc:
                run.errors.append(f"small message: {exc!r}")
                return
            ended = time.perf_counter()
            run.small.append((begun, ended))
            next_at += interval
            while next_at < ended:  # keep this session's phase: the sessions stay spread out
                next_at += interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), next_at - ended)
    finally:
        await _close(*conn)


async def stall_run(
    host: str,
    port: int,
    small: Load,
    run: StallRun,
    *,
    sessions: int,
    interval: float,
    large: Load,
    large_payload: bytes,
    large_count: int,
    lead_in: float,
    gap: float,
) -> None:
    """`sessions` paced small-message sessions throughout; after `lead_in` seconds, `large_count`
    large messages one after another on one more session, `gap` seconds apart, then `gap`
    seconds more of small messages alone."""
    stop = asyncio.Event()
    senders = [
        asyncio.create_task(_paced_session(host, port, small, interval, stop, run))
        for _ in range(sessions)
    ]
    try:
        await asyncio.sleep(lead_in)
        conn = await _open(host, port, large)
        try:
            for number in range(large_count):
                begun = time.perf_counter()
                try:
                    await _transaction(*conn, large, number, large_payload)
                except _FAILURES as exc:
                    run.errors.append(f"large message {number}: {exc!r}")
                    break
                run.large.append((begun, time.perf_counter()))
                await asyncio.sleep(gap)
        finally:
            await _close(*conn)
    finally:
        stop.set()
        await asyncio.gather(*senders, return_exceptions=True)
