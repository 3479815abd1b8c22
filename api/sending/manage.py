"""Sent emails in Resend's shapes: GET /emails (cursor pages), GET /emails/{id}, its attachments
(GET /emails/{id}/attachments[/{attachment_id}[/content]]), and for a scheduled email
PATCH /emails/{id} (reschedule) and POST /emails/{id}/cancel.

These need a full_access key (a sending_access key only sends, as in Resend). Another tenant's
email, an unknown id and a malformed id all answer 404 not_found: an id's existence is never
revealed. The list pages and refuses its query as every list does (api.pagination).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid5

from aiohttp import web

from api import errors
from api.account.api_keys import path_uuid
from api.auth import CALLER
from api.context import POOL, read_json
from api.conversations import mime_parts
from api.conversations.threads import thread_object
from api.download_links import signed_link
from api.errors import ApiError
from api.pagination import list_body, page_request, unknown_cursor
from policy.sending.fields import Refusal
from policy.sending.request import parse_scheduled_at
from storage.sending import emails as sending

routes = web.RouteTableDef()

# Only UUID-like ids match, so sibling paths such as /emails/receiving stay free for their own
# routes whatever the order of registration.
EMAIL_PATH = "/emails/{id:[0-9A-Fa-f-]{32,36}}"


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


@routes.get("/emails")
async def list_emails(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    asked = page_request(request)
    page = await sending.list_emails(
        request.app[POOL], caller.tenant_id, asked.limit, after=asked.after, before=asked.before
    )
    if page is None:
        raise unknown_cursor(asked)
    return web.json_response(list_body([render_summary(row) for row in page.rows], page.has_more))


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


# -- attachments of a sent email -----------------------------------------------------------------


def attachment_id(email_id: UUID, index: int) -> UUID:
    """Stable, and a UUID as Resend's document and SDK say: from the email and position."""
    return uuid5(email_id, f"sent-attachment-{index + 1}")


def _attachment_json(
    request: web.Request, tenant_id: UUID, email_id: UUID, index: int, entry: dict[str, Any]
) -> dict[str, Any]:
    """Resend's attachment object; `filename` and `content_id` are left out when unknown (its
    SDK types them as absent or a string, never null)."""
    the_id = attachment_id(email_id, index)
    path = f"/emails/{email_id}/attachments/{the_id}/content"
    body: dict[str, Any] = {
        "id": str(the_id),
        "size": entry["size"],
        "content_type": entry["content_type"],
        "content_disposition": "inline" if entry.get("content_id") else "attachment",
    }
    for name in ("filename", "content_id"):
        if entry.get(name) is not None:
            body[name] = entry[name]
    return {**body, **signed_link(request, tenant_id, path)}


def _index_of(entries: list[dict[str, Any]], email_id: UUID, wanted: str) -> int:
    for index in range(len(entries)):
        if str(attachment_id(email_id, index)) == wanted:
            return index
    raise ApiError(errors.NOT_FOUND, "Attachment not found.")


async def _sent_attachments(request: web.Request) -> tuple[UUID, UUID, list[dict[str, Any]]]:
    caller = request[CALLER]
    caller.require_full_access()
    email_id = path_uuid(request)
    entries = await sending.get_attachments(request.app[POOL], caller.tenant_id, email_id)
    if entries is None:
        raise ApiError(errors.NOT_FOUND, "Email not found.")
    return caller.tenant_id, email_id, entries


@routes.get(EMAIL_PATH + "/attachments")
async def list_attachments(request: web.Request) -> web.Response:
    """Every attachment at once: a message holds few, so `has_more` is always false."""
    tenant_id, email_id, entries = await _sent_attachments(request)
    data = [_attachment_json(request, tenant_id, email_id, i, e) for i, e in enumerate(entries)]
    return web.json_response(list_body(data, False))


@routes.get(EMAIL_PATH + "/attachments/{attachment_id}")
async def get_attachment(request: web.Request) -> web.Response:
    tenant_id, email_id, entries = await _sent_attachments(request)
    index = _index_of(entries, email_id, request.match_info["attachment_id"])
    body = _attachment_json(request, tenant_id, email_id, index, entries[index])
    return web.json_response({"object": "attachment", **body})


@routes.get(EMAIL_PATH + "/attachments/{attachment_id}/content")
async def download_attachment(request: web.Request) -> web.Response:
    """The bytes, with the API key (the signed `download_url` needs none)."""
    caller = request[CALLER]
    caller.require_full_access()
    return await attachment_content(request, caller.tenant_id)


async def attachment_content(request: web.Request, tenant_id: UUID) -> web.Response:
    """The decoded bytes of one attachment, found again in the raw message as it was sent."""
    email_id = path_uuid(request)
    stored = await sending.get_attachments_and_raw(request.app[POOL], tenant_id, email_id)
    if stored is None:
        raise ApiError(errors.NOT_FOUND, "Email not found.")
    entries, raw = stored
    index = _index_of(entries, email_id, request.match_info["attachment_id"])
    entry = entries[index]
    parts = await asyncio.get_running_loop().run_in_executor(None, mime_parts.attached_parts, raw)
    # The metadata lists them in the order given; the message holds inline ones first (with the
    # HTML), so each is found by what it is: name, Content-ID and decoded size.
    same = [
        p
        for p in parts
        if (p.filename, p.content_id, len(p.part.payload))
        == (entry.get("filename"), entry.get("content_id"), entry["size"])
    ]
    earlier = sum(1 for e in entries[:index] if _same_file(e, entry))
    if earlier >= len(same):
        raise ApiError(errors.NOT_FOUND, "Attachment not found.")
    part = same[earlier].part
    return web.Response(
        body=part.payload,
        headers={
            "Content-Type": part.content_type,
            "Content-Disposition": mime_parts.content_disposition(
                entry.get("filename"), f"attachment-{index + 1}"
            ),
            "X-Content-Type-Options": "nosniff",  # never rendered as a page of ours
        },
    )


def _same_file(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("filename", "content_id", "size")
    return all(a.get(k) == b.get(k) for k in keys)
