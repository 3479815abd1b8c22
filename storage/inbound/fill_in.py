"""Filling in received mail stored before its body was parsed (`received_emails.parse_pending`).

A busy MX stores plain mail with its header fields and match, and parses the body after the
commit (mta/mx/fill_in.py). This module writes what that parse found and turns the row readable,
in one statement per batch; the email.received event is written by the same UPDATE (its
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
from storage.json_arrays import json_text, text_array_sql


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
# header fields; only what needed the body or the full address grammar is written here. One
# statement for the whole batch: against one UPDATE per row (executemany), 20 to 25 us less per
# row, and 40 with an email.received subscription (tests/perf/README.md). The lists of each row
# arrive as JSON text (storage.json_arrays), since PostgreSQL arrays cannot be ragged.
FILL_IN = f"""
UPDATE received_emails r
SET from_name = u.from_name, to_addresses = {text_array_sql("u.to_addresses")},
    cc_addresses = {text_array_sql("u.cc_addresses")},
    reply_to_addresses = {text_array_sql("u.reply_to_addresses")}, sent_at = u.sent_at,
    text_body = u.text_body, html_body = u.html_body, attachments = u.attachments::jsonb,
    parse_defects = {text_array_sql("u.parse_defects")}, parse_pending = false
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
            $7::text[], $8::text[], $9::text[], $10::text[])
    AS u (id, from_name, to_addresses, cc_addresses, reply_to_addresses, sent_at, text_body,
          html_body, attachments, parse_defects)
WHERE r.id = u.id AND r.parse_pending
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


def _arrays(filled: Sequence[tuple[UUID, ParsedColumns]]) -> list[list[Any]]:
    """FILL_IN's arguments: one array per column, a row's values at the same index in each."""
    rows = [
        (
            record_id,
            columns.from_name,
            json_text(columns.to_addresses),
            json_text(columns.cc_addresses),
            json_text(columns.reply_to_addresses),
            columns.sent_at,
            columns.text_body,
            columns.html_body,
            json_text(columns.attachments),
            json_text(columns.parse_defects),
        )
        for record_id, columns in filled
    ]
    return [list(column) for column in zip(*rows, strict=True)]


async def fill_in(pool: Pool, filled: Sequence[tuple[UUID, ParsedColumns]]) -> None:
    """Write the parsed columns of these rows, in one transaction; rows no longer pending (a
    sweep filled them) or gone are left as they are."""
    if not filled:
        return
    async with storage_errors():
        await pool.execute(FILL_IN, *_arrays(filled))


async def fill_in_stale(
    pool: Pool, *, before: UUID, limit: int, parse: Callable[[bytes], ParsedColumns]
) -> int:
    """Fill in up to `limit` pending rows with ids below `before`, reading their raw message
    here; how many were claimed. The claim and the writes are one transaction: a sweep that
    dies leaves the rows pending, for the next."""
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(CLAIM_STALE, before, limit)
        if rows:
            parsed = [(row["id"], parse(bytes(row["raw"]))) for row in rows]
            await conn.execute(FILL_IN, *_arrays(parsed))
    return len(rows)


async def count_pending(pool: Pool) -> int:
    async with storage_errors():
        count: int = await pool.fetchval(COUNT_PENDING)
    return count
