"""The `download_url` and `expires_at` of an API answer: a link signed for one tenant and path.

Route modules of every area call `signed_link` for each download they name (so it sits at api's
root); `api.downloads.routes` serves the links. Links are absolute, as Resend's are, on the
origin the caller reached.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode
from uuid import UUID

from aiohttp import web

from api.context import TOKENS
from policy.download_links import DownloadLinks

# A signed link is the bearer-authenticated path under this prefix: /download/emails/.../raw.
PREFIX = "/download"


def links_of(request: web.Request) -> DownloadLinks:
    return DownloadLinks(request.app[TOKENS].secrets)


def signed_link(request: web.Request, tenant_id: UUID, path: str) -> dict[str, str]:
    """`{download_url, expires_at}` for `path` (a bearer route of ours) of this tenant."""
    link, signature = links_of(request).sign(tenant_id, path, datetime.now(UTC))
    query = urlencode({"tenant": str(tenant_id), "expires": link.expires, "signature": signature})
    return {
        "download_url": f"{request.url.origin()}{PREFIX}{path}?{query}",
        "expires_at": link.expires_at.isoformat(),
    }
