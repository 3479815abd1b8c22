"""Schema migrations: plain SQL files in `migrations/`, applied in name order, each recorded.

Safe to run twice (applied files are skipped) and from two processes at once (a session advisory
lock serialises them; the loser finds the work done). Each file applies in its own transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from importlib import resources

import asyncpg

from storage.errors import StorageError, storage_errors

log = logging.getLogger(__name__)

# An arbitrary constant naming our advisory lock: "opensend" in ASCII, as a bigint.
MIGRATION_LOCK_ID = 0x6F70656E73656E64

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name        text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT name, checksum FROM schema_migrations"
INSERT_APPLIED = "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)"


class MigrationError(RuntimeError):
    pass


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("storage") / "migrations"
    files = sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return files


async def _connect(url: str, wait: float) -> asyncpg.Connection:
    """Connect, retrying for up to `wait` seconds: at boot the database may still be starting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.5
    while True:
        try:
            async with storage_errors():
                return await asyncpg.connect(url, timeout=10)
        except StorageError as error:
            if not error.temporary or loop.time() + delay > deadline:
                raise
            log.warning("database not reachable yet, retrying", extra={"error": str(error)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def migrate(url: str, *, wait: float = 0.0) -> list[str]:
    """Apply pending migrations; return the names applied by this call."""
    applied_now: list[str] = []
    conn = await _connect(url, wait)
    async with storage_errors():
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
            try:
                await conn.execute(CREATE_LEDGER)
                done = {r["name"]: r["checksum"] for r in await conn.fetch(SELECT_APPLIED)}
                for name, sql in migration_files():
                    checksum = hashlib.sha256(sql.encode()).hexdigest()
                    if name in done:
                        if done[name] != checksum:
                            # An applied migration must never change: write a new one instead.
                            raise MigrationError(
                                f"migration {name} was changed after it was applied"
                            )
                        continue
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute(INSERT_APPLIED, name, checksum)
                    log.info("migration applied", extra={"migration": name})
                    applied_now.append(name)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
        finally:
            await conn.close()
    return applied_now
