"""Starting and stopping the SMTP listeners (the MX, and the submission ports 587 and 465)
inside the running event loop.

aiosmtpd's threaded Controller is not used: a listener is created with `loop.create_server` in
the same loop as the asyncpg pool, whose connections belong to the loop that made them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mta.mx.fill_in import FillIn
from mta.mx.handler import MXHandler, MXLimits
from mta.smtp.data import DataBudget
from mta.smtp.protocol import ConnectionGate, MXProtocol
from mta.smtp.tls import server_tls_context
from mta.submission.auth import Logins
from mta.submission.handler import SubmissionHandler, SubmissionLimits
from mta.submission.protocol import SubmissionProtocol
from policy.bounces.dsn import late_dsn_maker
from policy.delivery.result import email_status
from policy.settings import ListenAddress, Settings
from policy.submission.throttle import AuthLimits
from policy.tokens import ReplyTokens
from storage.database import Pool
from storage.ids import uuid7
from storage.inbound.inbox import GroupCommitWriter, InboxLookups
from storage.sending.writer import EmailWriter

log = logging.getLogger(__name__)

BANNER_IDENT = "ESMTP OpenSend"


@dataclass
class MXListener:
    server: asyncio.Server
    gate: ConnectionGate
    protocols: set[MXProtocol] = field(default_factory=set)
    port: int = 0  # the bound port, kept after the listener closes
    fill_in: FillIn | None = None  # the MX's; the submission ports store no received mail
    data_budget: DataBudget | None = None  # shared by the listener's sessions (both ports')

    async def drain(self, grace: float) -> None:
        """Stop accepting; let transactions in DATA finish; say 421 to the rest and close.
        Then fill in what was stored unparsed, within what is left of `grace`."""
        self.gate.draining = True
        self.server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.protocols and loop.time() < deadline:
            for protocol in list(self.protocols):
                if not protocol.in_data:
                    protocol.close_for_shutdown()
            await asyncio.sleep(0.05)
        for protocol in list(self.protocols):
            protocol.close_for_shutdown()
        await self.server.wait_closed()
        if self.fill_in is not None:
            await self.fill_in.stop(max(0.0, deadline - loop.time()))


async def start_mx(
    settings: Settings,
    pool: Pool,
    tokens: ReplyTokens,
    *,
    listen: ListenAddress | None = None,
    reuse_port: bool = False,
) -> MXListener:
    loop = asyncio.get_running_loop()
    listen = listen or settings.mx_listen
    # A bounce report of submission mail, which our bounce address received in place of the
    # sender's: its DSN is queued to the sender in the report's transaction.
    late_dsn = late_dsn_maker(settings.hostname, uuid7, lambda: datetime.now(UTC))
    writer = GroupCommitWriter(pool, roll_up=email_status, late_dsn=late_dsn)
    fill_in = FillIn(pool, settings.mx_parse_later)
    handler = MXHandler(
        lookups=InboxLookups(pool),
        tokens=tokens,
        hostname=settings.hostname,
        limits=MXLimits(settings.max_recipients, settings.max_received_headers),
        store=writer.store,
        fill_in=fill_in,
    )
    tls_context = (
        server_tls_context(settings.tls_cert, settings.tls_key)
        if settings.tls_cert is not None and settings.tls_key is not None
        else None
    )
    gate = ConnectionGate(settings.max_connections)
    budget = DataBudget(settings.data_memory)
    protocols: set[MXProtocol] = set()

    def factory() -> MXProtocol:
        return MXProtocol(
            handler,
            gate=gate,
            registry=protocols,
            data_timeout=settings.data_timeout,
            data_size_limit=settings.max_message_size,
            data_budget=budget,
            bare_newline=settings.bare_newline,
            hostname=settings.hostname,
            ident=BANNER_IDENT,
            tls_context=tls_context,
            timeout=settings.command_timeout,
            loop=loop,
        )

    server = await loop.create_server(
        factory, host=listen.host, port=listen.port, reuse_port=reuse_port or None, backlog=1024
    )
    listener = MXListener(
        server,
        gate,
        protocols,
        port=server.sockets[0].getsockname()[1],
        fill_in=fill_in,
        data_budget=budget,
    )
    fill_in.start()
    log.info(
        "MX listening",
        extra={"address": f"{listen.host}:{listener.port}", "tls": tls_context is not None},
    )
    return listener


@dataclass
class SubmissionListeners:
    """Port 587 (STARTTLS) and port 465 (implicit TLS): one handler, so one lockout state."""

    starttls: MXListener
    implicit_tls: MXListener

    async def drain(self, grace: float) -> None:
        await asyncio.gather(self.starttls.drain(grace), self.implicit_tls.drain(grace))


async def start_submission(
    settings: Settings,
    pool: Pool,
    tokens: ReplyTokens,
    tls_context: ssl.SSLContext,
    *,
    listen: ListenAddress | None = None,
    listen_implicit: ListenAddress | None = None,
) -> SubmissionListeners:
    loop = asyncio.get_running_loop()
    limits = AuthLimits(
        max_failures=settings.auth_max_failures,
        lockout_seconds=settings.auth_lockout,
        first_delay_seconds=settings.auth_failure_delay,
    )
    handler = SubmissionHandler(
        pool=pool,
        tokens=tokens,
        hostname=settings.hostname,
        limits=SubmissionLimits(settings.max_recipients, settings.max_received_headers),
        logins=Logins(pool, limits),
        store=EmailWriter(pool).store,
    )
    gate = ConnectionGate(settings.max_connections)  # one cap for both ports
    budget = DataBudget(settings.data_memory)  # and one memory budget

    async def serve(address: ListenAddress, implicit: bool) -> MXListener:
        protocols: set[MXProtocol] = set()

        def factory() -> SubmissionProtocol:
            return SubmissionProtocol(
                handler,
                gate=gate,
                registry=protocols,
                data_timeout=settings.data_timeout,
                data_size_limit=settings.max_message_size,
                data_budget=budget,
                bare_newline=settings.bare_newline,
                hostname=settings.hostname,
                ident=BANNER_IDENT,
                # Port 465 is TLS from the first byte (RFC 8314 section 3.3): no STARTTLS there.
                tls_context=None if implicit else tls_context,
                timeout=settings.command_timeout,
                loop=loop,
            )

        server = await loop.create_server(
            factory,
            host=address.host,
            port=address.port,
            ssl=tls_context if implicit else None,
            backlog=1024,
        )
        listener = MXListener(
            server, gate, protocols, port=server.sockets[0].getsockname()[1], data_budget=budget
        )
        log.info(
            "submission listening",
            extra={
                "address": f"{address.host}:{listener.port}",
                "tls": "implicit" if implicit else "starttls",
            },
        )
        return listener

    starttls = await serve(listen or settings.submission_listen, False)
    try:
        implicit_tls = await serve(listen_implicit or settings.submissions_listen, True)
    except BaseException:
        await starttls.drain(0.0)
        raise
    return SubmissionListeners(starttls, implicit_tls)
