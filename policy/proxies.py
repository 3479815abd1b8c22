"""Which address a request came from, when the API sits behind the operator's reverse proxy.

Behind a proxy every request comes from the proxy's address, so a per-address limit (the
dashboard's sign-in lockout) would lock everyone out at once. The proxy names the client in
`X-Forwarded-For`, appending the address it was reached from to what the client sent; only
the entries appended by proxies the operator trusts can be believed. So: when the direct peer
is a trusted proxy, the client is the right-most entry that is not itself a trusted proxy
(RFC 7239 section 5.2 reads `Forwarded` the same way); else the peer is the client, whatever
the header says.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class InvalidProxies(ValueError):
    """A trusted-proxies list that does not parse."""


def parse_trusted(text: str) -> tuple[Network, ...]:
    """`127.0.0.1, 10.0.0.0/8, ::1`: addresses and networks, comma-separated."""
    networks: list[Network] = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise InvalidProxies(f"{part.strip()!r} is not an address or network") from None
    return tuple(networks)


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in trusted)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> str | None:
    """The client's address: `peer` unless it is a trusted proxy; then the right-most entry of
    the `X-Forwarded-For` fields (`forwarded_for`, in order) that no trusted proxy added."""
    if peer is None or not trusted or not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for field in forwarded_for for hop in field.split(",")]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # not written by a proxy we trust: believe none of it
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer
