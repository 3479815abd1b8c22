"""The real API on a cluster of its own, which a test may stop and start (fault injection).

For the "storage is down" tests of the API routes: one tenant with a verified receiving domain
and a catch-all route, made before anything is broken.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from api.app import make_app
from mta.dns import Resolver
from policy.tokens import ReplyTokens
from storage.account import directory
from storage.database import Pool, open_pool
from storage.migrate import migrate
from tests.conftest import DOMAIN_VIEW, TenantWorld, make_settings
from tests.support.databases import Cluster, disposable_cluster


@dataclass
class OutageApi:
    url: str
    pool: Pool
    cluster: Cluster
    world: TenantWorld


@asynccontextmanager
async def api_on_own_cluster(
    tmp_path: Path, tokens: ReplyTokens, **env: str
) -> AsyncIterator[OutageApi]:
    async with disposable_cluster() as cluster:
        await migrate(cluster.url)
        pool = await open_pool(cluster.url, min_size=1, max_size=4)
        settings = make_settings(tmp_path, **env)
        runner = web.AppRunner(make_app(pool, settings, tokens, Resolver(settings.dns_servers)))
        try:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            suffix = secrets.token_hex(4)
            tenant = await directory.create_tenant(pool, f"t-{suffix}")
            domain = await directory.add_domain(
                pool,
                tenant.id,
                f"t{suffix}.test",
                receiving=True,
                reply_domain=None,
                verified=True,
                event_data=DOMAIN_VIEW.event_data,
            )
            world = TenantWorld(pool, tokens, tenant, domain)
            await world.route(f"*@{world.name}")
            yield OutageApi(f"http://127.0.0.1:{runner.addresses[0][1]}", pool, cluster, world)
        finally:
            await runner.cleanup()
            pool.terminate()
