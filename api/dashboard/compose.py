"""The reply composer: answers through POST /emails/{id}/reply's own code (api.sending.replies)
with an Idempotency-Key minted into the form; works as a plain form, or in place with JavaScript."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID, uuid4

from aiohttp import web

from api.auth import CALLER, Caller
from api.dashboard.context import PREFIX, SESSION, path_id, render, see_other
from api.errors import ApiError
from api.sending import replies

routes = web.RouteTableDef()


def composer(received_id: UUID, sender: str | None, back: str) -> dict[str, Any]:
    """What the form needs: where it posts, a fresh Idempotency-Key, the From to answer as."""
    return {
        "received_id": received_id,
        "sender": sender or "",
        "key": str(uuid4()),
        "back": back,
        "text": "",
    }


def _back(value: str, received_id: UUID) -> str:
    if value.startswith(PREFIX + "/") and not value.startswith("//"):
        return value.split("#", 1)[0]
    return f"{PREFIX}/received/{received_id}"


@routes.post("/received/{id}/reply", name="compose")
async def compose(request: web.Request) -> web.StreamResponse:
    session = request[SESSION]
    received_id = path_id(request)
    form = await request.post()
    back = _back(str(form.get("back", "")), received_id)
    body = {"from": str(form.get("from", "")).strip(), "text": str(form.get("text", ""))}
    key = str(form.get("idempotency_key", "")).strip() or None
    # A signed-in user acts with full access for their tenant; no API key is involved, so the
    # session's id stands where a key's id would (nothing stores it).
    request[CALLER] = Caller(session.tenant_id, session.id, "full_access", None)
    wants_json = request.headers.get("Accept", "").startswith("application/json")
    try:
        response = await replies.answer_received(
            request,
            received_id,
            body,
            replies.ENDPOINT,
            replies.inbound_v2_answer,
            idempotency_key=key,
        )
    except ApiError as error:
        if wants_json:
            return web.json_response(error.body(), status=error.kind.status)
        # Without JavaScript: the refusal in words, above the same form with the text kept
        # (nothing was sent, so the same Idempotency-Key is still unused).
        form_again = {**composer(received_id, body["from"], back), "key": key, "text": body["text"]}
        page = {"error": error.message, "compose": form_again}
        return render(request, "compose_refused.html", page, status=error.kind.status)
    if wants_json:
        return response
    sent = json.loads(response.text or "{}").get("id", "")
    raise see_other(f"{back}?replied={sent}#conversation")
