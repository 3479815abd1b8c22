"""The auth-check workers: claim received messages due for a check, check them, write results.

They run in a process of their own (`opensend serve` starts it, see mta/serve.py) at a lower CPU
priority: the checks are pure-Python canonicalization and blocking DNS (mta/authcheck.py),
which in the MX's process took the GIL from the accept path. In this process they run in a
thread pool; the event loop only claims, renews leases and writes results.

New mail is found by polling, every `poll_seconds` while idle, not by NOTIFY: Postgres
serialises the commits of every transaction that issued a NOTIFY, and the MX's commit path stays
free of that. Any number of these workers, on any number of machines, share the queue through
row locks and leases (storage/authresults.py); a worker that dies loses nothing, its messages
are due again when their leases end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from uuid import UUID

from mta import metrics
from mta.authcheck import Authenticator, Evidence
from policy.authentication import recheck_in
from storage import authresults
from storage.authresults import CheckedMessage, PendingCheck, ResultWriter
from storage.database import Pool
from storage.errors import StorageError

log = logging.getLogger(__name__)


# Per message the checks write a claim (its queue row) and a result (a results row, the queue row
# deleted): narrow rows beside received_emails, never the message's own (storage/authresults.py).
# That work goes in few large statements beside the MX's commits: claims of 256 and one result
# commit in flight (claims of 64 measured no different). What the checks still cost a burst of
# mail: tests/perf/README.md, "MX with the authentication checks running".
@dataclass(frozen=True, slots=True)
class AuthCheckOptions:
    threads: int = 8  # checks at once; a check mostly waits for DNS
    batch_size: int = 256  # messages per claim
    max_in_flight: int = 512  # claimed messages being checked or waiting for a thread
    poll_seconds: float = 1.0  # longest wait for new mail while idle
    lease_seconds: float = 300.0  # renewed while a check runs; a dead worker's wait
    backlog_seconds: float = 15.0  # how often the backlog gauges are refreshed


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
        # One commit in flight: results gather behind it into the next one.
        self._writer = ResultWriter(pool, max_batch=self._options.batch_size, max_inflight=1)
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._room = asyncio.Condition()
        self._held: dict[UUID, PendingCheck] = {}  # claimed and not finished: leases to renew
        self._checks: set[asyncio.Task[None]] = set()
        self._services: list[asyncio.Task[None]] = []
        self._claimer: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Claim now rather than at the next poll."""
        self._wakeup.set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._services = [
            loop.create_task(self._renew_leases(), name="authcheck-leases"),
            loop.create_task(self._refresh_backlog(), name="authcheck-backlog"),
        ]
        self._claimer = loop.create_task(self._claim_loop(), name="authcheck-claim")

    async def stop(self, grace: float) -> None:
        """Stop claiming; let checks under way finish and their results commit, for up to
        `grace` seconds; give the messages not checked back to the queue, due at once."""
        self._stopping.set()
        async with self._room:
            self._room.notify_all()
        deadline = time.monotonic() + grace
        if self._claimer is not None:
            await asyncio.wait({self._claimer}, timeout=grace)
            self._claimer.cancel()
        if self._checks:
            await asyncio.wait(set(self._checks), timeout=max(0.0, deadline - time.monotonic()))
        for task in list(self._checks):
            task.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
        # Threads cannot be interrupted: a check still running there finishes on its own, and
        # its message, released here, may be checked twice. Queued ones are dropped.
        self._executor.shutdown(wait=False, cancel_futures=True)
        await self._release(list(self._held.values()))
        for task in self._services:
            task.cancel()
        await asyncio.gather(*self._services, return_exceptions=True)

    async def run_once(self) -> int:
        """Claim one batch and check all of it; how many messages were claimed."""
        claimed = await authresults.claim(
            self._pool, limit=self._options.batch_size, lease_seconds=self._options.lease_seconds
        )
        await asyncio.gather(*(self._check(pending) for pending in claimed))
        return len(claimed)

    # -- claiming ---------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            room = await self._wait_for_room()
            if self._stopping.is_set():
                return
            self._wakeup.clear()
            limit = min(self._options.batch_size, room)
            try:
                claimed = await authresults.claim(
                    self._pool, limit=limit, lease_seconds=self._options.lease_seconds
                )
            except Exception as error:  # the database away, mostly; nothing may end this loop
                _warn("could not claim received mail to check", error)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            for pending in claimed:
                self._start(pending)
            if len(claimed) < limit:
                await self._sleep(self._options.poll_seconds)  # nothing else is due yet

    async def _wait_for_room(self) -> int:
        async with self._room:
            await self._room.wait_for(
                lambda: self._stopping.is_set() or len(self._held) < self._options.max_in_flight
            )
            return self._options.max_in_flight - len(self._held)

    async def _sleep(self, seconds: float) -> None:
        """Until woken or stopped, or `seconds` pass."""
        wakers = [asyncio.ensure_future(e.wait()) for e in (self._wakeup, self._stopping)]
        try:
            await asyncio.wait(wakers, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waker in wakers:
                waker.cancel()

    def _start(self, pending: PendingCheck) -> None:
        self._held[pending.id] = pending
        task = asyncio.get_running_loop().create_task(self._check(pending))
        self._checks.add(task)
        task.add_done_callback(lambda done: self._finished(done, pending))

    def _finished(self, task: asyncio.Task[None], pending: PendingCheck) -> None:
        self._checks.discard(task)
        if not task.cancelled():  # a cancelled check's message is released by stop()
            self._held.pop(pending.id, None)
        asyncio.get_running_loop().create_task(self._notify_room())

    async def _notify_room(self) -> None:
        async with self._room:
            self._room.notify_all()

    # -- checking ---------------------------------------------------------------------------

    async def _check(self, pending: PendingCheck) -> None:
        """Check one message and write its results. On any failure it stays leased, and is
        checked again when the lease ends."""
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
            written = await self._writer.write(
                CheckedMessage(
                    id=pending.id,
                    token=pending.token,
                    results=results.as_json(),
                    header=results.header_value(self._authserv_id),
                    recheck_in=recheck_in(results, pending.checks),
                )
            )
        except Exception as error:
            _warn("could not check a received message; it is checked again later", error)
            return
        if not written:
            log.warning(
                "results of a check whose lease was lost were not recorded",
                extra={"received_email_id": str(pending.id)},
            )
            return
        for method, result in results.method_results():
            metrics.AUTHCHECK_RESULTS.labels(method, result).inc()

    async def _release(self, held: list[PendingCheck]) -> None:
        by_token: dict[UUID, list[UUID]] = {}
        for pending in held:
            by_token.setdefault(pending.token, []).append(pending.id)
        for token, ids in by_token.items():
            try:
                await authresults.release(self._pool, token, ids)
            except Exception as error:  # their leases will run out instead
                _warn("could not give unchecked messages back", error)
        self._held.clear()

    # -- housekeeping -----------------------------------------------------------------------

    async def _renew_leases(self) -> None:
        """A live worker keeps what it claimed, however slow a sender's DNS is."""
        period = max(self._options.lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(period)
            held = list(self._held.values())
            if not held:
                continue
            try:
                await authresults.renew_leases(
                    self._pool,
                    [pending.id for pending in held],
                    list({pending.token for pending in held}),
                    self._options.lease_seconds,
                )
            except Exception as error:
                _warn("could not renew auth-check leases", error)

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


def _warn(what: str, error: Exception) -> None:
    """A storage failure is expected now and then; anything else is a bug: with its trace."""
    expected = isinstance(error, StorageError)
    log.warning(what, extra={"error": str(error)}, exc_info=None if expected else error)
