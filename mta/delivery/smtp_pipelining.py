"""One mail transaction with PIPELINING (RFC 2920), on a session aiosmtplib opened.

MAIL, every RCPT and DATA go out in one write, and their replies are read in order; then the
content, and the reply to its final dot: two round trips a message instead of three plus one
per recipient, as Postfix's client sends when the server offers PIPELINING. aiosmtplib reads
one reply per command written, so for the transaction the connection's transport is lent to
`Replies`, a reader of pipelined replies, and given back to aiosmtplib's protocol after it.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Sequence

from aiosmtplib.email import quote_address
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

# RFC 5321 section 4.5.3.1.5: a reply line is at most 512 octets; a few more are tolerated,
# and a reply of many lines is bounded too, so a broken server cannot fill our memory.
MAX_REPLY_OCTETS = 64 * 1024
# A mailbox that needs no parsing to be put on a command line: no space, control character,
# angle bracket, quote or parenthesis (anything else goes through aiosmtplib's checks).
_PLAIN_MAILBOX = re.compile(r"[^\x00-\x20\x7f<>()\[\]\\,;:\"]+@[^\x00-\x20\x7f<>()\[\]\\,;:\"@]+")


class ReplyError(Exception):
    """A reply that is not SMTP: no three-digit code, or too long."""


def path(address: str, encoding: str) -> bytes:
    """`<address>` for MAIL FROM or RCPT TO; "<>" for the null reverse-path (RFC 5321 4.1.2)."""
    if not address or _PLAIN_MAILBOX.fullmatch(address):
        return b"<" + address.encode(encoding) + b">"
    return quote_address(address).encode(encoding)  # refuses what could inject a command


def data_block(message: bytes) -> bytes:
    """The message as DATA carries it (RFC 5321 section 4.5.2), as aiosmtplib's own DATA command
    makes it: CRLF line ends, a leading dot doubled, ended by CRLF "." CRLF. The regular
    expressions run only when there is something for them to do (a composed message has CRLF
    ends and rarely a leading dot)."""
    if not message.count(b"\n") == message.count(b"\r\n") == message.count(b"\r"):
        message = normalize_message_line_endings(message)
    elif not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message.startswith(b".") or b"\n." in message:
        message = PERIOD_REGEX.sub(b"..", message)
    return message + b".\r\n"


class Replies(asyncio.Protocol):
    """Reads replies off a transport lent to it, however many arrive in one segment."""

    def __init__(self, owner: asyncio.BaseProtocol) -> None:
        self._owner = owner  # aiosmtplib's protocol: told if the connection goes
        self._buffer = bytearray()
        self._replies: deque[tuple[int, str]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._lost: Exception | None = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            self._parse()
        except ReplyError as error:
            self._lost = error
        self._wake()

    def eof_received(self) -> bool:
        self._lost = ConnectionResetError("the server closed the connection")
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionResetError("the connection was closed")
        self._wake()
        self._owner.connection_lost(exc)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _parse(self) -> None:
        """Complete replies out of the buffer: lines "ddd-text" then one "ddd text" (4.2.1)."""
        while True:
            lines: list[bytes] = []
            offset = 0
            while True:
                end = self._buffer.find(b"\n", offset)
                if end == -1:
                    if len(self._buffer) > MAX_REPLY_OCTETS:
                        raise ReplyError("reply too long")
                    return
                line = bytes(self._buffer[offset : end + 1])
                offset = end + 1
                if len(line) < 4 or not line[:3].isdigit():
                    raise ReplyError(f"not an SMTP reply: {line[:40]!r}")
                lines.append(line)
                if line[3:4] != b"-":
                    break
            del self._buffer[:offset]
            text = b"\n".join(line[4:].strip(b" \t\r\n") for line in lines)
            self._replies.append((int(lines[-1][:3]), text.decode("utf-8", "surrogateescape")))

    async def reply(self) -> tuple[int, str]:
        """The next reply, in the order the commands were sent."""
        while not self._replies:
            if self._lost is not None:
                raise self._lost
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._replies.popleft()

    @property
    def pending(self) -> bool:
        """Bytes that are no complete reply yet (a reply to nothing we sent)."""
        return bool(self._buffer or self._replies)


class Lent:
    """`async with Lent(transport) as replies:` the transport's data goes to `replies`, then
    back to the protocol that had it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._owner = transport.get_protocol()
        self.replies = Replies(self._owner)

    async def __aenter__(self) -> Replies:
        if self._transport.is_closing():  # lost since it was last looked at
            raise ConnectionResetError("the connection was closed")
        self._transport.set_protocol(self.replies)
        return self.replies

    async def __aexit__(self, *exc: object) -> None:
        self._transport.set_protocol(self._owner)


def commands(sender: bytes, recipients: Sequence[bytes], options: Sequence[bytes] = ()) -> bytes:
    """MAIL, the RCPTs and DATA, as one write (RFC 2920 section 3.1: DATA last in the group)."""
    mail = b" ".join([b"MAIL FROM:" + sender, *options])
    return b"".join([mail, b"\r\n", *(b"RCPT TO:" + r + b"\r\n" for r in recipients), b"DATA\r\n"])
