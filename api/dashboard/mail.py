"""A received message's raw `.eml` and its attachments, downloaded from the dashboard: the same
reads and the same bytes as GET /emails/receiving/{id}/raw and …/attachments/{aid}/content."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from api.context import POOL, SETTINGS
from api.conversations import mime_parts
from api.conversations.receiving import attachment_json, eml_response
from api.dashboard.context import SESSION, PageNotFound, path_id
from policy.inbound.attachments import part_path
from storage.inbound import received
from storage.inbound.received import RawMessage

routes = web.RouteTableDef()


async def _raw(request: web.Request) -> tuple[UUID, RawMessage]:
    email_id = path_id(request)
    stored = await received.get_raw(request.app[POOL], request[SESSION].tenant_id, email_id)
    if stored is None:
        raise PageNotFound()
    return email_id, stored


@routes.get("/received/{id}/raw", name="received_raw")
async def download_raw(request: web.Request) -> web.Response:
    email_id, stored = await _raw(request)
    return eml_response(email_id, stored, request.config_dict[SETTINGS].hostname)


@routes.get("/received/{id}/attachments/{part}", name="received_attachment")
async def download_attachment(request: web.Request) -> web.Response:
    """Always as a download (never rendered as a page of ours), nosniff."""
    email_id, stored = await _raw(request)
    wanted = request.match_info["part"]
    # By the attachment's id, as the API gives it, or by its MIME part path (older links).
    for index, stored_entry in enumerate(stored.attachments):
        path = part_path(stored_entry, index)
        entry = attachment_json(stored_entry, index, email_id)
        if wanted in (entry["id"], path):
            break
    else:
        raise PageNotFound()
    part = await mime_parts.extract(stored.raw, path)
    if part is None:  # metadata and message disagree: only if the parser changed since
        raise PageNotFound()
    return web.Response(
        body=part.payload,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": mime_parts.content_disposition(
                entry["filename"], f"attachment-{path}"
            ),
            "X-Content-Type-Options": "nosniff",
        },
    )
