"""The aiohttp application: composed from route tables, resources passed in as typed AppKeys.

This issue serves the operational endpoints; the Resend- and Inbound-compatible routes join the
same application. Every response, success or not, is JSON (except the Prometheus exposition).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from storage.database import Pool, ping

POOL = web.AppKey("pool", Pool)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def healthz(request: web.Request) -> web.Response:
    healthy = await ping(request.app[POOL])
    return web.json_response(
        {"status": "ok" if healthy else "unavailable", "database": healthy},
        status=200 if healthy else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several MX processes share the port; each writes its samples to this directory.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's HTML error pages into Resend-shaped JSON errors."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        name = {404: "not_found", 405: "method_not_allowed"}.get(error.status, "application_error")
        return web.json_response(
            {"statusCode": error.status, "name": name, "message": error.reason},
            status=error.status,
        )


def make_ops_app(pool: Pool) -> web.Application:
    """Only /healthz and /metrics: what `opensend serve --only mta` exposes."""
    app = web.Application(middlewares=[json_errors])
    app[POOL] = pool
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


def make_app(pool: Pool) -> web.Application:
    """The full API application."""
    return make_ops_app(pool)
