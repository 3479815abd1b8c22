"""Which URLs a webhook may be sent to: the URL's form, and the addresses it may connect to.

A tenant's endpoint is a request we make from inside the operator's network (server-side request
forgery, OWASP SSRF). In production it must be https, and none of the addresses its name
resolves to may be loopback, private, link-local, multicast or otherwise not global. The
addresses are checked when the endpoint is stored and again at every connection (DNS rebinding:
a name may resolve differently the second time). OPENSEND_WEBHOOK_ALLOW_PRIVATE lifts the
address rule, for development and tests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048


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
        parts = urlsplit(url)
        port = parts.port  # raises on a port out of range or not a number
    except ValueError:
        raise InvalidEndpoint("The `endpoint` field is not a valid URL.") from None
    del port
    if parts.scheme not in ("http", "https"):
        raise InvalidEndpoint("The `endpoint` field must be an http or https URL.")
    if require_https and parts.scheme != "https":
        raise InvalidEndpoint("The `endpoint` field must be an https URL.")
    host = (parts.hostname or "").lower()
    if not host:
        raise InvalidEndpoint("The `endpoint` field must name a host.")
    return Endpoint(url, host, _is_address(host))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def forbidden(address: str) -> str | None:
    """Why a webhook may not connect to `address`, or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
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
