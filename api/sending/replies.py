"""POST /emails/{id}/reply (also /api/v2/emails/{id}/reply): answer a received email, in the
shapes and error texts of Inbound's reply API, through the same pipeline as POST /emails.

The handler translates: `policy.sending.reply_compose` decides the threading headers, subject,
recipients and quote; `api.sending.build` checks, tracks and builds the message; the reply is
stored like any email (`api.sending.emails.store`, one group-committed statement) into the received
email's thread. Every error body carries Inbound's `"error"` beside Resend's fields.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

from aiohttp import web

from api import errors
from api.auth import CALLER, Handler
from api.context import POOL, InvalidJson, request_json
from api.errors import ApiError
from api.sending.build import Builder
from api.sending.emails import store, unstored
from api.sending.idempotency import idempotent
from policy.sending import reply_compose
from policy.sending.fields import Problem, Refusal
from policy.sending.reply_compose import Original, Refused, ReplyRefusal
from policy.sending.request import check_sender, parse_email
from storage.errors import StorageError
from storage.inbound import received
from storage.inbound.received import ReceivedEmail
from storage.sending import replies
from storage.sending.emails import NewEmail, Stored
from storage.sending.idempotency import Claim

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

# Inbound serves the endpoint under /api/v2; both paths are one operation (and one
# Idempotency-Key scope). Any id reaches the handler, so a malformed one gets the table's 400.
PATHS = ("/emails/{id}/reply", "/api/v2/emails/{id}/reply")
ENDPOINT = "POST /emails/{id}/reply"
INBOUND_PREFIXES = ("/api/v2/", "/api/e2/")

_REFUSED = {
    Refused.FROM_REQUIRED: errors.REPLY_FROM_REQUIRED,
    Refused.CONTENT_REQUIRED: errors.REPLY_CONTENT_REQUIRED,
    Refused.NO_RECIPIENT: errors.REPLY_NO_RECIPIENT,
    Refused.INVALID_ADDRESS: errors.REPLY_INVALID_EMAIL_FORMAT,
    Refused.INVALID_FIELD: errors.VALIDATION_ERROR,
}
# The shared API errors that Inbound's table words differently on these routes.
_AS_INBOUND = {
    errors.MISSING_API_KEY: errors.REPLY_UNAUTHORIZED,  # Inbound: 401 for missing and invalid
    errors.INVALID_API_KEY: errors.REPLY_UNAUTHORIZED,
    errors.SERVICE_UNAVAILABLE: errors.REPLY_FAILED,
    errors.APPLICATION_ERROR: errors.REPLY_INTERNAL_ERROR,
}
THREADING_HEADERS = frozenset({"in-reply-to", "references"})


def is_inbound_path(path: str) -> bool:
    """The reply routes, and every route under Inbound's own prefixes (api.inbound_compat)."""
    return path in PATHS or path.startswith(INBOUND_PREFIXES)


def inbound_error(error: ApiError) -> ApiError:
    kind = _AS_INBOUND.get(error.kind)
    message = kind.default_message if kind is not None else error.message
    return ApiError(kind or error.kind, message, extra={**error.extra, "error": message})


async def in_inbound_words(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On the reply routes (`is_inbound_path`): errors, authentication's included, in Inbound's
    words. The API's one middleware (api.app.api_edge) passes `handler` with authentication
    in it, and renders what this raises."""
    try:
        return await handler(request)
    except ApiError as error:
        raise inbound_error(error) from None
    except StorageError as error:
        log.warning("storage failure in reply", extra={"path": request.path, "error": str(error)})
        kind = errors.SERVICE_UNAVAILABLE if error.temporary else errors.APPLICATION_ERROR
        raise inbound_error(ApiError(kind)) from None
    except web.HTTPRequestEntityTooLarge:
        raise inbound_error(ApiError(errors.PAYLOAD_TOO_LARGE)) from None
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unexpected error in reply", extra={"path": request.path})
        raise inbound_error(ApiError(errors.APPLICATION_ERROR)) from None


async def read_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request_json(request)
    except InvalidJson:
        raise ApiError(errors.REPLY_INVALID_JSON) from None
    if not isinstance(body, dict):
        raise ApiError(errors.VALIDATION_ERROR, "The request body must be a JSON object")
    return body


def original_of(email: ReceivedEmail) -> Original:
    return Original(
        message_id=email.message_id,
        references=email.references,
        subject=email.subject,
        from_address=email.from_address,
        from_name=email.from_name,
        reply_to_addresses=email.reply_to_addresses,
        date=email.sent_at or email.received_at,
        text=email.text_body,
        html=email.html_body,
    )


def send_fields(body: dict[str, Any], original: Original) -> dict[str, Any]:
    """The reply as a POST /emails body: Inbound's fields resolved against the original.

    `simple` (the default) computes the threading headers and refuses the caller's own;
    full mode (`simple: false`, or any attachment) lets the caller's In-Reply-To and
    References replace the computed ones ("custom threading" in Inbound's words).
    """
    sender = reply_compose.sender(body)
    text, html = body.get("text"), body.get("html")
    if not text and not html:
        raise ReplyRefusal(Refused.CONTENT_REQUIRED)
    for name in ("text", "html", "subject"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise ReplyRefusal(Refused.INVALID_FIELD, f"`{name}` must be a string.")
    to = reply_compose.addresses(body.get("to"), "to")
    cc = reply_compose.addresses(body.get("cc"), "cc")
    bcc = reply_compose.addresses(body.get("bcc"), "bcc")
    reply_to = reply_compose.addresses(reply_compose.field(body, "reply_to"), "reply_to")
    attachments = body.get("attachments") or []
    simple = reply_compose.flag(body, "simple", True) and not attachments
    include = reply_compose.flag(body, "include_original", True)

    if not to:
        to = reply_compose.default_recipients(original)
        for address in to:
            reply_compose.address_of(address)
    headers = body.get("headers") or {}
    if isinstance(headers, dict):
        custom = {name.lower() for name in headers} & THREADING_HEADERS
        if custom and simple:
            raise ReplyRefusal(
                Refused.INVALID_FIELD,
                "Custom In-Reply-To or References headers need full mode: send `simple: false`.",
            )
        computed = reply_compose.threading_headers(original)
        headers = {**{k: v for k, v in computed.items() if k.lower() not in custom}, **headers}
    if include:
        text = reply_compose.quote_text(text, original) if text else text
        html = reply_compose.quote_html(html, original) if html else html
    return {
        "from": sender,
        "to": to,
        "cc": cc,
        "bcc": bcc,
        "reply_to": reply_to,
        "subject": body.get("subject") or reply_compose.reply_subject(original.subject),
        "text": text,
        "html": html,
        "headers": headers,
        "attachments": attachments,
        "tags": body.get("tags"),
    }


def _refusal(refusal: Refusal, sender_domain: str) -> ApiError:
    if refusal.problem is Problem.SENDER_DOMAIN:
        kind = errors.REPLY_FORBIDDEN_DOMAIN
        return ApiError(kind, kind.default_message + sender_domain)
    if refusal.problem is Problem.ATTACHMENT:
        return ApiError(errors.INVALID_ATTACHMENT, refusal.message)
    return ApiError(errors.VALIDATION_ERROR, refusal.message)


# What a reply answers, in the caller's API's shape: from the stored reply and what it answers.
Answer = Callable[[NewEmail, ReceivedEmail], dict[str, Any]]


def inbound_v2_answer(email: NewEmail, original: ReceivedEmail) -> dict[str, Any]:
    """Inbound's v2 answer. messageId as the Message-ID field holds it, without the angle
    brackets (as GET /emails shows message_id). awsMessageId: there is no SES here, and
    Inbound's SDK types it as a string, so it holds the same Message-ID, the id by which the
    rest of the world knows the message (README, "Inbound's SDKs")."""
    return {"id": str(email.id), "messageId": email.message_id, "awsMessageId": email.message_id}


def received_id_of(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise ApiError(errors.REPLY_INVALID_EMAIL_ID) from None


async def reply(request: web.Request) -> web.Response:
    request[CALLER].require_full_access()  # answer_received's reason, before the body is read
    received_id = received_id_of(request.match_info["id"])
    body = await read_body(request)
    return await answer_received(request, received_id, body, ENDPOINT, inbound_v2_answer)


async def answer_received(
    request: web.Request,
    received_id: UUID,
    body: dict[str, Any],
    endpoint: str,
    answer: Answer,
    *,
    named: str | None = None,
    idempotency_key: str | None = None,
) -> web.Response:
    """Send `body` (Inbound's reply fields) as a reply to the received email, once per
    Idempotency-Key of `endpoint` and of what the request `named` (the id in its path, by
    default the email's), and answer in the shape `answer` gives. The caller is in
    `request[CALLER]`; the dashboard's composer calls this too (api.dashboard.compose, its key
    from the form instead of the header), so both answer alike."""
    caller = request[CALLER]
    # A reply reads the email it answers (it quotes it, names its thread): a sending-only key
    # may not read received mail, so it may not reply to it either.
    caller.require_full_access()
    pool = request.app[POOL]

    async def work(claim: Claim | None) -> tuple[int, Any]:
        found = await received.get_received(pool, caller.tenant_id, received_id)
        if found is None:
            raise ApiError(errors.REPLY_NOT_FOUND)
        original = original_of(found)
        try:
            fields = send_fields(body, original)
        except ReplyRefusal as refusal:
            raise ApiError(_REFUSED[refusal.reason], refusal.message) from None
        if await replies.sending_limit_reached(pool, caller.tenant_id):
            raise ApiError(errors.REPLY_LIMIT_REACHED)
        sender_domain = reply_compose.address_of(fields["from"]).rpartition("@")[2].lower()
        for fresh in (False, True):  # as POST /emails: once more if the domain changed meanwhile
            builder = Builder(request, fresh=fresh)
            try:
                draft = parse_email(fields, builder.now)
                domain = check_sender(
                    draft.sender, await builder.domain(draft.sender.domain), caller.domain_id
                )
            except Refusal as refusal:
                raise _refusal(refusal, sender_domain) from None
            # The received email's thread (opened now if it had none), as any answer joins
            # the conversation of what it answers.
            email = await builder.in_conversation(
                builder.build(draft, domain), draft, answering=received_id
            )
            if email.in_reply_to_received_id != received_id:  # deleted while we worked
                raise ApiError(errors.REPLY_NOT_FOUND)
            email = dataclasses.replace(email, source="reply")
            payload = answer(email, found)
            outcome = await store(request, [email], claim, payload)
            if outcome is Stored.STORED:
                return 200, payload
            if outcome is Stored.LOST_CLAIM:
                break
        raise unstored(outcome)

    scope = {"email_id": named or str(received_id), "body": body}
    return await idempotent(request, endpoint, scope, work, key=idempotency_key)


for _path in PATHS:
    routes.post(_path)(reply)
