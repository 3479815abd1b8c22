"""Applying reports to deliveries: find the delivery by the keys policy gives, record the report
on it, raise its event, roll up the email's status, and suppress the address when policy says so.

Runs inside the transaction that stores the report itself: the change, its event and the stored
message commit together or not at all. Every statement is scoped to the tenant the report was
stored for, so a report can never touch another tenant's delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

import asyncpg

from storage.database import Pool
from storage.delivery.queue import (
    COUNT_RECIPIENT_STATES,
    LOCK_EMAILS,
    UPDATE_EMAIL_STATUS,
    DsnToQueue,
    RollUp,
    queue_dsn,
)
from storage.errors import storage_errors
from storage.ids import uuid7
from storage.suppressions.store import suppress


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    delivery_id: UUID
    email_id: UUID
    recipient: str
    thread_id: UUID | None


class ReportToApply(Protocol):
    """policy.bounces.effects.DeliveryReport."""

    @property
    def event(self) -> str: ...
    @property
    def delivery_id(self) -> UUID | None: ...
    @property
    def email_id(self) -> UUID | None: ...
    @property
    def recipient(self) -> str | None: ...
    @property
    def bounced(self) -> bool: ...
    @property
    def suppress(self) -> str | None: ...
    @property
    def details(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class LateBounce:
    """A delivery a report bounced after the remote had accepted it (it was `delivered`): what
    the email's sender may be owed a DSN about (policy.bounces.dsn.dsn_for_report)."""

    source: str  # the email's: api, smtp (submission), reply, dsn
    envelope_sender: str
    recipient: str
    details: Mapping[str, Any]
    original_header: bytes | None


# The DSN a late bounce is owed, if any: made by the caller, queued here in the report's
# transaction, so the bounce and its notification commit together or not at all.
LateDsn = Callable[[LateBounce], DsnToQueue | None]


class ReportedRecord(Protocol):
    @property
    def id(self) -> UUID: ...
    @property
    def tenant_id(self) -> UUID: ...
    @property
    def delivery_reports(self) -> Sequence[ReportToApply]: ...


SELECT_DELIVERY = """
SELECT d.id AS delivery_id, d.email_id, d.recipient, e.thread_id
FROM deliveries d JOIN emails e ON e.id = d.email_id
WHERE d.tenant_id = $1 AND d.id = $2
"""
# The keys, most trustworthy first (policy.bounces.effects.LINK_PRECEDENCE): the delivery a
# bounce address names; the email's delivery to the report's address; the email's only delivery
# (the report's address was rewritten or redacted); the tenant's latest delivery to the address.
_FOUND = "SELECT d.id, d.email_id, d.recipient FROM deliveries d WHERE d.tenant_id = $1"
RESOLVE_BY_ID = _FOUND + " AND d.id = $2"
RESOLVE_BY_EMAIL_RECIPIENT = _FOUND + " AND d.email_id = $2 AND lower(d.recipient) = $3"
RESOLVE_ONLY_OF_EMAIL = _FOUND + " AND d.email_id = $2 LIMIT 2"
RESOLVE_LATEST_TO = (
    _FOUND + " AND lower(d.recipient) = $2 AND d.attempts > 0 ORDER BY d.queued_at DESC LIMIT 1"
)
# Action: failed ends the delivery as bounced (a worker still holding it loses its lease: its
# late outcome matches no row); any other report is only recorded. A canceled or suppressed
# delivery was never sent, so no report can be about it. `was` is the status before, as the
# statement's snapshot has it (LOCK_EMAILS serialises the reports and outcomes of one email).
RECORD_REPORT = """
WITH was AS (SELECT status FROM deliveries WHERE id = $1 AND tenant_id = $2)
UPDATE deliveries
SET status = CASE WHEN $3 THEN 'bounced' ELSE status END,
    finished_at = CASE WHEN $3 THEN coalesce(finished_at, now()) ELSE finished_at END,
    lease_until = CASE WHEN $3 THEN NULL ELSE lease_until END,
    lease_token = CASE WHEN $3 THEN NULL ELSE lease_token END,
    report = CASE WHEN $5 THEN report ELSE $4::jsonb END,
    reported_at = CASE WHEN $5 THEN reported_at ELSE now() END,
    complained_at = CASE WHEN $5 THEN now() ELSE complained_at END
WHERE id = $1 AND tenant_id = $2 AND status NOT IN ('canceled', 'suppressed')
RETURNING id, (SELECT status FROM was) AS was
"""
# What a DSN for a late bounce names: the email's source and sender, and its header returned
# (the first RETURNED_HEAD_BYTES of the message: policy.bounces.dsn keeps 64 KiB of a header).
RETURNED_HEAD_BYTES = 64 * 1024 + 4
SELECT_EMAIL_FOR_DSN = """
SELECT source, from_address, substring(raw FROM 1 FOR $2) AS head FROM emails WHERE id = $1
"""
INSERT_EVENT = """
INSERT INTO email_events (id, tenant_id, email_id, type, recipient, data)
VALUES ($1, $2, $3, $4, $5, $6)
"""
SET_LAST_EVENT = "UPDATE emails SET last_event = $2 WHERE id = $1 AND status <> 'canceled'"


async def delivery_evidence(
    conn: Pool | asyncpg.Connection, tenant_id: UUID, delivery_id: UUID
) -> DeliveryRow | None:
    async with storage_errors():
        row = await conn.fetchrow(SELECT_DELIVERY, tenant_id, delivery_id)
    return DeliveryRow(**dict(row)) if row else None


async def _resolve(
    conn: asyncpg.Connection, tenant_id: UUID, report: ReportToApply
) -> asyncpg.Record | None:
    address = report.recipient.lower() if report.recipient else None
    if report.delivery_id is not None:
        row: asyncpg.Record | None = await conn.fetchrow(
            RESOLVE_BY_ID, tenant_id, report.delivery_id
        )
        return row
    if report.email_id is not None:
        if address is not None:
            row = await conn.fetchrow(
                RESOLVE_BY_EMAIL_RECIPIENT, tenant_id, report.email_id, address
            )
            if row is not None:
                return row
        rows = await conn.fetch(RESOLVE_ONLY_OF_EMAIL, tenant_id, report.email_id)
        return rows[0] if len(rows) == 1 else None
    if address is not None:
        row = await conn.fetchrow(RESOLVE_LATEST_TO, tenant_id, address)
        return row
    return None


def _event_data(report: ReportToApply, received_id: UUID) -> dict[str, Any]:
    details = dict(report.details)
    data: dict[str, Any] = {**details, "received_id": str(received_id)}
    if report.event == "email.bounced":
        # Resend's webhook payload names these bounce.type, bounce.subType, bounce.message.
        data["bounce"] = {
            "type": details.get("type"),
            "subType": details.get("subtype"),
            "message": details.get("diagnostic_code"),
        }
    return data


async def apply_reports(
    conn: asyncpg.Connection,
    records: Sequence[ReportedRecord],
    roll_up: RollUp,
    late_dsn: LateDsn | None = None,
) -> None:
    """Apply every record's delivery reports, inside the caller's transaction; a report that
    bounces a delivery the remote had accepted queues the DSN `late_dsn` makes of it."""
    found: list[tuple[UUID, UUID, asyncpg.Record, ReportToApply]] = []
    for record in records:
        for report in record.delivery_reports:
            row = await _resolve(conn, record.tenant_id, report)
            if row is not None:
                found.append((record.id, record.tenant_id, row, report))
    if not found:
        return
    email_ids = sorted({row["email_id"] for _, _, row, _ in found})
    await conn.execute(LOCK_EMAILS, email_ids)  # the order queue.record_outcomes locks in
    bounced: set[UUID] = set()
    for received_id, tenant_id, row, report in found:
        complaint = report.event == "email.complained"
        details = {**report.details, "received_id": str(received_id)}
        applied = await conn.fetchrow(
            RECORD_REPORT, row["id"], tenant_id, report.bounced, details, complaint
        )
        if applied is None:
            continue
        # Only a report that came to our bounce address (it names the delivery) replaced one
        # the sender would have had: one linked by its returned Message-ID or its address went
        # to the sender's own address already, and the latter may even be of another email.
        came_to_us = report.delivery_id is not None
        if report.bounced and came_to_us and applied["was"] == "delivered" and late_dsn:
            await _notify_late_bounce(conn, tenant_id, row, report, late_dsn)
        await conn.execute(
            INSERT_EVENT,
            uuid7(),
            tenant_id,
            row["email_id"],
            report.event,
            row["recipient"],
            _event_data(report, received_id),
        )
        await conn.execute(SET_LAST_EVENT, row["email_id"], report.event)
        if report.bounced:
            bounced.add(row["email_id"])
        if report.suppress is not None:
            await suppress(
                conn,
                tenant_id,
                [row["recipient"]],
                origin=report.suppress,
                source_ids=[row["email_id"]],
            )
    if bounced:
        touched = sorted(bounced)
        states: dict[UUID, dict[str, int]] = {}
        for state in await conn.fetch(COUNT_RECIPIENT_STATES, touched):
            states.setdefault(state["email_id"], {})[state["status"]] = state["n"]
        await conn.execute(
            UPDATE_EMAIL_STATUS,
            touched,
            [roll_up(states.get(email_id, {})) for email_id in touched],
            ["email.bounced"] * len(touched),
        )


async def _notify_late_bounce(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    row: asyncpg.Record,
    report: ReportToApply,
    late_dsn: LateDsn,
) -> None:
    email = await conn.fetchrow(SELECT_EMAIL_FOR_DSN, row["email_id"], RETURNED_HEAD_BYTES)
    if email is None:
        return
    head = bytes(email["head"]) if email["head"] is not None else b""
    dsn = late_dsn(
        LateBounce(
            source=email["source"],
            envelope_sender=email["from_address"],
            recipient=row["recipient"],
            details=report.details,
            original_header=head.split(b"\r\n\r\n", 1)[0] if head else None,
        )
    )
    if dsn is not None:
        await queue_dsn(conn, tenant_id, dsn)
