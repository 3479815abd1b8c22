"""Account pages: domains with their DNS records (and "check now"), API keys (created and shown
once, revoked) and contacts; through the same functions as /domains, /api-keys and /contacts."""

from __future__ import annotations

import contextlib
from uuid import UUID

from aiohttp import web

from api.account.domains import verify_domain
from api.context import DNS, POOL, SETTINGS
from api.dashboard.context import PREFIX, SESSION, PageNotFound, path_id, render, see_other
from policy.domains.public import DomainView
from storage.account import directory, domains
from storage.conversations import contacts
from storage.dashboard.contact_threads import threads_of_contact
from storage.errors import Conflict

routes = web.RouteTableDef()

PAGE_SIZE = 100


@routes.get("/domains", name="domains")
async def list_domains(request: web.Request) -> web.Response:
    tenant_id = request[SESSION].tenant_id
    page = await domains.list_domains(request.app[POOL], tenant_id, limit=PAGE_SIZE)
    view = DomainView(request.config_dict[SETTINGS].hostname)
    return render(request, "domains.html", {"domains": [view.public(d) for d in page.domains]})


@routes.post("/domains/{id}/verify")
async def check_domain(request: web.Request) -> web.StreamResponse:
    pool = request.app[POOL]
    domain = await domains.get_domain(pool, request[SESSION].tenant_id, path_id(request))
    if domain is None:
        raise PageNotFound()
    view = DomainView(request.config_dict[SETTINGS].hostname)
    # Verified by another account meanwhile (storage.account.domains.record_check): nothing is
    # stored, so the domain stays as it was, unverified here, its page showing its last check.
    with contextlib.suppress(Conflict):
        await verify_domain(pool, request.config_dict[DNS], view, domain)
    raise see_other(f"{PREFIX}/domains#domain-{domain.id}")


# API keys are few; the page shows the newest this many (GET /api-keys pages through them all).
KEYS_SHOWN = 100


async def _newest_keys(request: web.Request, tenant_id: UUID) -> list[directory.ApiKey]:
    keys, _more = await directory.list_api_keys_page(request.app[POOL], tenant_id, limit=KEYS_SHOWN)
    return keys


@routes.get("/api-keys", name="api_keys")
async def list_api_keys(request: web.Request) -> web.Response:
    keys = await _newest_keys(request, request[SESSION].tenant_id)
    return render(request, "api_keys.html", {"keys": keys, "created": None})


@routes.post("/api-keys")
async def create_api_key(request: web.Request) -> web.Response:
    """The key is shown in this response only: the page is not a redirect, so a reload asks
    again instead of showing it twice (the browser's resubmit prompt says so)."""
    tenant_id = request[SESSION].tenant_id
    form = await request.post()
    name = str(form.get("name", "")).strip()[:50] or "dashboard"
    permission = "sending_access" if form.get("permission") == "sending_access" else "full_access"
    pool = request.app[POOL]
    key, token = await directory.create_api_key(pool, tenant_id, name, permission)
    keys = await _newest_keys(request, tenant_id)
    return render(request, "api_keys.html", {"keys": keys, "created": {"key": key, "token": token}})


@routes.post("/api-keys/{id}/revoke")
async def revoke_api_key(request: web.Request) -> web.StreamResponse:
    if not await directory.delete_api_key(
        request.app[POOL], request[SESSION].tenant_id, path_id(request)
    ):
        raise PageNotFound()
    raise see_other(f"{PREFIX}/api-keys")


@routes.get("/contacts", name="contacts")
async def list_contacts(request: web.Request) -> web.Response:
    items, more = await contacts.list_contacts(
        request.app[POOL], request[SESSION].tenant_id, limit=PAGE_SIZE
    )
    return render(request, "contacts.html", {"contacts": items, "more": more})


@routes.get("/contacts/{id}", name="contact")
async def contact_detail(request: web.Request) -> web.Response:
    tenant_id = request[SESSION].tenant_id
    pool = request.app[POOL]
    contact = await contacts.get_contact(pool, tenant_id, path_id(request))
    if contact is None:
        raise PageNotFound()
    found = await threads_of_contact(pool, tenant_id, contact.id)
    return render(request, "contact.html", {"contact": contact, "threads": found})
