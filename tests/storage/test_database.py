"""Every pool's sessions, whatever the server's or the database's own settings."""

from __future__ import annotations

import asyncpg

from storage.database import open_pool


async def test_a_pools_sessions_are_utc_so_timestamps_written_into_json_are_too(
    database_url: str,
) -> None:
    """Triggers write timestamps into webhook payloads as text in the session's zone: a role
    (or server) set to another zone must not change them."""
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute("ALTER ROLE CURRENT_USER SET TimeZone = 'Europe/Paris'")
        pool = await open_pool(database_url, min_size=1, max_size=1)
        try:
            zone = await pool.fetchval("SHOW TimeZone")
            stamp = await pool.fetchval(
                "SELECT jsonb_build_object('at', '2026-01-01T00:00:00Z'::timestamptz)->>'at'"
            )
        finally:
            await pool.close()
        plain = await asyncpg.connect(database_url)
        default_zone = await plain.fetchval("SHOW TimeZone")
        await plain.close()
    finally:
        await admin.execute("ALTER ROLE CURRENT_USER RESET TimeZone")
        await admin.close()
    assert default_zone == "Europe/Paris"  # what a session gets without our setting
    assert zone == "UTC"
    assert stamp.endswith("+00:00")
