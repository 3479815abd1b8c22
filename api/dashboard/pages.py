"""Mail pages: sent emails (search, detail with reply address, timeline and conversation),
received mail (list, detail, sandboxed body) and threads; always the session's tenant's."""

from __future__ import annotations

import asyncio
import html
from typing import Any
from uuid import UUID

from aiohttp import web

from api.context import POOL, TOKENS
from api.conversations.receiving import attachment_json
from api.dashboard.compose import composer
from api.dashboard.context import SESSION, PageNotFound, path_id, render
from api.dashboard.work import LINK_PROBLEMS, done_message
from policy.dashboard.mailbody import body_csp, clean_html, split_quoted
from policy.dashboard.search import parse_search
from policy.tokens import ReplyToken, token_from_local_part
from storage.conversations import threads
from storage.conversations.threads import ThreadMessage
from storage.dashboard import queue
from storage.dashboard.search import EmailQuery, search_emails
from storage.dashboard.timeline import email_timeline
from storage.dashboard.triage import Linked, audit_of
from storage.database import Pool
from storage.inbound import received
from storage.inbound.received import ReceivedEmail, ReceivedFilters
from storage.sending import emails as sending

routes = web.RouteTableDef()

PAGE_SIZE = 50
MATCH_BADGES = {
    "recipient": "reply address",
    "x-opensend-reply-token": "token header",
    "in-reply-to": "In-Reply-To",
    "references": "References",
    "manual": "hand",  # linked by a dashboard user (storage.dashboard.triage)
}


def _cursor(request: web.Request) -> UUID | None:
    try:
        return UUID(request.query["after"]) if "after" in request.query else None
    except ValueError:
        return None


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(request.app.router["emails"].url_for())


@routes.get("/emails", name="emails")
async def list_emails(request: web.Request) -> web.Response:
    tenant_id = request[SESSION].tenant_id
    text = request.query.get("q", "").strip()
    terms = parse_search(text)
    rows, more = await search_emails(
        request.app[POOL],
        tenant_id,
        EmailQuery(
            to=terms.to,
            sender=terms.sender,
            subject=terms.subject,
            status=terms.status,
            has_reply=terms.has_reply,
            words=terms.words,
            domain=terms.domain,
            tag=terms.tag,
            sent_after=terms.sent_after,
            sent_before=terms.sent_before,
        ),
        limit=PAGE_SIZE,
        after=_cursor(request),
    )
    return render(request, "emails.html", {"emails": rows, "more": more, "q": text})


def reply_card(request: web.Request, tenant_id: UUID, row: dict[str, Any]) -> dict[str, Any] | None:
    """The reply address decoded: its token, the email it names, its domain, whether it is
    genuine (the same HMAC check the MX makes at RCPT time)."""
    address = row["reply_address"]
    if not address:
        return None
    local, _, domain = address.rpartition("@")
    token = token_from_local_part(local)
    if not isinstance(token, ReplyToken):
        return {"address": address, "token": None}
    return {
        "address": address,
        "token": str(token),
        "email_id": token.email_id,
        "reply_domain": domain,
        "signature_valid": request.config_dict[TOKENS].signature_valid(token, tenant_id, domain),
        "message_id": row["message_id"],
    }


async def conversation(pool: Pool, tenant_id: UUID, thread_id: UUID | None) -> list[dict[str, Any]]:
    """The thread's messages oldest first; each received one with its body and match facts."""
    if thread_id is None:
        return []
    found = (await threads.thread_messages(pool, tenant_id, [thread_id]))[thread_id]
    # Read side by side: the pool bounds how many run at once.
    return list(await asyncio.gather(*(_entry(pool, tenant_id, m) for m in found.messages)))


async def _entry(pool: Pool, tenant_id: UUID, message: ThreadMessage) -> dict[str, Any]:
    entry: dict[str, Any] = {"message": message, "text": "", "quoted": "", "detail": None}
    if message.direction == "outbound":
        row = await sending.get_email(pool, tenant_id, message.id)
        entry["text"] = (row or {}).get("text_body") or ""
    else:
        detail = await received.get_received(pool, tenant_id, message.id)
        if detail is not None:
            entry["detail"] = detail
            entry["text"], entry["quoted"] = split_quoted(detail.text_body or "")
            entry["badge"] = MATCH_BADGES.get(detail.match_source or "")
            entry["auth"] = auth_summary(detail)
    return entry


def auth_summary(email: ReceivedEmail) -> dict[str, str] | None:
    results = email.auth_results
    if not results:
        return None
    dkim = results.get("dkim") or []
    return {
        "spf": (results.get("spf") or {}).get("result", "none"),
        "dkim": ", ".join(d.get("result", "none") for d in dkim) or "none",
        "dmarc": (results.get("dmarc") or {}).get("result", "none"),
    }


@routes.get("/emails/{id}", name="email")
async def email_detail(request: web.Request) -> web.Response:
    tenant_id = request[SESSION].tenant_id
    pool = request.app[POOL]
    row = await sending.get_email(pool, tenant_id, path_id(request))
    if row is None:
        raise PageNotFound()
    messages = await conversation(pool, tenant_id, row["thread_id"])
    # The composer answers the latest reply in the conversation, as the sender it went to.
    latest = next((m for m in reversed(messages) if m["message"].direction == "inbound"), None)
    compose = None
    if latest is not None:
        sender = row["from_header"] or row["from_address"]
        compose = composer(latest["message"].id, sender, request.path)
    return render(
        request,
        "email.html",
        {
            "email": row,
            "compose": compose,
            "card": reply_card(request, tenant_id, row),
            "timeline": await email_timeline(pool, tenant_id, row["id"]),
            "deferred": await queue.deferred_of_email(pool, tenant_id, row["id"]),
            "done": done_message(request.query.get("done", "")),
            "messages": messages,
        },
    )


@routes.get("/emails/{id}/body", name="email_body")
async def email_body(request: web.Request) -> web.Response:
    """A sent email's HTML, previewed as received mail is: cleaned, sandboxed, its own URL (the
    tenant's HTML may embed what a reader's browser should not run here either)."""
    row = await sending.get_email(request.app[POOL], request[SESSION].tenant_id, path_id(request))
    if row is None:
        raise PageNotFound()
    return sandboxed(row["html_body"], row["text_body"], images=request.query.get("images") == "1")


@routes.get("/received", name="received")
async def list_received(request: web.Request) -> web.Response:
    tenant_id = request[SESSION].tenant_id
    status = request.query.get("status")
    status = status if status in ("matched", "unmatched") else None
    recipient = request.query.get("recipient", "").strip() or None
    listed = await received.list_received(
        request.app[POOL],
        tenant_id,
        ReceivedFilters(match_status=status, recipient=recipient),
        limit=PAGE_SIZE,
        after=_cursor(request),
    )
    items, more = listed if listed is not None else ([], False)
    return render(
        request,
        "received_list.html",
        {"items": items, "more": more, "status": status or "", "recipient": recipient or ""},
    )


@routes.get("/received/{id}", name="received_detail")
async def received_detail(request: web.Request) -> web.Response:
    tenant_id = request[SESSION].tenant_id
    pool = request.app[POOL]
    email = await received.get_received(pool, tenant_id, path_id(request))
    if email is None:
        raise PageNotFound()
    images = request.query.get("images") == "1"
    try:
        problem = LINK_PROBLEMS.get(Linked(request.query.get("problem", "")))
    except ValueError:
        problem = None
    return render(
        request,
        "received.html",
        {
            "email": email,
            "problem": problem,
            "audit": await audit_of(pool, tenant_id, email.id),
            "attachments": [
                attachment_json(a, i, email.id) for i, a in enumerate(email.attachments)
            ],
            "auth": auth_summary(email),
            "badge": MATCH_BADGES.get(email.match_source or ""),
            "images": images,
            "messages": await conversation(pool, tenant_id, email.thread_id),
            "compose": composer(
                email.id, await _answering_as(pool, tenant_id, email), request.path
            ),
        },
    )


async def _answering_as(pool: Pool, tenant_id: UUID, email: ReceivedEmail) -> str | None:
    """The From of a reply: the address our email went out from, else the one written to."""
    if email.reply_to_email_id is not None:
        sent = await sending.get_email(pool, tenant_id, email.reply_to_email_id)
        if sent is not None:
            return str(sent["from_header"] or sent["from_address"])
    return email.rcpt_to[0] if email.rcpt_to else None


@routes.get("/received/{id}/body", name="received_body")
async def received_body(request: web.Request) -> web.Response:
    """The received message's body on its own URL, cleaned and sandboxed: the frame's page."""
    email = await received.get_received(
        request.app[POOL], request[SESSION].tenant_id, path_id(request)
    )
    if email is None:
        raise PageNotFound()
    return sandboxed(email.html_body, email.text_body, images=request.query.get("images") == "1")


def sandboxed(html_body: str | None, text_body: str | None, *, images: bool) -> web.Response:
    """A message body as the frame's own page: nh3-cleaned HTML (or the text, escaped) under
    the sandbox CSP of policy.dashboard.mailbody."""
    if html_body:
        document = clean_html(html_body, remote_images=images)
    else:
        document = f'<pre style="white-space: pre-wrap">{html.escape(text_body or "")}</pre>'
    page = f'<!doctype html><meta charset="utf-8"><body>{document}</body>'
    return web.Response(
        text=page,
        content_type="text/html",
        headers={
            "Content-Security-Policy": body_csp(images),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "SAMEORIGIN",
        },
    )


@routes.get("/threads", name="threads")
async def list_threads(request: web.Request) -> web.Response:
    tenant_id = request[SESSION].tenant_id
    listed = await threads.list_threads(
        request.app[POOL], tenant_id, limit=PAGE_SIZE, after=_cursor(request)
    )
    items, more = listed if listed is not None else ([], False)
    return render(request, "threads.html", {"threads": items, "more": more})


@routes.get("/threads/{id}", name="thread")
async def thread_detail(request: web.Request) -> web.Response:
    tenant_id = request[SESSION].tenant_id
    pool = request.app[POOL]
    thread = await threads.get_thread(pool, tenant_id, path_id(request))
    if thread is None:
        raise PageNotFound()
    return render(
        request,
        "thread.html",
        {"thread": thread, "messages": await conversation(pool, tenant_id, thread.id)},
    )
