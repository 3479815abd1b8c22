"""The submission handler (ports 587 and 465): a logged-in client's mail, through the pipeline of
POST /emails.

It decides nothing itself. `policy.submission.message` judges the envelope sender and the From:
field with the sending API's own rule (`policy.sending.request.check_sender`) over the domains the
API's cache reads (storage.account_caches); `policy.sending.compose.mint_tracking` gives the message
its reply tracking; the email and its per-recipient deliveries are stored by the API's group-commit
writer (storage.sending.writer), one statement with the queue rows, and the client hears 250
only after that COMMIT. Storage trouble is a 4xx, never a 5xx and never an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mta import metrics
from mta.submission.auth import Account, Login, Logins
from policy import replies
from policy.conversation import outbound_thread
from policy.inbound.message import ParsedMessage, parse_message
from policy.inbound.pipeline import Arrival, received_header
from policy.sending.compose import mint_tracking
from policy.sending.fields import Mailbox
from policy.sending.request import SenderDomain
from policy.submission.long_lines import Unfittable, fit_line_lengths
from policy.submission.message import (
    SenderVerdict,
    add_recipient,
    envelope_sender,
    from_mailbox,
    judge_envelope_sender,
    judge_from,
    malformed_field,
    recipient_reply,
    submitted_email,
)
from policy.submission.throttle import AuthVerdict
from policy.tokens import ReplyTokens
from storage.account_caches import DomainCache, LimitCache
from storage.database import Pool
from storage.errors import StorageError
from storage.ids import uuid7
from storage.sending.emails import Completion, DomainState, NewEmail, Stored
from storage.sending.outbound import new_email_id
from storage.sending.replies import ThreadLookups

log = logging.getLogger(__name__)

# storage.sending.writer.EmailWriter.store: the API's group commit, with no Idempotency-Key.
StoreFunction = Callable[[Sequence[NewEmail], Completion | None], Awaitable[Stored]]


@dataclass(frozen=True, slots=True)
class SubmissionLimits:
    max_recipients: int
    max_received_headers: int


def account_of(session: Any) -> Account:
    """The engine lets no MAIL, RCPT or DATA through before AUTH (mta.submission.protocol)."""
    account = session.auth_data
    assert isinstance(account, Account), "submission command before authentication"
    return account


def _peer_ip(session: Any) -> str | None:
    return session.peer[0] if isinstance(session.peer, tuple) else None


class SubmissionHandler:
    """aiosmtpd hooks for the submission ports, and the logins the protocol asks about."""

    def __init__(
        self,
        *,
        pool: Pool,
        tokens: ReplyTokens,
        hostname: str,
        limits: SubmissionLimits,
        logins: Logins,
        store: StoreFunction,
    ) -> None:
        self._pool = pool
        self._tokens = tokens
        self._hostname = hostname
        self._limits = limits
        self._logins = logins
        self._store = store
        self._domains: DomainCache[SenderDomain] = DomainCache(SenderDomain)
        self._limits_reached = LimitCache()
        self._threads = ThreadLookups(pool)

    # -- AUTH ---------------------------------------------------------------------------------

    def login_refused(self, session: Any) -> AuthVerdict | None:
        return self._logins.refused(_peer_ip(session))

    async def login(self, session: Any, mechanism: str, user: str, password: str) -> Login:
        return await self._logins.login(_peer_ip(session), mechanism, user, password)

    # -- MAIL FROM ----------------------------------------------------------------------------

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        refused = server.address_refusal(address, sender=True)
        if refused is not None:
            return str(refused)
        mailbox = envelope_sender(address)
        try:
            account = await self._logins.current(account_of(session))
            if account is None:
                # The key was deleted since AUTH: the session must log in again (RFC 4954
                # section 6: 530 until it does).
                session.auth_data = None
                session.authenticated = False
                metrics.SUBMISSION_MESSAGES_REFUSED.labels("key_revoked").inc()
                log.info("sender refused: API key revoked during the session")
                return str(replies.S530_KEY_REVOKED)
            verdict = judge_envelope_sender(
                mailbox, await self._domain(account, mailbox), account.domain_id
            )
            # The plan's monthly limit, as POST /emails/{id}/reply has it (a soft limit).
            over = verdict.accepted and await self._limits_reached.reached(
                self._pool, account.tenant_id
            )
        except StorageError as error:
            metrics.SUBMISSION_STORAGE_FAILURES.labels("mail").inc()
            log.warning("sender not checked", extra={"sender": address, "error": str(error)})
            return str(replies.S451_TEMP_SENDER_LOOKUP)
        if over:
            return self._refused("sending_limit", replies.S450_SENDING_LIMIT, account, address)
        if not verdict.accepted:
            return self._refused(f"sender_{verdict.reason}", verdict.reply, account, address)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return str(verdict.reply)

    # -- RCPT TO ------------------------------------------------------------------------------

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        # Logged in, a client may send anywhere; delivery follows the envelope alone (addresses
        # named only in the header fields are not sent to, RFC 5321 section 3.3).
        refused = server.address_refusal(address, sender=False)
        if refused is not None:
            return str(refused)
        reply = recipient_reply(address, envelope.rcpt_tos, self._limits.max_recipients)
        if reply is replies.S250_RECIPIENT_OK:
            add_recipient(address, envelope.rcpt_tos)
            envelope.rcpt_options.extend(rcpt_options)
        return str(reply)

    # -- DATA ---------------------------------------------------------------------------------

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        account = account_of(session)
        try:
            # Lines over 998 octets re-encoded before anything reads or signs the message.
            raw = fit_line_lengths(envelope.original_content)
        except Unfittable as refusal:
            metrics.SUBMISSION_MESSAGES_REFUSED.labels(refusal.reason).inc()
            return str(refusal.reply)
        parsed = parse_message(raw)
        if parsed.received_count > self._limits.max_received_headers:
            metrics.SUBMISSION_MESSAGES_REFUSED.labels("loop").inc()
            return str(replies.S554_LOOP)
        if malformed_field(raw):
            metrics.SUBMISSION_MESSAGES_REFUSED.labels("malformed_header").inc()
            return str(replies.S550_MALFORMED_HEADER)
        author = from_mailbox(parsed)
        try:
            # Built from the cached domain first; if the domain changed meanwhile, once more
            # from a fresh read, as POST /emails does (INSERT_EMAIL stores nothing when stale).
            for fresh in (False, True):
                verdict = judge_from(
                    author, await self._domain(account, author, fresh=fresh), account.domain_id
                )
                if verdict.domain is None or author is None:
                    return self._refused(f"from_{verdict.reason}", verdict.reply, account, None)
                email = self._email(
                    server, session, envelope, account, raw, parsed, author, verdict
                )
                email = await self._in_conversation(email, parsed, account)
                if await self._store([email], None):
                    break
            else:
                raise StorageError("the sender domain kept changing", temporary=True)
        except StorageError as error:
            metrics.SUBMISSION_STORAGE_FAILURES.labels("data").inc()
            metrics.SUBMISSION_MESSAGES_REFUSED.labels("storage").inc()
            log.warning("submitted message not stored", extra={"error": str(error)})
            return str(replies.S451_TEMP_STORAGE)
        metrics.SUBMISSION_MESSAGES_QUEUED.labels("yes" if email.reply_token else "no").inc()
        return str(replies.S250_QUEUED.format(id=str(email.id)))

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would answer an escaped exception with 500: the client must retry instead.
        log.exception("unexpected error in submission session")
        return str(replies.S451_LOCAL_ERROR)

    # -- helpers ------------------------------------------------------------------------------

    async def _domain(
        self, account: Account, mailbox: Mailbox | None, *, fresh: bool = False
    ) -> SenderDomain | None:
        if mailbox is None:
            return None
        return await self._domains.get(self._pool, account.tenant_id, mailbox.domain, fresh=fresh)

    async def _in_conversation(
        self, email: NewEmail, parsed: ParsedMessage, account: Account
    ) -> NewEmail:
        """An agent's answer from their own mail client joins the thread of the stored message
        its In-Reply-To or References name, as POST /emails does (policy.conversation)."""
        answered = await outbound_thread(
            self._threads,
            self._tokens,
            account.tenant_id,
            in_reply_to=parsed.in_reply_to,
            references=parsed.references,
            new_thread_id=uuid7,
        )
        if answered is None:
            return email
        return email.in_thread(answered.thread_id, answered.received_id)

    def _refused(
        self, reason: str, reply: replies.Reply, account: Account, sender: str | None
    ) -> str:
        metrics.SUBMISSION_MESSAGES_REFUSED.labels(reason).inc()
        log.info(
            "submission refused",
            extra={"reason": reason, "tenant": str(account.tenant_id), "sender": sender},
        )
        return str(reply)

    def _email(
        self,
        server: Any,
        session: Any,
        envelope: Any,
        account: Account,
        raw: bytes,
        parsed: ParsedMessage,
        author: Mailbox,
        verdict: SenderVerdict,
    ) -> NewEmail:
        """The email as POST /emails stores one, from the client's own message."""
        domain = verdict.domain
        assert domain is not None
        email_id, now = new_email_id(), datetime.now(UTC)
        tracking = mint_tracking(
            self._tokens,
            tenant_id=account.tenant_id,
            email_id=email_id,
            sending_domain=domain.name,
            reply_domain=domain.effective_reply_domain if domain.receiving_enabled else None,
            thread_id=uuid7(),
        )
        arrival = Arrival(
            mail_from=envelope.mail_from,
            peer_ip=_peer_ip(session),
            helo=session.host_name,
            tls_version=server.tls_version,
            hostname=self._hostname,
            received_at=now,
            protocol="ESMTPSA",  # RFC 3848: ESMTP with STARTTLS (or TLS) and AUTH
        )
        # No "for <recipient>": it would name a blind recipient to the others.
        trace = received_header(email_id, arrival, None)
        copy = submitted_email(
            raw,
            parsed,
            tracking,
            author=author,
            envelope=envelope.rcpt_tos,
            trace=trace,
            date=now,
        )
        return NewEmail(
            id=email_id,
            tenant_id=account.tenant_id,
            domain_id=domain.id,
            thread_id=tracking.thread_id,
            # The envelope sender is where bounces go (RFC 5321 section 4.5.5); the From: field
            # is what GET /emails shows, as the client wrote it.
            from_address=envelope.mail_from,
            from_header=copy.from_header,
            to=copy.to,
            cc=copy.cc,
            bcc=copy.bcc,
            reply_to=copy.reply_to,
            subject=copy.subject,
            html=copy.html,
            text=copy.text,
            headers=copy.headers,
            attachments=copy.attachments,
            tags=[],
            message_id=copy.message_id,
            reply_token=tracking.reply_token,
            reply_address=tracking.reply_address,
            reply_domain=tracking.reply_domain,
            raw=copy.raw,
            scheduled_at=None,
            recipients=list(envelope.rcpt_tos),
            source="smtp",
            domain_state=DomainState(
                domain.verified, domain.status, domain.receiving_enabled, domain.reply_domain
            ),
        )
