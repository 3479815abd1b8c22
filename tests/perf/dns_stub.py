"""A loopback DNS server that answers every query at once with NXDOMAIN.

The benchmark's network is loopback only, and it measures the MX, not a resolver: OpenSend's
lookups (reverse DNS of the client, SPF, DMARC) get a fast, definite "no such name", as from a warm
local caching resolver, instead of a timeout or a query that leaves the machine. Postfix in the
same benchmark resolves 127.0.0.1 from /etc/hosts.

    .venv/bin/python tests/perf/dns_stub.py --port 10053 --seconds 600
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import dns.exception
import dns.flags
import dns.message
import dns.rcode


def answer(query_bytes: bytes) -> bytes | None:
    try:
        query = dns.message.from_wire(query_bytes)
    except dns.exception.DNSException:
        return None
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.NXDOMAIN)
    response.flags |= dns.flags.AA | dns.flags.RA
    return response.to_wire()


def serve(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.settimeout(1.0)
        print(f"dns stub on 127.0.0.1:{port}", flush=True)
        while time.monotonic() < deadline:
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            reply = answer(data)
            if reply is not None:
                sock.sendto(reply, peer)


@contextlib.contextmanager
def running(seconds: float) -> Iterator[int]:
    """This stub in a child process on a free loopback port, for at most `seconds`; yields the
    port, and ends the child on leaving."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    command = [sys.executable, __file__, "--port", str(port), "--seconds", str(seconds)]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        yield port
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="loopback DNS server: NXDOMAIN for everything")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=3600.0, help="exit after this long")
    args = parser.parse_args(argv)
    serve(args.port, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
