"""The outbound delivery workers: claim due deliveries under a lease, deliver them, repeat.

Claims are woken by NOTIFY on a dedicated connection (storage.delivery.notify) and by a poll timed
to the next retry, schedule or lease expiry; each claim goes through mta.delivery.pipeline.
Any number of processes, on any number of machines, may run these workers on one database:
they meet only in row locks (FOR UPDATE SKIP LOCKED) and leases.

The one duplicate that cannot be avoided: the remote host accepted a message (its 250 may even
have reached us) and this process died, or lost the database for longer than the lease, before
the outcome was committed. The lease then runs out, another worker claims the row, and the
message is sent again: at most once more per such crash, as with any MTA that loses a queue
update after the remote's answer (RFC 5321 section 6.1: a duplicate rather than a loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from uuid import UUID

from mta import metrics
from mta.delivery.dkim import DkimSigner
from mta.delivery.pipeline import ClaimPipeline, RetryRules
from mta.delivery.routes import OutboundRouter
from mta.delivery.smtp_pool import SmtpPool
from mta.wakeup import wait_for_any
from policy.delivery.result import email_status
from policy.dns import DnsLookup
from policy.settings import Settings
from policy.tokens import ReplyTokens
from storage.database import Pool
from storage.delivery import queue
from storage.delivery.notify import QueueListener
from storage.delivery.queue import Claim
from storage.delivery.writer import OutcomeWriter
from storage.errors import StorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    batch_size: int = 100  # rows per claim
    max_in_flight: int = 500  # claimed rows being worked on, in all
    poll_seconds: float = 10.0  # longest sleep without a NOTIFY (a lost wake-up's cost)
    queue_stats_seconds: float = 15.0


class DeliveryWorkers:
    def __init__(
        self,
        pool: Pool,
        url: str,
        settings: Settings,
        dns: DnsLookup,
        *,
        options: DeliveryOptions | None = None,
        smtp: SmtpPool | None = None,
        signer: DkimSigner | None = None,
        tokens: ReplyTokens | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._options = options or DeliveryOptions()
        self.smtp = smtp or SmtpPool(helo=settings.hostname)
        self.writer = OutcomeWriter(pool, email_status)
        self.listener = QueueListener(url, self.wake)
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._pipeline = ClaimPipeline(
            pool,
            router=OutboundRouter(
                dns,
                transports=settings.transports,
                relay=settings.relay_route,
                smtp_port=settings.smtp_port,
            ),
            signer=signer or DkimSigner(),
            smtp=self.smtp,
            writer=self.writer,
            rules=RetryRules(settings.retry_schedule, settings.max_queue_age),
            stopping=self._stopping,
            done_with=self._done_with,
            tokens=tokens,
            hostname=settings.hostname,
        )
        self._room = asyncio.Condition()
        self._in_flight = 0
        self._tokens: set[UUID] = set()
        self._claims: set[asyncio.Task[None]] = set()
        self._services: list[asyncio.Task[None]] = []
        self._claimer: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wakeup.set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._services = [
            loop.create_task(self.listener.run(), name="delivery-listen"),
            loop.create_task(self._renew_leases(), name="delivery-leases"),
            loop.create_task(self._refresh_queue_stats(), name="delivery-stats"),
            loop.create_task(self.smtp.run_janitor(), name="delivery-idle"),
        ]
        self._claimer = loop.create_task(self._claim_loop(), name="delivery-claim")

    async def stop(self, grace: float) -> None:
        """Stop claiming; let transactions under way finish and their outcomes commit, for up
        to `grace` seconds; give rows not yet started back to the queue."""
        self._stopping.set()
        await self.smtp.stop_waiting()  # deliveries waiting for a connection go back at once
        deadline = time.monotonic() + grace
        if self._claimer is not None:
            await asyncio.wait({self._claimer}, timeout=grace)
            self._claimer.cancel()
        if self._claims:
            await asyncio.wait(set(self._claims), timeout=max(0.0, deadline - time.monotonic()))
        for task in list(self._claims):
            task.cancel()  # still sending after the grace: its lease will run out
        await asyncio.gather(*self._claims, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.writer.drain(), max(0.1, deadline - time.monotonic()))
        for task in self._services:
            task.cancel()
        await asyncio.gather(*self._services, return_exceptions=True)
        await self.smtp.close()

    # -- claiming ---------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            room = await self._wait_for_room()
            self._wakeup.clear()
            try:
                claim = await queue.claim(
                    self._pool,
                    limit=min(self._options.batch_size, room),
                    lease_seconds=self._settings.delivery_lease,
                )
            except Exception as error:  # the database away, mostly; nothing may end this loop
                _warn("could not claim deliveries", error)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if claim.deliveries:
                self._start_claim(claim)
            else:
                await self._sleep(await self._idle_seconds())

    async def _wait_for_room(self) -> int:
        async with self._room:
            await self._room.wait_for(lambda: self._in_flight < self._options.max_in_flight)
            return self._options.max_in_flight - self._in_flight

    async def _idle_seconds(self) -> float:
        """Until the next retry, schedule or lease expiry comes due; shorter without LISTEN."""
        ceiling = self._options.poll_seconds if self.listener.connected.is_set() else 1.0
        try:
            until = await queue.seconds_until_due(self._pool)
        except Exception as error:
            _warn("could not read when the next delivery is due", error)
            return ceiling
        return ceiling if until is None else max(0.01, min(until, ceiling))

    async def _sleep(self, seconds: float) -> None:
        """Until woken by a NOTIFY or a stop, or `seconds` pass."""
        await wait_for_any(seconds, self._wakeup, self._stopping)

    def _start_claim(self, claim: Claim) -> None:
        self._in_flight += len(claim.deliveries)
        self._tokens.add(claim.token)
        task = asyncio.get_running_loop().create_task(self._deliver(claim))
        self._claims.add(task)
        task.add_done_callback(self._claims.discard)

    async def _deliver(self, claim: Claim) -> None:
        try:
            await self._pipeline.deliver(claim)
        finally:
            self._tokens.discard(claim.token)  # its rows are all finished or given back

    async def _done_with(self, count: int) -> None:
        async with self._room:
            self._in_flight -= count
            self._room.notify_all()

    # -- housekeeping -----------------------------------------------------------------------

    async def _renew_leases(self) -> None:
        """A live worker keeps what it claimed, however slow the remote host is."""
        period = max(self._settings.delivery_lease / 3, 0.2)
        while True:
            await asyncio.sleep(period)
            if not self._tokens:
                continue
            try:
                await queue.renew_leases(
                    self._pool, list(self._tokens), self._settings.delivery_lease
                )
            except Exception as error:
                _warn("could not renew delivery leases", error)

    async def _refresh_queue_stats(self) -> None:
        while True:
            try:
                stats = await queue.queue_stats(self._pool)
            except Exception as error:
                _warn("could not read queue statistics", error)
            else:
                for state, depth in stats.depth.items():
                    metrics.DELIVERY_QUEUE_DEPTH.labels(state).set(depth)
                metrics.DELIVERY_OLDEST_DUE_AGE.set(stats.oldest_due_seconds)
            await asyncio.sleep(self._options.queue_stats_seconds)


def _warn(what: str, error: Exception) -> None:
    """A storage failure is expected now and then; anything else is a bug: with its trace."""
    expected = isinstance(error, StorageError)
    log.warning(what, extra={"error": str(error)}, exc_info=None if expected else error)
