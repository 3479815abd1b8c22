"""Webhook delivery workers: claim due deliveries, POST each signed, record the attempt, repeat.

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
from storage.webhooks import outbox
from storage.webhooks.outbox import AttemptOutcome, ClaimedDelivery

log = logging.getLogger(__name__)

BATCH = 100  # deliveries per claim
MAX_IN_FLIGHT = 200  # requests under way in this process, to all endpoints
POLL_SECONDS = 10.0  # the longest sleep without a NOTIFY (what a lost wake-up costs)
STATS_SECONDS = 15.0


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
        self._room = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._services: list[asyncio.Task[None]] = []
        self._claimer: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def wake(self) -> None:
        self._wakeup.set()

    async def start(self) -> None:
        self._session = http.client_session(
            self._resolver,
            allow_private=self._settings.allow_private,
            connect_timeout=self._settings.connect_timeout,
            timeout=self._settings.timeout,
            per_host=self._settings.endpoint_concurrency,
        )
        loop = asyncio.get_running_loop()
        self._services = [
            loop.create_task(self.listener.run(), name="webhook-listen"),
            loop.create_task(self._refresh_stats(), name="webhook-stats"),
            loop.create_task(
                prune_forever(self._pool, self._settings.retention), name="webhook-retention"
            ),
        ]
        self._claimer = loop.create_task(self._claim_loop(), name="webhook-claim")

    async def stop(self, grace: float) -> None:
        """Stop claiming; let requests under way finish and their outcomes commit, for up to
        `grace` seconds. One still running after that is cancelled: its lease runs out and it
        is sent again, under the same id."""
        self._stopping.set()
        if self._claimer is not None:
            self._claimer.cancel()
            await asyncio.gather(self._claimer, return_exceptions=True)
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace)
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        for task in self._services:
            task.cancel()
        await asyncio.gather(*self._services, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _claim_loop(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            room = self._max_in_flight - len(self._in_flight)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            self._wakeup.clear()
            self._room.clear()
            limit = min(BATCH, room)
            try:
                claim = await outbox.claim(
                    self._pool,
                    limit=limit,
                    per_endpoint=self._settings.endpoint_concurrency,
                    lease_seconds=self._settings.lease,
                )
            except Exception as error:  # the database away, mostly; nothing may end this loop
                _warn("could not claim webhook deliveries", error)
                await wait_for_any(backoff, self._stopping)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            for delivery in claim.deliveries:
                task = asyncio.get_running_loop().create_task(self._deliver(claim.token, delivery))
                self._in_flight.add(task)
                task.add_done_callback(self._done)
            if len(claim.deliveries) < limit:
                # All that is due now is under way, or its endpoint is at its cap: wait for a
                # wake-up (a new event), a request to finish (room, perhaps below a cap again),
                # or the next due time.
                # While requests are under way each one's end wakes this loop: no need to ask
                # the database for the next due time after every claim.
                idle = POLL_SECONDS if self._in_flight else await self._idle_seconds()
                await wait_for_any(idle, self._wakeup, self._room, self._stopping)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._room.set()  # room, and perhaps an endpoint below its cap again
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
        await self._record(delivery, outcome, unsafe is not None)

    def _unsafe(self, endpoint: str) -> str | None:
        """An address literal is not resolved, so GuardedResolver never sees it: checked here."""
        try:
            parsed = parse_endpoint(endpoint, require_https=self._require_https)
        except InvalidEndpoint as problem:
            return str(problem)
        if not parsed.literal:
            return None
        return refusal([parsed.host], allow_private=self._settings.allow_private)

    async def _record(
        self, delivery: ClaimedDelivery, outcome: AttemptOutcome, unsafe: bool
    ) -> None:
        """Commit the outcome, trying again while the database is away and the lease lasts; if
        it never commits, the lease runs out and the delivery is sent again (same id)."""
        deadline = time.monotonic() + self._settings.lease
        delay = 0.2
        while True:
            try:
                applied, endpoint_status = await outbox.record_outcome(
                    self._pool, outcome, disable_after_seconds=retry.DISABLE_AFTER_SECONDS
                )
                break
            except StorageError as error:
                if time.monotonic() + delay >= deadline:
                    _warn("could not record a webhook attempt; it will be sent again", error)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if not applied:
            metrics.DELIVERIES.labels("lost_lease").inc()
            return
        result = "unsafe" if unsafe else {"attempting": "retry"}.get(outcome.status, outcome.status)
        metrics.DELIVERIES.labels(result).inc()
        if endpoint_status == "disabled":
            metrics.ENDPOINTS_DISABLED.inc()
            log.warning(
                "webhook endpoint disabled after failing for 5 days",
                extra={"webhook": str(delivery.webhook_id)},
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


def _warn(what: str, error: Exception) -> None:
    """A storage failure is expected now and then; anything else is a bug: with its trace."""
    expected = isinstance(error, StorageError)
    log.warning(what, extra={"error": str(error)}, exc_info=None if expected else error)
