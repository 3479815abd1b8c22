"""Dashboard session rules: the cookie (a `__Host-` name, RFC 6265bis section 4.1.3.2), its
secret and lifetime, the CSRF token, and the same-origin test on unsafe methods."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

# `__Host-`: the browser keeps it only if Secure, Path=/ and without Domain, so no sibling
# host (or a plain-http page of ours) can plant or read it.
COOKIE_NAME = "__Host-opensend_session"
LIFETIME_SECONDS = 12 * 3600.0
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
# RFC 9110 section 9.2.1: the methods that change nothing.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def cookie_attributes() -> dict[str, str | bool | int]:
    """What aiohttp's set_cookie takes: HttpOnly keeps it from scripts; SameSite=Lax keeps it
    off cross-site POSTs (the CSRF token and the Origin check are the other two locks)."""
    return {
        "path": "/",
        "secure": True,
        "httponly": True,
        "samesite": "Lax",
        "max_age": int(LIFETIME_SECONDS),
    }


def csrf_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def same_origin(origin: str | None, host: str, scheme: str) -> bool:
    """The Origin header (RFC 6454 section 7) names this very host. Browsers send it on every
    POST; a request without one is refused too. Behind a TLS-terminating proxy the request
    reaches us as http while the page's origin is https: both schemes are ours then."""
    if not origin or origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.scheme in {scheme, "https"} and parts.netloc.lower() == host.lower()
