"""SMTP sessions to remote hosts (aiosmtplib): one connection, several transactions.

A session says EHLO as OPENSEND_HOSTNAME, upgrades with STARTTLS when offered (RFC 3207;
unverified, as opportunistic TLS between MTAs is, RFC 7435) or when a relay requires it,
authenticates to a relay only inside TLS (RFC 4954 section 4), then carries transactions:
MAIL, one RCPT per recipient, DATA, each recipient ending with its own answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import aiosmtplib

from mta.delivery import smtp_pipelining as pipelining
from mta.delivery.routes import Hop
from policy.delivery import result as results
from policy.delivery.result import SmtpAnswer, Stage
from policy.replies import Reply
from policy.settings import RelayTls

# RFC 6531 section 3.5: a non-ASCII address for a server without SMTPUTF8 cannot be sent.
NO_SMTPUTF8 = Reply(553, "5.6.7", "The recipient's mail server does not accept this address")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """RFC 5321 section 4.5.3.2 minimums, except connect (Postfix's smtp_connect_timeout)."""

    connect: float = 30.0
    command: float = 300.0  # greeting, EHLO, MAIL, RCPT, RSET: 5 minutes
    data_done: float = 600.0  # the reply to the final dot: 10 minutes


class SessionFailed(Exception):
    """No transaction can be attempted on this host now; `answer` says why (always temporary
    in effect: policy.delivery.result treats session stages as deferrals)."""

    def __init__(self, answer: SmtpAnswer) -> None:
        super().__init__(str(answer))
        self.answer = answer


@functools.lru_cache(maxsize=32)
def tls_context(verify: bool, cafile: Path | None) -> ssl.SSLContext:
    """Built once per kind: loading the CA store takes milliseconds."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _failure(error: BaseException, stage: Stage) -> SmtpAnswer:
    if isinstance(error, aiosmtplib.SMTPConnectResponseError):
        stage = Stage.GREETING  # connected, but the banner was not 220
    if isinstance(error, aiosmtplib.SMTPResponseException) and error.code >= 200:
        return SmtpAnswer.from_reply(error.code, error.message, stage)
    if isinstance(error, TimeoutError):
        return SmtpAnswer.ours(results.TIMED_OUT, stage, type(error).__name__)
    if isinstance(error, aiosmtplib.SMTPConnectError) and stage is Stage.CONNECT:
        return SmtpAnswer.ours(results.NO_ANSWER, stage, str(error))
    if isinstance(error, ConnectionError | OSError):
        return SmtpAnswer.ours(results.CONNECTION_LOST, stage, str(error) or type(error).__name__)
    return SmtpAnswer.ours(results.PROTOCOL_ERROR, stage, str(error) or type(error).__name__)


class SmtpSession:
    """One open connection to one hop, ready for transactions."""

    def __init__(self, hop: Hop, client: aiosmtplib.SMTP, timeouts: Timeouts) -> None:
        self.hop = hop
        self._client = client
        self._timeouts = timeouts
        self.opened_at = time.monotonic()
        self.last_used = self.opened_at
        self.transactions = 0
        self._clean = True  # no transaction left half-done on the server

    @property
    def remote_host(self) -> str:
        """As Postfix logs relay=: the name, the address and the port."""
        return f"{self.hop.host}[{self.hop.address}]:{self.hop.port}"

    @property
    def usable(self) -> bool:
        return self._client.is_connected

    @classmethod
    async def open(cls, hop: Hop, *, helo: str, timeouts: Timeouts) -> SmtpSession:
        """Connect, greet, secure and authenticate; SessionFailed if any of it fails.

        A failed opportunistic handshake is retried once without TLS, as Postfix does at
        smtp_tls_security_level=may: an MTA with a broken TLS stack still gets its mail.
        """
        try:
            return await cls._open(hop, helo=helo, timeouts=timeouts, try_tls=True)
        except SessionFailed as failed:
            if hop.tls is not RelayTls.OPPORTUNISTIC or failed.answer.stage is not Stage.STARTTLS:
                raise
        return await cls._open(hop, helo=helo, timeouts=timeouts, try_tls=False)

    @classmethod
    async def _open(cls, hop: Hop, *, helo: str, timeouts: Timeouts, try_tls: bool) -> SmtpSession:
        implicit = hop.tls is RelayTls.IMPLICIT
        client = aiosmtplib.SMTP(
            hostname=hop.address,
            port=hop.port,
            local_hostname=helo,
            timeout=timeouts.command,
            use_tls=implicit,
            start_tls=False,
            tls_context=tls_context(hop.verify, hop.cafile) if implicit else None,
        )
        stage = Stage.CONNECT
        try:
            await client.connect(timeout=timeouts.connect)
            stage = Stage.EHLO
            await cls._hello(client)
            if not implicit and try_tls and client.supports_extension("starttls"):
                stage = Stage.STARTTLS
                await client.starttls(
                    server_hostname=hop.host, tls_context=tls_context(hop.verify, hop.cafile)
                )
                stage = Stage.EHLO
                await cls._hello(client)  # RFC 3207 section 4.2: forget what was said before
            encrypted = client.get_transport_info("sslcontext") is not None
            if hop.tls is not RelayTls.OPPORTUNISTIC and not encrypted:
                raise SessionFailed(SmtpAnswer.ours(results.TLS_UNAVAILABLE, Stage.STARTTLS))
            if hop.username is not None:
                stage = Stage.AUTH
                if not encrypted:  # never a password in the clear (RFC 4954 section 4)
                    raise SessionFailed(SmtpAnswer.ours(results.TLS_UNAVAILABLE, Stage.AUTH))
                await client.login(hop.username, hop.password or "")
        except SessionFailed:
            client.close()
            raise
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as error:
            client.close()
            raise SessionFailed(_failure(error, stage)) from error
        return cls(hop, client, timeouts)

    @staticmethod
    async def _hello(client: aiosmtplib.SMTP) -> None:
        """EHLO, or HELO for a server that does not speak ESMTP (RFC 5321 section 3.2)."""
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError as refused:
            if refused.code >= 500:
                await client.helo()
            else:
                raise

    async def send(
        self, sender: str, recipients: Sequence[str], message: bytes
    ) -> dict[str, SmtpAnswer]:
        """One transaction; every recipient gets an answer, nothing raises.

        A refused RCPT answers for its recipient; the reply to the final dot answers for all the
        accepted ones (RFC 5321 section 3.3). If the connection fails half way, the recipients
        not yet answered get a temporary answer of ours.
        """
        answers: dict[str, SmtpAnswer] = {}
        self.transactions += 1
        self._clean = False
        stage = Stage.MAIL
        accepted: list[str] = []
        client = self._client
        try:
            utf8 = not all(a.isascii() for a in (sender, *recipients))
            if utf8 and not client.supports_extension("smtputf8"):
                answer = SmtpAnswer.ours(NO_SMTPUTF8, Stage.MAIL)
                return {recipient: answer for recipient in recipients}
            options = ["SMTPUTF8"] if utf8 else []
            encoding = "utf-8" if utf8 else "ascii"
            protocol = client.protocol
            transport = protocol.transport if protocol is not None else None
            if client.supports_extension("pipelining") and transport is not None:
                # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
                return await self._send_pipelined(
                    cast(asyncio.Transport, transport),
                    sender,
                    recipients,
                    message,
                    options,
                    encoding,
                )
            try:
                await client.mail(sender, options=options, encoding=encoding)
            except aiosmtplib.SMTPSenderRefused as refused:
                answer = SmtpAnswer.from_reply(refused.code, refused.message, Stage.MAIL)
                await self._reset()
                return {recipient: answer for recipient in recipients}
            stage = Stage.RCPT
            for recipient in recipients:
                try:
                    await client.rcpt(recipient, encoding=encoding)
                except aiosmtplib.SMTPRecipientRefused as refused:
                    answers[recipient] = SmtpAnswer.from_reply(
                        refused.code, refused.message, Stage.RCPT
                    )
                else:
                    accepted.append(recipient)
            if not accepted:
                await self._reset()
                return answers
            stage = Stage.DATA
            try:
                reply = await client.data(message, timeout=self._timeouts.data_done)
            except aiosmtplib.SMTPDataError as refused:
                reply = aiosmtplib.SMTPResponse(refused.code, refused.message)
                await self._reset()
            else:
                self._clean = True
            for recipient in accepted:
                answers[recipient] = SmtpAnswer.from_reply(reply.code, reply.message, Stage.DATA)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            self._client.close()
            lost = _failure(error, stage)
            for recipient in recipients:
                answers.setdefault(recipient, lost)
        finally:
            self.last_used = time.monotonic()
        return answers

    async def _send_pipelined(
        self,
        transport: asyncio.Transport,
        sender: str,
        recipients: Sequence[str],
        message: bytes,
        options: list[str],
        encoding: str,
    ) -> dict[str, SmtpAnswer]:
        """`send` with PIPELINING (RFC 2920): MAIL, RCPTs and DATA in one write, the content
        after a 354. Each recipient gets the answer it would get one command at a time."""
        answers: dict[str, SmtpAnswer] = {}
        accepted: list[str] = []
        stage = Stage.MAIL
        group = pipelining.commands(
            pipelining.path(sender, encoding),
            [pipelining.path(r, encoding) for r in recipients],
            [option.encode("ascii") for option in options],
        )
        try:
            async with pipelining.Lent(transport) as replies:
                transport.write(group)
                async with asyncio.timeout(self._timeouts.command):
                    mail = await replies.reply()
                    stage = Stage.RCPT
                    for recipient in recipients:
                        code, text = await replies.reply()
                        if code == 250 or code == 251:
                            accepted.append(recipient)
                        else:
                            answers[recipient] = SmtpAnswer.from_reply(code, text, Stage.RCPT)
                    stage = Stage.DATA
                    data = await replies.reply()
                if mail[0] != 250:
                    # Every RCPT and the DATA failed with it (RFC 2920 section 3.1).
                    answer = SmtpAnswer.from_reply(*mail, Stage.MAIL)
                    answers = dict.fromkeys(recipients, answer)
                    accepted = []
                if data[0] == 354 and not accepted:
                    # A server that took DATA with no recipient: an empty message ends it, and
                    # its reply is not read as an answer (RFC 2920 section 3.1).
                    transport.write(b".\r\n")
                    async with asyncio.timeout(self._timeouts.data_done):
                        await replies.reply()
                elif data[0] == 354:
                    transport.write(pipelining.data_block(message))
                    async with asyncio.timeout(self._timeouts.data_done):
                        data = await replies.reply()
                for recipient in accepted:
                    answers[recipient] = SmtpAnswer.from_reply(*data, Stage.DATA)
                if replies.pending:  # replies to nothing we sent: this session is not trusted
                    raise pipelining.ReplyError("unexpected data after the transaction")
        except (pipelining.ReplyError, OSError, TimeoutError) as error:
            self._client.close()
            lost = _failure(error, stage)
            for recipient in recipients:
                answers.setdefault(recipient, lost)
            return answers
        finally:
            self.last_used = time.monotonic()
        if data[0] != 250:
            await self._reset()  # the transaction did not end with a message: start clean
        else:
            self._clean = True
        return answers

    async def _reset(self) -> None:
        """RSET after an aborted transaction, so the next starts clean (RFC 5321 4.1.1.5)."""
        try:
            await self._client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            self._client.close()
        else:
            self._clean = True

    async def ready_for_reuse(self) -> bool:
        """Before a cached connection carries another message: it must be connected and clean;
        one that idled is probed with RSET first, as Postfix does, since servers drop idle
        sessions (RFC 5321 section 4.5.3.2.7 lets them after 5 minutes, many sooner)."""
        if not self.usable:
            return False
        if not self._clean or time.monotonic() - self.last_used > 1.0:
            await self._reset()
        return self.usable

    async def close(self) -> None:
        """QUIT politely (RFC 5321 section 4.1.1.10), briefly; then drop the connection."""
        if self._client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await self._client.quit(timeout=5.0)
        self._client.close()
