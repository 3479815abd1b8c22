"""The stripped bodies of received mail: written after the commit, read with the message.

Only `received_stripped_bodies` (migration 0015) is written, never the message's wide row; the
after-commit worker writes a batch of them in one statement, through authresults.ResultWriter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors

# One statement for a batch; a second stripping of a message (its first worker died before the
# authentication results that mark it done) rewrites the row.
RECORD_STRIPPED = """
INSERT INTO received_stripped_bodies AS s (received_id, stripped_text, stripped_html, stripped_at)
SELECT u.id, u.stripped_text, u.stripped_html, now()
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, stripped_text, stripped_html)
-- A message deleted while it was being stripped has nothing to write to.
WHERE EXISTS (SELECT 1 FROM received_emails r WHERE r.id = u.id)
ON CONFLICT (received_id) DO UPDATE
SET stripped_text = excluded.stripped_text, stripped_html = excluded.stripped_html,
    stripped_at = excluded.stripped_at
"""
# Joined into storage.inbound.received's reads of one message.
STRIPPED_COLUMNS = ", s.stripped_text, s.stripped_html"
WITH_STRIPPED = " LEFT JOIN received_stripped_bodies s ON s.received_id = r.id"


@dataclass(frozen=True, slots=True)
class StrippedMessage:
    id: UUID
    text: str | None
    html: str | None


async def record_stripped(pool: Pool, stripped: Sequence[StrippedMessage]) -> None:
    async with storage_errors():
        await pool.execute(
            RECORD_STRIPPED,
            [s.id for s in stripped],
            [s.text for s in stripped],
            [s.html for s in stripped],
        )
