"""The MX handler: turns RCPT and DATA into policy inputs and storage calls, and renders replies.

It decides nothing itself: `policy.inbound.pipeline` (shared with the ingester endpoints) judges
recipients and matches the conversation, `storage` looks up and commits. 250 is sent only after
the commit; any storage trouble is a 451, never a 5xx and never an exception that aiosmtpd would
turn into 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mta import metrics
from mta.mx.fill_in import FillIn
from policy import replies
from policy.inbound.message import ParsedMessage, parse_message, scan_headers
from policy.inbound.pipeline import (
    Arrival,
    InboundLookups,
    body_unread,
    judge_recipient,
    received_messages,
)
from policy.inbound.routing import Action, RcptDecision, rcpt_lookup_failed
from policy.tokens import ReplyTokens
from storage.errors import StorageError
from storage.ids import uuid7
from storage.inbound.inbox import ReceivedRecord

log = logging.getLogger(__name__)

StoreFunction = Callable[[Sequence[ReceivedRecord]], Awaitable[None]]

# A message this large is parsed in a worker thread, not on the event loop: parsing 25 MB takes
# most of a second of pure Python, which on the loop would hold up every other session. The
# thread still takes the GIL, but gives it back every few milliseconds (sys.getswitchinterval),
# so the other sessions keep being answered meanwhile. Smaller ones parse faster than a thread
# hand-off costs. (tests/perf/README.md, "MX memory".)
PARSE_IN_THREAD_BYTES = 1 << 20


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


class MXHandler:
    """aiosmtpd hooks for port 25."""

    def __init__(
        self,
        *,
        lookups: InboundLookups,
        tokens: ReplyTokens,
        hostname: str,
        limits: MXLimits,
        store: StoreFunction,
        fill_in: FillIn,
    ) -> None:
        self._lookups = lookups
        self._tokens = tokens
        self._hostname = hostname
        self._limits = limits
        self._store = store
        self._fill_in = fill_in

    # -- MAIL FROM ----------------------------------------------------------------------------

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        # Any sender is welcome at an MX, including the null reverse-path of bounces (RFC 5321
        # section 4.5.5); authentication results are judged on the message, not here.
        refused = server.address_refusal(address, sender=True)
        if refused is not None:
            return str(refused)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        _transaction(envelope).accepted.clear()
        return str(replies.S250_SENDER_OK)

    # -- RCPT TO ------------------------------------------------------------------------------

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        refused_address = server.address_refusal(address, sender=False)
        if refused_address is not None:
            return str(refused_address)
        transaction = _transaction(envelope)
        decision = await self._decide_recipient(address, len(transaction.accepted))
        metrics.labelled(metrics.RCPT_VERDICTS, decision.action.value, decision.reason).inc()
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
        try:
            return await judge_recipient(
                address,
                accepted_so_far,
                max_recipients=self._limits.max_recipients,
                lookups=self._lookups,
                tokens=self._tokens,
            )
        except StorageError as error:
            metrics.STORAGE_FAILURES.labels("rcpt").inc()
            log.warning("recipient lookup failed", extra={"rcpt": address, "error": str(error)})
            return rcpt_lookup_failed()

    # -- DATA ---------------------------------------------------------------------------------

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self._fill_in.entered()  # how busy the process is (a plain try: this runs per message)
        try:
            return await self._data(session, envelope)
        finally:
            self._fill_in.left()

    async def _data(self, session: Any, envelope: Any) -> str:
        started = time.perf_counter()
        raw: bytes = envelope.original_content
        transaction = _transaction(envelope)
        # The null reverse-path of bounces (RFC 5321 section 4.5.5) is stored empty.
        mail_from = "" if envelope.mail_from == "<>" else envelope.mail_from or ""
        parsed = await self._read(raw, mail_from)
        if parsed.received_count > self._limits.max_received_headers:
            metrics.MESSAGES_REFUSED.labels("loop").inc()
            return str(replies.S554_LOOP)

        try:
            records = await self._records(session, mail_from, transaction, parsed, raw)
            await self._store(records)
        except StorageError as error:
            metrics.STORAGE_FAILURES.labels("data").inc()
            metrics.MESSAGES_REFUSED.labels("storage").inc()
            log.warning("message not stored", extra={"error": str(error)})
            return str(replies.S451_TEMP_STORAGE)
        if not parsed.complete:
            self._fill_in.later([record.id for record in records], raw)

        metrics.DATA_TO_COMMIT.observe(time.perf_counter() - started)
        metrics.MESSAGE_BYTES.inc(len(raw))
        for record in records:
            metrics.labelled(metrics.MESSAGES_STORED, record.reply_match_status).inc()
        ids = " ".join(str(record.id) for record in records)
        return str(replies.S250_QUEUED.format(id=ids))

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would answer an escaped exception with 500; nothing accepted is at stake
        # here, but the sender must retry rather than bounce (DESIGN.md 7).
        log.exception("unexpected error in SMTP session")
        return str(replies.S451_LOCAL_ERROR)

    async def _read(self, raw: bytes, mail_from: str) -> ParsedMessage:
        """The message as the accept path reads it: in full, or by its header fields alone
        while the process is busy and the message is plain (its body is parsed after the
        commit, mta/mx/fill_in.py)."""
        if self._fill_in.wanted(len(raw)):
            scanned = scan_headers(raw)
            if scanned is not None and body_unread(scanned, mail_from):
                return scanned
        if len(raw) < PARSE_IN_THREAD_BYTES:
            return parse_message(raw)
        return await asyncio.to_thread(parse_message, raw)

    async def _records(
        self,
        session: Any,
        mail_from: str,
        transaction: Transaction,
        parsed: ParsedMessage,
        raw: bytes,
    ) -> Sequence[ReceivedRecord]:
        # aiosmtpd keeps the TLS layer's extra info (with the ssl_object) once STARTTLS is done.
        ssl_object = session.ssl.get("ssl_object") if isinstance(session.ssl, dict) else None
        arrival = Arrival(
            mail_from=mail_from,
            peer_ip=session.peer[0] if isinstance(session.peer, tuple) else None,
            helo=session.host_name,
            tls_version=ssl_object.version() if ssl_object is not None else None,
            hostname=self._hostname,
            received_at=datetime.now(UTC),
        )
        return await received_messages(
            transaction.accepted,
            parsed,
            raw,
            arrival,
            lookups=self._lookups,
            tokens=self._tokens,
            new_id=uuid7,
        )
