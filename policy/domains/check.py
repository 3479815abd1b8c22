"""The one domain verification procedure, shared by `POST /domains/{id}/verify` and
`opensend domain verify`: ask DNS (through the `DnsLookup` passed in) and judge the answers.

No sockets of its own: the caller passes the resolver, as every policy module takes its lookups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from policy.dns import DnsLookup, DnsTemporaryError
from policy.domains.records import (
    Answer,
    RecordCheck,
    RecordSpec,
    Status,
    domain_status,
    judge,
)


@dataclass(frozen=True, slots=True)
class DomainCheck:
    status: Status
    records: tuple[RecordCheck, ...]

    @property
    def problems(self) -> list[RecordCheck]:
        """The required records that do not hold, for the operator to fix."""
        return [c for c in self.records if c.spec.required and c.status is not Status.VERIFIED]


async def check_domain(dns: DnsLookup, domain: str, specs: Sequence[RecordSpec]) -> DomainCheck:
    try:
        exists = await dns.exists(domain)
    except DnsTemporaryError:
        answers = [Answer(temporary=True)] * len(specs)
    else:
        if exists:
            answers = list(await asyncio.gather(*(_answer(dns, spec) for spec in specs)))
        else:  # one clear reason rather than one "not found" per record
            answers = [Answer(missing_domain=domain)] * len(specs)
    checks = tuple(judge(spec, answer) for spec, answer in zip(specs, answers, strict=True))
    return DomainCheck(domain_status(checks), checks)


async def _answer(dns: DnsLookup, spec: RecordSpec) -> Answer:
    # In a fixed order: name servers rotate the records of an answer (RFC 1794), and a check
    # that found the same records in another order must not read as a change of the domain
    # (a domain.updated event for nothing).
    try:
        if spec.type == "MX":
            records = sorted(
                await dns.mx(spec.name) or (), key=lambda r: (r.preference, r.exchange)
            )
            # A null MX comes back as exchange "", shown as "." the way it is published.
            return Answer(tuple(f"{r.preference} {r.exchange or '.'}" for r in records))
        return Answer(tuple(sorted(await dns.txt(spec.name))))
    except DnsTemporaryError:
        return Answer(temporary=True)
