"""What a received report does to our deliveries: which delivery it is about, the event it
raises, and whether the address goes on the tenant's suppression list.

The delivery is found by the most trustworthy evidence first (`LINK_PRECEDENCE`); storage
resolves the keys given here within the tenant the report was stored for, never another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID

from policy.bounces.report import Report, ReportedRecipient
from policy.bounces.taxonomy import suppresses
from policy.bounces.verp import BounceVerdict


class LinkSource(StrEnum):
    BOUNCE_ADDRESS = "bounce_address"  # the VERP address the DSN was sent to, verified at RCPT
    RETURNED_MESSAGE = "returned_message"  # its returned Message-ID or X-OpenSend-Reply-Token
    FINAL_RECIPIENT = "final_recipient"  # only the address: the tenant's latest delivery to it


# The evidence that ties a report to one delivery, most trustworthy first. The bounce address
# was minted for exactly one delivery; the returned message names one email (and the report's
# Final-Recipient then picks its recipient); an address alone is the last resort.
LINK_PRECEDENCE: tuple[LinkSource, ...] = (
    LinkSource.BOUNCE_ADDRESS,
    LinkSource.RETURNED_MESSAGE,
    LinkSource.FINAL_RECIPIENT,
)

EVENT_FOR_ACTION = {
    "failed": "email.bounced",
    "delayed": "email.delivery_delayed",
    "complained": "email.complained",
}


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """One report row to apply to one of the tenant's deliveries, with the keys to find it."""

    source: LinkSource
    event: str
    delivery_id: UUID | None  # BOUNCE_ADDRESS
    email_id: UUID | None  # RETURNED_MESSAGE
    recipient: str | None  # the report's address (Final-Recipient, Original-Rcpt-To)
    bounced: bool  # Action: failed: the delivery becomes `bounced`
    suppress: str | None  # "bounce" or "complaint": the address goes on the list
    details: dict[str, Any]  # what GET /emails/{id} shows and the event carries


def _details(row: ReportedRecipient) -> dict[str, Any]:
    shown = row.as_json()
    del shown["email"]
    return shown


def _about(row: ReportedRecipient, complaint: bool) -> tuple[str, bool, str | None]:
    if complaint:
        return "email.complained", False, "complaint"
    action = row.action or "failed"
    bounced = action == "failed"
    suppress = "bounce" if suppresses(action, row.status, row.kind) else None
    return EVENT_FOR_ACTION.get(action, "email.bounced"), bounced, suppress


def delivery_reports(
    report: Report | None,
    *,
    complaint: bool,
    verdicts: Sequence[BounceVerdict],
    returned_email_id: UUID | None,
) -> tuple[DeliveryReport, ...]:
    """The delivery reports of a bounce or complaint stored for one tenant.

    `verdicts` are the bounce addresses among its recipients (checked at RCPT);
    `returned_email_id` is the email its returned message was matched to for this tenant.
    """
    if report is None:
        return ()
    rows = report.recipients if complaint else report.failed
    if not rows:
        return ()
    valid = [v for v in verdicts if v.valid and v.delivery is not None]
    if verdicts and not valid:
        # Sent to a bounce address that is forged, or names a delivery of another tenant: like
        # a forged reply token, it links to nothing, and no weaker evidence is tried instead.
        return ()
    if valid:
        found = []
        for verdict in valid:
            assert verdict.delivery is not None
            # The row about the address we sent to, else the report's first: a forwarded or
            # rewritten address still bounces the delivery the envelope names.
            wanted = verdict.delivery.recipient.lower()
            row = next((r for r in rows if r.address == wanted), rows[0])
            event, bounced, suppress = _about(row, complaint)
            found.append(
                DeliveryReport(
                    LinkSource.BOUNCE_ADDRESS,
                    event,
                    verdict.delivery.delivery_id,
                    verdict.delivery.email_id,
                    wanted,
                    bounced,
                    suppress,
                    _details(row),
                )
            )
        return tuple(found)
    source = LinkSource.RETURNED_MESSAGE if returned_email_id else LinkSource.FINAL_RECIPIENT
    reports = []
    for row in rows:
        if source is LinkSource.FINAL_RECIPIENT and row.address is None:
            continue  # a redacted complaint without its message names nobody
        event, bounced, suppress = _about(row, complaint)
        reports.append(
            DeliveryReport(
                source,
                event,
                None,
                returned_email_id,
                row.address,
                bounced,
                suppress,
                _details(row),
            )
        )
    return tuple(reports)
