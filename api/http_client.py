"""Outbound HTTPS of the API (SNS signing certificates, subscription confirmations, S3).

Names are resolved like every other lookup of the server: through OPENSEND_DNS_SERVERS when it
is set (tests point it at a loopback DNS server), else the system's resolver. TLS is always
verified, against the system's CAs plus an optional bundle of the operator's.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from policy.dns import DnsLookup, DnsTemporaryError
from policy.settings import HostPort


class LookupResolver(AbstractResolver):
    """aiohttp's resolver interface over the server's own `DnsLookup`."""

    def __init__(self, dns: DnsLookup) -> None:
        self._dns = dns

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await self._dns.addresses(host)
        except (DnsTemporaryError, ValueError) as error:
            # aiohttp reports an OSError from a resolver as a connection error of the request.
            raise OSError(f"DNS lookup of {host} failed: {error}") from error
        results: list[ResolveResult] = []
        for address in addresses:
            found = (
                socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
            )
            if family in (socket.AF_UNSPEC, found):
                results.append(
                    ResolveResult(
                        hostname=host,
                        host=address,
                        port=port,
                        family=found,
                        proto=0,
                        flags=socket.AI_NUMERICHOST,
                    )
                )
        if not results:
            raise OSError(f"{host} has no address")
        return results

    async def close(self) -> None:
        return None


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate and host name verified, against the system's CAs and `ca_file`'s."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def resolver(dns: DnsLookup, servers: tuple[HostPort, ...]) -> AbstractResolver | None:
    """Our resolver when OPENSEND_DNS_SERVERS is set; else None: aiohttp's getaddrinfo, which
    also honours /etc/hosts as operators expect of an HTTP client."""
    return LookupResolver(dns) if servers else None


def client_session(
    *, resolver: AbstractResolver | None, ca_file: Path | None, timeout: aiohttp.ClientTimeout
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(ssl=tls_context(ca_file), resolver=resolver, limit=20)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)
