"""Pages for daily work: the overview's figures, the queue of deferred mail (retry now and
cancel, one or several at once) and the triage of unmatched replies ("link to email…")."""

from __future__ import annotations

import re
from uuid import UUID

from aiohttp import web

from api.context import POOL
from api.dashboard.context import PREFIX, SESSION, PageNotFound, path_id, render, see_other
from storage.dashboard import overview, queue, triage
from storage.dashboard.triage import Linked

routes = web.RouteTableDef()

QUEUE_PAGE = 200

LINK_PROBLEMS = {
    Linked.ALREADY_MATCHED: "This message is already in a conversation.",
    Linked.NO_EMAIL: "No sent email of yours has that id.",
    Linked.NO_CONVERSATION: "That email was sent without reply tracking: it has no conversation.",
}


_DONE = re.compile(r"(retry|cancel)-(\d+)")


def done_message(value: str) -> str | None:
    """What the queue's last action did, from the `done` query of its redirect."""
    found = _DONE.fullmatch(value)
    if found is None:
        return None
    verb = "Retried now" if found.group(1) == "retry" else "Canceled"
    return f"{verb}: {found.group(2)}."


@routes.get("/overview", name="overview")
async def show_overview(request: web.Request) -> web.Response:
    figures = await overview.overview(request.app[POOL], request[SESSION].tenant_id)
    return render(request, "overview.html", {"figures": figures})


@routes.get("/queue", name="queue")
async def show_queue(request: web.Request) -> web.Response:
    items = await queue.list_deferred(
        request.app[POOL], request[SESSION].tenant_id, limit=QUEUE_PAGE
    )
    done = done_message(request.query.get("done", ""))
    return render(request, "queue.html", {"items": items, "done": done})


@routes.post("/queue")
async def change_queue(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    ids: list[UUID] = []
    for value in form.getall("delivery", []):
        try:
            ids.append(UUID(str(value)))
        except ValueError:
            raise PageNotFound() from None
    tenant_id = request[SESSION].tenant_id
    action = form.get("action")
    # Back to the page the form was on (the queue, or an email's page), never elsewhere.
    back = str(form.get("back", ""))
    back = back if back.startswith(PREFIX + "/") and "?" not in back else PREFIX + "/queue"
    if action == "retry":
        count = await queue.retry_now(request.app[POOL], tenant_id, ids)
    elif action == "cancel":
        count = await queue.cancel(request.app[POOL], tenant_id, ids)
    else:
        raise PageNotFound()
    raise see_other(f"{back}?done={action}-{count}")


@routes.post("/received/{id}/link")
async def link_received(request: web.Request) -> web.StreamResponse:
    session = request[SESSION]
    received_id = path_id(request)
    form = await request.post()
    try:
        email_id = UUID(str(form.get("email_id", "")).strip())
    except ValueError:
        email_id = None
    if email_id is None:
        outcome = Linked.NO_EMAIL
    else:
        outcome = await triage.link_to_email(
            request.app[POOL],
            session.tenant_id,
            received_id,
            email_id,
            user_id=session.user_id,
            user_email=session.email,
        )
    if outcome is Linked.NO_MESSAGE:
        raise PageNotFound()
    if outcome is Linked.LINKED:
        raise see_other(f"{PREFIX}/received/{received_id}")
    raise see_other(f"{PREFIX}/received/{received_id}?problem={outcome.value}")
