"""The suppression page: entries by origin and address, added by hand, removed; each links the
email that caused it. The same functions and address check as /suppressions."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from api.context import POOL
from api.dashboard.context import PREFIX, SESSION, PageNotFound, path_id, render, see_other
from api.errors import ApiError
from api.pagination import query_uuid
from api.suppressions.routes import ORIGINS, checked_address
from storage.suppressions import store

routes = web.RouteTableDef()

PAGE_SIZE = 100
MAX_SEARCH = 254
# What a redirect after a form says happened (a fixed set: the query string is the reader's).
DONE = {"added": "Address suppressed.", "removed": "Address removed from the list."}


async def _page(
    request: web.Request, *, refused: str | None = None, typed: str = "", status: int = 200
) -> web.Response:
    query = request.query
    origin = query.get("origin") if query.get("origin") in ORIGINS else None
    q = query.get("q", "").strip()[:MAX_SEARCH]
    try:
        after = query_uuid(query, "after")
    except ApiError:
        raise PageNotFound() from None
    listed = await store.list_page(
        request.app[POOL],
        request[SESSION].tenant_id,
        origin=origin,
        containing=q or None,
        limit=PAGE_SIZE,
        after=after,
    )
    if listed is None:  # an old or another tenant's cursor
        raise PageNotFound()
    entries, more = listed
    next_query = urlencode(
        {k: v for k, v in (("q", q), ("origin", origin or "")) if v}
        | ({"after": str(entries[-1].id)} if entries else {})
    )
    return render(
        request,
        "suppressions.html",
        {
            "entries": entries,
            "more": more,
            "next_query": next_query,
            "origins": ORIGINS,
            "origin": origin or "",
            "q": q,
            "refused": refused,
            "typed": typed,
            "done": DONE.get(query.get("done", ""), ""),
        },
        status=status,
    )


@routes.get("/suppressions", name="suppressions")
async def list_suppressions(request: web.Request) -> web.Response:
    return await _page(request)


@routes.post("/suppressions")
async def add_suppression(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    typed = str(form.get("email", ""))
    try:
        address = checked_address(typed)
    except ApiError as refusal:
        return await _page(request, refused=refusal.message, typed=typed, status=422)
    [entry] = await store.suppress(
        request.app[POOL], request[SESSION].tenant_id, [address], origin="manual"
    )
    raise see_other(f"{PREFIX}/suppressions?done=added#suppression-{entry.id}")


@routes.post("/suppressions/{id}/remove")
async def remove_suppression(request: web.Request) -> web.StreamResponse:
    if not await store.remove(
        request.app[POOL], request[SESSION].tenant_id, [path_id(request)], []
    ):
        raise PageNotFound()
    raise see_other(f"{PREFIX}/suppressions?done=removed")
