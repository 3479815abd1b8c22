"""Migrations: applied once each, whoever runs them and however many run at once.

Every test starts from an empty database of its own on the session's server, because the
interesting moments (the first run, two first runs racing) happen only once per database.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from storage.ids import uuid7
from storage.migrate import (
    CREATE_LEDGER,
    INSERT_APPLIED,
    MigrationError,
    migrate,
    migration_files,
)
from tests.support.databases import fresh_database
from tests.support.opensend_cli import opensend_env, run_opensend

ALL_MIGRATIONS = [name for name, _ in migration_files()]


@pytest.fixture
async def empty_database(database_url: str) -> AsyncIterator[str]:
    async with fresh_database(database_url) as url:
        yield url


async def ledger(url: str) -> list[str]:
    """The names in schema_migrations, one entry per row, in name order."""
    conn = await asyncpg.connect(url)
    try:
        return [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")]
    finally:
        await conn.close()


async def record_a_changed_checksum(url: str, name: str) -> None:
    """As if the file had been edited after it ran: its recorded checksum no longer matches."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE schema_migrations SET checksum = $1 WHERE name = $2", "0" * 64, name
        )
    finally:
        await conn.close()


def test_there_are_migrations_to_apply() -> None:
    assert ALL_MIGRATIONS, "no migration files found in the storage package"


async def test_migrate_applies_every_file_then_is_a_no_op(empty_database: str) -> None:
    first = await migrate(empty_database)
    second = await migrate(empty_database)

    assert first == ALL_MIGRATIONS
    assert second == []
    assert sorted(await ledger(empty_database)) == ALL_MIGRATIONS


async def test_two_concurrent_migrations_on_an_empty_database_apply_each_file_once(
    empty_database: str,
) -> None:
    one, other = await asyncio.gather(migrate(empty_database), migrate(empty_database))

    # The advisory lock serialises them: one applies everything, the other finds it done.
    assert sorted(one + other) == ALL_MIGRATIONS
    assert sorted(await ledger(empty_database)) == ALL_MIGRATIONS


async def test_two_concurrent_migrate_commands_on_an_empty_database_both_succeed(
    empty_database: str, tmp_path: Path
) -> None:
    env = opensend_env(tmp_path, empty_database)

    one, other = await asyncio.gather(
        run_opensend("migrate", "--json", env=env), run_opensend("migrate", "--json", env=env)
    )

    assert (one.returncode, other.returncode) == (0, 0), (one, other)
    assert sorted(one.json()["applied"] + other.json()["applied"]) == ALL_MIGRATIONS
    assert sorted(await ledger(empty_database)) == ALL_MIGRATIONS


async def test_changed_applied_migration_is_refused(empty_database: str) -> None:
    await migrate(empty_database)
    changed = ALL_MIGRATIONS[0]
    await record_a_changed_checksum(empty_database, changed)

    with pytest.raises(MigrationError, match=changed):
        await migrate(empty_database)


async def test_migrate_command_with_a_changed_migration_exits_1_naming_it(
    empty_database: str, tmp_path: Path
) -> None:
    await migrate(empty_database)
    changed = ALL_MIGRATIONS[0]
    await record_a_changed_checksum(empty_database, changed)

    refused = await run_opensend("migrate", env=opensend_env(tmp_path, empty_database))

    assert refused.returncode == 1, refused
    assert changed in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_mail_stored_before_the_authentication_checks_stays_below_their_watermark(
    empty_database: str,
) -> None:
    # A database as the release before 0010 left it, with mail in it.
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute(CREATE_LEDGER)
        for name, sql in migration_files():
            if name >= "0010":
                break
            await conn.execute(sql)
            await conn.execute(INSERT_APPLIED, name, hashlib.sha256(sql.encode()).hexdigest())
        tenant = uuid7()
        await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, 'before')", tenant)
        stored = [uuid7() for _ in range(3)]
        for email_id in stored:
            await conn.execute(
                "INSERT INTO received_emails"
                " (id, tenant_id, mail_from, rcpt_to, raw, size, reply_match_status)"
                " VALUES ($1, $2, 'a@x.example', '{b@y.example}', 'x', 1, 'unmatched')",
                email_id,
                tenant,
            )
        assert "0010_authentication_results.sql" in await migrate(empty_database)
        # The checker looks only above the newest of them: they are never checked.
        watermark = await conn.fetchval("SELECT checked_through FROM auth_check_progress")
        assert watermark == max(stored)
    finally:
        await conn.close()
