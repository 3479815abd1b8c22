"""A real PostgreSQL for the tests: OPENSEND_DATABASE_URL's server when given, else embedded.

With a URL, each test session creates its own database on that server and drops it afterwards,
so the suite never touches an operator's data. `DisposableCluster` is a cluster a test may stop
and start again (fault injection), always embedded because only our own cluster may be stopped.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pgserver import postgres_server


class DisposableCluster:
    """An embedded cluster in a temporary directory that can be stopped and started."""

    def __init__(self, root: Path) -> None:
        self.pgdata = root / "pg"
        self._server = postgres_server.get_server(self.pgdata, cleanup_mode="stop")
        self.url: str = self._server.get_uri()

    def stop(self) -> None:
        self._server.cleanup()

    def start(self) -> None:
        self._server = postgres_server.get_server(self.pgdata, cleanup_mode="stop")
        assert self._server.get_uri() == self.url

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self._server.cleanup()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def session_database() -> Iterator[str]:
    """A fresh, empty database URL for one test session."""
    given = os.environ.get("OPENSEND_DATABASE_URL")
    if not given:
        with tempfile.TemporaryDirectory(prefix="opensend-pg-") as root:
            cluster = DisposableCluster(Path(root))
            try:
                yield cluster.url
            finally:
                cluster.destroy()
        return
    import asyncio

    name = f"opensend_test_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(given)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(given, name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
