"""A raw SMTP client over asyncio streams, for the conversations aiosmtplib will not hold.

Real clients refuse to send bare LF, smuggling sequences or pipelined garbage; an MX must
still answer them correctly, so tests speak the protocol byte for byte here.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass

_REPLY_LINE = re.compile(rb"^(\d{3})([ -])(.*)$")


@dataclass(frozen=True)
class SMTPReply:
    code: int
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> str | None:
        first = self.lines[-1].split(" ", 1)[0] if self.lines else ""
        return first if re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", first) else None


class RawSMTP:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> tuple[RawSMTP, SMTPReply]:
        """Connect in the clear, or in TLS from the first byte (port 465) with `tls`."""
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=server_hostname if tls else None
        )
        client = cls(reader, writer)
        return client, await client.read_reply()

    async def read_reply(self, timeout: float = 30.0) -> SMTPReply:  # noqa: ASYNC109
        lines: list[str] = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
            if not raw:
                raise ConnectionError("connection closed before a complete reply")
            found = _REPLY_LINE.match(raw.rstrip(b"\r\n"))
            if found is None:
                raise ValueError(f"not an SMTP reply line: {raw!r}")
            lines.append(found.group(3).decode("utf-8", "replace"))
            if found.group(2) == b" ":
                return SMTPReply(int(found.group(1)), lines)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, line: str) -> SMTPReply:
        await self.send_raw(line.encode() + b"\r\n")
        return await self.read_reply()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
