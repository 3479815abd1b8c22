"""Resend's /suppressions: add one or up to 100, list a page (by origin), get or remove one by
id or address, remove up to 100. Handlers translate; storage.suppressions holds the SQL.

Another tenant's entry answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from api import errors
from api.auth import CALLER
from api.context import POOL, read_json
from api.errors import ApiError
from api.pagination import list_body, page_request, unknown_cursor
from storage.suppressions import store
from storage.suppressions.store import Suppression

routes = web.RouteTableDef()

ORIGINS = ("bounce", "complaint", "manual")
MAX_BATCH = 100
MAX_EMAIL = 254  # RFC 5321 section 4.5.3.1.3: a path of 256 octets holds at most 254


def entry_json(entry: Suppression, *, with_object: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(entry.id),
        "email": entry.email,
        "origin": entry.origin,
        "source_id": str(entry.source_id) if entry.source_id else None,
        "created_at": entry.created_at.isoformat(),
    }
    # Resend's list entries carry no `object`; a single entry does.
    return {"object": "suppression", **body} if with_object else body


def checked_address(value: Any, field: str = "email") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(errors.MISSING_REQUIRED_FIELD, f"Missing `{field}` field.")
    text = value.strip()
    local, at, domain = text.rpartition("@")
    if (
        not (at and local and domain)
        or len(text) > MAX_EMAIL
        or any(c.isspace() or c in '<>",;\\' or not c.isprintable() for c in text)
    ):
        raise ApiError(errors.VALIDATION_ERROR, f"The `{field}` field must be an email address.")
    return text.lower()


def _list(body: dict[str, Any], name: str) -> list[Any]:
    values = body.get(name)
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_BATCH:
        raise ApiError(
            errors.VALIDATION_ERROR,
            f"The `{name}` field must be a list of 1 to {MAX_BATCH} items.",
        )
    return values


def _uuid(value: Any) -> UUID:
    try:
        return UUID(str(value))
    except ValueError:
        raise ApiError(errors.VALIDATION_ERROR, "Every id must be a suppression id.") from None


async def _find(request: web.Request) -> Suppression:
    key = request.match_info["id_or_email"].strip()
    found = None
    if "@" in key or _is_uuid(key):
        found = await store.find(request.app[POOL], request[CALLER].tenant_id, key)
    if found is None:
        raise ApiError(errors.NOT_FOUND, "Suppression not found.")
    return found


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


@routes.post("/suppressions")
async def add(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    body = await read_json(request)
    [entry] = await store.suppress(
        request.app[POOL], caller.tenant_id, [checked_address(body.get("email"))], origin="manual"
    )
    return web.json_response({"object": "suppression", "id": str(entry.id)}, status=201)


@routes.post("/suppressions/batch/add")
async def add_batch(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    body = await read_json(request)
    emails = [checked_address(value, "emails") for value in _list(body, "emails")]
    entries = await store.suppress(request.app[POOL], caller.tenant_id, emails, origin="manual")
    data = [{"object": "suppression", "id": str(e.id)} for e in entries]
    return web.json_response({"data": data}, status=201)


@routes.get("/suppressions")
async def list_entries(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    page = page_request(request)
    origin = request.query.get("origin") or None
    if origin is not None and origin not in ORIGINS:
        raise ApiError(
            errors.VALIDATION_ERROR, "The `origin` parameter must be bounce, complaint or manual."
        )
    listed = await store.list_page(
        request.app[POOL],
        caller.tenant_id,
        origin=origin,
        limit=page.limit,
        after=page.after,
        before=page.before,
    )
    if listed is None:
        raise unknown_cursor(page)
    entries, has_more = listed
    return web.json_response(
        list_body([entry_json(e, with_object=False) for e in entries], has_more)
    )


@routes.get("/suppressions/{id_or_email}")
async def get(request: web.Request) -> web.Response:
    request[CALLER].require_full_access()
    return web.json_response(entry_json(await _find(request)))


@routes.delete("/suppressions/{id_or_email}")
async def remove(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    entry = await _find(request)
    removed = await store.remove(request.app[POOL], caller.tenant_id, [entry.id], [])
    if not removed:  # removed by someone else between the two statements
        raise ApiError(errors.NOT_FOUND, "Suppression not found.")
    return web.json_response({"object": "suppression", "id": str(entry.id), "deleted": True})


@routes.post("/suppressions/batch/remove")
async def remove_batch(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    body = await read_json(request)
    has_ids, has_emails = body.get("ids") is not None, body.get("emails") is not None
    if has_ids == has_emails:
        raise ApiError(errors.VALIDATION_ERROR, "Give either `emails` or `ids`, not both.")
    ids = [_uuid(v) for v in _list(body, "ids")] if has_ids else []
    emails = [checked_address(v, "emails") for v in _list(body, "emails")] if has_emails else []
    removed = await store.remove(request.app[POOL], caller.tenant_id, ids, emails)
    data = [{"object": "suppression", "id": str(e.id), "deleted": True} for e in removed]
    return web.json_response({"data": data})
