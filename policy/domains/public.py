"""A domain as its tenant sees it: Resend's domain object (GET /domains, the dashboard) and the
data of its domain.* webhook events, built here once so the two never differ. Pure.

The records to publish depend on the server's hostname, which the database does not know: the
shape is built in Python, from the row and the hostname, never in SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from policy.domains.records import (
    DomainFields,
    Purpose,
    records_to_publish,
    setup_of,
    with_last_results,
)

# Our record labels (Purpose) that Resend's SDK names otherwise.
RESEND_LABELS = {Purpose.RECEIVING.value: "Receiving"}
# What the events leave out of the domain object: `object` and `deleted` describe an answer,
# not the domain; `last_checked_at` moves at every check, and with it every check would be an
# update, although a check that found what the last one found changes nothing a tenant sees.
NOT_IN_EVENTS = frozenset({"object", "deleted", "last_checked_at"})


class ShownFields(DomainFields, Protocol):
    """The columns of a stored domain that its tenant sees (storage.account.domains
    .DomainDetails); the private key is not among them, so never in what is built here."""

    @property
    def id(self) -> UUID: ...
    @property
    def status(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def records(self) -> Sequence[Mapping[str, Any]]: ...
    @property
    def last_checked_at(self) -> datetime | None: ...
    @property
    def created_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class DomainView:
    """How this server shows domains: `hostname` (OPENSEND_HOSTNAME) is where their MX points
    and what their SPF record names."""

    hostname: str

    def public(self, domain: ShownFields) -> dict[str, Any]:
        """Resend's domain object: the records to publish now, each with the last check's
        result while it is unchanged; required ones in `records`, in Resend's labels, the
        suggested DMARC record in `suggested_records` (ours, so strictly typed code still
        reads `records`)."""
        specs = records_to_publish(setup_of(domain), self.hostname)
        checks = with_last_results(specs, domain.records)
        return {
            "object": "domain",
            "id": str(domain.id),
            "name": domain.name,
            "status": domain.status,
            "created_at": domain.created_at.isoformat(),
            "region": domain.region,
            "open_tracking": False,
            "click_tracking": False,
            "capabilities": _capabilities(domain),
            "reply_domain": domain.reply_domain,
            "last_checked_at": _iso(domain.last_checked_at),
            "records": [_resend_record(c.as_json()) for c in checks if c.spec.required],
            "suggested_records": [c.as_json() for c in checks if not c.spec.required],
            "deleted": False,  # Resend's Python SDK types it as always present
        }

    def event_data(self, domain: ShownFields) -> dict[str, Any]:
        """The `data` of domain.created, domain.updated and domain.deleted: the domain object
        without NOT_IN_EVENTS. Two versions of a row whose data are equal look the same to
        their tenant, so a change that leaves it equal is no domain.updated."""
        return {k: v for k, v in self.public(domain).items() if k not in NOT_IN_EVENTS}


def _resend_record(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "record": RESEND_LABELS.get(record["record"], record["record"])}


def _capabilities(domain: DomainFields) -> dict[str, str]:
    receiving = "enabled" if domain.receiving_enabled else "disabled"
    return {"sending": "enabled", "receiving": receiving}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
