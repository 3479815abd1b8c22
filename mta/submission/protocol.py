"""The SMTP engine of the submission ports: the MX's protocol with AUTH on (RFC 6409, RFC 4954).

AUTH PLAIN and LOGIN are offered only inside TLS (RFC 4954 section 4, RFC 8314): after STARTTLS
on port 587, from the first byte on port 465. Before TLS, AUTH is 538 5.7.11 and MAIL 530 5.7.0
("STARTTLS first"); inside TLS, MAIL before AUTH is 530 5.7.0 ("authentication required").
This class reads the SASL exchange; whether the credentials hold, and what a failure costs, is
the handler's (mta.submission.handler) to say. SMTPUTF8 is not offered: outbound delivery does not
speak it, so an address that needs it could not be delivered.
"""

from __future__ import annotations

import asyncio
import binascii
from base64 import b64decode
from typing import Any

from aiosmtpd.smtp import MISSING, syntax

from mta import metrics
from mta.smtp.protocol import MXProtocol
from mta.submission.auth import Account
from mta.submission.handler import SubmissionHandler
from policy import replies

MECHANISMS = ("LOGIN", "PLAIN")  # RFC 4616 PLAIN; LOGIN (draft-murchison-sasl-login) for Outlook


class SubmissionProtocol(MXProtocol):
    connections_metric = metrics.SUBMISSION_CONNECTIONS
    active_metric = metrics.SUBMISSION_CONNECTIONS_ACTIVE
    refused_metric = metrics.SUBMISSION_MESSAGES_REFUSED
    offers_smtputf8 = False

    def __init__(self, handler: SubmissionHandler, **options: Any) -> None:
        super().__init__(handler, **options)
        self.event_handler: SubmissionHandler = handler
        self._auth_required = True  # aiosmtpd checks it before HELP, VRFY, MAIL, RCPT, DATA

    def client_facts(self) -> dict[str, Any]:
        facts = super().client_facts()
        account = self.session.auth_data if self.session else None
        facts["tenant"] = str(account.tenant_id) if isinstance(account, Account) else None
        return facts

    def extensions(self) -> list[str]:
        lines = super().extensions()
        if self.tls_version is not None:  # RFC 4954 section 4: never offered in the clear
            lines.insert(lines.index("ENHANCEDSTATUSCODES"), "AUTH " + " ".join(MECHANISMS))
        return lines

    async def check_auth_needed(self, caller_method: str) -> bool:
        assert self.session is not None
        if self.session.authenticated:
            return False
        if self.tls_version is None:
            await self.push(str(replies.S530_STARTTLS_FIRST))  # RFC 3207 section 4
        else:
            await self.push(str(replies.S530_AUTH_REQUIRED))  # RFC 4954 section 6
        return True

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str | None) -> None:
        if await self.check_helo_needed("EHLO"):
            return
        assert self.session is not None and self.envelope is not None
        problem = self._auth_out_of_sequence()
        if problem is not None:
            await self.push(str(problem))
            return
        words = (arg or "").split()  # aiosmtpd passes None for "AUTH" with no argument
        if not 1 <= len(words) <= 2:
            await self.push(str(replies.S501_AUTH_SYNTAX))
            return
        mechanism = words[0].upper()
        if mechanism not in MECHANISMS:
            await self.push(str(replies.S504_AUTH_MECHANISM))
            return
        refused = self.event_handler.login_refused(self.session)
        if refused is not None:
            await self.push(str(refused.reply))
            return
        initial = words[1] if len(words) == 2 else None
        credentials = await (self._plain(initial) if mechanism == "PLAIN" else self._login(initial))
        if credentials is None:
            return  # cancelled or unreadable: answered already
        user, password = credentials
        login = await self.event_handler.login(self.session, mechanism, user, password)
        if login.verdict.delay:
            # RFC 4954 section 4: a server may delay a failure's answer to slow guessing down.
            await asyncio.sleep(login.verdict.delay)
        if login.account is not None:
            session: Any = self.session  # aiosmtpd's Session: auth_data is ours to fill
            session.authenticated = True
            session.auth_data = login.account
        await self.push(str(login.verdict.reply))
        if login.verdict.close and self.transport is not None:
            self.transport.close()

    def _auth_out_of_sequence(self) -> replies.Reply | None:
        assert self.session is not None and self.envelope is not None
        if not self.session.extended_smtp:
            return replies.S503_EHLO_BEFORE_AUTH
        if self.tls_version is None:
            return replies.S538_ENCRYPTION_REQUIRED
        if self.session.authenticated:
            return replies.S503_ALREADY_AUTHENTICATED
        if self.envelope.mail_from:
            return replies.S503_AUTH_IN_TRANSACTION  # RFC 4954 section 4
        return None

    async def _response(self, initial: str | None, challenge: str) -> bytes | None:
        """The client's answer: the initial response ("=" is an empty one, RFC 4954 section 4)
        or the reply to a 334 challenge. None when cancelled or not base64 (answered)."""
        if initial is None:
            answer = await self.challenge_auth(challenge)  # handles "*" and bad base64 itself
            return None if answer is MISSING else bytes(answer)
        if initial == "=":
            return b""
        try:
            return b64decode(initial, validate=True)
        except binascii.Error:
            await self.push(str(replies.S501_AUTH_CREDENTIALS))
            return None

    async def _plain(self, initial: str | None) -> tuple[str, str] | None:
        """RFC 4616: [authzid] NUL authcid NUL passwd."""
        message = await self._response(initial, "")
        if message is None:
            return None
        parts = message.split(b"\x00")
        if len(parts) != 3:
            await self.push(str(replies.S501_AUTH_CREDENTIALS))
            return None
        return _text(parts[1]), _text(parts[2])

    async def _login(self, initial: str | None) -> tuple[str, str] | None:
        user = await self._response(initial, "Username:")
        if user is None:
            return None
        password = await self._response(None, "Password:")
        if password is None:
            return None
        return _text(user), _text(password)


def _text(value: bytes) -> str:
    # API keys are ASCII; anything undecodable simply fails to match one.
    return value.decode("utf-8", "replace")
