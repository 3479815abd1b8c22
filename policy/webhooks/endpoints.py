"""Which URLs a webhook may be sent to: the URL's form, and the addresses it may connect to.

A tenant's endpoint is a request we make from inside the operator's network (server-side request
forgery, OWASP SSRF). In production it must be https, and none of the addresses its name
resolves to may be loopback, private, link-local, multicast or otherwise not global. The
addresses are checked when the endpoint is stored and again at every connection (DNS rebinding:
a name may resolve differently the second time). OPENSEND_WEBHOOK_ALLOW_PRIVATE lifts the
address rule, for development and tests.

The URL is read by yarl, the parser aiohttp itself sends with, so the host judged here is the
host the client connects to: Python's urlsplit and ipaddress would read "https://１２７.０.０.１/"
(fullwidth digits) as a name, while yarl's IDNA mapping makes it 127.0.0.1, which aiohttp then
connects to without resolving anything.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from yarl import URL

MAX_URL_LENGTH = 2048
# A part of an IPv4 address as inet_aton(3) reads it: decimal, octal (leading 0) or hex (0x).
_INET_ATON_PART = re.compile(r"0x[0-9a-f]*|[0-9]+")


class InvalidEndpoint(ValueError):
    """An endpoint refused; the message says why, in words a tenant can act on."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    host: str  # lowercase name or address, without brackets
    literal: bool  # the host is an IP address: no name to resolve


def parse_endpoint(url: object, *, require_https: bool) -> Endpoint:
    if not isinstance(url, str) or not url.strip():
        raise InvalidEndpoint(
            "The `endpoint` field must be a URL, such as https://example.com/hook."
        )
    url = url.strip()
    if len(url) > MAX_URL_LENGTH or any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidEndpoint("The `endpoint` field must be a URL without spaces or controls.")
    try:
        parts = URL(url)
        port = parts.port  # raises on a port out of range or not a number
        host = (parts.raw_host or "").lower()  # IDNA-encoded: what the client connects to
    except (ValueError, UnicodeError):
        raise InvalidEndpoint("The `endpoint` field is not a valid URL.") from None
    del port
    if parts.scheme not in ("http", "https"):
        raise InvalidEndpoint("The `endpoint` field must be an http or https URL.")
    if require_https and parts.scheme != "https":
        raise InvalidEndpoint("The `endpoint` field must be an https URL.")
    if not host:
        raise InvalidEndpoint("The `endpoint` field must name a host.")
    literal = _is_address(host)
    if not literal and all(_INET_ATON_PART.fullmatch(part) for part in host.split(".")):
        # 2130706433, 0x7f000001, 0177.0.0.1, 127.1: inet_aton's forms, read as an address by
        # some resolvers and libraries and as a name by others.
        raise InvalidEndpoint(
            "The `endpoint` field must write an IP address in its usual form, such as 192.0.2.1."
        )
    return Endpoint(url, host, literal)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# IPv6 ranges that are not publicly routable and that Python's ipaddress (3.11) does not call
# private: IPv4-compatible addresses (RFC 4291 section 2.5.5.1, deprecated), IPv4-translated
# ones (SIIT, RFC 2765), the local-use NAT64 prefix (RFC 8215) and site-local (RFC 3879).
_NOT_ROUTABLE_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in ("::/96", "::ffff:0:0:0/96", "64:ff9b:1::/48", "fec0::/10")
)
# The well-known NAT64 prefix (RFC 6052 section 2.1): the IPv4 address is the last 32 bits,
# and where the network has NAT64 it reaches that address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def forbidden(address: str) -> str | None:
    """Why a webhook may not connect to `address`, or None when it may."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv6 address that carries an IPv4 one is judged as the IPv4 address it reaches:
        # ::ffff:127.0.0.1 is 127.0.0.1, and so are 2002:7f00:1:: (6to4, RFC 3056) and
        # 64:ff9b::7f00:1 (NAT64).
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global or any(ip in net for net in _NOT_ROUTABLE_V6):
        return "an address that is not publicly routable"
    return None


def refusal(addresses: Iterable[str], *, allow_private: bool) -> str | None:
    """The first reason any of `addresses` may not be used, or None when all may."""
    if allow_private:
        return None
    for address in addresses:
        reason = forbidden(address)
        if reason is not None:
            return f"{address} ({reason})"
    return None
