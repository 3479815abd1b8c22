"""Received mail over HTTP, in Resend's shapes: GET /emails/receiving (a page), .../{id} (one
message with its envelope, headers, bodies, matching, authentication results and thread), its
attachments and its raw bytes. Handlers translate: storage reads, api/conversations/mime_parts.py
decodes attachments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from aiohttp import web

from api import errors
from api.account.api_keys import path_uuid
from api.auth import CALLER
from api.context import POOL, SETTINGS
from api.conversations import mime_parts
from api.conversations.threads import display_address, thread_object
from api.download_links import signed_link
from api.errors import ApiError
from api.pagination import list_body, page_request, query_datetime, query_uuid, unknown_cursor
from policy.authcheck.verdicts import header_field, obscure_forged_results
from policy.inbound.attachments import (
    attachment_id,
    image_type,
    part_path,
    referenced_images,
    with_data_uris,
)
from storage.inbound import received
from storage.inbound.received import RawMessage, ReceivedEmail, ReceivedFilters, ReceivedSummary

routes = web.RouteTableDef()

MATCH_STATUSES = ("matched", "unmatched")
CLASSIFICATIONS = ("human", "auto_reply", "bounce", "complaint", "auto_generated")
# RFC 5321 section 4.5.3.1.3: a path is at most 256 octets; anything longer matches nothing.
MAX_ADDRESS_FILTER = 256


def _filters(request: web.Request) -> ReceivedFilters:
    query = request.query
    status = query.get("reply_match_status") or None
    if status is not None and status not in MATCH_STATUSES:
        raise ApiError(
            errors.VALIDATION_ERROR,
            "The `reply_match_status` parameter must be `matched` or `unmatched`.",
        )
    classification = query.get("classification") or None
    if classification is not None and classification not in CLASSIFICATIONS:
        raise ApiError(
            errors.VALIDATION_ERROR,
            "The `classification` parameter must be one of " + ", ".join(CLASSIFICATIONS) + ".",
        )
    return ReceivedFilters(
        match_status=status,
        classification=classification,
        thread_id=query_uuid(query, "thread_id"),
        recipient=_address_filter(query, "recipient"),
        sender=_address_filter(query, "from"),
        received_after=query_datetime(query, "received_after"),
        received_before=query_datetime(query, "received_before"),
    )


def _address_filter(query: Mapping[str, str], name: str) -> str | None:
    value = (query.get(name) or "").strip()
    if not value:
        return None
    if len(value) > MAX_ADDRESS_FILTER or "@" not in value:
        raise ApiError(errors.VALIDATION_ERROR, f"The `{name}` parameter must be an email address.")
    return value


def _bracketed(message_id: str | None) -> str | None:
    # Stored without angle brackets (matching compares bare ids); shown as the field writes it.
    return None if message_id is None else f"<{message_id}>"


OMITTED_WHEN_NULL = ("filename", "content_id")


def attachment_json(entry: dict[str, Any], index: int, email_id: UUID) -> dict[str, Any]:
    """Resend's attachment metadata, with the id every answer names it by (attachment_id)."""
    return {
        "id": str(attachment_id(email_id, entry, index)),
        "index": index,
        "filename": entry.get("filename"),
        "content_type": entry.get("content_type"),
        "content_id": entry.get("content_id"),
        "content_disposition": entry.get("content_disposition"),
        "size": entry.get("size"),
    }


def summary_json(email: ReceivedSummary) -> dict[str, Any]:
    """A list item: Resend's fields (no bodies, no headers) and ours for matching."""
    return {
        "id": str(email.id),
        "to": list(email.to_addresses),
        "from": display_address(email.from_name, email.from_address) or "",
        "created_at": email.received_at.isoformat(),
        # Resend's SDK types it a string: "" when the message had none, as message_id.
        "subject": email.subject or "",
        # Headers never show Bcc; who the message was delivered to is `received_for`.
        "bcc": None,
        "cc": list(email.cc_addresses),
        "reply_to": list(email.reply_to_addresses),
        # Resend's document and SDK type it a string: "" when the message had none.
        "message_id": _bracketed(email.message_id) or "",
        "received_for": list(email.rcpt_to),
        "attachments": [attachment_json(a, i, email.id) for i, a in enumerate(email.attachments)],
        "received_at": email.received_at.isoformat(),
        "size": email.size,
        "reply_match_status": email.reply_match_status,
        "reply_to_email_id": _str(email.reply_to_email_id),
        "thread_id": _str(email.thread_id),
        "contact_id": _str(email.contact_id),
        # What kind of mail this is, and the rule that said so: an auto-reply or a bounce stays
        # linked (reply_match_status, reply_to_email_id, thread_id) but is no customer reply.
        "classification": email.classification,
        "classification_reason": email.classification_reason,
    }


def header_object(fields: list[list[str]]) -> dict[str, str]:
    """Resend's `headers` object: one value per name, the first (topmost) one. Repeated fields
    (Received, DKIM-Signature) are all in `header_list`."""
    seen: set[str] = set()
    headers: dict[str, str] = {}
    for name, value in fields:
        if name.lower() not in seen:
            seen.add(name.lower())
            headers[name] = value
    return headers


def authentication_json(email: ReceivedEmail) -> dict[str, Any] | None:
    """SPF, DKIM, DMARC and ARC as the auth-check workers found them, with the
    Authentication-Results value; null until the first check. `next_check_at` is set while a
    temperror is still to be looked at again."""
    if email.auth_results is None or email.auth_checked_at is None:
        return None
    return {
        **email.auth_results,
        "header": email.auth_header,
        "checked_at": email.auth_checked_at.isoformat(),
        "next_check_at": (
            email.auth_next_check_at.isoformat() if email.auth_next_check_at else None
        ),
    }


def detail_json(
    email: ReceivedEmail, raw_link: dict[str, str], thread: dict[str, Any]
) -> dict[str, Any]:
    return {
        "object": "email",
        **summary_json(email),
        "from_name": email.from_name,
        "from_address": email.from_address,
        "html": email.html_body,
        "text": email.text_body,
        # What the sender wrote, without quoted history; null until the after-commit worker
        # stripped it (policy/stripping/).
        "stripped_text": email.stripped_text,
        "stripped_html": email.stripped_html,
        "headers": header_object(email.headers),
        "header_list": [list(pair) for pair in email.headers],
        "in_reply_to": email.in_reply_to,
        "references": email.references,
        "sent_at": email.sent_at.isoformat() if email.sent_at else None,
        "envelope": {
            "mail_from": email.mail_from,
            "rcpt_to": list(email.rcpt_to),
            "remote_ip": email.remote_ip,
            "helo": email.helo,
            "tls": email.tls,
            "tls_version": email.tls_version,
        },
        "authentication_results": authentication_json(email),
        "parse_defects": list(email.parse_defects),
        "match_source": email.match_source,
        "token_failure": email.token_failure,
        "token_failure_source": email.token_failure_source,
        "report": email.report,
        # Resend's shape: a signed link that needs no API key and expires (api.downloads).
        "raw": raw_link,
        "thread": thread,
    }


def _lone_thread(email: ReceivedEmail) -> dict[str, Any]:
    """An unmatched message is a conversation of one: the same shape, without a thread id."""
    return {
        "thread_id": None,
        "match_status": email.reply_match_status,
        "original_email_id": None,
        "contact_id": _str(email.contact_id),
        "messages": [
            {
                "id": str(email.id),
                "direction": "inbound",
                "created_at": email.received_at.isoformat(),
                "from": display_address(email.from_name, email.from_address),
                "to": list(email.to_addresses),
                "subject": email.subject or "",
                "reply_match_status": email.reply_match_status,
                "reply_to_email_id": _str(email.reply_to_email_id),
                "classification": email.classification,
            }
        ],
    }


@routes.get("/emails/receiving")
async def list_received(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    page = page_request(request)
    listed = await received.list_received(
        request.app[POOL],
        caller.tenant_id,
        _filters(request),
        limit=page.limit,
        after=page.after,
        before=page.before,
    )
    if listed is None:
        raise unknown_cursor(page)
    items, has_more = listed
    return web.json_response(list_body([summary_json(e) for e in items], has_more))


@routes.get("/emails/receiving/{id}")
async def get_received(request: web.Request) -> web.Response:
    caller = request[CALLER]
    caller.require_full_access()
    # Resend's: inline images as data: URIs (the default) or the message's own cid: references.
    html_format = request.query.get("html_format", "data_uri")
    if html_format not in ("data_uri", "cid"):
        raise ApiError(
            errors.VALIDATION_ERROR, "The `html_format` parameter must be data_uri or cid."
        )
    pool = request.app[POOL]
    email = await received.get_received(pool, caller.tenant_id, path_uuid(request))
    if email is None:
        raise ApiError(errors.NOT_FOUND, "Email not found.")
    thread = None
    if email.thread_id is not None:
        thread = await thread_object(
            pool, caller.tenant_id, email.thread_id, match_status=email.reply_match_status
        )
    raw_link = signed_link(request, caller.tenant_id, f"/emails/receiving/{email.id}/raw")
    body = detail_json(email, raw_link, thread or _lone_thread(email))
    if html_format == "data_uri" and body["html"]:
        # The new text without quoted history as well, so that the two show the same images.
        body["html"], body["stripped_html"] = await _inline_images(
            request, caller.tenant_id, email, body["html"], body["stripped_html"]
        )
    return web.json_response(body)


async def _inline_images(
    request: web.Request, tenant_id: UUID, email: ReceivedEmail, html: str, stripped: str | None
) -> tuple[str, str | None]:
    """Resend's default `html_format=data_uri`: the inline images the HTML names by cid: as
    data: URIs, decoded again from the raw message (policy.inbound.attachments bounds them)."""
    wanted = referenced_images(html, email.attachments)
    if not wanted:
        return html, stripped
    stored = await received.get_raw(request.app[POOL], tenant_id, email.id)
    if stored is None:
        return html, stripped
    parts = await mime_parts.extract_many(stored.raw, [path for path, _ in wanted.values()])
    # The media type as mime_parts cleaned it: a part may declare anything, quotes included,
    # and this one is written into an HTML attribute.
    images: dict[str, tuple[str, bytes]] = {}
    for content_id, (path, _declared) in wanted.items():
        part = parts.get(path)
        if part is None:
            continue
        media_type = image_type(part.content_type, part.payload)
        if media_type is not None:
            images[content_id] = (media_type, part.payload)
    return with_data_uris(html, images), stripped and with_data_uris(stripped, images)


async def _attachments_of(request: web.Request) -> tuple[UUID, UUID, list[dict[str, Any]]]:
    """The caller's tenant, the received email named in the path and its attachments, or 404."""
    tenant_id = _full_access_tenant(request)
    email_id = path_uuid(request)
    entries = await received.get_attachments(request.app[POOL], tenant_id, email_id)
    if entries is None:
        raise ApiError(errors.NOT_FOUND, "Email not found.")
    return tenant_id, email_id, entries


@routes.get("/emails/receiving/{id}/attachments")
async def list_attachments(request: web.Request) -> web.Response:
    """Every attachment at once: a message holds few, so `has_more` is always false."""
    tenant_id, email_id, entries = await _attachments_of(request)
    data = [
        _linked(request, tenant_id, attachment_json(e, i, email_id), email_id)
        for i, e in enumerate(entries)
    ]
    return web.json_response(list_body(data, False))


@routes.get("/emails/receiving/{id}/attachments/{attachment_id}")
async def get_attachment(request: web.Request) -> web.Response:
    """Resend's attachment object, whose `download_url` serves the bytes."""
    tenant_id, email_id, entries = await _attachments_of(request)
    index = _find_attachment(entries, request.match_info["attachment_id"], email_id)
    body = _linked(request, tenant_id, attachment_json(entries[index], index, email_id), email_id)
    return web.json_response({"object": "attachment", **body})


async def _raw_of(request: web.Request, tenant_id: UUID) -> tuple[UUID, RawMessage]:
    """The received email named in the path, with its raw bytes, or a 404."""
    email_id = path_uuid(request)
    stored = await received.get_raw(request.app[POOL], tenant_id, email_id)
    if stored is None:
        raise ApiError(errors.NOT_FOUND, "Email not found.")
    return email_id, stored


def _full_access_tenant(request: web.Request) -> UUID:
    caller = request[CALLER]
    caller.require_full_access()
    return caller.tenant_id


@routes.get("/emails/receiving/{id}/attachments/{attachment_id}/content")
async def download_attachment(request: web.Request) -> web.Response:
    """The decoded bytes of one attachment, with the API key (the signed link needs none)."""
    return await attachment_content(request, _full_access_tenant(request))


async def attachment_content(request: web.Request, tenant_id: UUID) -> web.Response:
    """The decoded bytes of one attachment, read again from the stored raw message."""
    email_id, stored = await _raw_of(request, tenant_id)
    index = _find_attachment(stored.attachments, request.match_info["attachment_id"], email_id)
    entry = attachment_json(stored.attachments[index], index, email_id)
    path = part_path(stored.attachments[index], index)
    part = await mime_parts.extract(stored.raw, path)
    if part is None:  # metadata and message disagree: only if the parser changed since
        raise ApiError(errors.NOT_FOUND, "Attachment not found.")
    return web.Response(
        body=part.payload,
        headers={
            "Content-Type": part.content_type,
            "Content-Disposition": mime_parts.content_disposition(
                entry["filename"], f"attachment-{path}"
            ),
            # Never let a browser render an attachment (an HTML part) as our own page.
            "X-Content-Type-Options": "nosniff",
        },
    )


@routes.get("/emails/receiving/{id}/raw")
async def get_raw(request: web.Request) -> web.Response:
    """The raw message, with the API key (the signed link in `raw.download_url` needs none)."""
    return await raw_message(request, _full_access_tenant(request))


async def raw_message(request: web.Request, tenant_id: UUID) -> web.Response:
    """One of the tenant's received messages as an .eml (also behind the signed links of
    api.downloads)."""
    email_id, stored = await _raw_of(request, tenant_id)
    return eml_response(email_id, stored, request.app[SETTINGS].hostname)


def eml_response(email_id: UUID, stored: RawMessage, hostname: str) -> web.Response:
    """The message as received, with our Received trace field on top (RFC 5321 section 4.4)
    and, once checked, our Authentication-Results above it, as a boundary MTA adds it (RFC 8601
    section 5): a mail client or filter that imports the file reads our verdicts in it. Also
    the dashboard's download (api.dashboard.mail)."""
    verdicts = header_field(stored.auth_header) if stored.auth_header else b""
    trace = stored.received_header.encode("utf-8") + b"\r\n" if stored.received_header else b""
    raw = obscure_forged_results(stored.raw, hostname)
    return web.Response(
        body=verdicts + trace + raw,
        headers={
            "Content-Type": "message/rfc822",
            "Content-Disposition": f'attachment; filename="{email_id}.eml"',
            "X-Content-Type-Options": "nosniff",
        },
    )


def _find_attachment(entries: list[dict[str, Any]], wanted: str, email_id: UUID) -> int:
    """By its id, or by its part path (the ids of earlier versions, still in old links)."""
    for index, entry in enumerate(entries):
        path = part_path(entry, index)
        if wanted in (path, str(attachment_id(email_id, entry, index))):
            return index
    raise ApiError(errors.NOT_FOUND, "Attachment not found.")


def _linked(
    request: web.Request, tenant_id: UUID, body: dict[str, Any], email_id: UUID
) -> dict[str, Any]:
    """The attachment with its signed download link. Resend's SDK types this form's `filename`
    and `content_id` as absent or a string (never null), so an unknown one is left out."""
    path = f"/emails/receiving/{email_id}/attachments/{body['id']}/content"
    given = {k: v for k, v in body.items() if v is not None or k not in OMITTED_WHEN_NULL}
    # Typed "inline" or "attachment" there: a part without the field (an inline image of a
    # multipart/related often has none), or with another token, is told by its Content-ID
    # (RFC 2392), as mail clients show it.
    if given.get("content_disposition") not in ("inline", "attachment"):
        given["content_disposition"] = "inline" if body.get("content_id") else "attachment"
    return {**given, **signed_link(request, tenant_id, path)}


def _str(value: UUID | None) -> str | None:
    return None if value is None else str(value)
