"""API keys over HTTP, in Resend's shapes: POST/GET /api-keys, DELETE /api-keys/{id}."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from api import errors
from api.auth import CALLER
from api.context import POOL, read_json
from api.errors import ApiError
from storage.account import directory

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
    keys = await directory.list_api_keys(request.app[POOL], caller.tenant_id)
    return web.json_response(
        {
            "object": "list",
            "has_more": False,  # every key in one page: a tenant has few
            "data": [
                {"id": str(k.id), "name": k.name, "created_at": k.created_at.isoformat()}
                for k in keys
            ],
        }
    )


@routes.delete("/api-keys/{id}")
async def delete_api_key(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    key_id = path_uuid(request)
    if not await directory.delete_api_key(request.app[POOL], caller.tenant_id, key_id):
        raise ApiError(errors.NOT_FOUND, "API key not found.")
    return web.json_response({"object": "api_key", "id": str(key_id), "deleted": True})
