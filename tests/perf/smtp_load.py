"""The load of the MX benchmark: Postfix's smtp-source for throughput, a timing client for latency.

smtp-source (Postfix's own SMTP load generator) sends the throughput load; it prints no latency,
so a small asyncio client sends a second, separate load of the same shape (same sessions, size,
headers, one command at a time as smtp-source does: no PIPELINING) and times every message. It
greets with EHLO, as real senders do, where smtp-source says HELO.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from enum import StrEnum

from prometheus_client.parser import text_string_to_metric_families

SMTP_SOURCE = (
    shutil.which("smtp-source", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/smtp-source"
)


class Mode(StrEnum):
    """How sessions carry messages.

    smtp-source's `-d` means "don't disconnect after sending a message; send the next message over
    the same connection" (smtp-source(1)); without it every message gets its own connection
    (connect, banner, HELO, MAIL, RCPT, DATA, QUIT).
    """

    NEW_CONNECTION = "new-conn"  # smtp-source without -d
    REUSE = "reuse"  # smtp-source -d


@dataclass(frozen=True, slots=True)
class Load:
    messages: int
    sessions: int
    size: int
    sender: str = "bench@client.bench.test"
    recipient: str = "user@bench.test"
    helo: str = "client.bench.test"


@dataclass(frozen=True, slots=True)
class SourceRun:
    """One smtp-source run, timed from its start to its exit."""

    mode: Mode
    requested: int
    completed: int  # DATA commands that completed, from smtp-source's -c counter
    seconds: float
    returncode: int
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.completed == self.requested

    @property
    def msgs_per_s(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


def smtp_source_command(host: str, port: int, load: Load, mode: Mode) -> list[str]:
    command = [
        SMTP_SOURCE,
        "-c",  # print a counter per completed DATA: how we know how many were sent
        "-s",
        str(load.sessions),
        "-m",
        str(load.messages),
        "-l",
        str(load.size),
        "-f",
        load.sender,
        "-t",
        load.recipient,
        "-M",
        load.helo,
    ]
    if mode is Mode.REUSE:
        command.append("-d")
    command.append(f"{host}:{port}")
    return command


def run_smtp_source(host: str, port: int, load: Load, mode: Mode, timeout: float) -> SourceRun:
    """Run smtp-source to completion (or `timeout`); it aborts on any unexpected reply."""
    command = smtp_source_command(host, port, load, mode)
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        returncode = -1
        stdout = exc.stdout or b""
        stderr = (exc.stderr or b"") + f"\ntimed out after {timeout:.0f}s".encode()
    seconds = time.perf_counter() - started
    counters = re.findall(rb"\d+", stdout)
    completed = int(counters[-1]) if counters else 0
    return SourceRun(
        mode=mode,
        requested=load.messages,
        completed=completed,
        seconds=seconds,
        returncode=returncode,
        stderr=stderr.decode("utf-8", "replace").strip(),
    )


# --------------------------------------------------------------------------------- latency client


class SmtpError(Exception):
    """The server answered something other than the expected reply."""


@dataclass(slots=True)
class LatencyRun:
    mode: Mode
    requested: int
    latencies: list[float] = field(default_factory=list)  # seconds, one per accepted message
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def msgs_per_s(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    def quantile(self, q: float) -> float | None:
        return quantile(self.latencies, q)


def quantile(values: Iterable[float], q: float) -> float | None:
    """The q-quantile by the nearest-rank method (no interpolation); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def message_bytes(load: Load, number: int) -> bytes:
    """A message shaped like smtp-source's: four headers, then `size` bytes of 80-byte lines."""
    headers = (
        f"From: <{load.sender}>\r\n"
        f"To: <{load.recipient}>\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        f"Message-Id: <{number}.{uuid.uuid4().hex}@{load.helo}>\r\n"
        "\r\n"
    ).encode()
    body = bytearray()
    line_number = 0
    while len(body) < load.size:
        line_number += 1
        line = (str(line_number) + "X" * 78)[:78]
        remaining = load.size - len(body)
        if remaining < 80:
            line = line[: max(0, remaining - 2)]
        body += line.encode() + b"\r\n"
    return headers + bytes(body) + b".\r\n"


async def _reply(reader: asyncio.StreamReader, expect: str) -> None:
    """Read one (possibly multi-line) reply and check its code starts with `expect`."""
    while True:
        line = await reader.readline()
        if not line:
            raise SmtpError(f"connection closed while waiting for {expect}xx")
        if line[3:4] != b"-":
            break
    if not line.startswith(expect.encode()):
        raise SmtpError(f"expected {expect}xx, got {line.decode('ascii', 'replace').strip()!r}")


async def _open(
    host: str, port: int, load: Load
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    await _reply(reader, "220")
    writer.write(f"EHLO {load.helo}\r\n".encode())
    await _reply(reader, "250")
    return reader, writer


async def _close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.write(b"QUIT\r\n")
        await asyncio.wait_for(_reply(reader, "221"), 10.0)
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def _transaction(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    load: Load,
    number: int,
    payload: bytes | None = None,
) -> None:
    """One message; `payload` (DATA's bytes, ending CRLF.CRLF) is built once by a caller that
    sends the same large message again, so building it is not timed as the server's."""
    writer.write(f"MAIL FROM:<{load.sender}>\r\n".encode())
    await _reply(reader, "250")
    writer.write(f"RCPT TO:<{load.recipient}>\r\n".encode())
    await _reply(reader, "250")
    writer.write(b"DATA\r\n")
    await _reply(reader, "354")
    writer.write(payload if payload is not None else message_bytes(load, number))
    await _reply(reader, "250")


async def _session(
    host: str, port: int, load: Load, mode: Mode, numbers: list[int], run: LatencyRun
) -> None:
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        while numbers:
            number = numbers.pop()
            started = time.perf_counter()
            try:
                if conn is None:
                    conn = await _open(host, port, load)
                await _transaction(*conn, load, number)
            except (OSError, EOFError, ValueError, SmtpError) as exc:
                run.errors.append(f"message {number}: {exc}")
                if conn is not None:
                    conn[1].close()
                conn = None
                continue
            if mode is Mode.NEW_CONNECTION:
                # Timed like smtp-source's new-connection mode: connect, banner, EHLO and the
                # transaction; the QUIT after the 250 is not part of the message's latency.
                run.latencies.append(time.perf_counter() - started)
                await _close(*conn)
                conn = None
            else:
                run.latencies.append(time.perf_counter() - started)
    finally:
        if conn is not None:
            await _close(*conn)


async def measure_latency(host: str, port: int, load: Load, run: LatencyRun) -> None:
    """Send `load` with `load.sessions` parallel sessions; time each message until its 250.

    New-connection mode times connect..250 after DATA; reuse mode times MAIL..250 after DATA.
    Results accumulate in `run`, so a caller's timeout still leaves what was measured.
    """
    numbers = list(range(load.messages, 0, -1))
    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(load.sessions):
                group.create_task(_session(host, port, load, run.mode, numbers, run))
    finally:
        run.seconds = time.perf_counter() - started


def run_latency(host: str, port: int, load: Load, mode: Mode, timeout: float) -> LatencyRun:
    """`measure_latency` in a fresh event loop (uvloop when installed), bounded by `timeout`."""
    run = LatencyRun(mode=mode, requested=load.messages)

    async def bounded() -> None:
        try:
            async with asyncio.timeout(timeout):
                await measure_latency(host, port, load, run)
        except TimeoutError:
            run.errors.append(f"timed out after {timeout:.0f}s")

    try:
        import uvloop
    except ImportError:
        asyncio.run(bounded())
    else:
        uvloop.run(bounded())
    return run


# ------------------------------------------------------------------------ Prometheus histograms

_BUCKET = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)_bucket\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)")
_LE = re.compile(r'(?:^|,)\s*le="(?P<le>[^"]+)"')


def histogram_buckets(metrics_text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts of histogram `name`, summed over all other labels."""
    buckets: dict[float, float] = {}
    for line in metrics_text.splitlines():
        match = _BUCKET.match(line)
        if match is None or match["name"] != name:
            continue
        le_match = _LE.search(match["labels"])
        if le_match is None:
            continue
        le = math.inf if le_match["le"] in ("+Inf", "Inf") else float(le_match["le"])
        buckets[le] = buckets.get(le, 0.0) + float(match["value"])
    return buckets


def counter_total(metrics_text: str, name: str, **labels: str) -> int | None:
    """The sum of counter `name` over its series whose labels include `labels`; None when the
    exposition has no such counter."""
    family = name.removesuffix("_total")
    for metric in text_string_to_metric_families(metrics_text):
        if metric.name == family:
            return round(
                sum(
                    sample.value
                    for sample in metric.samples
                    if sample.name == name
                    and all(sample.labels.get(k) == v for k, v in labels.items())
                )
            )
    return None


def bucket_delta(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile: linear interpolation inside the bucket holding rank q."""
    if not buckets:
        return None
    ordered = sorted(buckets.items())
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in ordered:
        if count >= rank:
            if math.isinf(upper_bound):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            if count == lower_count:
                return upper_bound
            return lower_bound + (upper_bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = upper_bound, count
    return ordered[-1][0]


def histogram_count(buckets: dict[float, float]) -> int:
    return int(max(buckets.values())) if buckets else 0
