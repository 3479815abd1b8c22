"""Reads of received mail for the API: one tenant's messages, a page at a time, and one in full.

The MX writes `received_emails` (storage/inbound/inbox.py); this module only reads it. Every query
takes the tenant first, so an id of another tenant finds nothing, exactly like an id that never
existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from storage.authcheck import stripped
from storage.database import Pool
from storage.errors import storage_errors


def readable(alias: str = "") -> str:
    """The test every reader of received mail applies to a `received_emails` row (named `alias`
    in its statement), as SQL. A row whose body is not parsed yet (parse_pending, migration 0019)
    is shown nowhere, counted nowhere and flags nothing (the API, threads, the dashboard's pages,
    counts and "has a reply" flags): it appears, complete, once the MX has filled it in, a
    moment after its 250. The MX's own lookups (matching, the fill-in) read every row: what they
    read is written before the commit."""
    return f"NOT {alias + '.' if alias else ''}parse_pending"


@dataclass(frozen=True, slots=True)
class ReceivedFilters:
    """Optional narrowing of a listing; None means "any". Addresses are compared in lowercase."""

    match_status: str | None = None
    classification: str | None = None
    thread_id: UUID | None = None
    recipient: str | None = None  # one of the envelope recipients (RCPT TO)
    sender: str | None = None  # the address of the From field
    received_after: datetime | None = None  # inclusive
    received_before: datetime | None = None  # exclusive


@dataclass(frozen=True, slots=True)
class ReceivedSummary:
    id: UUID
    received_at: datetime
    mail_from: str
    rcpt_to: list[str]
    size: int
    message_id: str | None
    subject: str | None
    from_address: str | None
    from_name: str | None
    to_addresses: list[str]
    cc_addresses: list[str]
    reply_to_addresses: list[str]
    attachments: list[dict[str, Any]]
    reply_match_status: str
    reply_to_email_id: UUID | None
    thread_id: UUID | None
    contact_id: UUID | None
    classification: str
    classification_reason: str | None


@dataclass(frozen=True, slots=True)
class ReceivedEmail(ReceivedSummary):
    remote_ip: str | None
    helo: str | None
    tls: bool
    tls_version: str | None
    headers: list[list[str]]
    in_reply_to: str | None
    references: str | None
    sent_at: datetime | None
    text_body: str | None
    html_body: str | None
    parse_defects: list[str]
    match_source: str | None
    token_failure: str | None
    token_failure_source: str | None
    # Authentication results (received_auth_results, migration 0010): None until the auth-check
    # workers got to it.
    auth_results: dict[str, Any] | None
    auth_header: str | None
    auth_checked_at: datetime | None
    auth_next_check_at: datetime | None  # when a temperror is looked at again; None once final
    report: dict[str, Any] | None  # a bounce's or complaint's reading (policy/bounces/report.py)
    # The new text without quoted history (received_stripped_bodies, migration 0015): None
    # until the after-commit worker got to it (and for a message without such a body).
    stripped_text: str | None
    stripped_html: str | None


@dataclass(frozen=True, slots=True)
class RawMessage:
    received_header: str | None
    auth_header: str | None
    raw: bytes
    attachments: list[dict[str, Any]]


SUMMARY_COLUMNS = """
id, received_at, mail_from, rcpt_to, size, message_id, subject, from_address, from_name,
to_addresses, cc_addresses, reply_to_addresses, attachments, reply_match_status,
reply_to_email_id, thread_id, contact_id, classification, classification_reason
"""
DETAIL_COLUMNS = (
    SUMMARY_COLUMNS
    + """, host(remote_ip) AS remote_ip, helo, tls, tls_version, headers, in_reply_to,
"references", sent_at, text_body, html_body, parse_defects, match_source, token_failure,
token_failure_source, a.results AS auth_results, a.header AS auth_header,
a.checked_at AS auth_checked_at, a.next_check_at AS auth_next_check_at, report
"""
    + stripped.STRIPPED_COLUMNS
)
# The results live in a narrow table of their own, which the auth-check workers write without
# touching the message's row; a message not checked yet has none.
_WITH_AUTH = " FROM received_emails r LEFT JOIN received_auth_results a ON a.received_id = r.id"

# Each filter is a no-op when its parameter is NULL, so one statement serves every combination
# (and stays one prepared statement). The recipient test reads the array in place: the envelope
# keeps addresses as they were written, and recipients are few.
_FILTERS = """
  AND ($2::text IS NULL OR reply_match_status = $2)
  AND ($3::uuid IS NULL OR thread_id = $3)
  AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM unnest(rcpt_to) AS r (address)
                                  WHERE lower(r.address) = $4))
  AND ($5::text IS NULL OR lower(from_address) = $5)
  AND ($6::timestamptz IS NULL OR received_at >= $6)
  AND ($7::timestamptz IS NULL OR received_at < $7)
  AND (${c}::text IS NULL OR classification = ${c})
"""
# Keyset pages on index received_tenant_recent (tenant_id, received_at DESC, id DESC): the row
# comparison with the cursor's key is an index condition, so page 1,000 costs what page 1 does
# (OFFSET would read and discard every earlier row). Three statements rather than one with an
# "IS NULL OR" cursor test, because only a plain comparison can bound the index scan.
# The classification filter is the statement's last parameter: $9 on the first page, $11 after
# the cursor's two.
_READABLE = " AND " + readable()
_LIST = (
    "SELECT "
    + SUMMARY_COLUMNS
    + " FROM received_emails WHERE tenant_id = $1"
    + _READABLE
    + _FILTERS
)
LIST_NEWEST = _LIST.replace("${c}", "$9") + "ORDER BY received_at DESC, id DESC LIMIT $8"
_LIST = _LIST.replace("${c}", "$11")
LIST_AFTER = _LIST + "AND (received_at, id) < ($9, $10) ORDER BY received_at DESC, id DESC LIMIT $8"
# Backwards (newer than the cursor): nearest first, so LIMIT keeps the page next to the cursor;
# the caller gets it reversed into the list's newest-first order.
LIST_BEFORE = _LIST + "AND (received_at, id) > ($9, $10) ORDER BY received_at, id LIMIT $8"

SELECT_CURSOR = "SELECT received_at, id FROM received_emails WHERE tenant_id = $1 AND id = $2"
SELECT_EMAIL = (
    "SELECT "
    + DETAIL_COLUMNS
    + _WITH_AUTH
    + stripped.WITH_STRIPPED
    + " WHERE tenant_id = $1 AND id = $2"
    + _READABLE
)
SELECT_ATTACHMENTS = (
    "SELECT attachments FROM received_emails WHERE tenant_id = $1 AND id = $2" + _READABLE
)
SELECT_RAW = (
    "SELECT received_header, a.header AS auth_header, raw, attachments"
    + _WITH_AUTH
    + " WHERE tenant_id = $1 AND id = $2"
    + _READABLE
)


def _summary(row: Any) -> ReceivedSummary:
    return ReceivedSummary(**{name: row[name] for name in ReceivedSummary.__dataclass_fields__})


async def list_received(
    pool: Pool,
    tenant_id: UUID,
    filters: ReceivedFilters,
    *,
    limit: int,
    after: UUID | None = None,
    before: UUID | None = None,
) -> tuple[list[ReceivedSummary], bool] | None:
    """One page, newest first, and whether more lie beyond it in the direction of travel.

    None when the cursor (`after` or `before`) is not one of the tenant's received emails.
    """
    cursor_id = after or before
    args: list[Any] = [
        tenant_id,
        filters.match_status,
        filters.thread_id,
        filters.recipient.lower() if filters.recipient else None,
        filters.sender.lower() if filters.sender else None,
        filters.received_after,
        filters.received_before,
        limit + 1,  # one more than asked tells whether there is a next page
    ]
    async with storage_errors(), pool.acquire() as conn:
        if cursor_id is None:
            rows = await conn.fetch(LIST_NEWEST, *args, filters.classification)
        else:
            cursor = await conn.fetchrow(SELECT_CURSOR, tenant_id, cursor_id)
            if cursor is None:
                return None
            query = LIST_AFTER if after is not None else LIST_BEFORE
            rows = await conn.fetch(
                query, *args, cursor["received_at"], cursor["id"], filters.classification
            )
    page = [_summary(row) for row in rows[:limit]]
    if before is not None:
        page.reverse()
    return page, len(rows) > limit


async def get_received(pool: Pool, tenant_id: UUID, email_id: UUID) -> ReceivedEmail | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_EMAIL, tenant_id, email_id)
    if row is None:
        return None
    return ReceivedEmail(**{name: row[name] for name in ReceivedEmail.__dataclass_fields__})


async def get_attachments(
    pool: Pool, tenant_id: UUID, email_id: UUID
) -> list[dict[str, Any]] | None:
    """The attachment metadata the MX stored, without reading the (possibly large) raw bytes."""
    async with storage_errors():
        row = await pool.fetchrow(SELECT_ATTACHMENTS, tenant_id, email_id)
    return None if row is None else list(row["attachments"])


async def get_raw(pool: Pool, tenant_id: UUID, email_id: UUID) -> RawMessage | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_RAW, tenant_id, email_id)
    if row is None:
        return None
    return RawMessage(
        row["received_header"], row["auth_header"], bytes(row["raw"]), list(row["attachments"])
    )
