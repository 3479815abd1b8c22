"""What a webhook delivery test needs: a database of its own, the real workers in the test's
loop with the settings it writes, a receiver, and the SDK pointed at a real API."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import resend

from api.app import make_app
from api.http_client import LookupResolver
from mta.dns import Resolver
from mta.webhooks.worker import WebhookWorkers
from policy.domains.dkim_keys import DkimKeyPair
from policy.tokens import ReplyTokens
from storage.account import directory
from storage.database import Pool
from tests.conftest import DOMAIN_VIEW, make_settings
from tests.support.loopback_http import served_on_loopback

T = TypeVar("T")

# Quick retries, so a test sees its second attempt within its patience.
FAST = {"OPENSEND_WEBHOOK_RETRY_SCHEDULE": "1s,1s,1s"}


async def call(function: Callable[..., T], *args: Any) -> T:
    """The SDK is synchronous (requests): off the loop that runs the server."""
    return await asyncio.to_thread(function, *args)


@contextlib.asynccontextmanager
async def webhook_workers(
    pool: Pool, url: str, tmp: Path, **env: str
) -> AsyncIterator[WebhookWorkers]:
    settings = make_settings(tmp, **{**FAST, **env})
    workers = WebhookWorkers(
        pool,
        url,
        settings.webhooks,
        LookupResolver(Resolver(settings.dns_servers, lifetime=3.0)),
        require_https=settings.production,
    )
    await workers.start()
    try:
        yield workers
    finally:
        await workers.stop(grace=1.0)


@contextlib.asynccontextmanager
async def api_server(pool: Pool, tokens: ReplyTokens, tmp: Path, **env: str) -> AsyncIterator[str]:
    settings = make_settings(tmp, **env)
    app = make_app(pool, settings, tokens, Resolver(settings.dns_servers))
    async with served_on_loopback(app) as base:
        yield base


async def tenant_with_key(pool: Pool, dkim: DkimKeyPair) -> tuple[directory.Domain, str]:
    """A tenant with a verified receiving domain (and reply subdomain) and a full-access key."""
    suffix = secrets.token_hex(4)
    tenant = await directory.create_tenant(pool, f"t-{suffix}")
    domain = await directory.add_domain(
        pool,
        tenant.id,
        f"t{suffix}.test",
        receiving=True,
        reply_domain=f"inbound.t{suffix}.test",
        verified=True,
        dkim=dkim,
        event_data=DOMAIN_VIEW.event_data,
    )
    _, key = await directory.create_api_key(pool, tenant.id, "test", "full_access")
    return domain, key


@contextlib.contextmanager
def sdk_as(key: str, api_url: str) -> Any:
    saved = resend.api_key, resend.api_url
    resend.api_key, resend.api_url = key, api_url
    try:
        yield
    finally:
        resend.api_key, resend.api_url = saved


async def create_webhook(endpoint: str, events: list[str]) -> tuple[str, str]:
    created = await call(resend.Webhooks.create, {"endpoint": endpoint, "events": events})
    return created["id"], created["signing_secret"]
