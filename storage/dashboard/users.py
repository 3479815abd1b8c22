"""Dashboard users: people who sign in, each of one tenant, with their argon2 hash and optional
TOTP secret; an address is unique across the installation (sign-in names no tenant)."""

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
    totp_secret: str | None
    created_at: datetime


COLUMNS = "id, tenant_id, email, password_hash, totp_secret, created_at"
INSERT_USER = (
    "INSERT INTO dashboard_users (id, tenant_id, email, password_hash) VALUES ($1, $2, $3, $4) "
    "RETURNING " + COLUMNS
)
SELECT_BY_EMAIL = "SELECT " + COLUMNS + " FROM dashboard_users WHERE lower(email) = lower($1)"
SELECT_BY_ID = "SELECT " + COLUMNS + " FROM dashboard_users WHERE id = $1"
SET_TOTP = """
UPDATE dashboard_users SET totp_secret = $2, totp_last_step = NULL WHERE lower(email) = lower($1)
RETURNING id
"""
# A code counts once: only a step later than the last accepted one moves it.
USE_TOTP_STEP = """
UPDATE dashboard_users SET totp_last_step = $2
WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)
RETURNING id
"""


async def create_user(pool: Pool, tenant_id: UUID, email: str, password_hash: str) -> User:
    """Raises storage.errors.Conflict when the address already has an account."""
    async with storage_errors():
        row = await pool.fetchrow(INSERT_USER, uuid7(), tenant_id, email, password_hash)
    return User(**dict(row))


COMPARED_EMAIL = "SELECT lower($1)"


async def compared_email(pool: Pool, email: str) -> str:
    """`email` as find_user compares it: PostgreSQL's lower(), which differs from Python's
    beyond ASCII (policy.dashboard.account_limits counts failures by it)."""
    async with storage_errors():
        compared: str = await pool.fetchval(COMPARED_EMAIL, email)
    return compared


async def find_user(pool: Pool, email: str) -> User | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_BY_EMAIL, email)
    return None if row is None else User(**dict(row))


async def get_user(pool: Pool, user_id: UUID) -> User | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_BY_ID, user_id)
    return None if row is None else User(**dict(row))


async def set_totp(pool: Pool, email: str, secret: str | None) -> bool:
    """Turn two-factor on (a new secret) or off (None); False when there is no such user."""
    async with storage_errors():
        found = await pool.fetchval(SET_TOTP, email, secret)
    return found is not None


async def use_totp_step(pool: Pool, user_id: UUID, step: int) -> bool:
    """True the first time a step is used; False for a code already used (a replay)."""
    async with storage_errors():
        found = await pool.fetchval(USE_TOTP_STEP, user_id, step)
    return found is not None
