"""Domains over HTTP, in Resend's shapes: POST/GET /domains, GET/PATCH/DELETE /domains/{id},
POST /domains/{id}/verify. Handlers translate; `policy.domains.records` decides; the domain's
shape is `policy.domains.public`'s (shared with its webhook events); SQL, which writes those
events, is in `storage.account.domains`. `create_key_if_missing` and `verify_domain` are shared
with the command line and the dashboard. A domain without a DKIM key (made before keys existed,
or by `directory.add_domain` without one) gets one the first time it is read, changed or
verified here.

Where one self-hosted server differs from Resend's hosted service, on purpose:
- verify checks DNS at once through OPENSEND_DNS_SERVERS and answers 200 with the whole domain
  (a superset of Resend's `{object, id}`); a lookup DNS could not answer makes the status
  `temporary_failure`, still a 200: the check ran and its result is "unknown for now", which is
  neither our fault (5xx) nor the caller's (4xx). It never turns a verified domain unverified;
  a definite failure does (the records were removed), and the MX stops taking its mail.
- `status` is the last check's result. A PATCH that changes the records to publish (receiving
  on, another reply domain) leaves it and `verified` alone; the new record shows `not_started`
  until the next verify. Turning receiving on for a verified domain therefore takes mail at
  once for a name the tenant proved through its parent (the reply domain is a subdomain).
- `records` holds only what Resend's SDK types allow (`SPF | DKIM | Receiving | ...`): the
  receiving MX is `{record: "Receiving", type: "MX", priority}` (the command line's JSON says
  "MX", as it always has). The DMARC record we suggest (checked, never required) is in
  `suggested_records`, a field of our own, so strictly typed code still reads `records`.
- record names are fully qualified (Resend's are relative): a reply domain's MX may sit in
  another zone, and a full name is unambiguous whichever zone the tenant edits.
- `region` is kept and echoed but changes nothing; open/click tracking, tracking subdomains,
  enforced TLS and a custom Return-Path are not implemented, so asking for them is refused
  rather than silently ignored (a `false`, or TLS "opportunistic", is what we do and is fine).
- `receiving` (boolean) and `reply_domain` are our extensions; Resend's `capabilities.receiving`
  is accepted too. Over the API a reply domain must be a subdomain of the domain: a tenant may
  not claim names it has not proved control of through the parent.
- A name another tenant holds answers 403 `validation_error` "… is already in use", as Resend
  answers a domain registered elsewhere, and says nothing else about it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from api import errors
from api.account.api_keys import path_uuid
from api.auth import CALLER
from api.context import DNS, POOL, SETTINGS, read_json
from api.errors import ApiError
from api.pagination import list_body, page_request, unknown_cursor
from policy.dns import DnsLookup
from policy.domains import dkim_keys
from policy.domains.check import DomainCheck, check_domain
from policy.domains.names import DomainNameError, is_subdomain, normalize_domain
from policy.domains.public import DomainView
from policy.domains.records import Status, records_to_publish, setup_of
from storage.account import domains
from storage.account.domains import DomainDetails
from storage.database import Pool
from storage.errors import Conflict

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

REGIONS = ("us-east-1", "eu-west-1", "sa-east-1", "ap-northeast-1")  # Resend's
CAPABILITY_VALUES = ("enabled", "disabled")

# Resend fields this server does not implement, with what a request that sets them is told.
UNSUPPORTED: dict[str, str] = {
    "custom_return_path": "a custom Return-Path is not supported: the envelope sender is in "
    "the domain itself, which its SPF record covers",
    "tracking_subdomain": "open and click tracking are not supported",
}
# Settings that are accepted only with the value this server really has.
ONLY_VALUE: dict[str, tuple[object, str]] = {
    "open_tracking": (False, "open tracking is not supported"),
    "click_tracking": (False, "click tracking is not supported"),
    "tls": ("opportunistic", 'only "opportunistic" TLS is supported (STARTTLS when offered)'),
}


# -- shared with `opensend domain` ---------------------------------------------------------------


async def create_key_if_missing(
    pool: Pool, view: DomainView, domain: DomainDetails
) -> DomainDetails:
    """Domains made before keys existed (or by `add_domain` without one) get one now."""
    if domain.dkim_public_key:
        return domain
    key = await generate_key()
    return await domains.set_dkim_key(pool, domain.id, key, event_data=view.event_data) or domain


async def generate_key() -> dkim_keys.DkimKeyPair:
    # RSA generation takes tens of milliseconds of CPU: off the event loop (DESIGN.md 7).
    return await asyncio.get_running_loop().run_in_executor(None, dkim_keys.generate_key_pair)


async def verify_domain(
    pool: Pool, dns: DnsLookup, view: DomainView, domain: DomainDetails
) -> tuple[DomainDetails, DomainCheck]:
    """Check the domain's records in DNS and store the result, per record and overall."""
    domain = await create_key_if_missing(pool, view, domain)
    specs = records_to_publish(setup_of(domain), view.hostname)
    check = await check_domain(dns, domain.name, specs)
    # A definite answer sets `verified`; an unanswered lookup leaves it as it was.
    verified = {Status.VERIFIED: True, Status.FAILED: False}.get(check.status)
    stored = await domains.record_check(
        pool,
        domain.tenant_id,
        domain.id,
        status=check.status.value,
        verified=verified,
        records=[record.as_json() for record in check.records],
        event_data=view.event_data,
    )
    log.info("domain checked", extra={"domain": domain.name, "status": check.status.value})
    return stored or domain, check


def _view(request: web.Request) -> DomainView:
    return DomainView(request.app[SETTINGS].hostname)


# -- request fields ------------------------------------------------------------------------------


def _invalid(message: str) -> ApiError:
    return ApiError(errors.VALIDATION_ERROR, message)


def _domain_name(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"The `{field}` field must be a string.")
    try:
        return normalize_domain(value)
    except DomainNameError as error:
        raise _invalid(f"Invalid `{field}`: {error}.") from None


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for field, why in UNSUPPORTED.items():
        if body.get(field) is not None:
            raise _invalid(f"`{field}`: {why}.")
    for field, (allowed, why) in ONLY_VALUE.items():
        value = body.get(field)
        if value is not None and value != allowed:
            raise _invalid(f"`{field}`: {why}.")


def _receiving(body: dict[str, Any]) -> bool | None:
    """`receiving` (ours) or `capabilities.receiving` (Resend's); None when neither is given."""
    value = body.get("receiving")
    if value is not None and not isinstance(value, bool):
        raise _invalid("The `receiving` field must be true or false.")
    receiving: bool | None = value
    capabilities = body.get("capabilities")
    if capabilities is None:
        return receiving
    if not isinstance(capabilities, dict):
        raise _invalid('`capabilities` must be an object such as {"receiving": "enabled"}.')
    for name, value in capabilities.items():
        if name not in ("sending", "receiving"):
            raise _invalid(f"Unknown capability `{name}`: use `sending` or `receiving`.")
        if value not in CAPABILITY_VALUES:
            raise _invalid(f'`capabilities.{name}` must be "enabled" or "disabled".')
    if capabilities.get("sending") == "disabled":
        raise _invalid("`capabilities.sending` cannot be disabled: every domain can send.")
    if "receiving" not in capabilities:
        return receiving
    wanted: bool = capabilities["receiving"] == "enabled"
    if receiving is not None and receiving != wanted:
        raise _invalid("`receiving` and `capabilities.receiving` disagree.")
    return wanted


def _reply_domain(value: object, name: str, receiving: bool) -> str | None:
    if value is None:
        return None
    reply_domain = _domain_name(value, "reply_domain")
    if not is_subdomain(reply_domain, name):
        raise _invalid(f"`reply_domain` must be a subdomain of {name}, such as inbound.{name}.")
    if not receiving:
        raise _invalid("`reply_domain` needs receiving enabled: replies arrive as received mail.")
    return reply_domain


def _region(body: dict[str, Any]) -> str:
    region = body.get("region")
    if region is None:
        return REGIONS[0]
    if region not in REGIONS:
        raise _invalid(f"`region` must be one of: {', '.join(REGIONS)}.")
    return str(region)


async def _owned_domain(request: web.Request) -> DomainDetails:
    caller = request[CALLER]
    caller.require_full_access()
    domain = await domains.get_domain(request.app[POOL], caller.tenant_id, path_uuid(request))
    if domain is None:  # another tenant's id too: never 403, never data
        raise ApiError(errors.NOT_FOUND, "Domain not found.")
    return domain


# -- handlers ------------------------------------------------------------------------------------


@routes.post("/domains")
async def create_domain(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    body = await read_json(request)
    if body.get("name") is None:
        raise ApiError(errors.MISSING_REQUIRED_FIELD, "Missing `name` field.")
    name = _domain_name(body["name"], "name")
    _refuse_unsupported(body)
    region = _region(body)
    receiving = _receiving(body) or False
    reply_domain = _reply_domain(body.get("reply_domain"), name, receiving)
    key = await generate_key()
    view = _view(request)
    try:
        domain = await domains.insert_domain(
            request.app[POOL],
            caller.tenant_id,
            name,
            receiving=receiving,
            reply_domain=reply_domain,
            region=region,
            dkim=key,
            event_data=view.event_data,
        )
    except Conflict as error:
        raise ApiError(errors.FORBIDDEN, f"{error}.") from None
    log.info("domain added", extra={"domain": name, "tenant": str(caller.tenant_id)})
    return web.json_response(view.public(domain), status=201)


@routes.get("/domains")
async def list_domains(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    page = page_request(request)
    pool = request.app[POOL]
    cursor = page.after or page.before
    if cursor is not None and await domains.get_domain(pool, caller.tenant_id, cursor) is None:
        raise unknown_cursor(page)
    found = await domains.list_domains(
        pool, caller.tenant_id, limit=page.limit, after=page.after, before=page.before
    )
    # The whole domain, records included: Resend's Python SDK types each item as its `Domain`
    # (records and `deleted` required); the Node SDK's narrower item is a part of it.
    view = _view(request)
    data = [view.public(d) for d in found.domains]
    return web.json_response(list_body(data, found.has_more))


@routes.get("/domains/{id}")
async def get_domain(request: web.Request) -> web.Response:
    view = _view(request)
    domain = await create_key_if_missing(request.app[POOL], view, await _owned_domain(request))
    return web.json_response(view.public(domain))


@routes.post("/domains/{id}/verify")
async def verify(request: web.Request) -> web.Response:
    domain = await _owned_domain(request)
    view = _view(request)
    try:
        domain, _check = await verify_domain(request.app[POOL], request.app[DNS], view, domain)
    except Conflict as error:
        raise ApiError(errors.FORBIDDEN, f"{domain.name}: {error}.") from None
    return web.json_response(view.public(domain))


@routes.patch("/domains/{id}")
async def update_domain(request: web.Request) -> web.Response:
    domain = await _owned_domain(request)
    body = await read_json(request)
    if body.get("name") is not None and _domain_name(body["name"], "name") != domain.name:
        raise _invalid("A domain's name cannot be changed: add the new one, delete the old.")
    _refuse_unsupported(body)
    receiving = _receiving(body)
    wants_receiving = domain.receiving_enabled if receiving is None else receiving
    reply_domain = domain.reply_domain
    if "reply_domain" in body:
        reply_domain = _reply_domain(body["reply_domain"], domain.name, wants_receiving)
    pool = request.app[POOL]
    view = _view(request)
    if (wants_receiving, reply_domain) != (domain.receiving_enabled, domain.reply_domain):
        try:
            changed = await domains.update_receiving(
                pool,
                domain.tenant_id,
                domain.id,
                receiving=wants_receiving,
                reply_domain=reply_domain,
                event_data=view.event_data,
            )
        except Conflict as error:
            raise ApiError(errors.FORBIDDEN, f"{error}.") from None
        if changed is None:  # deleted meanwhile
            raise ApiError(errors.NOT_FOUND, "Domain not found.")
        domain = changed
    domain = await create_key_if_missing(pool, view, domain)
    return web.json_response(view.public(domain))


@routes.delete("/domains/{id}")
async def delete_domain(request: web.Request) -> web.Response:
    domain = await _owned_domain(request)
    view = _view(request)
    if not await domains.delete_domain(
        request.app[POOL], domain.tenant_id, domain.id, event_data=view.event_data
    ):
        raise ApiError(errors.NOT_FOUND, "Domain not found.")
    log.info("domain deleted", extra={"domain": domain.name})
    # What was deleted, as Resend's Python SDK types the answer (its `Domain`).
    return web.json_response({**view.public(domain), "deleted": True})
