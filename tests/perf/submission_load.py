"""The load generator of the submission benchmark: one process, asyncio (uvloop), N sessions.

    python tests/perf/submission_load.py --port 2587 --starttls --key re_... --cafile dev.crt

smtp-source cannot do STARTTLS or AUTH, so this client (standard library asyncio and ssl only)
sends the load, to the MX in the clear and to the submission ports with TLS and AUTH PLAIN,
so that both rates come from the same generator. One command at a time, as smtp-source sends
them (no PIPELINING). In `new-conn` mode every message has its own connection: connect, banner,
EHLO, [STARTTLS or TLS on connect, EHLO, AUTH PLAIN], MAIL, RCPT, DATA, QUIT; in `reuse` mode a
session logs in once and sends message after message. Each message is timed from its first
byte (new-conn: the connect; reuse: MAIL) to the 250 after DATA. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import ssl
import sys
import time
from dataclasses import dataclass, field

from smtp_load import Load, Mode, SmtpError, message_bytes, quantile


@dataclass(frozen=True, slots=True)
class Login:
    """How a session secures itself and logs in; None of it for the MX."""

    tls: str  # "none", "starttls" or "implicit"
    context: ssl.SSLContext | None
    server_name: str | None
    key: str | None


@dataclass(slots=True)
class Outcome:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def reply(reader: asyncio.StreamReader, expect: str) -> None:
    """One reply, multi-line or not; SmtpError unless its code starts with `expect`."""
    while True:
        line = await reader.readline()
        if not line:
            raise SmtpError(f"connection closed while waiting for {expect}xx")
        if line[3:4] != b"-":
            break
    if not line.startswith(expect.encode()):
        raise SmtpError(f"expected {expect}xx, got {line.decode('ascii', 'replace').strip()!r}")


async def command(stream: Stream, line: bytes, expect: str) -> None:
    reader, writer = stream
    writer.write(line)
    await reply(reader, expect)


async def open_session(host: str, port: int, load: Load, login: Login) -> Stream:
    implicit = login.tls == "implicit"
    reader, writer = await asyncio.open_connection(
        host,
        port,
        ssl=login.context if implicit else None,
        server_hostname=login.server_name if implicit else None,
    )
    stream = (reader, writer)
    await reply(reader, "220")
    await command(stream, f"EHLO {load.helo}\r\n".encode(), "250")
    if login.tls == "starttls":
        await command(stream, b"STARTTLS\r\n", "220")
        assert login.context is not None
        await writer.start_tls(login.context, server_hostname=login.server_name)
        await command(stream, f"EHLO {load.helo}\r\n".encode(), "250")
    if login.key is not None:
        secret = base64.b64encode(f"\0bench\0{login.key}".encode()).decode()
        await command(stream, f"AUTH PLAIN {secret}\r\n".encode(), "235")
    return stream


async def transaction(stream: Stream, load: Load, number: int) -> None:
    await command(stream, f"MAIL FROM:<{load.sender}>\r\n".encode(), "250")
    await command(stream, f"RCPT TO:<{load.recipient}>\r\n".encode(), "250")
    await command(stream, b"DATA\r\n", "354")
    await command(stream, message_bytes(load, number), "250")


async def close(stream: Stream) -> None:
    _reader, writer = stream
    with contextlib.suppress(Exception):
        await asyncio.wait_for(command(stream, b"QUIT\r\n", "221"), 10.0)
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def session(
    host: str,
    port: int,
    load: Load,
    mode: Mode,
    login: Login,
    numbers: list[int],
    outcome: Outcome,
) -> None:
    stream: Stream | None = None
    try:
        while numbers:
            number = numbers.pop()
            started = time.perf_counter()
            try:
                if stream is None:
                    stream = await open_session(host, port, load, login)
                    if mode is Mode.REUSE:
                        started = time.perf_counter()  # reuse times MAIL..250, as smtp_load
                await transaction(stream, load, number)
            except (OSError, EOFError, ValueError, ssl.SSLError, SmtpError) as exc:
                outcome.errors.append(f"message {number}: {exc}")
                if stream is not None:
                    stream[1].close()
                stream = None
                continue
            outcome.latencies.append(time.perf_counter() - started)
            if mode is Mode.NEW_CONNECTION:
                await close(stream)
                stream = None
    finally:
        if stream is not None:
            await close(stream)


async def run(args: argparse.Namespace) -> dict[str, object]:
    load = Load(
        messages=args.messages,
        sessions=args.sessions,
        size=args.size,
        sender=args.sender,
        recipient=args.recipient,
        helo=args.helo,
    )
    context = None
    if args.tls != "none":
        context = ssl.create_default_context(cafile=args.cafile)
    login = Login(args.tls, context, args.server_name, args.key)
    outcome = Outcome()
    numbers = list(range(load.messages, 0, -1))
    mode = Mode(args.mode)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(args.timeout):
            async with asyncio.TaskGroup() as group:
                for _ in range(load.sessions):
                    group.create_task(
                        session(args.host, args.port, load, mode, login, numbers, outcome)
                    )
    except TimeoutError:
        outcome.errors.append(f"timed out after {args.timeout:.0f}s")
    seconds = time.perf_counter() - started
    completed = len(outcome.latencies)
    p50, p99 = quantile(outcome.latencies, 0.5), quantile(outcome.latencies, 0.99)
    return {
        "mode": str(mode),
        "tls": args.tls,
        "requested": load.messages,
        "completed": completed,
        "seconds": round(seconds, 3),
        "msgs_per_s": round(completed / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": round(p50 * 1000, 2) if p50 is not None else None,
        "p99_ms": round(p99 * 1000, 2) if p99 is not None else None,
        "error_count": len(outcome.errors),
        "errors": outcome.errors[:10],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, required=True)
    add("--mode", choices=[str(m) for m in Mode], default=str(Mode.NEW_CONNECTION))
    add("--tls", choices=["none", "starttls", "implicit"], default="none")
    add("--cafile", help="the CA (or self-signed certificate) to verify the server with")
    add("--server-name", help="the name the server's certificate must carry")
    add("--key", help="API key for AUTH PLAIN (no AUTH without it)")
    add("--messages", type=int, default=2000)
    add("--sessions", type=int, default=20)
    add("--size", type=int, default=2048)
    add("--sender", default="bench@bench.test")
    add("--recipient", default="user@bench.test")
    add("--helo", default="client.bench.test")
    add("--timeout", type=float, default=600.0, help="bound on the whole run, seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(json.dumps(result))
    return 0 if result["completed"] == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
