"""API keys over HTTP, in Resend's shapes: POST/GET /api-keys, DELETE /api-keys/{id}.

The list pages like every other list (api.pagination); each key shows its last use.
"""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from api import errors
from api.auth import CALLER
from api.context import POOL, read_json
from api.errors import ApiError
from api.pagination import list_body, page_request
from storage.account import directory
from storage.account.directory import ApiKey

routes = web.RouteTableDef()

PERMISSIONS = ("full_access", "sending_access")


def path_uuid(request: web.Request, name: str = "id") -> UUID:
    """A UUID from the path; anything else is a 404 (never tells whether an id exists)."""
    try:
        return UUID(request.match_info[name])
    except ValueError:
        raise ApiError(errors.NOT_FOUND) from None


@routes.post("/api-keys")
async def create_api_key(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    body = await read_json(request)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(errors.MISSING_REQUIRED_FIELD, "Missing `name` field.")
    if len(name) > 50:
        raise ApiError(errors.VALIDATION_ERROR, "The `name` field must be at most 50 characters.")
    permission = body.get("permission", "full_access")
    if permission not in PERMISSIONS:
        raise ApiError(errors.INVALID_ACCESS)
    domain_id = None
    if body.get("domain_id") is not None:
        if permission != "sending_access":
            raise ApiError(errors.VALIDATION_ERROR, "`domain_id` needs `sending_access`.")
        try:
            domain_id = UUID(str(body["domain_id"]))
        except ValueError:
            raise ApiError(errors.INVALID_PARAMETER) from None
        owned = {d.id for d in await directory.list_domains(request.app[POOL], caller.tenant_id)}
        if domain_id not in owned:
            raise ApiError(errors.NOT_FOUND, "Domain not found.")
    key, token = await directory.create_api_key(
        request.app[POOL], caller.tenant_id, name.strip(), permission, domain_id
    )
    return web.json_response({"id": str(key.id), "token": token}, status=201)


@routes.get("/api-keys")
async def list_api_keys(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    page = page_request(request)
    keys, has_more = await directory.list_api_keys_page(
        request.app[POOL], caller.tenant_id, limit=page.limit, after=page.after, before=page.before
    )
    return web.json_response(list_body([api_key_json(k) for k in keys], has_more))


def api_key_json(key: ApiKey) -> dict[str, object]:
    """Resend's listed key; `last_used_at` is to the minute (storage.account_caches)."""
    last_used = key.last_used_at.isoformat() if key.last_used_at else None
    return {
        "id": str(key.id),
        "name": key.name,
        "created_at": key.created_at.isoformat(),
        "last_used_at": last_used,
    }


@routes.delete("/api-keys/{id}")
async def delete_api_key(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    key_id = path_uuid(request)
    if not await directory.delete_api_key(request.app[POOL], caller.tenant_id, key_id):
        raise ApiError(errors.NOT_FOUND, "API key not found.")
    return web.json_response({"object": "api_key", "id": str(key_id), "deleted": True})
