"""/webhooks in Resend's shapes (resend/webhooks/_webhooks.py), so `resend.Webhooks` works
unchanged: create, get, list, update, remove, the events delivered to a webhook, their attempts,
replay, and signing-secret rotation.

An event here is one delivery of an event to this webhook; its id is the `webhook-id` header the
receiver saw. Every lookup names the caller's tenant: another tenant's id answers 404.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from api import errors
from api.auth import CALLER
from api.context import DNS, POOL, SETTINGS, read_json
from api.errors import ApiError
from api.pagination import list_body, page_request, query_uuid
from policy.dns import DnsTemporaryError
from policy.webhooks import events as event_types
from policy.webhooks import payloads, signing
from policy.webhooks.endpoints import InvalidEndpoint, parse_endpoint, refusal
from storage.webhooks import deliveries, endpoints
from storage.webhooks.endpoints import Webhook

routes = web.RouteTableDef()

NOT_FOUND = "Webhook not found."
# An attempt that got no HTTP answer (refused, timed out, TLS failure) has no status code; the
# SDKs type `http_status_code` as a number, never null, so it reads 0 and `error` says why.
NO_HTTP_ANSWER = 0
EVENT_NOT_FOUND = "Webhook event not found."


def webhook_json(hook: Webhook) -> dict[str, Any]:
    return {
        "object": "webhook",
        "id": str(hook.id),
        "created_at": hook.created_at.isoformat(),
        "status": hook.status,
        # Why a webhook is disabled: "api" (its tenant), "failing" (5 days of failures).
        "disabled_reason": hook.disabled_reason,
        "endpoint": hook.endpoint,
        "events": hook.events,
        "signing_secret": hook.signing_secret,
    }


def _webhook_id(request: web.Request) -> UUID:
    try:
        return UUID(request.match_info["id"])
    except ValueError:
        raise ApiError(errors.NOT_FOUND, NOT_FOUND) from None


def _event_id(request: web.Request) -> UUID:
    try:
        return UUID(request.match_info["event_id"])
    except ValueError:
        raise ApiError(errors.NOT_FOUND, EVENT_NOT_FOUND) from None


async def checked_endpoint(request: web.Request, value: object) -> str:
    """A URL the workers may send to: its form, and where its name resolves now. The address is
    checked again at every connection (mta/webhooks/http.py): this check alone does not stop
    DNS rebinding, but it tells the tenant at once about an endpoint that cannot work."""
    settings = request.app[SETTINGS]
    allow_private = settings.webhooks.allow_private
    try:
        endpoint = parse_endpoint(value, require_https=settings.production)
    except InvalidEndpoint as problem:
        raise ApiError(errors.VALIDATION_ERROR, str(problem)) from None
    if endpoint.literal:
        addresses = [endpoint.host]
    elif allow_private:
        addresses = []
    else:
        try:
            addresses = await request.app[DNS].addresses(endpoint.host)
        except (DnsTemporaryError, ValueError):
            addresses = []  # unknown now; every connection is checked anyway
    reason = refusal(addresses, allow_private=allow_private)
    if reason is not None:
        where = "" if endpoint.literal else f"{endpoint.host} resolves to "
        raise ApiError(
            errors.VALIDATION_ERROR,
            f"The `endpoint` field must reach a public address: {where}{reason}.",
        )
    return endpoint.url


def checked_events(value: object) -> list[str]:
    try:
        return event_types.subscription(value)
    except event_types.InvalidEvents as problem:
        raise ApiError(errors.VALIDATION_ERROR, str(problem)) from None


@routes.post("/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    body = await read_json(request)
    if "endpoint" not in body:
        raise ApiError(errors.MISSING_REQUIRED_FIELD, "Missing `endpoint` field.")
    if "events" not in body:
        raise ApiError(errors.MISSING_REQUIRED_FIELD, "Missing `events` field.")
    endpoint = await checked_endpoint(request, body["endpoint"])
    hook = await endpoints.create_webhook(
        request.app[POOL],
        caller.tenant_id,
        endpoint,
        checked_events(body["events"]),
        signing.new_secret(),
    )
    return web.json_response(
        {"object": "webhook", "id": str(hook.id), "signing_secret": hook.signing_secret},
        status=201,
    )


@routes.get("/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    page = page_request(request)
    items, has_more = await endpoints.list_webhooks(
        request.app[POOL], caller.tenant_id, limit=page.limit, after=page.after, before=page.before
    )
    return web.json_response(list_body([webhook_json(h) for h in items], has_more))


@routes.get("/webhooks/{id}")
async def get_webhook(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    hook = await endpoints.get_webhook(request.app[POOL], caller.tenant_id, _webhook_id(request))
    if hook is None:
        raise ApiError(errors.NOT_FOUND, NOT_FOUND)
    return web.json_response(webhook_json(hook))


@routes.patch("/webhooks/{id}")
async def update_webhook(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    webhook_id = _webhook_id(request)
    body = await read_json(request)
    status = body.get("status")
    if status is not None and status not in ("enabled", "disabled"):
        raise ApiError(
            errors.VALIDATION_ERROR, "The `status` field must be `enabled` or `disabled`."
        )
    endpoint = await checked_endpoint(request, body["endpoint"]) if "endpoint" in body else None
    chosen = checked_events(body["events"]) if "events" in body else None
    hook = await endpoints.update_webhook(
        request.app[POOL],
        caller.tenant_id,
        webhook_id,
        endpoint=endpoint,
        events=chosen,
        status=status,
    )
    if hook is None:
        raise ApiError(errors.NOT_FOUND, NOT_FOUND)
    return web.json_response({"object": "webhook", "id": str(hook.id)})


@routes.delete("/webhooks/{id}")
async def delete_webhook(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    webhook_id = _webhook_id(request)
    if not await endpoints.delete_webhook(request.app[POOL], caller.tenant_id, webhook_id):
        raise ApiError(errors.NOT_FOUND, NOT_FOUND)
    return web.json_response({"object": "webhook", "id": str(webhook_id), "deleted": True})


@routes.post("/webhooks/{id}/signing-secret/rotate")
async def rotate_secret(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    hook = await endpoints.rotate_secret(
        request.app[POOL],
        caller.tenant_id,
        _webhook_id(request),
        signing.new_secret(),
        request.app[SETTINGS].webhooks.secret_grace,
    )
    if hook is None:
        raise ApiError(errors.NOT_FOUND, NOT_FOUND)
    return web.json_response(
        {"object": "webhook", "id": str(hook.id), "signing_secret": hook.signing_secret}
    )


def _event_json(event: deliveries.DeliveredEvent, *, full: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(event.id),
        "type": event.type,
        "created_at": event.created_at.isoformat(),
        "status": event.status,
    }
    if full:
        body = {"object": "webhook_event", **body}
        body["next_attempt_at"] = (
            event.next_attempt_at.isoformat() if event.next_attempt_at else None
        )
        body["payload"] = payloads.shape(event.type, event.created_at, event.data)
    return body


async def _require_webhook(request: web.Request) -> UUID:
    caller = request[CALLER]
    caller.require_full_access()
    webhook_id = _webhook_id(request)
    if not await endpoints.webhook_exists(request.app[POOL], caller.tenant_id, webhook_id):
        raise ApiError(errors.NOT_FOUND, NOT_FOUND)
    return webhook_id


@routes.get("/webhooks/{id}/events")
async def list_events(request: web.Request) -> web.Response:
    webhook_id = await _require_webhook(request)
    page = page_request(request)
    items, has_more = await deliveries.list_events(
        request.app[POOL], request[CALLER].tenant_id, webhook_id, limit=page.limit, after=page.after
    )
    return web.json_response(list_body([_event_json(e, full=False) for e in items], has_more))


@routes.get("/webhooks/{id}/events/{event_id}")
async def get_event(request: web.Request) -> web.Response:
    webhook_id = await _require_webhook(request)
    event = await deliveries.get_event(
        request.app[POOL], request[CALLER].tenant_id, webhook_id, _event_id(request)
    )
    if event is None:
        raise ApiError(errors.NOT_FOUND, EVENT_NOT_FOUND)
    return web.json_response(_event_json(event, full=True))


@routes.post("/webhooks/{id}/events/{event_id}/replay")
async def replay_event(request: web.Request) -> web.Response:
    webhook_id = await _require_webhook(request)
    event_id = _event_id(request)
    if not await deliveries.replay(
        request.app[POOL], request[CALLER].tenant_id, webhook_id, event_id
    ):
        raise ApiError(errors.NOT_FOUND, EVENT_NOT_FOUND)
    return web.json_response({"object": "webhook_event", "id": str(event_id)})


@routes.get("/webhooks/{id}/events/{event_id}/attempts")
async def list_attempts(request: web.Request) -> web.Response:
    webhook_id = await _require_webhook(request)
    page = page_request(request)
    found = await deliveries.list_attempts(
        request.app[POOL],
        request[CALLER].tenant_id,
        webhook_id,
        _event_id(request),
        limit=page.limit,
        after=query_uuid(request.query, "after"),
    )
    if found is None:
        raise ApiError(errors.NOT_FOUND, EVENT_NOT_FOUND)
    items, has_more = found
    return web.json_response(
        list_body(
            [
                {
                    "id": str(a.id),
                    "http_status_code": (
                        a.status_code if a.status_code is not None else NO_HTTP_ANSWER
                    ),
                    "response": a.response,
                    "sent_at": a.attempted_at.isoformat(),
                    "latency_ms": round(a.latency_ms, 1),
                    "error": a.error,
                }
                for a in items
            ],
            has_more,
        )
    )
