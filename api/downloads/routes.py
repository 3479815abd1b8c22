"""The signed links' routes: the same bytes as the bearer routes they mirror, for whoever holds
a genuine link that has not expired, and a 403 for any other (tampered, expired, moved)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from uuid import UUID

from aiohttp import web

from api import errors
from api.conversations import receiving
from api.download_links import PREFIX, links_of
from api.errors import ApiError
from api.sending import manage as emails_manage
from policy.download_links import SIGNATURE_HEX_DIGITS, SignedLink

routes = web.RouteTableDef()

# What policy.download_links signs with: anything else is refused before it is compared.
SIGNATURE = re.compile(f"[0-9a-f]{{{SIGNATURE_HEX_DIGITS}}}")


def _tenant_of_link(request: web.Request) -> UUID:
    """The tenant the link was signed for, once its signature and expiry hold for this path."""
    query = request.query
    try:
        link = SignedLink(
            request.path.removeprefix(PREFIX), UUID(query["tenant"]), int(query["expires"])
        )
        signature = query["signature"]
    except (KeyError, ValueError):
        raise ApiError(errors.INVALID_DOWNLOAD_LINK) from None
    if not SIGNATURE.fullmatch(signature) or not links_of(request).valid(
        link, signature, datetime.now(UTC)
    ):
        raise ApiError(errors.INVALID_DOWNLOAD_LINK)
    return link.tenant_id


@routes.get(PREFIX + "/emails/receiving/{id}/raw")
async def received_raw(request: web.Request) -> web.Response:
    return await receiving.raw_message(request, _tenant_of_link(request))


@routes.get(PREFIX + "/emails/receiving/{id}/attachments/{attachment_id}/content")
async def received_attachment(request: web.Request) -> web.Response:
    return await receiving.attachment_content(request, _tenant_of_link(request))


@routes.get(PREFIX + emails_manage.EMAIL_PATH + "/attachments/{attachment_id}/content")
async def sent_attachment(request: web.Request) -> web.Response:
    return await emails_manage.attachment_content(request, _tenant_of_link(request))
