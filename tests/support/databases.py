"""Databases a test owns outright: an empty one on the session's server, or a whole cluster.

`fresh_database` is for what needs a schema-less start (migrations). `disposable_cluster` is
for fault injection: a cluster the test may stop and start; its blocking pg_ctl calls run in a
thread so the event loop, and any MX in it, keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.support.postgres import DisposableCluster


def with_database(url: str, name: str) -> str:
    """The same server and credentials, another database (the URL's path names it)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server of `server_url`; dropped afterwards."""
    name = f"opensend_fresh_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(server_url, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class Cluster:
    """A DisposableCluster driven from async code."""

    def __init__(self, cluster: DisposableCluster) -> None:
        self._cluster = cluster
        self.url = cluster.url

    async def stop(self) -> None:
        """A fast shutdown (pg_ctl stop -m fast): open transactions are rolled back."""
        await asyncio.to_thread(self._cluster.stop)

    async def start(self) -> None:
        await asyncio.to_thread(self._cluster.start)


@asynccontextmanager
async def disposable_cluster() -> AsyncIterator[Cluster]:
    """A new cluster in a directory of its own under the system temporary directory.

    Not under pytest's `tmp_path`: run as root, pgserver runs PostgreSQL as an unprivileged
    user that must traverse the path, and every pytest start (another engineer's run, a
    subprocess's) resets its base directory to mode 0700, which makes initdb fail at random.
    """
    root = await asyncio.to_thread(tempfile.mkdtemp, prefix="opensend-cluster-")
    try:
        cluster = await asyncio.to_thread(DisposableCluster, Path(root))
        try:
            yield Cluster(cluster)
        finally:
            await asyncio.to_thread(cluster.destroy)
    finally:
        await asyncio.to_thread(shutil.rmtree, root, True)
