"""storage.keyset against the real database: pages of one tenant's rows by UUIDv7 id, newest
first, walked forwards and back, and blind to other tenants' rows."""

from __future__ import annotations

from uuid import UUID

from storage.conversations import contacts
from storage.database import Pool
from storage.keyset import fetch_page
from tests.conftest import MakeTenant


async def test_pages_walk_newest_first_and_back_within_one_tenant(
    pool: Pool, make_tenant: MakeTenant
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    made: list[UUID] = []
    for n in range(5):
        contact = await contacts.create_contact(
            pool, acme.id, f"p{n}@example.net", None, None, False
        )
        made.append(contact.id)
    await contacts.create_contact(pool, globex.id, "other@example.net", None, None, False)
    newest_first = list(reversed(made))

    first, more = await fetch_page(pool, contacts.PAGES, acme.id, limit=2)
    assert [row["id"] for row in first] == newest_first[:2] and more
    second, more = await fetch_page(pool, contacts.PAGES, acme.id, limit=2, after=first[-1]["id"])
    assert [row["id"] for row in second] == newest_first[2:4] and more
    last, more = await fetch_page(pool, contacts.PAGES, acme.id, limit=2, after=second[-1]["id"])
    assert [row["id"] for row in last] == newest_first[4:] and not more
    back, more = await fetch_page(pool, contacts.PAGES, acme.id, limit=2, before=last[0]["id"])
    assert [row["id"] for row in back] == newest_first[2:4] and more
