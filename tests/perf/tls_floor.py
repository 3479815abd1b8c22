"""What one TLS handshake costs on this machine in OpenSSL alone, both ends, for the submission
benchmark's new-connection ceiling.

    python tests/perf/tls_floor.py --cert dev.crt --key dev.key [--seconds 3]

`openssl s_server` with the server's own certificate and key, and `openssl s_time -new` against
it on loopback: full handshakes, one after another, with the library defaults both ends share
with the benchmark (TLS 1.3, X25519, the P-256 certificate verified against itself), and no
application data. User + system CPU of both processes over the handshakes they completed is
the floor a handshake costs in C, before any Python, SMTP or storage work. Prints one JSON
object; bench_submission.py imports `measure`.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from postfix_peer import free_loopback_port


@dataclass(frozen=True, slots=True)
class HandshakeCost:
    handshakes: int
    server_ms: float  # CPU per handshake, s_server
    client_ms: float  # CPU per handshake, s_time
    openssl: str

    @property
    def total_ms(self) -> float:
        return self.server_ms + self.client_ms


def _wait_listening(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def measure(cert: Path, key: Path, seconds: int = 3) -> HandshakeCost:
    port = free_loopback_port()
    serve = ["openssl", "s_server", "-quiet", "-accept", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        [*serve, "-cert", str(cert), "-key", str(key)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, 10.0)
        # The readiness probe above was a connection too, but no handshake: counted by nobody.
        server_before = psutil.Process(server.pid).cpu_times()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        handshakes = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new"]
        proc = subprocess.run(
            [*handshakes, "-time", str(seconds), "-CAfile", str(cert), "-verify", "1"],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_after = psutil.Process(server.pid).cpu_times()
    finally:
        server.terminate()
        server.wait(timeout=10)
    found = re.search(r"(\d+) connections in [\d.]+s;", proc.stdout)
    if found is None or int(found.group(1)) == 0:
        raise RuntimeError(f"openssl s_time made no handshakes: {proc.stdout[-500:]}")
    count = int(found.group(1))
    client = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    served = (server_after.user - server_before.user) + (server_after.system - server_before.system)
    version = subprocess.run(
        ["openssl", "version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return HandshakeCost(
        handshakes=count,
        server_ms=round(served * 1000 / count, 3),
        client_ms=round(client * 1000 / count, 3),
        openssl=version,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args(argv)
    cost = measure(args.cert, args.key, args.seconds)
    print(json.dumps({**asdict(cost), "total_ms": round(cost.total_ms, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
