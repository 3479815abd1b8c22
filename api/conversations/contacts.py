"""Contacts over HTTP, in the shapes of Resend's global contacts: POST/GET /contacts and
GET/PATCH/DELETE /contacts/{id or email}. We have no audiences; the flat paths are the only ones.

The MX links a received message to the contact whose address is its From address (at insert time),
which is what `contact_id` on received mail and threads means.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from api import errors
from api.auth import CALLER
from api.context import POOL, read_json
from api.errors import ApiError
from api.pagination import list_body, page_request
from storage.conversations import contacts
from storage.conversations.contacts import Contact, ContactChanges
from storage.errors import Conflict

routes = web.RouteTableDef()

# RFC 5321 section 4.5.3.1.3: a path holds at most 256 octets, so an address at most 254.
MAX_EMAIL = 254
MAX_NAME = 256


def contact_json(contact: Contact) -> dict[str, Any]:
    return {
        "object": "contact",
        "id": str(contact.id),
        "email": contact.email,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "created_at": contact.created_at.isoformat(),
        "unsubscribed": contact.unsubscribed,
        # Resend's custom contact properties, which we do not keep: its SDK types them as
        # always present, so strictly typed code needs the empty map.
        "properties": {},
    }


def _email(value: Any) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ApiError(errors.MISSING_REQUIRED_FIELD, "Missing `email` field.")
    if not isinstance(value, str) or not _looks_like_address(value.strip()):
        raise ApiError(errors.VALIDATION_ERROR, "The `email` field must be a valid email address.")
    return value.strip().lower()


def _looks_like_address(text: str) -> bool:
    """local@domain with nothing a header or a lookup could trip on; no more is promised."""
    local, at, domain = text.rpartition("@")
    return (
        bool(at and local and domain)
        and len(text) <= MAX_EMAIL
        and "@" not in local
        and not any(c.isspace() or c in '<>"\\,;' or not c.isprintable() for c in text)
        and not domain.startswith(".")
        and ".." not in domain
    )


def _field(body: dict[str, Any], snake: str, camel: str) -> tuple[bool, Any]:
    """(given, value) of a field that Resend's SDKs send in snake_case or camelCase."""
    for key in (snake, camel):
        if key in body:
            return True, body[key]
    return False, None


def _name(body: dict[str, Any], snake: str, camel: str) -> tuple[bool, str | None]:
    given, value = _field(body, snake, camel)
    if value is not None and (not isinstance(value, str) or len(value) > MAX_NAME):
        raise ApiError(
            errors.VALIDATION_ERROR,
            f"The `{snake}` field must be a string of at most {MAX_NAME} characters, or null.",
        )
    return given, (value.strip() or None) if isinstance(value, str) else None


def _unsubscribed(body: dict[str, Any]) -> bool | None:
    value = body.get("unsubscribed")
    if value is not None and not isinstance(value, bool):
        raise ApiError(errors.VALIDATION_ERROR, "The `unsubscribed` field must be true or false.")
    return value


async def _find(request: web.Request) -> Contact:
    """The contact named in the path by id or (like Resend) by email address, else 404."""
    caller = request[CALLER]
    pool = request.app[POOL]
    key = request.match_info["id"]
    found: Contact | None = None
    if "@" in key:
        found = await contacts.find_contact(pool, caller.tenant_id, key.strip())
    else:
        try:
            contact_id = UUID(key)
        except ValueError:
            contact_id = None
        if contact_id is not None:
            found = await contacts.get_contact(pool, caller.tenant_id, contact_id)
    if found is None:
        raise ApiError(errors.NOT_FOUND, "Contact not found.")
    return found


# Resend's contact fields this server does not keep: refused by name rather than dropped, so a
# caller never believes they were stored (empty values, as SDKs may send, are fine).
UNSUPPORTED = {
    "properties": "custom contact properties are not kept by this server",
    "segments": "segments are not supported by this server",
    "topics": "topics are not supported by this server",
    "audience_id": "audiences are not supported by this server; contacts belong to the account",
}


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for field, why in UNSUPPORTED.items():
        if body.get(field) not in (None, {}, [], ""):
            raise ApiError(errors.VALIDATION_ERROR, f"`{field}`: {why}.")


@routes.post("/contacts")
async def create_contact(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    body = await read_json(request)
    _refuse_unsupported(body)
    email = _email(body.get("email"))
    _, first_name = _name(body, "first_name", "firstName")
    _, last_name = _name(body, "last_name", "lastName")
    try:
        contact = await contacts.create_contact(
            request.app[POOL],
            caller.tenant_id,
            email,
            first_name,
            last_name,
            bool(_unsubscribed(body)),
        )
    except Conflict:
        # Unique per tenant (another tenant may hold the same address). Resend's catalogue has
        # no "conflict" name; invalid_parameter (422) says the value is what cannot be accepted.
        raise ApiError(
            errors.INVALID_PARAMETER, f"A contact with the email `{email}` already exists."
        ) from None
    return web.json_response({"object": "contact", "id": str(contact.id)}, status=201)


@routes.get("/contacts")
async def list_contacts(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    page = page_request(request)
    items, has_more = await contacts.list_contacts(
        request.app[POOL], caller.tenant_id, limit=page.limit, after=page.after, before=page.before
    )
    return web.json_response(list_body([contact_json(c) for c in items], has_more))


@routes.get("/contacts/{id}")
async def get_contact(request: web.Request) -> web.Response:
    request[CALLER].require_full_access()
    return web.json_response(contact_json(await _find(request)))


@routes.patch("/contacts/{id}")
async def update_contact(request: web.Request) -> web.Response:
    """first_name, last_name, unsubscribed; an `email` in the body only names the contact
    (Resend's SDKs send it that way) and never changes it."""
    caller = request[CALLER]
    caller.require_full_access()
    body = await read_json(request)
    _refuse_unsupported(body)
    set_first, first_name = _name(body, "first_name", "firstName")
    set_last, last_name = _name(body, "last_name", "lastName")
    changes = ContactChanges(
        first_name=first_name,
        last_name=last_name,
        unsubscribed=_unsubscribed(body),
        set_first_name=set_first,
        set_last_name=set_last,
    )
    contact = await _find(request)
    updated = await contacts.update_contact(
        request.app[POOL], caller.tenant_id, contact.id, changes
    )
    if updated is None:  # deleted between the two statements
        raise ApiError(errors.NOT_FOUND, "Contact not found.")
    return web.json_response({"object": "contact", "id": str(updated.id)})


@routes.delete("/contacts/{id}")
async def delete_contact(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    contact = await _find(request)
    if not await contacts.delete_contact(request.app[POOL], caller.tenant_id, contact.id):
        raise ApiError(errors.NOT_FOUND, "Contact not found.")
    return web.json_response(
        {"object": "contact", "id": str(contact.id), "contact": str(contact.id), "deleted": True}
    )
