"""Sent emails in Resend's shapes: GET /emails (cursor pages), GET /emails/{id}, and for a
scheduled email PATCH /emails/{id} (reschedule) and POST /emails/{id}/cancel.

These need a full_access key (a sending_access key only sends, as in Resend). Another tenant's
email, an unknown id and a malformed id all answer 404 not_found: an id's existence is never
revealed. Malformed cursors in the query string are 422 invalid_parameter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from api import errors
from api.account.api_keys import path_uuid
from api.auth import CALLER
from api.context import POOL, read_json
from api.conversations.threads import thread_object
from api.errors import ApiError
from policy.sending.fields import Refusal
from policy.sending.request import parse_scheduled_at
from storage.sending import emails as sending

routes = web.RouteTableDef()

# Only UUID-like ids match, so sibling paths such as /emails/receiving stay free for their own
# routes whatever the order of registration.
EMAIL_PATH = "/emails/{id:[0-9A-Fa-f-]{32,36}}"
DEFAULT_LIMIT, MAX_LIMIT = 20, 100


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def render_summary(row: dict[str, Any]) -> dict[str, Any]:
    """Resend's email object (list form), plus our reply-tracking identity."""
    return {
        "object": "email",
        "id": str(row["id"]),
        "from": row["from_header"] or row["from_address"],
        "to": row["to_addresses"],
        # Lists, empty when none were given: Resend's document and SDK type them so.
        "cc": row["cc_addresses"] or [],
        "bcc": row["bcc_addresses"] or [],
        "reply_to": row["reply_to_addresses"] or [],
        "subject": row["subject"],
        "created_at": _time(row["created_at"]),
        "scheduled_at": _time(row["scheduled_at"]),
        # Stored as the event type (email.delivered); Resend's field is the bare name.
        "last_event": (row["last_event"] or row["status"]).removeprefix("email."),
        "tags": row["tags"],
        "message_id": row["message_id"],
        "thread_id": str(row["thread_id"]) if row["thread_id"] else None,
        "reply_address": row["reply_address"],
    }


def render_email(row: dict[str, Any]) -> dict[str, Any]:
    """GET /emails/{id}: the summary, the bodies, and where each recipient's copy stands."""
    return {
        **render_summary(row),
        # Strings, empty for the body the email did not have (Resend's document and SDK: string).
        "html": row["html_body"] or "",
        "text": row["text_body"] or "",
        "deliveries": row["deliveries"],
    }


def _query_uuid(request: web.Request, name: str) -> UUID | None:
    value = request.query.get(name)
    if value is None:
        return None
    try:
        return UUID(value)
    except ValueError:
        raise ApiError(errors.INVALID_PARAMETER, f"`{name}` must be an email id.") from None


@routes.get("/emails")
async def list_emails(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    raw_limit = request.query.get("limit", str(DEFAULT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise ApiError(errors.INVALID_PARAMETER, f"`limit` must be a number from 1 to {MAX_LIMIT}.")
    after, before = _query_uuid(request, "after"), _query_uuid(request, "before")
    if after is not None and before is not None:
        raise ApiError(errors.INVALID_PARAMETER, "Use `after` or `before`, not both.")
    page = await sending.list_emails(
        request.app[POOL], caller.tenant_id, int(raw_limit), after=after, before=before
    )
    if page is None:
        raise ApiError(errors.NOT_FOUND, "The email given as the cursor was not found.")
    return web.json_response(
        {
            "object": "list",
            "has_more": page.has_more,
            "data": [render_summary(row) for row in page.rows],
        }
    )


@routes.get(EMAIL_PATH)
async def get_email(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    pool = request.app[POOL]
    row = await sending.get_email(pool, caller.tenant_id, path_uuid(request))
    if row is None:
        raise ApiError(errors.NOT_FOUND, "Email not found.")
    thread_id = row["thread_id"]
    thread = await thread_object(pool, caller.tenant_id, thread_id) if thread_id else None
    return web.json_response({**render_email(row), "thread": thread})


def _refuse_change(change: sending.Change, verb: str) -> None:
    if change.status is None:
        raise ApiError(errors.NOT_FOUND, "Email not found.")
    if not change.changed:
        raise ApiError(
            errors.VALIDATION_ERROR,
            f"Only a scheduled email that is not yet due can be {verb}; "
            f"this one is {change.status}.",
        )


@routes.patch(EMAIL_PATH)
async def reschedule_email(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    email_id = path_uuid(request)
    body = await read_json(request)
    if body.get("scheduled_at") is None:
        raise ApiError(errors.MISSING_REQUIRED_FIELD, "Missing `scheduled_at` field.")
    try:
        when = parse_scheduled_at(body["scheduled_at"], datetime.now(UTC))
    except Refusal as refusal:
        raise ApiError(errors.VALIDATION_ERROR, refusal.message) from None
    if when is None:
        raise ApiError(errors.VALIDATION_ERROR, "`scheduled_at` must be in the future.")
    change = await sending.reschedule_email(request.app[POOL], caller.tenant_id, email_id, when)
    _refuse_change(change, "rescheduled")
    return web.json_response({"object": "email", "id": str(email_id)})


@routes.post(EMAIL_PATH + "/cancel")
async def cancel_email(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    email_id = path_uuid(request)
    change = await sending.cancel_email(request.app[POOL], caller.tenant_id, email_id)
    _refuse_change(change, "canceled")
    return web.json_response({"object": "email", "id": str(email_id)})
