"""The SMTP protocol engine of the MX: aiosmtpd's state machine with a modern MX's edges.

aiosmtpd (pinned in pyproject.toml: this subclass relies on its internals) keeps RFC order and
the verbs' parsing; the loop that reads command lines and dispatches them is this class's own.
This subclass adds what an internet-facing MX needs: a connection cap answered with 421,
an EHLO that advertises PIPELINING and ENHANCEDSTATUSCODES, enhanced codes on every reply, a
DATA reader that takes the message in blocks instead of line by line, ends DATA at CRLF.CRLF
only, refuses a message with a bare LF or CR in it (or, if so configured, normalises them as
Postfix 3.9 does by default), and defers a message that would take the listener's sessions past
the memory they may hold (452 4.3.1).
Decisions stay with the handler (`mta.mx.handler`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import ssl
from dataclasses import dataclass
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, syntax

from mta import metrics
from mta.smtp.data import DataAssembler, DataBudget
from policy import replies
from policy.inbound.addresses import envelope_address_refusal
from policy.settings import BareNewline

log = logging.getLogger(__name__)

# DATA is read in blocks of up to this many bytes; while one is being taken, up to twice this
# much may wait in the session's buffer before the socket is no longer read (StreamReader's
# flow control), so a large message never sits in memory twice as it arrives.
DATA_BLOCK = 256 * 1024

# Unknown verbs a session may send; the next one closes it (502), as aiosmtpd's loop did: a
# client speaking another protocol, or a script feeding a file, gets nowhere for long.
UNKNOWN_COMMANDS_ALLOWED = 4

# An RFC 5321 path in its everyday form: <local@domain> or the null path <>, where neither part
# holds a space, quote, bracket, comma, colon, semicolon, parenthesis or backslash. Anything
# else (quoted local parts, source routes, address literals) goes to aiosmtpd's full parser.
_PLAIN_PATH = re.compile(r'<((?:[^\s<>"@()\[\]\\,;:]+@[^\s<>"@()\[\]\\,;:]+)?)>(.*)', re.DOTALL)


@dataclass
class ConnectionGate:
    """Counts open connections across one listener; past `limit` new ones get 421 4.7.0."""

    limit: int
    active: int = 0
    draining: bool = False

    def enter(self) -> bool:
        if self.draining or self.active >= self.limit:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1


def _handler_hooks(handler: Any) -> dict[str, Any]:
    """The handler's `handle_*` hooks, bound once per handler (one handler serves a listener).

    EHLO is left out: this class answers EHLO itself. aiosmtpd only reads this table.
    """
    hooks: dict[str, Any] | None = getattr(handler, "_opensend_hooks", None)
    if hooks is None:
        hooks = {
            name.removeprefix("handle_"): getattr(handler, name)
            for name in dir(handler)
            if name.startswith("handle_") and name != "handle_EHLO"
        }
        handler._opensend_hooks = hooks
    return hooks


# Replies as written, by what the engine or the handler passed to `push`.
_WIRE_LINES: dict[Any, bytes] = {}
_FIXED_REPLIES = frozenset(replies.ENGINE_REPLIES) | frozenset(
    str(reply) for reply in replies.CATALOGUE.values()
)


class _CommandSizeLimits(dict[str, int]):
    """aiosmtpd's per-command line limits: the protocol's default (RFC 5321 section 4.5.3.1.4's
    512 octets) unless an extension raised a command's (SIZE, SMTPUTF8 on MAIL)."""

    def __init__(self, default: int) -> None:
        super().__init__()
        self._default = default

    def __missing__(self, command: str) -> int:
        return self._default


class _LineTooLong(Exception):
    """A command line past the protocol's limit, read and dropped (MXProtocol._command_line)."""


class MXProtocol(SMTP):
    """One SMTP connection. Keyword arguments beyond aiosmtpd's are ours, typed.

    The submission ports use this engine too (mta.submission.protocol), with their own metrics.
    """

    connections_metric = metrics.CONNECTIONS
    active_metric = metrics.CONNECTIONS_ACTIVE
    refused_metric = metrics.MESSAGES_REFUSED
    offers_smtputf8 = True  # RFC 6531: advertised in EHLO, and the SMTPUTF8 MAIL parameter taken

    def __init__(
        self,
        handler: Any,
        *,
        gate: ConnectionGate,
        registry: set[MXProtocol],
        data_timeout: float,
        data_size_limit: int,
        data_budget: DataBudget,
        bare_newline: BareNewline,
        hostname: str,
        ident: str,
        tls_context: ssl.SSLContext | None,
        timeout: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        # aiosmtpd's own __init__ inspects the handler and this class with inspect.getmembers on
        # every connection (about 5% of the MX's CPU at load). This does the same setup with
        # the method tables computed once per class. It mirrors aiosmtpd 1.4.6, pinned.
        self.__ident__ = ident
        self.loop = loop
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(loop=loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        self.event_handler = handler
        self.data_size_limit = data_size_limit
        # aiosmtpd decodes command arguments as UTF-8 (surrogate escapes for the rest) only with
        # this on; off, it answers non-ASCII with a bare "500". Whether SMTPUTF8 is offered is
        # `offers_smtputf8`, and what a non-ASCII address gets is policy's (address_refusal).
        self.enable_SMTPUTF8 = True
        self._decode_data = False
        # aiosmtpd's defaultdict closes over the protocol: one of the reference cycles that
        # leave a closed session to the cyclic collector (others remain: the stream writer).
        self.command_size_limits = _CommandSizeLimits(self.command_size_limit)
        self.hostname = hostname
        self.tls_context = tls_context
        self.require_starttls = False
        self._timeout_duration = timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = True
        self._proxy_timeout = None
        self._authenticator = None
        self._auth_callback = None
        self._auth_required = False
        self._auth_methods = {}  # the MX offers no AUTH (RFC 6409: that is submission's job)
        self._handle_hooks = _handler_hooks(handler)
        self._ehlo_hook_ver = None
        self._enforce_call_limit = False

        self._gate = gate
        self._registry = registry
        self._data_timeout = data_timeout
        self._refuse_bare_newline = bare_newline is BareNewline.REJECT
        self._data_budget = data_budget
        self._admitted = False
        self.in_data = False  # between DATA and its final reply: never cut off in a drain

    @classmethod
    @functools.cache
    def verbs(cls) -> frozenset[str]:
        """The SMTP verbs this class answers: its `smtp_*` methods, found once per class."""
        return frozenset(
            name.removeprefix("smtp_") for name in dir(cls) if name.startswith("smtp_")
        )

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starting = self._original_transport is None and self.transport is None
        if starting:
            self._admitted = self._gate.enter()
            outcome = "served" if self._admitted else "refused"
            metrics.labelled(self.connections_metric, outcome).inc()
            if self._admitted:
                self.active_metric.inc()
                self._registry.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted:
            self._admitted = False
            self._gate.leave()
            self.active_metric.dec()
            self._registry.discard(self)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if not self._admitted:
            # RFC 5321 section 3.1: a server may answer the connection with 421 and close it.
            reply = (
                replies.S421_SHUTTING_DOWN
                if self._gate.draining
                else replies.S421_TOO_MANY_CONNECTIONS
            )
            await self.push(f"{reply.code} {reply.enhanced} {self.hostname} {reply.text}")
            assert self.transport is not None
            self.transport.close()
            return
        try:
            await self.push(f"220 {self.hostname} {self.__ident__}")
            await self._serve_commands()
        finally:
            # However the session ended (QUIT, a hang-up, the task cancelled when the client's
            # EOF arrived): the connection is closed, not left half-open.
            self._writer.close()

    def _open(self) -> bool:
        """Whether the session still reads commands: not once it is closing (QUIT, a lockout,
        too many unknown commands), though the client may have sent more."""
        transport: Any = self.transport
        return transport is not None and not transport.is_closing()

    async def _serve_commands(self) -> None:
        """Read and answer command lines until the session ends (RFC 5321 section 4.1.1).

        This takes the place of aiosmtpd's loop, which runs the same steps with two logging
        calls per command (evaluated even when nothing is logged) and a command table built per
        connection: about 30 us of the MX's CPU a message (tests/perf/README.md, MX). The
        verbs themselves, and their order rules, are still aiosmtpd's `smtp_*` methods.
        """
        unknown_allowed = UNKNOWN_COMMANDS_ALLOWED
        verbs = self.verbs()
        while self._open():
            try:
                line = await self._command_line()
            except _LineTooLong:
                await self.push(str(replies.S500_COMMAND_TOO_LONG))
                continue
            if line is None:
                return  # the client hung up, perhaps mid-line
            verb_bytes, _, arg_bytes = line.partition(b" ")
            try:
                verb = verb_bytes.decode("ascii").upper()
            except UnicodeDecodeError:
                verb = ""
            if not verb:
                await self.push(str(replies.S500_SYNTAX_ERROR))
                continue
            assert self.session is not None  # set at connection_made and at STARTTLS
            limit = (
                self.command_size_limits[verb]
                if self.session.extended_smtp
                else self.command_size_limit
            )
            if len(line) > limit:  # RFC 5321 section 4.5.3.1.4, raised by SIZE and SMTPUTF8
                await self.push(str(replies.S500_COMMAND_TOO_LONG))
                continue
            if verb not in verbs:
                unknown_allowed -= 1
                if unknown_allowed < 0:
                    log.info("too many unknown commands", extra=self.client_facts())
                    await self.push(str(replies.S502_TOO_MANY_UNKNOWN))
                    assert self.transport is not None
                    self.transport.close()
                else:
                    await self.push(str(replies.S500_UNKNOWN_COMMAND))  # never echoed
                continue
            # Arguments may be UTF-8 (RFC 6531), or any bytes from a client that did not say:
            # surrogate escapes keep them, and the verbs decide what they accept.
            arg = arg_bytes.strip().decode("utf-8", "surrogateescape") if arg_bytes else None
            self._reset_timeout()
            try:
                await getattr(self, f"smtp_{verb}")(arg)
            except Exception as error:  # one command's fault ends no session
                if isinstance(error, ConnectionError) and not self._open():
                    return  # the client is gone
                await self.push(await self._answer_to(error))

    async def _answer_to(self, error: Exception) -> str:
        """The reply to a command that raised: the handler's (it logs, and answers 451); if
        that raises too, 451 all the same, never the exception's text."""
        try:
            return await self.handle_exception(error)
        except asyncio.CancelledError:
            raise  # the session was closed under the command: nobody to answer
        except Exception:
            log.exception("unexpected error answering an SMTP session's error")
            return str(replies.S451_LOCAL_ERROR)

    async def _command_line(self) -> bytes | None:
        """The next command line without its CRLF, or None once the client has hung up. A line
        past the protocol's limit is read to its end and dropped: _LineTooLong."""
        reader = self._reader
        try:
            try:
                return (await reader.readuntil(b"\n")).rstrip(b"\r\n")
            except asyncio.LimitOverrunError as overrun:
                consumed = overrun.consumed
            while True:
                await reader.readexactly(consumed)
                try:
                    await reader.readuntil(b"\n")
                    raise _LineTooLong
                except asyncio.LimitOverrunError as overrun:
                    consumed = overrun.consumed
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def handle_exception(self, error: Exception) -> str:
        transport: Any = self.transport
        if transport is None or transport.is_closing():
            # The server closed this session (a lockout, too many errors) or the client did,
            # while the engine still held commands it had read; asyncio's TLS transport raises
            # on any use after its close. Not a fault, and nobody to answer: end the session's
            # task as a lost connection ends it.
            log.debug("session closed under a command", extra={"error": repr(error)})
            raise asyncio.CancelledError
        status: str = await super().handle_exception(error)  # the handler's: log, then 451
        return status

    def _timeout_cb(self) -> None:
        # RFC 5321 section 4.5.3.2: tell the client why before closing an idle connection.
        transport: Any = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(f"{replies.S421_TIMEOUT}\r\n".encode())
        super()._timeout_cb()

    def close_for_shutdown(self) -> None:
        transport: Any = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(f"{replies.S421_SHUTTING_DOWN}\r\n".encode())
            transport.close()

    @property
    def tls_version(self) -> str | None:
        """The TLS version of this session, after STARTTLS or from the first byte (port 465)."""
        transport: Any = self.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        version: str | None = ssl_object.version() if ssl_object is not None else None
        return version

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd's version runs the RFC 5322 header grammar and declares a class on every
        # call: about a tenth of the MX's CPU. Plain paths need neither.
        found = _PLAIN_PATH.match(arg.lstrip())
        if found is None:
            address, rest = super()._getaddr(arg)
            return address, rest
        # aiosmtpd spells the null reverse-path "<>": an empty string would read as "no MAIL".
        return found.group(1) or "<>", found.group(2)

    def address_refusal(self, address: str, *, sender: bool) -> replies.Reply | None:
        """The reply refusing a MAIL or RCPT address for its characters, or None (policy's)."""
        assert self.envelope is not None
        return envelope_address_refusal(
            address,
            declared_smtputf8=self.envelope.smtp_utf8,
            offers_smtputf8=self.offers_smtputf8,
            sender=sender,
        )

    async def push(self, status: AnyStr) -> None:
        transport: Any = self.transport
        if transport is None or transport.is_closing():
            # The client is gone (a cut connection, a failed TLS session): nobody to answer,
            # and asyncio's TLS transport raises on a write after its close.
            return
        line = _WIRE_LINES.get(status)
        if line is None:
            line = self._wire_line(status)
        transport.write(line)
        # asyncio's FlowControlMixin: paused while the client is not reading our replies; then
        # wait, as StreamWriter.drain() would (which also raises once the connection is lost).
        if self._paused:  # type: ignore[attr-defined]
            await self._drain_helper()  # type: ignore[attr-defined]

    def _wire_line(self, status: AnyStr) -> bytes:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        greeting = text.startswith(f"220 {self.hostname} ")
        helo = text == f"250 {self.hostname}"  # aiosmtpd's answer to HELO
        if helo:
            text = str(replies.S250_HELO.format(hostname=self.hostname))
        elif not greeting:  # RFC 2034 section 3: every reply but the greeting has a code
            text = replies.engine_reply(text)
        line = f"{text}\r\n".encode()
        # Fixed replies are kept as bytes (a few dozen, and a greeting and a HELO answer per
        # listener); a reply that quotes the client is made each time.
        if (greeting or helo or status in _FIXED_REPLIES) and len(_WIRE_LINES) < 256:
            _WIRE_LINES[status] = line
        return line

    # -- commands -----------------------------------------------------------------------------

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        if not hostname:
            await self.push(str(replies.S501_EHLO_SYNTAX))
            return
        self._set_rset_state()
        assert self.session is not None
        self.session.extended_smtp = True
        self.session.host_name = hostname
        lines = [self.hostname, *self.extensions()]
        # One write for the whole multiline reply (RFC 5321 section 4.2.1).
        text = "".join(f"250-{line}\r\n" for line in lines[:-1]) + f"250 {lines[-1]}\r\n"
        self._writer.write(text.encode("ascii"))
        await self._writer.drain()

    def extensions(self) -> list[str]:
        """The EHLO keywords of this session (RFC 5321 section 4.1.1.1)."""
        lines = ["PIPELINING"]
        if self.data_size_limit:
            lines.append(f"SIZE {self.data_size_limit}")  # RFC 1870
            self.command_size_limits["MAIL"] = 512 + 26
        lines.append("8BITMIME")  # RFC 6152
        if self.offers_smtputf8:
            lines.append("SMTPUTF8")  # RFC 6531
            self.command_size_limits["MAIL"] += 10
        lines.append("ENHANCEDSTATUSCODES")  # RFC 2034
        if self.tls_context and self.tls_version is None:
            lines.append("STARTTLS")  # RFC 3207
        return lines

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        """RFC 3207, through the event loop's own TLS (uvloop's is native code) rather than
        aiosmtpd's hand-made asyncio.sslproto layer: a third of the CPU of a STARTTLS session."""
        if arg:
            await self.push(str(replies.S501_NO_ARGUMENT))
            return
        if self.tls_version is not None:  # RFC 3207 section 4: no TLS inside TLS
            await self.push(str(replies.S503_ALREADY_TLS))
            return
        if not self.tls_context:
            await self.push(str(replies.S454_TLS_NOT_AVAILABLE))
            return
        await self.push(str(replies.S220_READY_TLS))
        # RFC 3207 section 4.2: commands pipelined in the clear are discarded (CVE-2011-0411).
        # Now, not after the handshake, when the client's first command in TLS may be here.
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        try:
            await self._writer.start_tls(self.tls_context)
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as error:
            # A client without a usable TLS stack, or a scanner: routine, and nothing to say
            # in the clear any more. The loop closes the connection; make sure of it.
            log.info(
                "TLS handshake failed",
                extra={"peer": self.session.peer if self.session else None, "error": str(error)},
            )
            broken: Any = self.transport
            if broken is not None and not broken.is_closing():
                broken.close()
            return
        transport: Any = self._writer.transport
        self.transport = transport
        # The session starts over, as if the client had just connected (RFC 3207 section 4.2).
        peer = self.session.peer if self.session is not None else None
        self._set_rset_state()
        self.session = self._create_session()
        self.session.peer = peer
        self.session.ssl = {
            name: transport.get_extra_info(name)
            for name in ("ssl_object", "peercert", "cipher", "compression")
        }
        self._reset_timeout()

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.mail_from:
            await self.push(str(replies.S503_MAIL_FIRST))
            return
        if not self.envelope.rcpt_tos:
            # RFC 2920 section 3.1: with pipelining, DATA after every RCPT failed gets 554 or 503.
            await self.push(str(replies.S554_NO_VALID_RECIPIENTS))
            return
        if arg:
            await self.push(str(replies.S501_NO_ARGUMENT))
            return
        await self.push(str(replies.S354_DATA))
        self._reset_timeout(self._data_timeout)
        self.in_data = True
        try:
            await self._receive_message()
        finally:
            self.in_data = False

    async def _receive_message(self) -> None:
        assert self.envelope is not None
        assembler = DataAssembler(
            self.data_size_limit or 0,
            self._data_budget,
            refuse_bare_newline=self._refuse_bare_newline,
        )
        try:
            if not await self._read_data(assembler):
                return  # the connection closed mid-DATA; nothing was accepted
            refusal = None
            if assembler.too_big:
                refusal = "size", replies.S552_TOO_BIG
            elif assembler.over_budget:
                refusal = "memory", replies.S452_DATA_MEMORY
            elif assembler.bare_newline and self._refuse_bare_newline:
                refusal = "bare_newline", replies.S550_BARE_NEWLINE
            if refusal is not None:
                reason, reply = refusal
                self.refused_metric.labels(reason).inc()
                self.log_refusal(reason)
                self._set_post_data_state()
                await self.push(str(reply))
                return
            content = assembler.content()
            self.envelope.content = content
            self.envelope.original_content = content
            try:
                status = await self._call_handler_hook("DATA")
            finally:
                # Even when the hook raised (answered 451 by handle_exception), the transaction
                # is over: the client's next MAIL starts a new one rather than meeting "503
                # nested". A new envelope also lets go of the content.
                self._set_post_data_state()
        finally:
            assembler.release()
        await self.push(status)

    def log_refusal(self, reason: str) -> None:
        """One line for a message refused or deferred after DATA, naming the client (Postfix
        logs "bare <LF> received from client[ip]" the same way)."""
        log.info("message refused after DATA", extra={"reason": reason, **self.client_facts()})

    def client_facts(self) -> dict[str, Any]:
        """Who is sending, for a log line."""
        session = self.session
        return {
            "peer": session.peer[0] if session and session.peer else None,
            "helo": session.host_name if session else None,
            "mail_from": self.envelope.mail_from if self.envelope else None,
        }

    @syntax("HELP [command]")
    async def smtp_HELP(self, arg: str) -> None:
        # One fixed answer: aiosmtpd's lists its method table and echoes the argument.
        await self.push(str(replies.S214_HELP))

    @syntax("VRFY <address>")
    async def smtp_VRFY(self, arg: str) -> None:
        # RFC 5321 section 3.5.3: 252 says nothing about whether the mailbox exists, so VRFY
        # is no directory-harvest tool; the argument is neither looked up nor echoed.
        if await self.check_auth_needed("VRFY"):
            return
        await self.push(str(replies.S252_CANNOT_VRFY if arg else replies.S501_VRFY_SYNTAX))

    async def smtp_AUTH(self, arg: str) -> None:  # no @syntax: HELP must not list it
        # Port 25 takes mail for our domains only; authenticated sending is on the submission
        # ports (RFC 6409), so the MX neither offers nor accepts AUTH.
        await self.push(str(replies.S502_AUTH_NOT_HERE))

    async def _read_data(self, assembler: DataAssembler) -> bool:
        """Read up to CRLF.CRLF in blocks into `assembler`, each normalised and unstuffed as it
        comes (mta.smtp.data); False if the client went away first. A refused message
        (oversized, over the memory budget, a bare LF) is read to its end all the same, so the
        refusal answers the right command (RFC 5321 section 4.2.5)."""
        reader: Any = self._reader  # StreamReader internals: aiosmtpd is pinned
        saved_limit = reader._limit
        reader._limit = DATA_BLOCK
        try:
            while True:
                block = await reader.read(DATA_BLOCK)
                if not block:
                    return False  # the client closed the connection
                after = assembler.feed(block)
                if after >= 0:
                    break
        except ConnectionError:
            return False
        finally:
            reader._limit = saved_limit
        if after:
            # Commands pipelined behind the message are the session's again (RFC 2920).
            reader._buffer[0:0] = block[len(block) - after :]
        return True
