"""The `opensend` command as operators run it: a subprocess with an `OPENSEND_*` environment.

`run_opensend` runs one admin command to completion; `OpenSendServer` is `opensend serve` on
loopback ports, ready once its MX answers 220. Both are asyncio subprocesses, so the test's event
loop (which may also run an MX of its own) is never blocked, and both are bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The console script installed beside the interpreter running the tests (the project's venv).
OPENSEND = Path(sys.executable).with_name("opensend")

# Generous bounds that only stop a hung test; no assertion depends on them.
COMMAND_BOUND_SECONDS = 120.0
READY_ATTEMPTS = 600  # connection attempts, 0.1 s apart, while the server starts
EXIT_BOUND_SECONDS = 60.0


def free_loopback_port() -> int:
    """A TCP port nothing listens on right now (the kernel's choice, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def opensend_env(data_dir: Path, database_url: str | None, **settings: str) -> dict[str, str]:
    """The process environment: ours without any inherited OPENSEND_*, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSEND_")}
    env["OPENSEND_DATA_DIR"] = str(data_dir)
    env["OPENSEND_HOSTNAME"] = "mx.opensend.test"
    env["OPENSEND_LOG_LEVEL"] = "WARNING"
    if database_url is not None:
        env["OPENSEND_DATABASE_URL"] = database_url
    env.update(settings)
    return env


def server_env(data_dir: Path, database_url: str | None, **settings: str) -> dict[str, str]:
    """`opensend_env` with the MX, the submission ports and the metrics endpoint on free
    loopback ports (never the development defaults, which another run may hold)."""
    ports = {
        "OPENSEND_MX_LISTEN": f"127.0.0.1:{free_loopback_port()}",
        "OPENSEND_SUBMISSION_LISTEN": f"127.0.0.1:{free_loopback_port()}",
        "OPENSEND_SUBMISSIONS_LISTEN": f"127.0.0.1:{free_loopback_port()}",
        "OPENSEND_METRICS_LISTEN": f"127.0.0.1:{free_loopback_port()}",
    }
    return opensend_env(data_dir, database_url, **{**ports, **settings})


@dataclass(frozen=True)
class Completed:
    """How one `opensend` command ended."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.returncode == 0, self
        return json.loads(self.stdout)


async def run_opensend(*args: str, env: Mapping[str, str], input: bytes | None = None) -> Completed:
    process = await asyncio.create_subprocess_exec(
        str(OPENSEND),
        *args,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL if input is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(input), COMMAND_BOUND_SECONDS)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Completed(args, process.returncode, stdout.decode(), stderr.decode())


class OpenSendServer:
    """`opensend serve --only mta` in a subprocess, its output in a log file."""

    def __init__(
        self, process: asyncio.subprocess.Process, mx_port: int, metrics_port: int, log: Path
    ) -> None:
        self.process = process
        self.mx_port = mx_port
        self.metrics_port = metrics_port
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_ready(self) -> None:
        """Until the MX greets with 220 and the metrics port accepts (it starts last, just before
        the SIGTERM handler is installed); fail at once if the process exits first."""
        await self._until_greeted()
        await self._until_accepting(self.metrics_port)

    async def wait_metrics(self) -> None:
        """Until the metrics port accepts: a part without the MX (`--only authcheck`)."""
        await self._until_accepting(self.metrics_port)

    async def _until_accepting(self, port: int) -> None:
        for _ in range(READY_ATTEMPTS):
            if self.process.returncode is not None:
                break
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        raise AssertionError(
            f"opensend serve never listened on port {port} "
            f"(exit code {self.process.returncode}):\n{self.output()}"
        )

    async def _until_greeted(self) -> None:
        for _ in range(READY_ATTEMPTS):
            if self.process.returncode is not None:
                break
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.mx_port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            try:
                banner = await asyncio.wait_for(reader.readline(), EXIT_BOUND_SECONDS)
                writer.write(b"QUIT\r\n")
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            if banner.startswith(b"220 "):
                return
        raise AssertionError(
            f"opensend serve never greeted on port {self.mx_port} "
            f"(exit code {self.process.returncode}):\n{self.output()}"
        )

    async def wait_listener_closed(self) -> None:
        """Connect until refused: the MX has stopped accepting (its drain has begun)."""
        for _ in range(READY_ATTEMPTS):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.mx_port)
            except OSError:
                return
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            await asyncio.sleep(0.1)
        raise AssertionError(f"the MX on port {self.mx_port} kept accepting connections")

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def exit_code(self) -> int:
        return await asyncio.wait_for(self.process.wait(), EXIT_BOUND_SECONDS)


@contextlib.asynccontextmanager
async def opensend_server(
    env: Mapping[str, str], log: Path, *, only: str = "mta"
) -> AsyncIterator[OpenSendServer]:
    """`opensend serve --only mta` (or another part) with `env`, which sets the listen addresses
    to loopback; ready when the MX greets (`mta`) and the metrics port accepts."""
    mx_port = int(env["OPENSEND_MX_LISTEN"].rsplit(":", 1)[1])
    metrics_port = int(env["OPENSEND_METRICS_LISTEN"].rsplit(":", 1)[1])
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            str(OPENSEND),
            "serve",
            "--only",
            only,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
    server = OpenSendServer(process, mx_port, metrics_port, log)
    try:
        await (server.wait_ready() if only == "mta" else server.wait_metrics())
        yield server
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
