"""DNS through dnspython's asynchronous resolver, never blocking the event loop.

Every lookup goes to OPENSEND_DNS_SERVERS when set (tests point it at a loopback server), else
to the system's resolvers. Implements `policy.dns.DnsLookup`.
"""

from __future__ import annotations

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from policy.dns import DnsTemporaryError, MxRecord
from policy.settings import HostPort

# A slow resolver must not hold an SMTP delivery or an API request for long.
LOOKUP_LIFETIME_SECONDS = 10.0


class Resolver:
    def __init__(
        self, servers: tuple[HostPort, ...] = (), lifetime: float = LOOKUP_LIFETIME_SECONDS
    ):
        if servers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [server.host for server in servers]
            # dnspython takes one port for all nameservers; settings keep per-server ports for
            # the day it does not, and the tests use one server.
            resolver.port = servers[0].port
        else:
            resolver = dns.asyncresolver.Resolver()
        resolver.lifetime = lifetime
        resolver.timeout = min(lifetime, 3.0)
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
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            answer = await self._answer(host, rdtype)
            if answer is not None:
                found.extend(r.to_text() for r in answer)
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
