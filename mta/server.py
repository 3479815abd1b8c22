"""Starting and stopping the MX listener inside the running event loop.

aiosmtpd's threaded Controller is not used: the listener is created with `loop.create_server` in
the same loop as the asyncpg pool, whose connections belong to the loop that made them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from mta.inbound import MXHandler, MXLimits
from mta.protocol import ConnectionGate, MXProtocol
from policy.settings import ListenAddress, Settings
from policy.tokens import ReplyTokens
from storage.database import Pool
from storage.inbox import GroupCommitWriter, InboxLookups

log = logging.getLogger(__name__)

BANNER_IDENT = "ESMTP OpenSend"


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    # RFC 8996 retires TLS 1.0 and 1.1; an MX must still accept any client certificate or none.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class MXListener:
    server: asyncio.Server
    gate: ConnectionGate
    protocols: set[MXProtocol] = field(default_factory=set)
    port: int = 0  # the bound port, kept after the listener closes

    async def drain(self, grace: float) -> None:
        """Stop accepting; let transactions in DATA finish; say 421 to the rest and close."""
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
    writer = GroupCommitWriter(pool)
    handler = MXHandler(
        lookups=InboxLookups(pool),
        tokens=tokens,
        hostname=settings.hostname,
        limits=MXLimits(settings.max_recipients, settings.max_received_headers),
        store=writer.store,
    )
    tls_context = (
        server_tls_context(settings.tls_cert, settings.tls_key)
        if settings.tls_cert is not None and settings.tls_key is not None
        else None
    )
    gate = ConnectionGate(settings.max_connections)
    protocols: set[MXProtocol] = set()

    def factory() -> MXProtocol:
        return MXProtocol(
            handler,
            gate=gate,
            registry=protocols,
            data_timeout=settings.data_timeout,
            data_size_limit=settings.max_message_size,
            hostname=settings.hostname,
            ident=BANNER_IDENT,
            tls_context=tls_context,
            timeout=settings.command_timeout,
            loop=loop,
        )

    server = await loop.create_server(
        factory, host=listen.host, port=listen.port, reuse_port=reuse_port or None, backlog=1024
    )
    listener = MXListener(server, gate, protocols, port=server.sockets[0].getsockname()[1])
    log.info(
        "MX listening",
        extra={"address": f"{listen.host}:{listener.port}", "tls": tls_context is not None},
    )
    return listener
