"""Remote mail servers for delivery tests: aiosmtpd on loopback, in the test's own event loop.

A `Sink` records every message it accepts and every connection it sees, and its answers are the
test's to choose: a reply per RCPT, a reply to the final dot, a stall before answering, a
dropped connection. It is started with `loop.create_server` (no threaded Controller), on any
127.0.0.x address, so DNS can point several MX names at several sinks on one port.

    sink = await Sink.start("127.0.0.2", port)
    sink.data_replies = ["451 4.7.1 Greylisted, try again", None]  # then accept

With a `tls_context` it offers STARTTLS (RFC 3207), or speaks TLS from the first byte with
`implicit_tls` (RFC 8314); with `credentials` it requires AUTH, and only inside TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

ACCEPTED = "250 2.0.0 Ok: queued"


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    peer: str


@dataclass
class SinkHandler:
    """aiosmtpd handler hooks; every attribute is a knob a test may turn."""

    messages: list[Received] = field(default_factory=list)
    # RCPT: recipient -> reply, e.g. {"gone@x.test": "550 5.1.1 No such user"}; others accepted.
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    # Final dot: replies used in turn (None accepts); after the list runs out, accept.
    data_replies: list[str | None] = field(default_factory=list)
    # DATA behaviours, checked in this order.
    drop_on_data: bool = False  # close the connection instead of answering the final dot
    record_then_stall: bool = False  # store the message, then never answer (answer lost)
    stall_on_data: bool = False  # never answer, store nothing
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ends a stall (no reply)
    gate: asyncio.Event | None = None  # when set by a test, DATA waits for it, then goes on
    data_started: asyncio.Event = field(default_factory=asyncio.Event)
    # One item per DATA that arrived (its recipients), before any stall or gate: a test awaits
    # these instead of polling. Share one queue between sinks to watch them all.
    arrivals: asyncio.Queue[list[str]] = field(default_factory=asyncio.Queue)
    received_one: asyncio.Event = field(default_factory=asyncio.Event)
    # Offer PIPELINING (RFC 2920), as Postfix, Exim and the large providers do: the client
    # then sends MAIL, RCPT and DATA in one write. aiosmtpd reads them in order either way.
    pipelining: bool = True

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.rcpt_replies.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_started.set()
        self.arrivals.put_nowait(list(envelope.rcpt_tos))
        content = envelope.original_content or b""
        received = Received(
            str(envelope.mail_from),
            list(envelope.rcpt_tos),
            content,
            session.ssl is not None,
            str(session.peer),
        )
        if self.gate is not None:
            await self.gate.wait()
        if self.drop_on_data:
            assert server.transport is not None
            server.transport.abort()
            return "421 4.4.2 gone"  # never reaches the client
        if self.record_then_stall:
            self._record(received)
            await self.release.wait()
            return "421 4.4.2 stalled"
        if self.stall_on_data:
            await self.release.wait()
            return "421 4.4.2 stalled"
        reply = self.data_replies.pop(0) if self.data_replies else None
        if reply is not None:
            return reply
        self._record(received)
        return ACCEPTED

    def _record(self, received: Received) -> None:
        self.messages.append(received)
        self.received_one.set()


class CountingSMTP(SMTP):  # type: ignore[misc]
    """aiosmtpd's protocol, counting connections for the sink."""

    def __init__(self, sink: Sink, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sink = sink

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            self._sink._opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._sink._closed(self)


class Sink:
    def __init__(self, handler: SinkHandler) -> None:
        self.handler = handler
        self.server: asyncio.Server | None = None
        self.host = ""
        self.port = 0
        self.connections = 0
        self.active = 0
        self.max_active = 0
        self.protocols: set[SMTP] = set()  # the sessions open now

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    @classmethod
    async def start(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        require_starttls: bool = False,
        credentials: tuple[str, str] | None = None,
        enable_smtputf8: bool = True,
        hostname: str = "sink.test",
    ) -> Sink:
        sink = cls(SinkHandler())
        loop = asyncio.get_running_loop()

        def authenticator(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            ok = isinstance(data, LoginPassword) and credentials is not None
            ok = ok and (data.login.decode(), data.password.decode()) == credentials
            # handled=False: aiosmtpd then answers 535 5.7.8 itself.
            return AuthResult(success=ok, handled=False)

        def factory() -> SMTP:
            with warnings.catch_warnings():
                # "Requiring AUTH while not requiring TLS": said of implicit TLS, which it is.
                warnings.simplefilter("ignore", UserWarning)
                return make()

        def make() -> SMTP:
            return CountingSMTP(
                sink,
                sink.handler,
                hostname=hostname,
                tls_context=None if implicit_tls else tls_context,
                require_starttls=require_starttls,
                enable_SMTPUTF8=enable_smtputf8,
                auth_required=credentials is not None,
                # aiosmtpd only counts STARTTLS as TLS; an implicit-TLS session is TLS too.
                auth_require_tls=not implicit_tls,
                authenticator=authenticator if credentials is not None else None,
                loop=loop,
            )

        sink.server = await loop.create_server(
            factory, host=host, port=port, ssl=tls_context if implicit_tls else None
        )
        sink.host = host
        sink.port = sink.server.sockets[0].getsockname()[1]
        return sink

    def _opened(self, protocol: SMTP) -> None:
        self.connections += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.protocols.add(protocol)

    def _closed(self, protocol: SMTP) -> None:
        self.active -= 1
        self.protocols.discard(protocol)

    def hang_up(self) -> None:
        """Close every open session from the server's side, as an idle timeout would."""
        for protocol in list(self.protocols):
            if protocol.transport is not None:
                protocol.transport.close()

    def received_by(self, recipient: str) -> list[Received]:
        return [m for m in self.messages if recipient in m.rcpt_tos]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Until `predicate()` holds; the sink's own events drive the checks."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self.handler.received_one.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.handler.received_one.wait(), 0.05)

    async def stop(self) -> None:
        self.handler.release.set()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5.0)
