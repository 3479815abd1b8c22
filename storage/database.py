"""The connection pool: one per process, opened in the event loop that uses it."""

from __future__ import annotations

import json
from typing import Any, TypeAlias

import asyncpg

from storage.errors import storage_errors

Pool: TypeAlias = asyncpg.Pool


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python values, so repositories pass dicts and lists.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's reset query (RESET ALL, UNLISTEN *, CLOSE ALL...).

    Our pooled connections never change session state; asyncpg still rolls back any open
    transaction before calling this. Skipping the query saves one round trip per release.
    """


async def open_pool(
    url: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    session_settings: dict[str, str] | None = None,
) -> Pool:
    """`session_settings`: PostgreSQL settings every connection of the pool starts with."""
    # UTC whatever the server's TimeZone: the timestamps that triggers write into JSON (webhook
    # payloads, migration 0013) are text in the writing session's zone, and the API's are UTC.
    settings = {"TimeZone": "UTC", **(session_settings or {})}
    async with storage_errors():
        pool: Pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            server_settings=settings,
            init=_init_connection,
            reset=_keep_session,
            # Statements are short; a stuck one must not hold an SMTP client for minutes.
            command_timeout=30,
            # A connection that dies while idle is replaced instead of failing the next user.
            max_inactive_connection_lifetime=300,
        )
    return pool


def terminate(pool: Pool) -> int:
    """Close every connection at once, without waiting for their users to release them: the
    end of a stop that ran out of time. How many connections were still held."""
    held: int = pool.get_size() - pool.get_idle_size()
    pool.terminate()
    return held


def record(row: Any) -> dict[str, Any]:
    return dict(row) if row is not None else {}


async def ping(pool: Pool, seconds: float = 2.0) -> bool:
    """True when the database answers a trivial query in time."""
    try:
        async with storage_errors():
            await pool.fetchval("SELECT 1", timeout=seconds)
    except Exception:
        return False
    return True
