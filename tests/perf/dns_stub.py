"""A loopback DNS server that answers every query with NXDOMAIN, at once or `--delay-ms` later.

The benchmark's network is loopback only, and it measures the MX, not a resolver: OpenSend's
lookups (reverse DNS of the client, SPF, DMARC) get a fast, definite "no such name", as from a warm
local caching resolver, instead of a timeout or a query that leaves the machine. Postfix in the
same benchmark resolves 127.0.0.1 from /etc/hosts.

    .venv/bin/python tests/perf/dns_stub.py --port 10053 --seconds 600
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

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


def serve(port: int, seconds: float, delay: float = 0.0) -> None:
    """Answer until `seconds` have passed, each reply `delay` seconds after its query (what a
    resolver's round trips to name servers elsewhere take), every query on its own clock."""
    deadline = time.monotonic() + seconds
    due: list[tuple[float, int, bytes, Any]] = []  # (when, arrival order, reply, peer)
    order = itertools.count()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        print(f"dns stub on 127.0.0.1:{port}", flush=True)
        while time.monotonic() < deadline:
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, _, reply, peer = heapq.heappop(due)
                sock.sendto(reply, peer)
            sock.settimeout(min(1.0, max(0.0, due[0][0] - now)) if due else 1.0)
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            reply = answer(data)
            if reply is None:
                continue
            if delay:
                heapq.heappush(due, (time.monotonic() + delay, next(order), reply, peer))
            else:
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
    parser.add_argument("--delay-ms", type=float, default=0.0, help="answer this much later")
    args = parser.parse_args(argv)
    serve(args.port, args.seconds, args.delay_ms / 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
