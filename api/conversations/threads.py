"""Conversations over HTTP: GET /threads, GET /threads/{id}, and the `thread` object that
received-email (and outbound-email) detail responses carry.

A thread is what the tenant sent and what came back, in time order; nothing of another tenant
is ever read (every storage call takes the caller's tenant).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from api import errors
from api.account.api_keys import path_uuid
from api.auth import CALLER
from api.context import POOL
from api.errors import ApiError
from api.pagination import list_body, page_request, unknown_cursor
from storage.conversations import threads
from storage.conversations.threads import Thread, ThreadMessage, ThreadMessages
from storage.database import Pool

routes = web.RouteTableDef()

# RFC 5322 section 3.2.3 specials: a display name holding one of them must be quoted.
_SPECIALS = frozenset('()<>[]:;@\\,."')


def display_address(name: str | None, address: str | None) -> str | None:
    """`Name <address>` as a mail client shows it (names are not RFC 2047-encoded here)."""
    if not address:
        return None
    if not name:
        return address
    if any(c in _SPECIALS for c in name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def message_json(message: ThreadMessage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(message.id),
        "direction": message.direction,
        "created_at": message.created_at.isoformat(),
        "from": (
            message.from_header
            if message.direction == "outbound"
            else display_address(message.from_name, message.from_address)
        ),
        "to": list(message.to_addresses),
        "subject": message.subject,
    }
    if message.direction == "inbound":
        body["reply_match_status"] = message.match_status
        body["reply_to_email_id"] = _str(message.reply_to_email_id)
        body["classification"] = message.classification
    return body


def thread_json(thread: Thread, found: ThreadMessages) -> dict[str, Any]:
    """One entry of GET /threads, and the body of GET /threads/{id}."""
    return {
        "object": "thread",
        "id": str(thread.id),
        "subject": thread.subject,
        "created_at": thread.created_at.isoformat(),
        "last_message_at": thread.last_message_at.isoformat(),
        "original_email_id": _str(thread.original_email_id),
        "contact_id": _str(thread.contact_id),
        "message_count": found.total,
        # True when the thread holds more than storage.conversations.threads.MAX_THREAD_MESSAGES
        # messages.
        "messages_truncated": found.total > len(found.messages),
        "messages": [message_json(m) for m in found.messages],
    }


async def thread_object(
    pool: Pool, tenant_id: UUID, thread_id: UUID, *, match_status: str | None = None
) -> dict[str, Any] | None:
    """The `thread` object of a detail response; None when the tenant has no such thread.

    `{thread_id, match_status, original_email_id, contact_id, messages[]}`, messages oldest
    first. `match_status` is the received message's own status; for an outbound email (no
    status of its own) it is "matched" once a reply has been matched into the thread, else null.
    """
    thread = await threads.get_thread(pool, tenant_id, thread_id)
    if thread is None:
        return None
    found = (await threads.thread_messages(pool, tenant_id, [thread_id]))[thread_id]
    if match_status is None and any(m.match_status == "matched" for m in found.messages):
        match_status = "matched"
    return {
        "thread_id": str(thread.id),
        "match_status": match_status,
        "original_email_id": _str(thread.original_email_id),
        "contact_id": _str(thread.contact_id),
        "messages": [message_json(m) for m in found.messages],
    }


@routes.get("/threads")
async def list_threads(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    page = page_request(request)
    pool = request.app[POOL]
    listed = await threads.list_threads(
        pool, caller.tenant_id, limit=page.limit, after=page.after, before=page.before
    )
    if listed is None:
        raise unknown_cursor(page)
    items, has_more = listed
    found = await threads.thread_messages(pool, caller.tenant_id, [t.id for t in items])
    return web.json_response(list_body([thread_json(t, found[t.id]) for t in items], has_more))


@routes.get("/threads/{id}")
async def get_thread(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    thread_id = path_uuid(request)
    pool = request.app[POOL]
    thread = await threads.get_thread(pool, caller.tenant_id, thread_id)
    if thread is None:
        raise ApiError(errors.NOT_FOUND, "Thread not found.")
    found = await threads.thread_messages(pool, caller.tenant_id, [thread_id])
    return web.json_response(thread_json(thread, found[thread_id]))


def _str(value: UUID | None) -> str | None:
    return None if value is None else str(value)
