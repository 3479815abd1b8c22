"""The dashboard as an aiohttp sub-application under /dashboard/: templates, static files,
its middlewares (HTML errors, security headers, sessions, CSRF) and its live announcements."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from api.context import POOL, SENDING_STATE
from api.dashboard import (
    account,
    compose,
    live,
    mail,
    pages,
    signin,
    suppressions,
    webhooks,
    work,
)
from api.dashboard.context import ANNOUNCEMENTS, PREFIX, SESSION, render
from policy.dashboard import sessions as rules
from policy.settings import Settings
from policy.submission.throttle import AuthLimits
from storage.dashboard import sessions
from storage.dashboard.live import Announcements
from storage.errors import StorageError

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Our pages load nothing but our own script, stylesheet and frames: no inline script or style,
# no eval (the rule), and no page of ours may be framed by another site.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'self'"
)
PUBLIC_PATHS = frozenset({PREFIX + "/login"})
STATIC_PREFIX = PREFIX + "/static/"

_STATUS_TEXT = {
    403: "This request was refused: it did not come from a page of this dashboard. "
    "Reload the page and try again.",
    404: "There is nothing here. The link may be old, or the item belongs to another account.",
    503: "The database cannot be reached just now. Try again in a moment.",
    500: "Something went wrong on our side. It has been logged.",
}


def _error_page(request: web.Request, status: int) -> web.Response:
    return render(
        request, "error.html", {"status": status, "text": _STATUS_TEXT[status]}, status=status
    )


@web.middleware
async def html_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Failures as pages a person reads, never the JSON API's bodies nor a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status in (403, 404):
            return _error_page(request, error.status)
        raise
    except StorageError as error:
        log.warning(
            "storage failure in dashboard", extra={"path": request.path, "error": str(error)}
        )
        return _error_page(request, 503 if error.temporary else 500)
    except Exception:
        log.exception("unexpected error in dashboard", extra={"path": request.path})
        return _error_page(request, 500)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if response.prepared:  # a stream (Server-Sent Events) sent its own headers already
        return response
    response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


@web.middleware
async def signed_in(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every page needs a live session; every unsafe request, our own Origin and, once signed
    in, the session's CSRF token (in the form or the X-CSRF-Token header)."""
    if request.path.startswith(STATIC_PREFIX):
        return await handler(request)
    unsafe = request.method not in rules.SAFE_METHODS
    if unsafe and not rules.same_origin(
        request.headers.get("Origin"), request.host, request.scheme
    ):
        raise web.HTTPForbidden()
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    secret = request.cookies.get(rules.COOKIE_NAME)
    session = await sessions.active_session(request.app[POOL], secret) if secret else None
    if session is None:
        if unsafe or request.path == PREFIX + "/events":
            raise web.HTTPForbidden()
        raise web.HTTPSeeOther(f"{PREFIX}/login?next={request.path_qs}")
    request[SESSION] = session
    if unsafe:
        given = request.headers.get(rules.CSRF_HEADER)
        if given is None:
            form = await request.post()
            field = form.get(rules.CSRF_FIELD)
            given = field if isinstance(field, str) else None
        if not rules.csrf_matches(session.csrf_token, given):
            raise web.HTTPForbidden()
    return await handler(request)


def make_dashboard(pool_app: web.Application, settings: Settings) -> web.Application:
    # security_headers outermost: the error pages html_errors renders (which carry the session's
    # CSRF token and the sign-out form) get the CSP, nosniff and no-store of every page.
    dashboard = web.Application(middlewares=[security_headers, html_errors, signed_in])
    # The composer answers through api.sending.replies, which reads these from its request's app:
    # the same caches and the same group-commit writer as the API's.
    for key in SENDING_STATE:
        dashboard[key] = pool_app[key]
    dashboard[signin.THROTTLE] = signin.LoginThrottle(
        AuthLimits(
            max_failures=settings.auth_max_failures,
            lockout_seconds=settings.auth_lockout,
            first_delay_seconds=settings.auth_failure_delay,
        )
    )
    aiohttp_jinja2.setup(
        dashboard,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    dashboard[ANNOUNCEMENTS] = Announcements(dashboard[POOL])
    dashboard.cleanup_ctx.append(_listen)
    dashboard.on_shutdown.append(_end_streams)
    dashboard.router.add_routes(signin.routes)
    dashboard.router.add_routes(pages.routes)
    dashboard.router.add_routes(account.routes)
    dashboard.router.add_routes(live.routes)
    dashboard.router.add_routes(mail.routes)
    dashboard.router.add_routes(work.routes)
    dashboard.router.add_routes(compose.routes)
    dashboard.router.add_routes(webhooks.routes)
    dashboard.router.add_routes(suppressions.routes)
    dashboard.router.add_static("/static/", HERE / "static", name="static")
    return dashboard


async def _end_streams(app: web.Application) -> None:
    app[ANNOUNCEMENTS].close()


async def _listen(app: web.Application) -> AsyncIterator[None]:
    async with app[ANNOUNCEMENTS].running():
        yield
