"""The aiohttp application: route tables composed, resources passed in as typed AppKeys.

Every response, success or not, is JSON (the Prometheus exposition excepted). Every route needs
a bearer API key except those in `api.auth.PUBLIC_PATHS`; handlers read the caller from
`request[CALLER]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from functools import partial

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from api import errors
from api.account import api_keys, domains
from api.auth import DASHBOARD_PREFIX, Handler, identify
from api.context import DNS, POOL, SETTINGS, TOKENS, install_state, json_response, nul_refusal
from api.conversations import contacts, receiving, threads
from api.dashboard.app import make_dashboard
from api.downloads import routes as downloads
from api.errors import ApiError
from api.inbound_compat import routes as inbound_compat
from api.ingest import raw as ingest
from api.ingest import ses_s3
from api.openapi import document as openapi
from api.sending import emails, replies
from api.suppressions import routes as suppression_routes
from api.webhooks import routes as webhooks
from policy.dns import DnsLookup
from policy.settings import Settings
from policy.tokens import ReplyTokens
from storage.database import Pool, ping
from storage.errors import StorageError
from storage.sending import idempotency

log = logging.getLogger(__name__)


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


def error_response(error: ApiError) -> web.Response:
    return json_response(error.body(), status=error.kind.status, headers=error.headers)


# aiohttp's own refusals, in the catalogue's words.
_HTTP_ERRORS = {
    404: errors.NOT_FOUND,
    405: errors.METHOD_NOT_ALLOWED,
    413: errors.PAYLOAD_TOO_LARGE,
}


def render_failure(request: web.Request, error: Exception) -> web.StreamResponse:
    """A failure as a Resend-shaped JSON error; never an HTML page, never a traceback. Called in
    the `except` block that caught it (so that an unexpected error is logged with its
    traceback); an HTTPException under 400 (a redirect) is raised again."""
    if isinstance(error, ApiError):
        return error_response(error)
    if isinstance(error, StorageError):
        log.warning("storage failure in API", extra={"path": request.path, "error": str(error)})
        kind = errors.SERVICE_UNAVAILABLE if error.temporary else errors.APPLICATION_ERROR
        return error_response(ApiError(kind))
    if isinstance(error, web.HTTPException):
        if error.status < 400:
            raise error
        known = _HTTP_ERRORS.get(error.status)
        if known is None:
            return web.json_response(
                {"statusCode": error.status, "name": "application_error", "message": error.reason},
                status=error.status,
            )
        return error_response(ApiError(known))
    log.exception("unexpected error in API", extra={"path": request.path})
    return error_response(ApiError(errors.APPLICATION_ERROR))


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The operations app's only middleware (`make_ops_app`): every failure as JSON."""
    try:
        return await handler(request)
    except Exception as error:
        return render_failure(request, error)


def refuse_nul(request: web.Request) -> None:
    """A NUL (`%00`) in the path or the query is a 400 naming where, before any handler passes it
    to PostgreSQL, whose text cannot hold it (JSON bodies: api.context.parse_json)."""
    if "\0" in request.path:
        raise nul_refusal("path")
    for name, value in request.query.items():
        if "\0" in name or "\0" in value:
            raise nul_refusal("query." + name.replace("\0", "\\u0000"))


async def _admitted(handler: Handler, request: web.Request) -> web.StreamResponse:
    await identify(request)
    raw = request.raw_path  # a NUL reaches the path or the query only as %00 or itself
    if "%00" in raw or "\0" in raw:
        refuse_nul(request)
    return await handler(request)


@web.middleware
async def api_edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The API's one middleware, for every request: failures rendered as JSON
    (`render_failure`), in Inbound's words on its routes (api.sending.replies.in_inbound_words);
    the caller identified by its API key (api.auth.identify); a NUL in the path or the query
    refused (`refuse_nul`); then the handler. One layer, not four: aiohttp runs each middleware
    as a coroutine of its own on every request (tests/perf/README.md, the API section)."""
    try:
        resource = request.match_info.route.resource
        if resource is not None and replies.is_inbound_path(resource.canonical):
            return await replies.in_inbound_words(request, partial(_admitted, handler))
        return await _admitted(handler, request)
    except Exception as error:
        return render_failure(request, error)


# Idempotency keys older than 24 hours are already ignored; this reclaims their rows.
IDEMPOTENCY_SWEEP_SECONDS = 3600.0


async def sweep_idempotency_keys(app: web.Application) -> AsyncIterator[None]:
    """A background task for the application's lifetime (aiohttp's cleanup_ctx)."""

    async def sweep() -> None:
        while True:
            try:
                removed = await idempotency.delete_expired(app[POOL])
                if removed:
                    log.info("expired idempotency keys removed", extra={"count": removed})
            except StorageError as error:  # the next sweep tries again
                log.warning("idempotency sweep failed", extra={"error": str(error)})
            await asyncio.sleep(IDEMPOTENCY_SWEEP_SECONDS)

    task = asyncio.create_task(sweep())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def make_ops_app(pool: Pool) -> web.Application:
    """Only /healthz and /metrics: what `opensend serve --only mta` exposes."""
    app = web.Application(middlewares=[json_errors])
    app[POOL] = pool
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


def make_app(
    pool: Pool, settings: Settings, tokens: ReplyTokens, dns: DnsLookup
) -> web.Application:
    """The full API application."""

    # Attachments arrive base64-encoded inside JSON: 4/3 of the message limit, plus the rest.
    max_body = settings.max_message_size * 4 // 3 + 1024 * 1024
    app = web.Application(middlewares=[api_edge], client_max_size=max_body)
    app[POOL] = pool
    install_state(app, pool)
    app[SETTINGS] = settings
    app[TOKENS] = tokens
    app[DNS] = dns
    app.cleanup_ctx.append(sweep_idempotency_keys)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get(openapi.PATH, openapi.serve)  # every route below is described in it
    app.router.add_routes(api_keys.routes)
    app.router.add_routes(receiving.routes)
    app.router.add_routes(threads.routes)
    app.router.add_routes(contacts.routes)
    app.router.add_routes(emails.routes)
    app.router.add_routes(replies.routes)  # POST /emails/{id}/reply, errors in Inbound's words
    app.router.add_routes(inbound_compat.routes)  # Inbound's e2 and v2 mail replies
    app.router.add_routes(domains.routes)
    app.router.add_routes(downloads.routes)  # signed download links, no API key
    app.router.add_routes(suppression_routes.routes)
    app.router.add_routes(webhooks.routes)
    ingest.install(app)  # POST /events/inbound, with its own token
    ses_s3.install(app)  # POST /events/inbound/ses-s3 and, when configured, its AWS clients
    app.add_subapp(DASHBOARD_PREFIX.rstrip("/"), make_dashboard(app, settings))
    return app
