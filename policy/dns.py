"""What the rest of the program may ask of DNS, as an interface; `mta.dns` implements it.

Answers distinguish "the name has no such records" (a fact, possibly permanent) from "the
lookup failed" (`DnsTemporaryError`: a timeout or SERVFAIL), so a resolver outage is never
taken for a missing record and never turns into a bounce (RFC 5321 section 5.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class DnsTemporaryError(Exception):
    """The question could not be answered now; ask again later."""


@dataclass(frozen=True, slots=True)
class MxRecord:
    preference: int
    exchange: str  # lowercase, without the trailing dot; "" for a null MX (RFC 7505)


class DnsLookup(Protocol):
    async def mx(self, domain: str) -> list[MxRecord] | None:
        """MX records sorted by preference; None when the domain has none (NODATA or NXDOMAIN
        for MX). A null MX is returned as [MxRecord(0, "")]. Raises DnsTemporaryError."""
        ...

    async def addresses(self, host: str) -> list[str]:
        """IPv4 and IPv6 addresses of a host (A then AAAA); [] when it has none."""
        ...

    async def txt(self, name: str) -> list[str]:
        """TXT records, each with its character-strings joined (RFC 7208 section 3.3)."""
        ...

    async def exists(self, domain: str) -> bool:
        """False only for NXDOMAIN."""
        ...
