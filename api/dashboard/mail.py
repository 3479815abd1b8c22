"""A received message's raw `.eml` and its attachments, downloaded from the dashboard: the same
reads and the same bytes as GET /emails/receiving/{id}/raw and …/attachments/{aid}/content."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from api import mime_parts
from api.context import POOL, SETTINGS
from api.dashboard.context import SESSION, PageNotFound, path_id
from api.receiving import attachment_json, eml_response
from storage import received
from storage.received import RawMessage

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
    _email_id, stored = await _raw(request)
    wanted = request.match_info["part"]
    entries = [attachment_json(entry, i) for i, entry in enumerate(stored.attachments)]
    entry = next((e for e in entries if e["id"] == wanted), None)
    part = await mime_parts.extract(stored.raw, wanted) if entry is not None else None
    if entry is None or part is None:
        raise PageNotFound()
    return web.Response(
        body=part.payload,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": mime_parts.content_disposition(
                entry["filename"], f"attachment-{entry['id']}"
            ),
            "X-Content-Type-Options": "nosniff",
        },
    )
