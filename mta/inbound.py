"""The MX handler: turns RCPT and DATA into policy inputs and storage calls, and renders replies.

It decides nothing itself: `policy.routing` judges recipients, `policy.matching` finds the
conversation, `storage` looks up and commits. 250 is sent only after the commit; any storage
trouble is a 451, never a 5xx and never an exception that aiosmtpd would turn into 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from uuid import UUID

from mta import metrics
from mta.lookup_cache import TTLCache
from policy import replies
from policy.addresses import split_mailbox
from policy.matching import (
    KnownMessage,
    Match,
    OutboundEvidence,
    candidates,
    decide,
    verify_token,
)
from policy.message import ParsedMessage, parse_message
from policy.routing import (
    Action,
    DomainRouting,
    RcptDecision,
    RcptInput,
    RouteKind,
    TokenVerdict,
    decide_rcpt,
    rcpt_lookup_failed,
    rcpt_over_limit,
    rcpt_syntax_rejected,
    route_candidates,
)
from policy.tokens import ReplyTokens, TokenFailure, token_from_local_part
from storage import directory, inbox
from storage.database import Pool
from storage.errors import StorageError
from storage.ids import uuid7
from storage.inbox import ReceivedRecord

log = logging.getLogger(__name__)

StoreFunction = Callable[[Sequence[ReceivedRecord]], Awaitable[None]]


@dataclass
class Transaction:
    """What RCPT decided, kept with the aiosmtpd Envelope until DATA."""

    accepted: list[RcptDecision] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MXLimits:
    max_recipients: int
    max_received_headers: int
    # Refused recipients a session may try before it is closed (Postfix's smtpd_hard_error_limit
    # is 20): enough for a typo or two, far too few to harvest a directory by guessing.
    max_refused_recipients: int = 20


def _transaction(envelope: Any) -> Transaction:
    state = getattr(envelope, "opensend", None)
    if state is None:
        state = Transaction()
        envelope.opensend = state
    return state


def _routing(found: directory.RecipientRoute | None) -> DomainRouting | None:
    if found is None:
        return None
    return DomainRouting(
        tenant_id=found.tenant_id,
        domain_id=found.domain_id,
        domain=found.domain,
        reply_domain=found.reply_domain,
        route_kind=RouteKind(found.route_kind) if found.route_kind else None,
        route_address=found.route_address,
        route_target=found.route_target,
    )


def _outbound(row: inbox.OutboundRow | None) -> OutboundEvidence | None:
    if row is None:
        return None
    return OutboundEvidence(row.email_id, row.thread_id, row.reply_token, row.reply_domain)


_date_cache: tuple[int, str] = (0, "")


def _trace_date(when: datetime) -> str:
    """RFC 5322 date-time of a Received field; formatted once per second, not per message."""
    global _date_cache
    second = int(when.timestamp())
    if _date_cache[0] != second:
        _date_cache = (second, format_datetime(when.replace(microsecond=0)))
    return _date_cache[1]


def received_header(
    *,
    record_id: UUID,
    helo: str | None,
    peer_ip: str | None,
    hostname: str,
    tls_version: str | None,
    recipient: str | None,
    when: datetime,
) -> str:
    """The trace field of RFC 5321 section 4.4, with the protocol keyword of RFC 3848."""
    protocol = "ESMTPS" if tls_version else "ESMTP"
    tls = f" ({tls_version})" if tls_version else ""
    for_clause = f"\r\n\tfor <{recipient}>" if recipient else ""
    return (
        f"Received: from {helo or 'unknown'} ([{peer_ip or 'unknown'}])\r\n"
        f"\tby {hostname} (OpenSend) with {protocol}{tls} id {record_id.hex}"
        f"{for_clause}; {_trace_date(when)}"
    )


class MXHandler:
    """aiosmtpd hooks for port 25."""

    def __init__(
        self,
        *,
        pool: Pool,
        tokens: ReplyTokens,
        hostname: str,
        limits: MXLimits,
        store: StoreFunction,
    ) -> None:
        self._pool = pool
        self._tokens = tokens
        self._hostname = hostname
        self._limits = limits
        self._store = store
        self._routes: TTLCache[directory.RecipientRoute | None] = TTLCache(
            lambda domain, candidates: directory.lookup_recipient(pool, domain, candidates)
        )

    # -- MAIL FROM ----------------------------------------------------------------------------

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        # Any sender is welcome at an MX, including the null reverse-path of bounces (RFC 5321
        # section 4.5.5); authentication results are judged on the message, not here.
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        _transaction(envelope).accepted.clear()
        return str(replies.S250_SENDER_OK)

    # -- RCPT TO ------------------------------------------------------------------------------

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        transaction = _transaction(envelope)
        decision = await self._decide_recipient(address, len(transaction.accepted))
        metrics.RCPT_VERDICTS.labels(decision.action.value, decision.reason).inc()
        if decision.action is Action.ACCEPT:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            transaction.accepted.append(decision)
            return str(decision.reply)
        log.info(
            "recipient refused",
            extra={"rcpt": address, "check": decision.check, "reason": decision.reason},
        )
        refused = getattr(session, "opensend_refused", 0) + 1
        session.opensend_refused = refused
        if refused > self._limits.max_refused_recipients:
            metrics.RCPT_VERDICTS.labels("disconnect", "too_many_refusals").inc()
            # Close once the 421 is written (transport.close() flushes what is buffered).
            asyncio.get_running_loop().call_soon(server.transport.close)
            return str(replies.S421_TOO_MANY_ERRORS)
        return str(decision.reply)

    async def _decide_recipient(self, address: str, accepted_so_far: int) -> RcptDecision:
        if accepted_so_far >= self._limits.max_recipients:
            # RFC 5321 section 4.5.3.1.10: 452 lets the client send the rest in a new message.
            return rcpt_over_limit()
        mailbox = split_mailbox(address)
        if mailbox is None:
            return rcpt_syntax_rejected()
        try:
            found = _routing(await self._routes.get(mailbox.domain, route_candidates(mailbox)))
            verdict = None
            token = token_from_local_part(mailbox.local)
            if found is not None and token is not None:
                verdict = await self._verify_recipient_token(token, found, mailbox.domain)
        except StorageError as error:
            metrics.STORAGE_FAILURES.labels("rcpt").inc()
            log.warning("recipient lookup failed", extra={"rcpt": address, "error": str(error)})
            return rcpt_lookup_failed()
        return decide_rcpt(RcptInput(mailbox, found, verdict))

    async def _verify_recipient_token(
        self, token: Any, routing: DomainRouting, domain: str
    ) -> TokenVerdict:
        if isinstance(token, TokenFailure):
            return TokenVerdict(None, token)
        evidence = await inbox.token_evidence(self._pool, routing.tenant_id, token.email_id)
        return verify_token(
            self._tokens, token, routing.tenant_id, _outbound(evidence), recipient_domain=domain
        )

    # -- DATA ---------------------------------------------------------------------------------

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        started = time.perf_counter()
        raw: bytes = envelope.original_content
        transaction = _transaction(envelope)
        parsed = parse_message(raw)
        if parsed.received_count > self._limits.max_received_headers:
            metrics.MESSAGES_REFUSED.labels("loop").inc()
            return str(replies.S554_LOOP)

        try:
            records = await self._records(session, envelope, transaction, parsed, raw)
            await self._store(records)
        except StorageError as error:
            metrics.STORAGE_FAILURES.labels("data").inc()
            metrics.MESSAGES_REFUSED.labels("storage").inc()
            log.warning("message not stored", extra={"error": str(error)})
            return str(replies.S451_TEMP_STORAGE)

        metrics.DATA_TO_COMMIT.observe(time.perf_counter() - started)
        metrics.MESSAGE_BYTES.inc(len(raw))
        for record in records:
            metrics.MESSAGES_STORED.labels(record.reply_match_status).inc()
        ids = " ".join(str(record.id) for record in records)
        return str(replies.S250_QUEUED.with_text(f"Ok: queued as {ids}"))

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would answer an escaped exception with 500; nothing accepted is at stake
        # here, but the sender must retry rather than bounce (DESIGN.md 7).
        log.exception("unexpected error in SMTP session")
        return str(replies.S451_TEMP_STORAGE)

    async def _records(
        self,
        session: Any,
        envelope: Any,
        transaction: Transaction,
        parsed: ParsedMessage,
        raw: bytes,
    ) -> list[ReceivedRecord]:
        by_tenant: dict[UUID, list[RcptDecision]] = {}
        for decision in transaction.accepted:
            assert decision.tenant_id is not None
            by_tenant.setdefault(decision.tenant_id, []).append(decision)

        peer_ip = session.peer[0] if isinstance(session.peer, tuple) else None
        # aiosmtpd keeps the TLS layer's extra info (with the ssl_object) once STARTTLS is done.
        ssl_object = session.ssl.get("ssl_object") if isinstance(session.ssl, dict) else None
        tls_version = ssl_object.version() if ssl_object is not None else None
        now = datetime.now(UTC)
        records = []
        for tenant_id, decisions in by_tenant.items():
            match = await self._match(tenant_id, decisions, parsed)
            # An address given twice (or two aliases of one target) is one recipient.
            recipients = list(dict.fromkeys(d.delivered_to for d in decisions if d.delivered_to))
            record_id = uuid7()
            records.append(
                ReceivedRecord(
                    id=record_id,
                    tenant_id=tenant_id,
                    # The null reverse-path of bounces (RFC 5321 section 4.5.5) is stored empty.
                    mail_from="" if envelope.mail_from == "<>" else envelope.mail_from or "",
                    rcpt_to=recipients,
                    remote_ip=peer_ip,
                    helo=session.host_name,
                    tls=tls_version is not None,
                    tls_version=tls_version,
                    received_header=received_header(
                        record_id=record_id,
                        helo=session.host_name,
                        peer_ip=peer_ip,
                        hostname=self._hostname,
                        tls_version=tls_version,
                        recipient=recipients[0] if len(recipients) == 1 else None,
                        when=now,
                    ),
                    raw=raw,
                    headers=parsed.headers,
                    message_id=parsed.message_id,
                    in_reply_to=parsed.in_reply_to,
                    references=parsed.references,
                    subject=parsed.subject,
                    from_address=parsed.from_address,
                    from_name=parsed.from_name,
                    to_addresses=parsed.to,
                    cc_addresses=parsed.cc,
                    reply_to_addresses=parsed.reply_to,
                    sent_at=parsed.date,
                    text_body=parsed.text,
                    html_body=parsed.html,
                    attachments=[a.as_json() for a in parsed.attachments],
                    parse_defects=parsed.defects,
                    reply_match_status=match.status.value,
                    reply_to_email_id=match.reply_to_email_id,
                    thread_id=match.thread_id,
                    contact_email=parsed.from_address,
                    match_source=match.source.value if match.source else None,
                    token_failure=match.token_failure.value if match.token_failure else None,
                    token_failure_source=(
                        match.failure_source.value if match.failure_source else None
                    ),
                )
            )
        return records

    async def _match(
        self, tenant_id: UUID, decisions: list[RcptDecision], parsed: ParsedMessage
    ) -> Match:
        offered = candidates(
            [d.token for d in decisions if d.token is not None],
            parsed.reply_token_header,
            parsed.in_reply_to,
            parsed.references,
        )
        email_ids = sorted({c.token.email_id for c in offered if c.token is not None})
        message_ids = [c.message_id for c in offered if c.message_id is not None]
        evidence = await inbox.match_evidence(self._pool, tenant_id, email_ids, message_ids)
        match = decide(
            offered,
            self._tokens,
            tenant_id,
            {
                k: OutboundEvidence(v.email_id, v.thread_id, v.reply_token, v.reply_domain)
                for k, v in evidence.outbound.items()
            },
            {k: KnownMessage(v.reply_to_email_id, v.thread_id) for k, v in evidence.known.items()},
        )
        return match
