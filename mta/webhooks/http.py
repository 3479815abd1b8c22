"""The HTTP client of webhook delivery: no redirects, connect and total timeouts, and a check of
every address a connection is about to use.

aiohttp resolves names through `GuardedResolver`, around the server's own resolver (given by
the composition root), which refuses a name that resolves to any address policy forbids, at
every new connection: a name that changes its answer after the endpoint was stored (DNS
rebinding) still cannot reach loopback or the private network. An address literal is not
resolved; the worker checks it before the request.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from policy.text import clean_text
from policy.webhooks.endpoints import refusal

USER_AGENT = "OpenSend-Webhooks/1"
# The response body kept with each attempt.
RESPONSE_KEEP_BYTES = 1024


class UnsafeAddress(OSError):
    """The endpoint's name resolves to an address webhooks may not reach."""


class GuardedResolver(AbstractResolver):
    """Another resolver's answers, refused whole when any address is one webhooks may not
    reach (a name with one public and one private address could be steered to the latter)."""

    def __init__(self, inner: AbstractResolver, *, allow_private: bool) -> None:
        self._inner = inner
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        reason = refusal([r["host"] for r in results], allow_private=self._allow_private)
        if reason is not None:
            raise UnsafeAddress(f"{host} resolves to {reason}")
        return results

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int | None
    body: str  # the first KiB, as text
    error: str | None


def client_session(
    resolver: AbstractResolver,
    *,
    allow_private: bool,
    connect_timeout: float,
    timeout: float,
) -> aiohttp.ClientSession:
    # No limit of connections, in all or per host: how many requests are in flight is the
    # claim's to decide (storage/webhooks/outbox.py: per endpoint, and MAX_IN_FLIGHT per
    # worker). aiohttp counts per host and port, not per endpoint: with a per-host limit, a
    # hanging endpoint held another tenant's endpoint on the same host waiting for a
    # connection, until that request timed out and began a failing streak of its own.
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(resolver, allow_private=allow_private),
        limit=0,
        limit_per_host=0,
        use_dns_cache=False,  # every new connection resolves, and is checked, again
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout, connect=connect_timeout),
        headers={"User-Agent": USER_AGENT},
        trust_env=False,  # no proxy from the environment: the address check must be ours
        # An endpoint's cookies are not kept or sent back: each delivery stands alone (and the
        # jar's bookkeeping is work on every request).
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> Answer:
    """One attempt. No redirect is followed (a 3xx is an answer like any other non-2xx)."""
    try:
        async with session.post(
            url,
            data=body,
            headers={**headers, "Content-Type": "application/json"},
            allow_redirects=False,
        ) as response:
            kept = await response.content.read(RESPONSE_KEEP_BYTES)
            # Stored with the attempt: a NUL in the answer would keep it unrecorded.
            return Answer(response.status, clean_text(kept.decode("utf-8", "replace")), None)
    except TimeoutError:
        return Answer(None, "", "timed out")
    except aiohttp.ClientConnectorError as error:
        cause = error.os_error
        if isinstance(cause, UnsafeAddress):
            return Answer(None, "", f"refused: {cause}")
        return Answer(None, "", f"cannot connect: {cause}")
    except (aiohttp.ClientError, OSError) as error:
        return Answer(None, "", described(error))


def described(error: BaseException) -> str:
    """An error as the attempt stores it and the worker logs it, without the endpoint's URL,
    which may carry credentials or a token (the errors of aiohttp that quote it say so here)."""
    kind = type(error).__name__
    if isinstance(error, aiohttp.InvalidURL):
        return f"{kind}: the endpoint is not a URL the client can send to"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"{kind}: {error.status} {error.message}"
    return f"{kind}: {error}"
