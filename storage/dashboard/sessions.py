"""Dashboard sessions as rows: created at sign-in, found by the hash of the cookie's secret,
listed and revoked by their owner. A revoked or expired row signs nobody in."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors
from storage.ids import uuid7


@dataclass(frozen=True, slots=True)
class Session:
    id: UUID
    user_id: UUID
    tenant_id: UUID
    email: str  # the user's address, for the page header
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    user_agent: str | None
    remote_ip: str | None


def secret_hash(secret: str) -> bytes:
    # A cookie's bytes that are not UTF-8 arrive as surrogate escapes: they match no session.
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


INSERT_SESSION = """
INSERT INTO dashboard_sessions
    (id, secret_hash, user_id, tenant_id, csrf_token, expires_at, user_agent, remote_ip)
VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7, $8)
"""
_COLUMNS = """s.id, s.user_id, s.tenant_id, u.email, s.csrf_token, s.created_at, s.last_seen_at,
s.expires_at, s.user_agent, s.remote_ip"""
# Finding a session also records that it was seen (a minute's precision is enough for the list,
# and spares a write per request).
SELECT_ACTIVE = f"""
WITH found AS (
    SELECT s.id FROM dashboard_sessions s
    WHERE s.secret_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
), touched AS (
    UPDATE dashboard_sessions s SET last_seen_at = now() FROM found
    WHERE s.id = found.id AND s.last_seen_at < now() - interval '1 minute'
)
SELECT {_COLUMNS} FROM dashboard_sessions s JOIN dashboard_users u ON u.id = s.user_id
WHERE s.id = (SELECT id FROM found)
"""
LIST_ACTIVE = f"""
SELECT {_COLUMNS} FROM dashboard_sessions s JOIN dashboard_users u ON u.id = s.user_id
WHERE s.user_id = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
ORDER BY s.created_at DESC
"""
REVOKE = """
UPDATE dashboard_sessions SET revoked_at = now()
WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL
"""


async def create_session(
    pool: Pool,
    *,
    secret: str,
    user_id: UUID,
    tenant_id: UUID,
    csrf_token: str,
    lifetime_seconds: float,
    user_agent: str | None,
    remote_ip: str | None,
) -> UUID:
    session_id = uuid7()
    async with storage_errors():
        await pool.execute(
            INSERT_SESSION,
            session_id,
            secret_hash(secret),
            user_id,
            tenant_id,
            csrf_token,
            lifetime_seconds,
            user_agent,
            remote_ip,
        )
    return session_id


async def active_session(pool: Pool, secret: str) -> Session | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_ACTIVE, secret_hash(secret))
    return None if row is None else Session(**dict(row))


async def list_sessions(pool: Pool, user_id: UUID) -> list[Session]:
    async with storage_errors():
        rows = await pool.fetch(LIST_ACTIVE, user_id)
    return [Session(**dict(row)) for row in rows]


async def revoke_session(pool: Pool, user_id: UUID, session_id: UUID) -> bool:
    """Only the user's own sessions; False when there was no such active session."""
    async with storage_errors():
        status = await pool.execute(REVOKE, session_id, user_id)
    return bool(status.endswith(" 1"))
