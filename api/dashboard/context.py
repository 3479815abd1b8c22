"""What every dashboard module shares: its typed keys, the signed-in session of a request,
page rendering, and the 404 that another tenant's id gets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import aiohttp_jinja2
from aiohttp import web

from policy.submission.throttle import AuthLimits
from storage.dashboard.live import Announcements
from storage.dashboard.sessions import Session

PREFIX = "/dashboard"
SESSION = web.RequestKey("dashboard_session", Session)
ANNOUNCEMENTS = web.AppKey("dashboard_announcements", Announcements)
LOGIN_LIMITS = web.AppKey("dashboard_login_limits", AuthLimits)


class PageNotFound(web.HTTPNotFound):
    """Rendered as the dashboard's own 404 page: an unknown id and another tenant's id alike."""


def path_id(request: web.Request, name: str = "id") -> UUID:
    try:
        return UUID(request.match_info[name])
    except ValueError:
        raise PageNotFound() from None


def render(
    request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200
) -> web.Response:
    session = request.get(SESSION)
    page = {
        "session": session,
        "csrf_token": session.csrf_token if session else "",
        "prefix": PREFIX,
        **context,
    }
    return aiohttp_jinja2.render_template(template, request, page, status=status)


def see_other(location: str) -> web.HTTPSeeOther:
    """After a form's POST: 303, so a reload does not post it again (RFC 9110 section 15.4.4)."""
    return web.HTTPSeeOther(location)
