"""A tenant's contacts: the people the MX links received mail to (by the sender's address).

An address is unique within a tenant, not across tenants (the table's UNIQUE (tenant_id, email)),
and is stored in lowercase, which is how the MX looks it up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors
from storage.ids import uuid7
from storage.keyset import IdPages, fetch_page


@dataclass(frozen=True, slots=True)
class Contact:
    id: UUID
    email: str
    first_name: str | None
    last_name: str | None
    unsubscribed: bool
    created_at: datetime


# What PATCH may change; a field left out keeps its value, a field given as None clears it.
@dataclass(frozen=True, slots=True)
class ContactChanges:
    first_name: str | None = None
    last_name: str | None = None
    unsubscribed: bool | None = None
    set_first_name: bool = False
    set_last_name: bool = False


COLUMNS = "id, email, first_name, last_name, unsubscribed, created_at"

# The address is lowercased by the caller; the table's CHECK holds it to that. A duplicate
# raises UniqueViolation, which storage_errors turns into storage.errors.Conflict.
INSERT_CONTACT = (
    "INSERT INTO contacts (id, tenant_id, email, first_name, last_name, unsubscribed) "
    "VALUES ($1, $2, $3, $4, $5, $6) RETURNING " + COLUMNS
)
SELECT_BY_ID = "SELECT " + COLUMNS + " FROM contacts WHERE tenant_id = $1 AND id = $2"
SELECT_BY_EMAIL = "SELECT " + COLUMNS + " FROM contacts WHERE tenant_id = $1 AND email = $2"
UPDATE_CONTACT = (
    "UPDATE contacts SET "
    "first_name = CASE WHEN $3 THEN $4 ELSE first_name END, "
    "last_name = CASE WHEN $5 THEN $6 ELSE last_name END, "
    "unsubscribed = coalesce($7, unsubscribed) "
    "WHERE tenant_id = $1 AND id = $2 RETURNING " + COLUMNS
)
# received_emails.contact_id is ON DELETE SET NULL: the mail stays, the link goes.
DELETE_CONTACT = "DELETE FROM contacts WHERE tenant_id = $1 AND id = $2"

# Keyset pages on index contacts_tenant_id (migration 0006), never OFFSET.
PAGES = IdPages.of("contacts", COLUMNS)


def _contact(row: Any) -> Contact:
    return Contact(**{name: row[name] for name in Contact.__dataclass_fields__})


async def create_contact(
    pool: Pool,
    tenant_id: UUID,
    email: str,
    first_name: str | None,
    last_name: str | None,
    unsubscribed: bool,
) -> Contact:
    """Raises storage.errors.Conflict when the tenant already has a contact of that address."""
    async with storage_errors():
        row = await pool.fetchrow(
            INSERT_CONTACT, uuid7(), tenant_id, email.lower(), first_name, last_name, unsubscribed
        )
    return _contact(row)


async def get_contact(pool: Pool, tenant_id: UUID, contact_id: UUID) -> Contact | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_BY_ID, tenant_id, contact_id)
    return None if row is None else _contact(row)


async def find_contact(pool: Pool, tenant_id: UUID, email: str) -> Contact | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_BY_EMAIL, tenant_id, email.lower())
    return None if row is None else _contact(row)


async def update_contact(
    pool: Pool, tenant_id: UUID, contact_id: UUID, changes: ContactChanges
) -> Contact | None:
    async with storage_errors():
        row = await pool.fetchrow(
            UPDATE_CONTACT,
            tenant_id,
            contact_id,
            changes.set_first_name,
            changes.first_name,
            changes.set_last_name,
            changes.last_name,
            changes.unsubscribed,
        )
    return None if row is None else _contact(row)


async def delete_contact(pool: Pool, tenant_id: UUID, contact_id: UUID) -> bool:
    async with storage_errors():
        status = await pool.execute(DELETE_CONTACT, tenant_id, contact_id)
    return bool(status == "DELETE 1")


async def list_contacts(
    pool: Pool,
    tenant_id: UUID,
    *,
    limit: int,
    after: UUID | None = None,
    before: UUID | None = None,
) -> tuple[list[Contact], bool]:
    """One page, newest first, and whether more lie beyond it in the direction of travel."""
    rows, more = await fetch_page(pool, PAGES, tenant_id, limit=limit, after=after, before=before)
    return [_contact(row) for row in rows], more
