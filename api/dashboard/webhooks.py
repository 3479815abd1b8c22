"""Webhook pages: endpoints listed, created (the secret shown once), enabled, disabled, deleted,
rotated; an endpoint's events with their attempts, and replay. Same functions as /webhooks."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from api.context import POOL, SETTINGS
from api.dashboard.context import PREFIX, SESSION, PageNotFound, path_id, render, see_other
from api.errors import ApiError
from api.webhooks.routes import checked_endpoint, checked_events
from policy.webhooks import signing
from policy.webhooks.events import EVENT_TYPES
from storage.webhooks import deliveries, endpoints
from storage.webhooks.endpoints import Webhook

routes = web.RouteTableDef()

# Endpoints are few; the page shows the newest this many (GET /webhooks pages through them all).
WEBHOOKS_SHOWN = 100
EVENTS_SHOWN = 25
ATTEMPTS_SHOWN = 10


async def _list_page(
    request: web.Request,
    *,
    created: Webhook | None = None,
    refused: str | None = None,
    form: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    hooks, _more = await endpoints.list_webhooks(
        request.app[POOL], request[SESSION].tenant_id, limit=WEBHOOKS_SHOWN, after=None, before=None
    )
    return render(
        request,
        "webhooks.html",
        {
            "webhooks": hooks,
            "event_types": EVENT_TYPES,
            "created": created,
            "refused": refused,
            "form": form or {"endpoint": "", "events": []},
        },
        status=status,
    )


@routes.get("/webhooks", name="webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    return await _list_page(request)


@routes.post("/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    """The secret is shown in this response only, as an API key's is (not a redirect). A
    refusal comes back as the form, filled in, with the API's own words (422)."""
    form = await request.post()
    endpoint = str(form.get("endpoint", ""))
    chosen = [str(v) for v in form.getall("events", [])]
    try:
        url = await checked_endpoint(request, endpoint)
        events = checked_events(chosen)
    except ApiError as refusal:
        filled = {"endpoint": endpoint, "events": chosen}
        return await _list_page(request, refused=refusal.message, form=filled, status=422)
    hook = await endpoints.create_webhook(
        request.app[POOL], request[SESSION].tenant_id, url, events, signing.new_secret()
    )
    return await _list_page(request, created=hook)


@routes.post("/webhooks/{id}/status")
async def set_status(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    status = "enabled" if form.get("status") == "enabled" else "disabled"
    hook = await endpoints.update_webhook(
        request.app[POOL],
        request[SESSION].tenant_id,
        path_id(request),
        endpoint=None,
        events=None,
        status=status,
    )
    if hook is None:
        raise PageNotFound()
    raise see_other(f"{PREFIX}/webhooks/{hook.id}")


@routes.post("/webhooks/{id}/delete")
async def delete_webhook(request: web.Request) -> web.StreamResponse:
    if not await endpoints.delete_webhook(
        request.app[POOL], request[SESSION].tenant_id, path_id(request)
    ):
        raise PageNotFound()
    raise see_other(f"{PREFIX}/webhooks")


async def _detail(
    request: web.Request, webhook_id: UUID, *, rotated: Webhook | None = None
) -> web.Response:
    pool = request.app[POOL]
    tenant_id = request[SESSION].tenant_id
    hook = await endpoints.get_webhook(pool, tenant_id, webhook_id)
    if hook is None:
        raise PageNotFound()
    events, more = await deliveries.list_events(
        pool, tenant_id, hook.id, limit=EVENTS_SHOWN, after=None
    )
    attempts: dict[UUID, list[deliveries.Attempt]] = {}
    for event in events:
        found = await deliveries.list_attempts(
            pool, tenant_id, hook.id, event.id, limit=ATTEMPTS_SHOWN, after=None
        )
        attempts[event.id] = found[0] if found else []
    return render(
        request,
        "webhook.html",
        {"hook": hook, "events": events, "more": more, "attempts": attempts, "rotated": rotated},
    )


@routes.get("/webhooks/{id}", name="webhook")
async def webhook_detail(request: web.Request) -> web.Response:
    return await _detail(request, path_id(request))


@routes.post("/webhooks/{id}/rotate")
async def rotate_secret(request: web.Request) -> web.Response:
    """The new secret is shown in this response only; the old one signs beside it for the
    grace period (OPENSEND_WEBHOOK_SECRET_GRACE), as POST /webhooks/{id}/signing-secret/rotate."""
    hook = await endpoints.rotate_secret(
        request.app[POOL],
        request[SESSION].tenant_id,
        path_id(request),
        signing.new_secret(),
        request.config_dict[SETTINGS].webhooks.secret_grace,
    )
    if hook is None:
        raise PageNotFound()
    return await _detail(request, hook.id, rotated=hook)


@routes.post("/webhooks/{id}/events/{event_id}/replay")
async def replay_event(request: web.Request) -> web.StreamResponse:
    webhook_id = path_id(request)
    event_id = path_id(request, "event_id")
    if not await deliveries.replay(
        request.app[POOL], request[SESSION].tenant_id, webhook_id, event_id
    ):
        raise PageNotFound()
    raise see_other(f"{PREFIX}/webhooks/{webhook_id}#event-{event_id}")
