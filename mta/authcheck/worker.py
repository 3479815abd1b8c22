"""The auth checker: finds received mail not yet checked, checks it, writes the results.

The same worker strips each new message of its quoted history (policy/stripping/): another
job on the same message, off the MX's path to its 250 for the same reasons.

It runs in a process of its own (`opensend serve` starts it, see mta/serve.py) at the lowest
CPU priority: the checks are pure-Python canonicalization and blocking DNS
(mta/authcheck/checks.py), which in the MX's process took the GIL from the accept path. In this
process they run in a thread pool; the event loop only reads batches and writes results.

The MX writes nothing for the checks: new mail is found by its id above the checker's
watermark (storage/authcheck/results.py), by polling every `poll_seconds` while idle, not by NOTIFY:
Postgres serialises the commits of every transaction that issued a NOTIFY, and the MX's commit
path stays free of that. One checker runs at a time across every machine, under a session
advisory lock held on a connection of its own; the others wait for it. A checker that dies, or
loses its connection and with it the lock, loses nothing: what it had not written is found
again by the next holder.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from mta import metrics
from mta.authcheck.checks import Authenticator, Evidence
from mta.wakeup import wait_for_any
from policy.authcheck.verdicts import recheck_in
from policy.stripping.message import StrippedBodies, strip_message
from storage.authcheck import results as authresults
from storage.authcheck.results import CheckedMessage, PendingCheck, ResultWriter
from storage.authcheck.stripped import StrippedMessage, record_stripped
from storage.database import Pool
from storage.errors import StorageError

log = logging.getLogger(__name__)


# Per message the checks write one narrow results row, never the message's own
# (storage/authcheck/results.py); the reads are scans of received_emails' primary key above the
# watermark. That work goes in few large statements beside the MX's commits: batches of 256 and
# one result commit in flight. What the checks still cost a burst of mail: tests/perf/README.md,
# "MX with the authentication checks running".
@dataclass(frozen=True, slots=True)
class AuthCheckOptions:
    # Checks at once. A check waits for DNS (SPF, DMARC, DKIM keys: pyspf and dkimpy resolve
    # blocking, so each waits in a thread): for mail from domains not in the cache, a check is
    # its lookups' round trips end to end. Sixty-four, not eight: with answers 30 ms away, 8
    # threads checked 117 messages a second and 64 checked 559; at 100 ms, 38 and 276; with
    # answers at once, 598 and 690, at the same CPU a check (tests/perf/README.md, "The auth
    # checker's CPU").
    threads: int = 64
    batch_size: int = 256  # messages per read
    max_in_flight: int = 512  # messages being checked or waiting for a thread
    poll_seconds: float = 1.0  # longest wait for new mail while idle
    # How long after its id was minted a message may still commit: the watermark stays this
    # far behind the clock. Group commit and the MX's 4xx on a slow database bound it to
    # seconds; a minute leaves room for clocks of several MX hosts that disagree a little.
    settle_seconds: float = 60.0
    watermark_seconds: float = 5.0  # how often the watermark is moved up
    lock_retry_seconds: float = 5.0  # how often a checker waiting for the lock tries again
    backlog_seconds: float = 15.0  # how often the backlog gauges are refreshed
    # Messages too large to come with their batch (storage.authcheck.results) read and checked
    # at once: each costs several times its size while it is parsed, so a burst of 25 MB mail
    # would otherwise have up to `max_in_flight` of them in memory (tests/perf/README.md,
    # "MX memory").
    large_at_once: int = 2


class AuthCheckWorkers:
    def __init__(
        self,
        pool: Pool,
        authenticator: Authenticator,
        *,
        authserv_id: str,
        options: AuthCheckOptions | None = None,
    ) -> None:
        self._pool = pool
        self._authenticator = authenticator
        self._authserv_id = authserv_id  # RFC 8601 section 2.5: our name, OPENSEND_HOSTNAME
        self._options = options or AuthCheckOptions()
        self._executor = ThreadPoolExecutor(self._options.threads, "opensend-authcheck")
        self._large = asyncio.Semaphore(self._options.large_at_once)
        # One commit in flight: results gather behind it into the next one.
        self._writer: ResultWriter[CheckedMessage] = ResultWriter(
            pool, max_batch=self._options.batch_size, max_inflight=1
        )
        self._stripped: ResultWriter[StrippedMessage] = ResultWriter(
            pool, max_batch=self._options.batch_size, max_inflight=1, record=record_stripped
        )
        self._lock: asyncpg.pool.PoolConnectionProxy | None = None  # holds the advisory lock
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._room = asyncio.Condition()
        self._held: dict[UUID, PendingCheck] = {}  # read and not finished
        self._checks: set[asyncio.Task[None]] = set()
        self._services: list[asyncio.Task[None]] = []
        self._reader: asyncio.Task[None] | None = None
        self._watermark_moved = 0.0
        # The highest new id read under the lock held now: reads go on from there, but every
        # `watermark_seconds` one starts at the watermark, for the mail that committed late.
        self._position: UUID | None = None

    def wake(self) -> None:
        """Look for new mail now rather than at the next poll."""
        self._wakeup.set()

    @property
    def holds_lock(self) -> bool:
        return self._lock is not None and _open(self._lock)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._services = [loop.create_task(self._refresh_backlog(), name="authcheck-backlog")]
        self._reader = loop.create_task(self._read_loop(), name="authcheck-read")

    async def stop(self, grace: float) -> None:
        """Stop reading; let checks under way finish and their results commit, for up to
        `grace` seconds; then give up the lock. What was not checked has no results and is
        found again by the next checker."""
        self._stopping.set()
        async with self._room:
            self._room.notify_all()
        deadline = time.monotonic() + grace
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=grace)
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._checks:
            await asyncio.wait(set(self._checks), timeout=max(0.0, deadline - time.monotonic()))
        await self._abandon_checks()
        # Threads cannot be interrupted: a check still running there finishes on its own, and
        # its message may be checked twice. Queued ones are dropped.
        self._executor.shutdown(wait=False, cancel_futures=True)
        await self._release_lock()
        for task in self._services:
            task.cancel()
        await asyncio.gather(*self._services, return_exceptions=True)

    async def run_once(self) -> int | None:
        """Read one batch and check all of it; how many messages were read, or None when
        another checker holds the lock."""
        if not await self._take_lock():
            return None
        batch = await authresults.to_check(self._pool, limit=self._options.batch_size)
        await asyncio.gather(*(self._check(pending) for pending in batch))
        await self.advance_watermark()
        return len(batch)

    async def advance_watermark(self) -> None:
        """Up through what is checked, short of the settle window."""
        cutoff = authresults.settled_cutoff(self._options.settle_seconds)
        await authresults.advance_watermark(self._pool, cutoff)
        self._watermark_moved = time.monotonic()

    # -- the lock ---------------------------------------------------------------------------

    async def _take_lock(self) -> bool:
        """True while this checker holds the lock, taking it if no other session has it."""
        if self._lock is not None:
            if await self._lock_alive():
                return True
            # Another checker may hold it now: this one's checks are not written, and it
            # waits its turn like any other.
            log.warning("lost the auth checkers' lock with its connection; checking stops")
            await self._abandon_checks()
            await self._release_lock()
            self._position = None
            return False
        conn = await self._pool.acquire()
        try:
            taken = await authresults.try_lock(conn)
        except BaseException:
            await self._pool.release(conn)
            raise
        if not taken:
            await self._pool.release(conn)
            return False
        self._lock = conn
        return True

    async def _lock_alive(self) -> bool:
        """A round trip on the lock's connection: a session PostgreSQL ended (and with it the
        lock, perhaps now another checker's) shows as an error here."""
        assert self._lock is not None
        if not _open(self._lock):
            return False
        try:
            await self._lock.fetchval("SELECT 1")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            return False
        return True

    async def _release_lock(self) -> None:
        conn, self._lock = self._lock, None
        if conn is None:
            return
        if not _open(conn):
            return  # closed: the pool has taken it back, and the lock went with its session
        try:
            await authresults.unlock(conn)
        except Exception as error:
            # The pool does not reset sessions (storage/database.py): a connection that may
            # still hold the lock is closed, and its session's end releases the lock.
            _warn("could not release the auth checkers' lock; closing its connection", error)
            conn.terminate()
            return
        await self._pool.release(conn)

    # -- reading ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            room = await self._wait_for_room()
            if self._stopping.is_set():
                return
            self._wakeup.clear()
            limit = min(self._options.batch_size, room)
            try:
                if not await self._take_lock():
                    await self._sleep(self._options.lock_retry_seconds)
                    continue
                # Mail checked since the watermark (the settle window's worth) is scanned again
                # only by a sweep from the watermark, not by every read.
                sweep = time.monotonic() - self._watermark_moved >= self._options.watermark_seconds
                batch = await authresults.to_check(
                    self._pool,
                    limit=limit,
                    held=self._held,
                    after=None if sweep else self._position,
                )
                if sweep:
                    await self.advance_watermark()
            except Exception as error:  # the database away, mostly; nothing may end this loop
                _warn("could not read received mail to check", error)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            fresh = [pending.id for pending in batch if pending.checks == 1]
            if fresh and (self._position is None or max(fresh) > self._position):
                self._position = max(fresh)
            for pending in batch:
                self._start(pending)
            if len(batch) < limit:
                await self._sleep(self._options.poll_seconds)  # nothing else is due yet

    async def _wait_for_room(self) -> int:
        """Room for a whole batch: a read per few finished checks would scan the same ids
        (those checked within the settle window) again and again."""
        threshold = max(0, self._options.max_in_flight - self._options.batch_size)
        async with self._room:
            await self._room.wait_for(
                lambda: self._stopping.is_set() or len(self._held) <= threshold
            )
            return self._options.max_in_flight - len(self._held)

    async def _sleep(self, seconds: float) -> None:
        """Until woken or stopped, or `seconds` pass."""
        await wait_for_any(seconds, self._wakeup, self._stopping)

    def _start(self, pending: PendingCheck) -> None:
        self._held[pending.id] = pending
        task = asyncio.get_running_loop().create_task(self._check(pending))
        self._checks.add(task)
        task.add_done_callback(lambda done: self._finished(done, pending))

    def _finished(self, task: asyncio.Task[None], pending: PendingCheck) -> None:
        self._checks.discard(task)
        self._held.pop(pending.id, None)
        asyncio.get_running_loop().create_task(self._notify_room())

    async def _notify_room(self) -> None:
        async with self._room:
            self._room.notify_all()

    async def _abandon_checks(self) -> None:
        """Checks under way are not written: their messages stay without results, for whoever
        holds the lock next."""
        for task in list(self._checks):
            task.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
        self._held.clear()

    # -- checking ---------------------------------------------------------------------------

    async def _check(self, pending: PendingCheck) -> None:
        """Check one message and write its results. On any failure it has no new results, and
        is checked again. A large one waits for its turn before it is even read."""
        if pending.raw is not None:
            await self._check_content(pending)
            return
        async with self._large:
            await self._check_content(pending)

    async def _check_content(self, pending: PendingCheck) -> None:
        loop = asyncio.get_running_loop()
        try:
            raw = await authresults.content(self._pool, pending)
            evidence = Evidence(
                pending.remote_ip, pending.helo, pending.mail_from, raw, pending.ingest_source
            )
            started = time.monotonic()
            results = await loop.run_in_executor(
                self._executor, self._authenticator.check, evidence
            )
            metrics.AUTHCHECK_DURATION.observe(time.monotonic() - started)
            if pending.checks == 1:  # a recheck of a temperror finds it stripped already
                stripped = await loop.run_in_executor(self._executor, _strip, raw)
                if stripped is not None:
                    # Before the results, which mark the message done: a worker that dies
                    # between the two strips it again.
                    await self._stripped.write(
                        StrippedMessage(pending.id, stripped.text, stripped.html)
                    )
            await self._writer.write(
                CheckedMessage(
                    id=pending.id,
                    checks=pending.checks,
                    results=results.as_json(),
                    header=results.header_value(self._authserv_id),
                    recheck_in=recheck_in(results, pending.checks),
                )
            )
        except Exception as error:
            _warn("could not check a received message; it is checked again later", error)
            return
        for method, result in results.method_results():
            metrics.AUTHCHECK_RESULTS.labels(method, result).inc()

    # -- housekeeping -----------------------------------------------------------------------

    async def _refresh_backlog(self) -> None:
        while True:
            try:
                backlog = await authresults.backlog(self._pool)
            except Exception as error:
                _warn("could not read the auth-check backlog", error)
            else:
                metrics.AUTHCHECK_BACKLOG.set(backlog.messages)
                metrics.AUTHCHECK_OLDEST_DUE_AGE.set(backlog.oldest_due_seconds)
            await asyncio.sleep(self._options.backlog_seconds)


def _strip(raw: bytes) -> StrippedBodies | None:
    """The stripped bodies, or None (logged) if the stripper failed: a bug in it must not hold
    up the authentication results, nor make the message come back for ever."""
    try:
        return strip_message(raw)
    except Exception as error:
        log.error("could not strip a received message", exc_info=error)
        return None


def _open(conn: asyncpg.pool.PoolConnectionProxy) -> bool:
    """A pooled connection that closes (its session ended) is taken back by the pool at once,
    and then answers only with InterfaceError."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


def _warn(what: str, error: Exception) -> None:
    """A storage failure is expected now and then; anything else is a bug: with its trace."""
    expected = isinstance(error, StorageError)
    log.warning(what, extra={"error": str(error)}, exc_info=None if expected else error)
