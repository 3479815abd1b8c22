"""The checker's batch writes keep reading received_emails by id, whatever the statistics said
when PostgreSQL made the plan it keeps: here, those of a new server's empty tables."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from storage.authcheck import results as authresults
from storage.authcheck import stripped
from storage.database import Pool, open_pool
from storage.ids import uuid7
from tests.support.delivery_world import queue_database
from tests.support.plans import kept_plan, leading_columns, unkeyed_reads

Write = Callable[[Pool], Awaitable[None]]
BATCH = 10  # messages deleted before their results came: nothing is written


async def write_results(pool: Pool) -> None:
    checked = [authresults.CheckedMessage(uuid7(), 1, {}, "x; none", None) for _ in range(BATCH)]
    await authresults.record_results(pool, checked)


async def write_stripped(pool: Pool) -> None:
    await stripped.record_stripped(
        pool, [stripped.StrippedMessage(uuid7(), "text", None) for _ in range(BATCH)]
    )


WRITES: list[tuple[str, Write, str]] = [
    (authresults.RECORD_RESULTS, write_results, "('{}','{}','{}','{}','{}')"),
    (stripped.RECORD_STRIPPED, write_stripped, "('{}','{}','{}')"),
]


async def test_the_checkers_batch_writes_look_messages_up_by_id_on_a_new_server(
    database_url: str,
) -> None:
    async with queue_database(database_url) as (url, shared):
        indexes = await leading_columns(shared, "received_emails")
        for settings, by_key in ((None, False), (authresults.CHECKER_SESSION_SETTINGS, True)):
            pool = await open_pool(url, min_size=1, max_size=1, session_settings=settings)
            try:
                for statement, write, no_rows in WRITES:
                    for _ in range(8):
                        await write(pool)
                    plan = await kept_plan(pool, statement, no_rows)
                    whole = unkeyed_reads(plan, "received_emails", indexes)
                    assert (whole == []) is by_key, (settings, statement[:40], whole)
            finally:
                await pool.close()
