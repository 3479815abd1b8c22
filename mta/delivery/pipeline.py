"""What happens to one claim of due deliveries, step by step (`ClaimPipeline.deliver`):

route each recipient domain                      (mta.delivery.routes)
-> group recipients by email and route: one SMTP transaction per group
-> DKIM-sign each email once; its groups share the bytes   (mta.delivery.dkim)
-> send on a pooled, capped session, next hop on failure   (mta.delivery.smtp_pool,
mta.delivery.smtp_client)
-> judge each recipient's answer                 (policy.delivery.result)
-> commit outcomes, events and the email's status before the group is done
                                                 (storage.delivery.writer)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from mta import metrics
from mta.delivery.dkim import DkimSigner
from mta.delivery.hops import Answers, RemoteHosts, transact
from mta.delivery.routes import OutboundRouter, Route, Unroutable
from mta.delivery.smtp_pool import PoolClosed, SmtpPool
from policy.bounces.dsn import FailedRecipient, compose_dsn, wants_dsn
from policy.bounces.verp import bounce_address
from policy.delivery import result as results
from policy.delivery.result import SmtpAnswer, failed_not_bounced, judge
from policy.tokens import ReplyTokens
from storage.database import Pool
from storage.delivery import queue
from storage.delivery.queue import Claim, ClaimedDelivery, OutboundMessage, Outcome
from storage.delivery.writer import OutcomeWriter
from storage.errors import StorageError
from storage.ids import uuid7

log = logging.getLogger(__name__)

# Messages too large to come with their claim (storage.delivery.queue.INLINE_CONTENT_BYTES) are read
# and sent this many at a time: 25 MB each (OPENSEND_MAX_MESSAGE_SIZE) stays a few hundred MB.
LARGE_MESSAGES_AT_ONCE = 8
# A row whose lease ran out mid-attempt this many times in a row (the worker was killed or
# wedged each time: storage/migrations/0021 and 0022) is failed at the next claim, not attempted
# again: a message that brings its worker down would otherwise be claimed, and perhaps sent,
# once per lease for ever, its attempts never counted nor its age judged. Rows merely claimed
# beside it count one reclaim at most, unless their own attempt was under way too.
MAX_RECLAIMS = 5
GIVEN_UP = Unroutable(SmtpAnswer.ours(results.INTERRUPTED))


@dataclass(frozen=True, slots=True)
class RetryRules:
    schedule: tuple[int, ...]  # OPENSEND_RETRY_SCHEDULE
    max_age: int  # OPENSEND_MAX_QUEUE_AGE
    # RFC 5321 section 4.5.3.1.8: a server must take 100 recipients per transaction.
    max_recipients: int = 100


def _route_key(route: Route | Unroutable) -> object:
    return route if isinstance(route, Unroutable) else (route.kind, route.hops)


class ClaimPipeline:
    def __init__(
        self,
        pool: Pool,
        *,
        router: OutboundRouter,
        signer: DkimSigner,
        smtp: SmtpPool,
        writer: OutcomeWriter,
        rules: RetryRules,
        stopping: asyncio.Event,
        done_with: Callable[[int], Awaitable[None]],
        tokens: ReplyTokens | None = None,
        hostname: str = "localhost",
    ) -> None:
        self._pool = pool
        self._router = router
        self._signer = signer
        self._smtp = smtp
        self._writer = writer
        self._rules = rules
        self._stopping = stopping
        self._done_with = done_with  # gives the workers' room back, per group as it finishes
        self._large_messages = asyncio.Semaphore(LARGE_MESSAGES_AT_ONCE)
        self._tokens = tokens  # signs bounce addresses; None sends with the email's own sender
        self._hostname = hostname  # the Reporting-MTA of the DSNs we send

    async def deliver(self, claim: Claim) -> None:
        groups: dict[tuple[UUID, object], list[ClaimedDelivery]] = defaultdict(list)
        live = [d for d in claim.deliveries if not d.suppressed]
        await self._suppress(claim, [d for d in claim.deliveries if d.suppressed])
        try:
            domains = sorted({d.recipient_domain for d in live})
            found = await asyncio.gather(*map(self._route, domains))
            routes = dict(zip(domains, found, strict=True))
            group_routes: dict[tuple[UUID, object], Route | Unroutable] = {}
            for delivery in live:
                route = routes[delivery.recipient_domain]
                if delivery.reclaims >= MAX_RECLAIMS:
                    route = GIVEN_UP
                key = (delivery.email_id, _route_key(route))
                groups[key].append(delivery)
                group_routes[key] = route
            signed: dict[UUID, asyncio.Future[bytes | None]] = {}

            def job(key: tuple[UUID, object]) -> Awaitable[None]:
                message = claim.messages[key[0]]
                return self._deliver_group(claim, message, group_routes[key], groups[key], signed)

            suspect = [key for key, rows in groups.items() if any(d.reclaims for d in rows)]
            suspected = set(suspect)
            ordinary = [key for key in groups if key not in suspected]  # in claim order
            done = await asyncio.gather(*map(job, ordinary), return_exceptions=True)
            # Rows whose lease ran out before go one group at a time, after the rest of the
            # claim: if one of them brings the worker down again, as little as can be is in
            # flight beside it, and only its own attempt was marked begun (_mark_suspects).
            for key in suspect:
                done.extend(await asyncio.gather(job(key), return_exceptions=True))
            for failure in (d for d in done if isinstance(d, BaseException)):
                # Its rows stay leased and come back when the lease runs out: nothing is lost.
                log.error("a delivery failed unexpectedly", exc_info=failure)
        finally:
            if not groups:  # routing itself failed: no group gave its rows' room back
                await self._done_with(len(live))

    async def _suppress(self, claim: Claim, deliveries: Sequence[ClaimedDelivery]) -> None:
        """Recipients on the tenant's suppression list are not attempted: each is recorded as
        `suppressed`, with its email.suppressed event, and the rest of the email goes on."""
        if not deliveries:
            return
        try:
            await self._writer.write(
                [
                    Outcome(
                        delivery_id=d.id,
                        token=claim.token,
                        email_id=d.email_id,
                        tenant_id=d.tenant_id,
                        recipient=d.recipient,
                        status="suppressed",
                        code=None,
                        enhanced=None,
                        response="The address is on the suppression list",
                        remote_host=None,
                        data={"reason": "suppressed", "recipient": d.recipient},
                    )
                    for d in deliveries
                ]
            )
        except StorageError as error:  # the rows stay leased and come back: nothing is lost
            log.warning("could not record suppressed deliveries", extra={"error": str(error)})
        finally:
            await self._done_with(len(deliveries))

    async def _route(self, domain: str) -> Route | Unroutable:
        """A lookup that fails in a way nobody foresaw is a temporary failure of that domain,
        not of the whole claim."""
        try:
            return await self._router.route(domain)
        except Exception as error:
            log.exception("routing failed", extra={"domain": domain})
            return Unroutable(SmtpAnswer.ours(results.DNS_TEMPORARY, detail=repr(error)))

    async def _deliver_group(
        self,
        claim: Claim,
        message: OutboundMessage,
        route: Route | Unroutable,
        deliveries: list[ClaimedDelivery],
        signed: dict[UUID, asyncio.Future[bytes | None]],
    ) -> None:
        size = self._rules.max_recipients
        try:
            for start in range(0, len(deliveries), size):
                try:
                    await self._deliver_chunk(
                        claim, message, route, deliveries[start : start + size], signed
                    )
                except Exception:
                    # The chunks after this one were never attempted: due again now, rather
                    # than once their lease runs out (which would count as a reclaim).
                    if deliveries[start + size :]:
                        await self._give_back(claim, deliveries[start + size :])
                    raise
        finally:
            await self._done_with(len(deliveries))

    async def _deliver_chunk(
        self,
        claim: Claim,
        message: OutboundMessage,
        route: Route | Unroutable,
        chunk: Sequence[ClaimedDelivery],
        signed: dict[UUID, asyncio.Future[bytes | None]],
    ) -> None:
        began = time.monotonic()
        try:
            if self._stopping.is_set():
                raise PoolClosed
            if not await self._mark_suspects(claim, route, chunk):
                return  # they stay leased and come back: nothing is lost
            answers, hosts = await self._attempt(message, route, chunk, signed)
        except PoolClosed:
            await self._give_back(claim, chunk)
            return
        if isinstance(route, Route):
            metrics.DELIVERY_LATENCY.labels(route.kind.value).observe(time.monotonic() - began)
        # Stopping between the transactions of one recipient each (VERP, `_send`): the
        # answered are recorded below, the others given back, never sent twice.
        unsent = [d for d in chunk if d.recipient not in answers]
        if unsent:
            await self._give_back(claim, unsent)
        outcomes = [
            self._outcome(claim.token, message, d, answers[d.recipient], hosts.get(d.recipient))
            for d in chunk
            if d.recipient in answers
        ]
        outcomes = self._with_dsn(message, outcomes, signed)
        await self._writer.write(outcomes)  # committed before the group moves on
        for outcome in outcomes:
            metrics.DELIVERY_ATTEMPTS.labels(outcome.status).inc()
        if route is GIVEN_UP:  # counted once recorded: a row given back comes again
            metrics.DELIVERY_RECLAIMS_GIVEN_UP.inc(len(outcomes))

    def _with_dsn(
        self,
        message: OutboundMessage,
        outcomes: list[Outcome],
        signed: dict[UUID, asyncio.Future[bytes | None]],
    ) -> list[Outcome]:
        """Submission mail that bounced gets an RFC 3464 DSN to its envelope sender, queued
        with the first bounced outcome so that it commits with it (or not at all)."""
        bounced = [o for o in outcomes if o.status == "bounced"]
        if not bounced or not wants_dsn(message.source, message.sender):
            return outcomes
        header = None
        content = signed.get(message.email_id)
        if content is not None and content.done() and not content.exception():
            raw = content.result()
            header = raw.split(b"\r\n\r\n", 1)[0] if raw else None
        dsn = compose_dsn(
            email_id=uuid7(),
            hostname=self._hostname,
            envelope_sender=message.sender,
            failures=[
                FailedRecipient(
                    o.recipient,
                    o.code,
                    o.enhanced,
                    o.response,
                    o.remote_host,
                    bool(o.data.get("expired")),
                )
                for o in bounced
            ],
            original_header=header,
            date=datetime.now(UTC),
        )
        first = outcomes.index(bounced[0])
        return [*outcomes[:first], replace(bounced[0], dsn=dsn), *outcomes[first + 1 :]]

    async def _mark_suspects(
        self, claim: Claim, route: Route | Unroutable, chunk: Sequence[ClaimedDelivery]
    ) -> bool:
        """Rows reclaimed before are marked as attempted before they are, so that a crash now
        counts against them and not against the rows claimed beside them (migration 0022).
        False when the chunk is not to be attempted: the mark could not be written (the chunk
        is given back), or the rows are no longer this claim's."""
        suspects = [d.id for d in chunk if d.reclaims]
        if not suspects or not isinstance(route, Route):
            return True
        try:
            marked = await queue.mark_attempt_began(self._pool, claim.token, suspects)
        except StorageError as error:
            log.warning("could not mark an attempt as begun", extra={"error": str(error)})
            await self._give_back(claim, chunk)
            return False
        # Fewer marked: the lease was lost, and another worker has the rows now.
        return marked == set(suspects)

    async def _give_back(self, claim: Claim, chunk: Sequence[ClaimedDelivery]) -> None:
        """Stopping: rows not yet sent are due again for any worker (or, failing that, once
        their lease runs out)."""
        try:
            await queue.release(self._pool, claim.token, [d.id for d in chunk])
        except StorageError as error:
            log.warning("could not give deliveries back", extra={"error": str(error)})

    async def _attempt(
        self,
        message: OutboundMessage,
        route: Route | Unroutable,
        chunk: Sequence[ClaimedDelivery],
        signed: dict[UUID, asyncio.Future[bytes | None]],
    ) -> tuple[Answers, RemoteHosts]:
        recipients = [d.recipient for d in chunk]
        if isinstance(route, Unroutable):
            return {r: route.answer for r in recipients}, {}
        if message.size is None:
            return {r: SmtpAnswer.ours(results.MESSAGE_MISSING) for r in recipients}, {}
        if message.raw is not None:
            return await self._send(message, route, chunk, signed)
        async with self._large_messages:  # read now, and only a few at a time: a memory bound
            return await self._send(message, route, chunk, signed)

    async def _send(
        self,
        message: OutboundMessage,
        route: Route,
        chunk: Sequence[ClaimedDelivery],
        signed: dict[UUID, asyncio.Future[bytes | None]],
    ) -> tuple[Answers, RemoteHosts]:
        recipients = [d.recipient for d in chunk]
        if message.email_id not in signed:  # once per email per claim, shared by its groups
            signed[message.email_id] = asyncio.ensure_future(self._sign(message))
        content = await signed[message.email_id]
        if content is None:
            return {r: SmtpAnswer.ours(results.MESSAGE_MISSING) for r in recipients}, {}
        if self._tokens is None or message.reply_domain is None:
            return await transact(self._smtp, route, message.sender, recipients, content)
        # VERP: each recipient gets its own envelope sender, so a DSN names its delivery even
        # when the DSN itself is mangled; one transaction per recipient, on pooled sessions.
        answers: Answers = {}
        hosts: RemoteHosts = {}
        for delivery in chunk:
            sender = bounce_address(
                self._tokens, message.tenant_id, delivery.id, message.reply_domain
            )
            try:
                one, by = await transact(self._smtp, route, sender, [delivery.recipient], content)
            except PoolClosed:
                if not answers:
                    raise  # nothing sent: the whole chunk is given back
                break  # the answers so far are recorded; the rest given back (_deliver_chunk)
            answers.update(one)
            hosts.update(by)
        return answers, hosts

    async def _sign(self, message: OutboundMessage) -> bytes | None:
        raw = await queue.content(self._pool, message)
        if raw is None:
            return None
        return await self._signer.sign(
            raw,
            domain=message.domain,
            selector=message.dkim_selector,
            private_key=message.dkim_private_key,
        )

    def _outcome(
        self,
        token: UUID,
        message: OutboundMessage,
        delivery: ClaimedDelivery,
        answer: SmtpAnswer,
        remote_host: str | None,
    ) -> Outcome:
        verdict = judge(
            answer,
            attempts=delivery.attempts + 1,
            age_seconds=delivery.age,
            schedule=self._rules.schedule,
            max_age_seconds=self._rules.max_age,
        )
        # The event's data: the remote's code and words, for webhooks and the API.
        data: dict[str, Any] = {
            "code": answer.code,
            "enhanced_code": answer.enhanced,
            "response": answer.text,
            "remote_host": remote_host,
            "stage": answer.stage.value,
            "remote": answer.remote,
        }
        if verdict.retry_in is not None:
            data["retry_in_seconds"] = verdict.retry_in
        if verdict.expired:
            data["expired"] = True
        failed = failed_not_bounced(verdict)
        if failed:
            data["reason"] = answer.text  # Resend's email.failed: failed.reason
        return Outcome(
            delivery_id=delivery.id,
            token=token,
            email_id=message.email_id,
            tenant_id=message.tenant_id,
            recipient=delivery.recipient,
            status=verdict.outcome.value,
            code=answer.code,
            enhanced=answer.enhanced,
            response=answer.text,
            remote_host=remote_host,
            retry_in=verdict.retry_in,
            data=data,
            event="email.failed" if failed else None,
        )
