"""Dashboard users: people who sign in, each belonging to one tenant; their argon2 hashes.

The address is unique across the installation (case-insensitively), since sign-in names no tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors
from storage.ids import uuid7


@dataclass(frozen=True, slots=True)
class User:
    id: UUID
    tenant_id: UUID
    email: str
    password_hash: str
    created_at: datetime


COLUMNS = "id, tenant_id, email, password_hash, created_at"
INSERT_USER = (
    "INSERT INTO dashboard_users (id, tenant_id, email, password_hash) VALUES ($1, $2, $3, $4) "
    "RETURNING " + COLUMNS
)
SELECT_BY_EMAIL = "SELECT " + COLUMNS + " FROM dashboard_users WHERE lower(email) = lower($1)"
SELECT_BY_ID = "SELECT " + COLUMNS + " FROM dashboard_users WHERE id = $1"


async def create_user(pool: Pool, tenant_id: UUID, email: str, password_hash: str) -> User:
    """Raises storage.errors.Conflict when the address already has an account."""
    async with storage_errors():
        row = await pool.fetchrow(INSERT_USER, uuid7(), tenant_id, email, password_hash)
    return User(**dict(row))


async def find_user(pool: Pool, email: str) -> User | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_BY_EMAIL, email)
    return None if row is None else User(**dict(row))


async def get_user(pool: Pool, user_id: UUID) -> User | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_BY_ID, user_id)
    return None if row is None else User(**dict(row))
