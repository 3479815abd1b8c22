"""DNS through dnspython's asynchronous resolver, never blocking the event loop.

Every lookup goes to OPENSEND_DNS_SERVERS when set (tests point it at a loopback server), else
to the system's resolvers. `Resolver` implements `policy.dns.DnsLookup`; `BlockingResolver` is
the same configuration for libraries that can only block (pyspf, dkimpy), in worker threads.
"""

from __future__ import annotations

import asyncio

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from policy.dns import DnsTemporaryError, MxRecord
from policy.settings import HostPort

# A slow resolver must not hold an SMTP delivery or an API request for long.
LOOKUP_LIFETIME_SECONDS = 10.0
# Answers kept by a BlockingResolver, each for its TTL: received mail comes from the same few
# domains again and again, and a check asks up to a dozen questions.
BLOCKING_CACHE_ENTRIES = 10_000


def _configure(
    resolver: dns.resolver.BaseResolver, servers: tuple[HostPort, ...], lifetime: float
) -> None:
    if servers:
        resolver.nameservers = [server.host for server in servers]
        # dnspython takes one port for all nameservers; settings keep per-server ports for
        # the day it does not, and the tests use one server.
        resolver.port = servers[0].port
    resolver.lifetime = lifetime
    resolver.timeout = min(lifetime, 3.0)


class Resolver:
    def __init__(
        self, servers: tuple[HostPort, ...] = (), lifetime: float = LOOKUP_LIFETIME_SECONDS
    ):
        resolver = dns.asyncresolver.Resolver(configure=not servers)
        _configure(resolver, servers, lifetime)
        self._resolver = resolver

    async def _answer(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        try:
            return await self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as error:
            raise DnsTemporaryError(f"{rdtype} {name}: {error}") from error
        except dns.name.LabelTooLong as error:  # not a name at all: nothing can be there
            raise ValueError(f"{name!r} is not a valid domain name") from error

    async def mx(self, domain: str) -> list[MxRecord] | None:
        answer = await self._answer(domain, "MX")
        if answer is None:
            return None
        records = [
            MxRecord(int(r.preference), r.exchange.to_text(omit_final_dot=True).lower())
            for r in answer
        ]
        # RFC 7505 section 3: a single MX of preference 0 and exchange "." is a null MX.
        for record in records:
            if record.exchange in ("", "."):
                return [MxRecord(0, "")]
        return sorted(records, key=lambda r: (r.preference, r.exchange))

    async def addresses(self, host: str) -> list[str]:
        """The host's IPv4 and IPv6 addresses, asked at once. One family's lookup failing
        (a server that times out or SERVFAILs on AAAA is common) costs only that family: the
        other's addresses are enough to connect. DnsTemporaryError only when what failed could
        have been the only answer."""
        answers = await asyncio.gather(
            self._answer(host, "A"), self._answer(host, "AAAA"), return_exceptions=True
        )
        found: list[str] = []
        failure: BaseException | None = None
        for answer in answers:
            if isinstance(answer, BaseException):
                failure = answer
            elif answer is not None:
                found.extend(r.to_text() for r in answer)
        if failure is not None and (not found or not isinstance(failure, DnsTemporaryError)):
            raise failure
        return found

    async def txt(self, name: str) -> list[str]:
        answer = await self._answer(name, "TXT")
        if answer is None:
            return []
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    async def exists(self, domain: str) -> bool:
        try:
            await self._resolver.resolve(domain, "SOA", search=False)
        except dns.resolver.NXDOMAIN:
            return False
        except dns.resolver.NoAnswer:
            return True
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as error:
            raise DnsTemporaryError(f"SOA {domain}: {error}") from error
        return True


class BlockingResolver:
    """OPENSEND_DNS_SERVERS for code that cannot await. Every call blocks: make it from a
    worker thread, never from an event loop (DESIGN.md section 7)."""

    def __init__(
        self, servers: tuple[HostPort, ...] = (), lifetime: float = LOOKUP_LIFETIME_SECONDS
    ):
        resolver = dns.resolver.Resolver(configure=not servers)
        _configure(resolver, servers, lifetime)
        resolver.cache = dns.resolver.LRUCache(BLOCKING_CACHE_ENTRIES)
        self._resolver = resolver

    @property
    def lifetime(self) -> float:
        """The longest one lookup may take, retries included."""
        return float(self._resolver.lifetime)

    def answer(
        self, name: str, rdtype: str, lifetime: float | None = None
    ) -> dns.resolver.Answer | None:
        """The records, or None when the name has none of the type (NXDOMAIN or NODATA).
        Raises DnsTemporaryError when no server answered (timeout, SERVFAIL, refused)."""
        try:
            return self._resolver.resolve(name, rdtype, search=False, lifetime=lifetime)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as error:
            raise DnsTemporaryError(f"{rdtype} {name}: {error}") from error
        except (dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.EmptyLabel):
            return None  # a name that cannot exist has no records
