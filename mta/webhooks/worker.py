"""Webhook delivery workers: claim due deliveries, POST each signed, record the attempt, repeat.

One loop talks to the database, one statement (a cycle) at a time: it records the outcomes of
the requests that ended since its last cycle and claims what is due, in one round trip and one
commit. While a cycle is under way, finished requests and wake-ups pile up for the next one:
under load a cycle carries many, alone an event is claimed as soon as it is notified.

Claims are woken by NOTIFY on `opensend_webhooks` (sent at the COMMIT of the change that wrote
the event, storage/migrations/0013_webhooks.sql) on a dedicated connection, and by a poll timed
to the next retry or lease expiry. Any number of processes and hosts may run these workers on
one database: they meet only in row locks (FOR UPDATE SKIP LOCKED) and leases.

The one duplicate that cannot be avoided: the endpoint answered 2xx and this process died, or
lost the database for longer than the lease, before the outcome committed. The lease then runs
out and the delivery is sent again, under the same webhook-id, so the receiver can tell.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import aiohttp
from aiohttp.abc import AbstractResolver

from mta.wakeup import wait_for_any
from mta.webhooks import http, metrics
from mta.webhooks.retention import prune_forever
from policy.settings import WebhookSettings
from policy.webhooks import payloads, retry, signing
from policy.webhooks.endpoints import InvalidEndpoint, parse_endpoint, refusal
from storage.database import Pool
from storage.delivery.notify import QueueListener
from storage.errors import StorageError
from storage.ids import uuid7
from storage.webhooks import outbox
from storage.webhooks.outbox import AttemptOutcome, ClaimedDelivery

log = logging.getLogger(__name__)

BATCH = 100  # deliveries per claim
MAX_IN_FLIGHT = 200  # requests under way in this process, to all endpoints
POLL_SECONDS = 10.0  # the longest sleep without a NOTIFY (what a lost wake-up costs)
STATS_SECONDS = 15.0
RETRY_FIRST_SECONDS = 0.1  # a failed cycle (the database away) is tried again after this...
RETRY_MAX_SECONDS = 5.0  # ...doubling up to this
# A cycle with requests still under way waits this long first, so that the outcomes of those
# ending meanwhile share its statement (measured: 2.2 outcomes a cycle without, 3.1 with, and a
# fifth to a third less CPU per event in the worker under the MX benchmark's load). Only a busy
# worker waits: an event that finds it idle is claimed at once.
LINGER_SECONDS = 0.002
VERDICTS_KEPT = 10_000  # endpoint URLs whose address check is remembered


@dataclass(frozen=True, slots=True)
class Finished:
    """A request that ended, waiting for a cycle to record it until `record_by` (after which
    its lease will have run out: the delivery is sent again, same id, and this is dropped)."""

    outcome: AttemptOutcome
    unsafe: bool
    record_by: float


class WebhookWorkers:
    def __init__(
        self,
        pool: Pool,
        url: str,
        settings: WebhookSettings,
        resolver: AbstractResolver,
        *,
        require_https: bool,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._resolver = resolver
        self._require_https = require_https
        self._max_in_flight = max_in_flight
        self.listener = QueueListener(url, self.wake, channel=outbox.NOTIFY_CHANNEL)
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()  # a request ended: an outcome to record, room
        self._to_record: list[Finished] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._services: list[asyncio.Task[None]] = []
        self._cycler: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._verdicts: dict[str, str | None] = {}  # _unsafe's, by endpoint URL

    def wake(self) -> None:
        self._wakeup.set()

    async def start(self) -> None:
        self._session = http.client_session(
            self._resolver,
            allow_private=self._settings.allow_private,
            connect_timeout=self._settings.connect_timeout,
            timeout=self._settings.timeout,
        )
        loop = asyncio.get_running_loop()
        self._services = [
            loop.create_task(self.listener.run(), name="webhook-listen"),
            loop.create_task(self._refresh_stats(), name="webhook-stats"),
            loop.create_task(
                prune_forever(self._pool, self._settings.retention), name="webhook-retention"
            ),
        ]
        self._cycler = loop.create_task(self._cycle_loop(), name="webhook-cycle")

    async def stop(self, grace: float) -> None:
        """Stop claiming; let requests under way finish and their outcomes commit, for up to
        `grace` seconds. One still running after that is cancelled: its lease runs out and it
        is sent again, under the same id."""
        deadline = time.monotonic() + grace
        self._stopping.set()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace)
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        if self._cycler is not None:
            # It records what finished, then ends; the database away, it is cut short.
            self._finished.set()
            await asyncio.wait({self._cycler}, timeout=max(0.0, deadline - time.monotonic()))
            self._cycler.cancel()
            await asyncio.gather(self._cycler, return_exceptions=True)
        for task in self._services:
            task.cancel()
        await asyncio.gather(*self._services, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _cycle_loop(self) -> None:
        backoff = RETRY_FIRST_SECONDS
        while True:
            stopping = self._stopping.is_set()
            if stopping and not self._to_record and not self._in_flight:
                return
            room = 0 if stopping else min(BATCH, self._max_in_flight - len(self._in_flight))
            if not self._to_record and room <= 0:
                self._finished.clear()
                await self._finished.wait()
                continue
            if self._to_record and self._in_flight and not stopping:
                # Requests still under way end soon: their outcomes share the statement.
                await asyncio.sleep(LINGER_SECONDS)
            # Set again by whatever happens while the cycle is under way: another cycle then.
            self._wakeup.clear()
            self._finished.clear()
            finished, self._to_record = self._to_record, []
            try:
                cycle, recorded = await self._cycle(finished, room)
            except Exception as error:  # the database away, mostly; nothing may end this loop
                _warn("could not claim or record webhook deliveries", error)
                self._keep_unrecorded(finished)
                await asyncio.sleep(backoff)  # stopping too: stop() cuts this short at its end
                backoff = min(backoff * 2, RETRY_MAX_SECONDS)
                continue
            backoff = RETRY_FIRST_SECONDS
            self._count(recorded, cycle)
            loop = asyncio.get_running_loop()
            for delivery in cycle.claimed:
                task = loop.create_task(self._deliver(cycle.token, delivery))
                self._in_flight.add(task)
                task.add_done_callback(self._done)
            if self._to_record or 0 < room == len(cycle.claimed):
                continue  # more finished meanwhile, or perhaps more due than one claim takes
            # All that is due now is under way, or its endpoint is at its cap: wait for a
            # wake-up (a new event), a request to end (an outcome, and perhaps an endpoint below
            # its cap again), or the next due time. While requests are under way each one's
            # end wakes this loop: no need to ask the database for the next due time.
            idle = POLL_SECONDS if self._in_flight or stopping else await self._idle_seconds()
            await wait_for_any(idle, self._wakeup, self._finished, self._stopping)

    async def _cycle(
        self, finished: list[Finished], room: int
    ) -> tuple[outbox.Cycle, list[Finished]]:
        """The cycle, and which of `finished` it recorded (all, unless one was refused)."""
        outcomes = [f.outcome for f in finished]
        try:
            return await self._cycle_once(outcomes, room), finished
        except StorageError as error:
            if error.temporary or len(outcomes) <= 1:
                raise
        # Something in one outcome the database refuses: each on its own, so that one cannot
        # hold up the others; the one refused is dropped (its lease runs out, it is sent again).
        recorded: list[Finished] = []
        applied: set[UUID] = set()
        disabled: set[UUID] = set()
        for item in finished:
            try:
                alone = await self._cycle_once([item.outcome], 0)
            except StorageError as error:
                _warn("could not record a webhook attempt; it will be sent again", error)
                continue
            recorded.append(item)
            applied |= alone.applied
            disabled |= alone.disabled
        try:
            claim = await self._cycle_once([], room)
        except StorageError as error:  # what was recorded stays recorded; claim next time
            _warn("could not claim webhook deliveries", error)
            claim = outbox.Cycle(uuid7(), [], set(), set())
        return outbox.Cycle(claim.token, claim.claimed, applied, disabled), recorded

    async def _cycle_once(self, outcomes: list[AttemptOutcome], room: int) -> outbox.Cycle:
        return await outbox.cycle(
            self._pool,
            outcomes,
            limit=room,
            per_endpoint=self._settings.endpoint_concurrency,
            lease_seconds=self._settings.lease,
            disable_after_seconds=retry.DISABLE_AFTER_SECONDS,
        )

    def _keep_unrecorded(self, finished: list[Finished]) -> None:
        """Back in line for the next cycle, those whose lease still runs."""
        now = time.monotonic()
        kept = [f for f in finished if f.record_by > now]
        if len(kept) < len(finished):
            log.warning(
                "could not record webhook attempts; they will be sent again",
                extra={"attempts": len(finished) - len(kept)},
            )
        self._to_record[:0] = kept

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._finished.set()  # room, and perhaps an endpoint below its cap again
        if not task.cancelled() and task.exception() is not None:
            log.error("a webhook delivery failed unexpectedly", exc_info=task.exception())

    async def _idle_seconds(self) -> float:
        try:
            due = await outbox.seconds_until_due(self._pool)
        except StorageError:
            return 1.0
        if due is None:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(0.05, due))

    async def _deliver(self, token: UUID, delivery: ClaimedDelivery) -> None:
        assert self._session is not None
        body = payloads.body(
            delivery.type, delivery.created_at, delivery.data, self._settings.max_payload
        )
        timestamp = int(time.time())
        headers = signing.signed_headers(delivery.secrets, str(delivery.id), timestamp, body)
        attempted_at = datetime.now(UTC)
        started = time.monotonic()
        unsafe = self._unsafe(delivery.endpoint)
        if unsafe is not None:
            answer = http.Answer(None, "", f"refused: {unsafe}")
        else:
            answer = await http.post(self._session, delivery.endpoint, body, headers)
        latency = time.monotonic() - started
        metrics.ATTEMPT_SECONDS.observe(latency)
        ok = retry.succeeded(answer.status_code)
        step = retry.after_attempt(ok, delivery.attempts + 1, self._settings.retry_schedule)
        outcome = AttemptOutcome(
            delivery_id=delivery.id,
            token=token,
            status=step.status,
            retry_in=step.retry_in,
            attempted_at=attempted_at,
            status_code=answer.status_code,
            latency_ms=latency * 1000,
            response=answer.body,
            error=answer.error,
            succeeded=ok,
        )
        if not ok:
            # The endpoint's host only: a URL may carry credentials, and secrets are never logged.
            log.info(
                "webhook attempt failed",
                extra={
                    "delivery": str(delivery.id),
                    "webhook": str(delivery.webhook_id),
                    "status": answer.status_code,
                    "error": answer.error,
                    "retry_in": step.retry_in,
                },
            )
        # Recorded by a cycle while the lease still runs: it was taken at the claim, just before
        # `started`, and runs for the lease whatever the request took.
        record_by = started + self._settings.lease
        self._to_record.append(Finished(outcome, unsafe is not None, record_by))

    def _unsafe(self, endpoint: str) -> str | None:
        """An address literal is not resolved, so GuardedResolver never sees it: checked here.
        The verdict on a URL never changes (its literal is fixed), so it is kept per URL."""
        try:
            return self._verdicts[endpoint]
        except KeyError:
            pass
        if len(self._verdicts) >= VERDICTS_KEPT:
            self._verdicts.clear()
        verdict = self._verdicts[endpoint] = self._check(endpoint)
        return verdict

    def _check(self, endpoint: str) -> str | None:
        try:
            parsed = parse_endpoint(endpoint, require_https=self._require_https)
        except InvalidEndpoint as problem:
            return str(problem)
        if not parsed.literal:
            return None
        return refusal([parsed.host], allow_private=self._settings.allow_private)

    def _count(self, finished: list[Finished], cycle: outbox.Cycle) -> None:
        for item in finished:
            outcome = item.outcome
            if outcome.delivery_id not in cycle.applied:
                metrics.DELIVERIES.labels("lost_lease").inc()
                continue
            result = "unsafe" if item.unsafe else _RESULTS.get(outcome.status, outcome.status)
            metrics.DELIVERIES.labels(result).inc()
        for webhook_id in cycle.disabled:
            metrics.ENDPOINTS_DISABLED.inc()
            log.warning(
                "webhook endpoint disabled after failing for 5 days",
                extra={"webhook": str(webhook_id)},
            )

    async def _refresh_stats(self) -> None:
        while True:
            try:
                stats = await outbox.stats(self._pool)
            except Exception as error:
                _warn("could not read webhook statistics", error)
            else:
                for status, count in stats.pending.items():
                    metrics.PENDING.labels(status).set(count)
                metrics.OLDEST_PENDING_AGE.set(stats.oldest_due_seconds)
            await asyncio.sleep(STATS_SECONDS)


# The metric's result label of a recorded attempt, by the delivery's new status.
_RESULTS = {"attempting": "retry"}


def _warn(what: str, error: Exception) -> None:
    """A storage failure is expected now and then; anything else is a bug: with its trace."""
    expected = isinstance(error, StorageError)
    log.warning(what, extra={"error": str(error)}, exc_info=None if expected else error)
