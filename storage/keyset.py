"""Keyset pages of one tenant's rows by UUIDv7 id, newest first: how contacts, API keys and
webhooks are listed (Resend's `limit`/`after`/`before`), never with OFFSET.

Ids are UUIDv7 (storage/ids.py), so id order is creation order, and a cursor is a plain value
that keeps working after its row is deleted. A page is read one row longer than asked: that row
says whether more lie beyond it. `before` reads towards newer rows and is turned round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors


@dataclass(frozen=True, slots=True)
class IdPages:
    """The three statements of one table's pages: $1 tenant, $2 rows to read, $3 the cursor."""

    newest: str
    after: str
    before: str

    @classmethod
    def of(cls, table: str, columns: str) -> IdPages:
        select = f"SELECT {columns} FROM {table} WHERE tenant_id = $1"
        return cls(
            newest=f"{select} ORDER BY id DESC LIMIT $2",
            after=f"{select} AND id < $3 ORDER BY id DESC LIMIT $2",
            before=f"{select} AND id > $3 ORDER BY id LIMIT $2",
        )


async def fetch_page(
    pool: Pool,
    pages: IdPages,
    tenant_id: UUID,
    *,
    limit: int,
    after: UUID | None = None,
    before: UUID | None = None,
) -> tuple[list[Any], bool]:
    """One page of rows, newest first, and whether more lie beyond it in the direction of
    travel."""
    async with storage_errors():
        if after is not None:
            rows = await pool.fetch(pages.after, tenant_id, limit + 1, after)
        elif before is not None:
            rows = await pool.fetch(pages.before, tenant_id, limit + 1, before)
        else:
            rows = await pool.fetch(pages.newest, tenant_id, limit + 1)
    page = list(rows[:limit])
    if before is not None:
        page.reverse()
    return page, len(rows) > limit
