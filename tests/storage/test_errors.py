"""Driver failures come out of storage as our own errors, with the right `temporary` flag."""

from __future__ import annotations

import asyncpg
import pytest

from storage.errors import StorageError, StorageUnavailable, storage_errors


async def test_a_connection_handed_out_after_its_server_shut_it_down_is_a_temporary_failure() -> (
    None
):
    """Found by the soak test (tests/perf/soak.py): during a fast shutdown of PostgreSQL a
    pooled connection refused its next query with asyncpg's InternalClientError, which escaped
    as an unexpected error (the MX's group commit task died with it, unretrieved)."""
    with pytest.raises(StorageUnavailable) as caught:
        async with storage_errors():
            raise asyncpg.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            )
    assert caught.value.temporary


async def test_an_error_in_the_query_itself_is_not_temporary(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(StorageError) as caught:
            async with storage_errors():
                await conn.execute("SELECT 1 / 0")
        assert not caught.value.temporary
    finally:
        await conn.close()
