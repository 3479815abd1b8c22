"""Where a recipient domain's mail goes: a static transport, else the relay, else its MX hosts.

The order is a table (ROUTE_ORDER); MX resolution follows RFC 5321 section 5.1 (preference
order, equal preferences shuffled, the domain's own address records when it has no MX) and
RFC 7505 (a null MX refuses all mail). A domain that cannot be routed gets an answer instead:
a bounce for facts (null MX, no such domain), a deferral for DNS trouble.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from policy.delivery import result as results
from policy.delivery.result import SmtpAnswer
from policy.dns import DnsLookup, DnsTemporaryError, MxRecord
from policy.settings import HostPort, Relay, RelayTls

# Postfix's smtp_mx_address_limit: enough addresses to get past a dead primary, few enough
# that a domain with a dozen broken MX hosts does not hold a worker for a dozen timeouts.
MAX_MX_ADDRESSES = 5


class DestinationClass(StrEnum):
    TRANSPORT = "transport"
    RELAY = "relay"
    MX = "mx"


# First match wins: an operator's per-domain route, then the smarthost, then DNS.
ROUTE_ORDER = (DestinationClass.TRANSPORT, DestinationClass.RELAY, DestinationClass.MX)


@dataclass(frozen=True, slots=True)
class Hop:
    """One host to try: where to connect, and how to protect the session."""

    host: str  # its name: for TLS (SNI, verification) and for the delivery row's remote_host
    address: str  # what to connect to: an IP address, or a name the system resolves
    port: int
    tls: RelayTls = RelayTls.OPPORTUNISTIC
    verify: bool = False
    cafile: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, int]:
        """The destination host that connection caps and connection reuse count by."""
        return (self.address, self.port)


@dataclass(frozen=True, slots=True)
class Route:
    kind: DestinationClass
    hops: tuple[Hop, ...]  # in the order to try them


@dataclass(frozen=True, slots=True)
class Unroutable:
    answer: SmtpAnswer


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class OutboundRouter:
    """Routes recipient domains; DNS is asked through the `DnsLookup` interface."""

    def __init__(
        self,
        dns: DnsLookup,
        *,
        transports: Mapping[str, HostPort],
        relay: Relay | None,
        smtp_port: int = 25,
        rng: random.Random | None = None,
    ) -> None:
        self._dns = dns
        self._transports = transports
        self._relay = relay
        self._smtp_port = smtp_port
        self._rng = rng or random.Random()

    async def route(self, domain: str) -> Route | Unroutable:
        domain = domain.lower().rstrip(".")
        for kind in ROUTE_ORDER:
            if kind is DestinationClass.TRANSPORT and domain in self._transports:
                target = self._transports[domain]
                return Route(kind, (Hop(target.host, target.host, target.port),))
            if kind is DestinationClass.RELAY and self._relay is not None:
                relay = self._relay
                hop = Hop(
                    relay.host,
                    relay.host,
                    relay.port,
                    relay.tls,
                    relay.verify,
                    relay.cafile,
                    relay.username,
                    relay.password,
                )
                return Route(kind, (hop,))
            if kind is DestinationClass.MX:
                return await self._mx_route(domain)
        raise AssertionError("ROUTE_ORDER ends with MX, which always answers")

    async def _mx_route(self, domain: str) -> Route | Unroutable:
        try:
            records = await self._dns.mx(domain)
        except DnsTemporaryError as error:
            return Unroutable(SmtpAnswer.ours(results.DNS_TEMPORARY, detail=str(error)))
        except ValueError:
            return Unroutable(SmtpAnswer.ours(results.NO_SUCH_DOMAIN))
        if records == [MxRecord(0, "")]:
            # RFC 7505 section 3.2: bounce at once, no retry, no fallback to address records.
            return Unroutable(SmtpAnswer.ours(results.NULL_MX))
        if records is None:
            # RFC 5321 section 5.1: no MX records, so the domain itself is the implicit MX.
            return await self._implicit_mx(domain)
        hops: list[Hop] = []
        temporary: str | None = None
        for exchange in self._ordered(records):
            try:
                addresses = await self._dns.addresses(exchange)
            except (DnsTemporaryError, ValueError) as error:
                temporary = f"{exchange}: {error}"
                continue
            hops.extend(Hop(exchange, address, self._smtp_port) for address in addresses)
            if len(hops) >= MAX_MX_ADDRESSES:
                break
        if hops:
            return Route(DestinationClass.MX, tuple(hops[:MAX_MX_ADDRESSES]))
        if temporary is not None:
            return Unroutable(SmtpAnswer.ours(results.DNS_TEMPORARY, detail=temporary))
        return Unroutable(SmtpAnswer.ours(results.MX_HOSTS_UNRESOLVED))

    async def _implicit_mx(self, domain: str) -> Route | Unroutable:
        try:
            addresses = await self._dns.addresses(domain)
            if addresses:
                hops = tuple(Hop(domain, a, self._smtp_port) for a in addresses)
                return Route(DestinationClass.MX, hops[:MAX_MX_ADDRESSES])
            exists = await self._dns.exists(domain)
        except DnsTemporaryError as error:
            return Unroutable(SmtpAnswer.ours(results.DNS_TEMPORARY, detail=str(error)))
        except ValueError:
            exists = False
        missing = results.NO_MAIL_HOST if exists else results.NO_SUCH_DOMAIN
        return Unroutable(SmtpAnswer.ours(missing))

    def _ordered(self, records: list[MxRecord]) -> list[str]:
        """Exchanges by preference, equal preferences in random order (RFC 5321 section 5.1),
        each once; an exchange that is an address literal is not a host name and is skipped."""
        shuffled = list(records)
        self._rng.shuffle(shuffled)
        shuffled.sort(key=lambda record: record.preference)  # stable: ties stay shuffled
        seen: dict[str, None] = {}
        for record in shuffled:
            if record.exchange and not _is_address(record.exchange):
                seen.setdefault(record.exchange, None)
        return list(seen)
