"""Filling in received mail stored before its body was parsed (`received_emails.parse_pending`).

A busy MX stores plain mail with its header fields and match, and parses the body after the
commit (mta/mx/fill_in.py). This module writes what that parse found and turns the row readable,
in one transaction per batch; the email.received event is written by the same UPDATE (its
trigger, migration 0019). The UPDATE only touches rows still pending, so a message filled in
twice (by its MX and by a sweep) is written, and announced, once.

A message whose MX died before filling it in is found by `fill_in_stale`: pending rows older
than a settle window, claimed with FOR UPDATE SKIP LOCKED, so several MX processes and hosts may
sweep at once without doing the same row twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors


@dataclass(frozen=True, slots=True)
class ParsedColumns:
    """The columns a message's full parse fills in (policy.inbound.message.ParsedMessage)."""

    from_name: str | None
    to_addresses: list[str]
    cc_addresses: list[str]
    reply_to_addresses: list[str]
    sent_at: datetime | None
    text_body: str | None
    html_body: str | None
    attachments: list[dict[str, Any]]
    parse_defects: list[str]


# The rest of the row (header fields, match, class) was written by the INSERT from the same
# header fields; only what needed the body or the full address grammar is written here.
FILL_IN = """
UPDATE received_emails
SET from_name = $2, to_addresses = $3, cc_addresses = $4, reply_to_addresses = $5, sent_at = $6,
    text_body = $7, html_body = $8, attachments = $9, parse_defects = $10, parse_pending = false
WHERE id = $1 AND parse_pending
"""
# A crashed MX's leftovers, oldest first; rows another sweep holds are skipped, not waited for.
CLAIM_STALE = """
SELECT id, raw FROM received_emails
WHERE parse_pending AND id < $1
ORDER BY id
LIMIT $2
FOR UPDATE SKIP LOCKED
"""
COUNT_PENDING = "SELECT count(*) FROM received_emails WHERE parse_pending"


def _row(record_id: UUID, columns: ParsedColumns) -> tuple[Any, ...]:
    return (
        record_id,
        columns.from_name,
        columns.to_addresses,
        columns.cc_addresses,
        columns.reply_to_addresses,
        columns.sent_at,
        columns.text_body,
        columns.html_body,
        columns.attachments,
        columns.parse_defects,
    )


async def fill_in(pool: Pool, filled: Sequence[tuple[UUID, ParsedColumns]]) -> None:
    """Write the parsed columns of these rows, in one transaction; rows no longer pending (a
    sweep filled them) or gone are left as they are."""
    if not filled:
        return
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        await conn.executemany(FILL_IN, [_row(record_id, columns) for record_id, columns in filled])


async def fill_in_stale(
    pool: Pool, *, before: UUID, limit: int, parse: Callable[[bytes], ParsedColumns]
) -> int:
    """Fill in up to `limit` pending rows with ids below `before`, reading their raw message
    here; how many were claimed. The claim and the writes are one transaction: a sweep that
    dies leaves the rows pending, for the next."""
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(CLAIM_STALE, before, limit)
        if rows:
            await conn.executemany(
                FILL_IN, [_row(row["id"], parse(bytes(row["raw"]))) for row in rows]
            )
    return len(rows)


async def count_pending(pool: Pool) -> int:
    async with storage_errors():
        count: int = await pool.fetchval(COUNT_PENDING)
    return count
