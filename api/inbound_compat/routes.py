"""Inbound's other reply routes, answered by the same pipeline as POST /emails/{id}/reply
(`api.sending.replies.answer_received`), each in the shape its SDK types:

- `POST /api/e2/emails/{id}/reply` (`inboundemail` 0.20, `client.emails.reply`): Inbound's
  reply fields plus `reply_all` (the original's Cc recipients, but for our own addresses);
  answers `{id, aws_message_id, is_thread_reply, message_id, replied_to_email_id,
  replied_to_thread_id}`. The id is a received email's, or a thread's (GET /threads): then the
  reply answers the thread's newest received message, as Inbound's does.
- `GET /api/e2/emails/{id}` (`client.emails.retrieve`): a received or sent email in its shape.
- `POST /api/v2/mail` (`@inboundemail/sdk` 4.x, `email.received.reply`): `{emailId, to, subject,
  textBody, htmlBody?}`, sent from the address the email was received at (for a reply address,
  the address our own email was sent from); answers `{message, id, messageId, awsMessageId}`.

Errors carry Inbound's `"error"` beside Resend's fields (api.sending.replies.in_inbound_words covers
these prefixes). `aws_message_id`/`awsMessageId` hold the Message-ID: there is no SES here.
"""

from __future__ import annotations

import functools
from typing import Any
from uuid import UUID

from aiohttp import web

from api import errors
from api.account.api_keys import path_uuid
from api.auth import CALLER
from api.context import POOL
from api.conversations import receiving
from api.conversations.threads import display_address
from api.errors import ApiError
from api.sending import manage as emails_manage
from api.sending.replies import answer_received, read_body, received_id_of
from storage.conversations import threads
from storage.inbound import received
from storage.inbound.received import ReceivedEmail
from storage.sending import emails as sending
from storage.sending.emails import NewEmail

routes = web.RouteTableDef()

E2_REPLY = "POST /api/e2/emails/{id}/reply"
MAIL_REPLY = "POST /api/v2/mail"
# Our reply addresses (DESIGN.md section 4): never a From, nor a Cc of our own reply.
REPLY_LOCAL_PREFIX = "reply+"


def e2_answer(email: NewEmail, original: ReceivedEmail, *, thread: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": str(email.id),
        "aws_message_id": email.message_id,
        "is_thread_reply": thread,  # whether the id in the path named a thread
        "message_id": email.message_id,
        "replied_to_email_id": str(original.id),
    }
    if email.thread_id is not None:
        answer["replied_to_thread_id"] = str(email.thread_id)
    return answer


def mail_answer(email: NewEmail, original: ReceivedEmail) -> dict[str, Any]:
    return {
        "message": "Reply sent successfully",
        "id": str(email.id),
        "messageId": email.message_id,
        "awsMessageId": email.message_id,
    }


async def _received(request: web.Request, received_id: UUID) -> ReceivedEmail:
    found = await received.get_received(request.app[POOL], request[CALLER].tenant_id, received_id)
    if found is None:
        raise ApiError(errors.REPLY_NOT_FOUND)
    return found


def _ours(address: str, original: ReceivedEmail) -> bool:
    return address.lower() in {r.lower() for r in original.rcpt_to}


@routes.post("/api/e2/emails/{id}/reply")
async def e2_reply(request: web.Request) -> web.Response:
    request[CALLER].require_full_access()  # it reads the email first (answer_received's reason)
    named = received_id_of(request.match_info["id"])
    body = await read_body(request)
    reply_all = body.pop("reply_all", False)
    if not isinstance(reply_all, bool):
        raise ApiError(errors.VALIDATION_ERROR, "`reply_all` must be true or false.")
    pool, tenant_id = request.app[POOL], request[CALLER].tenant_id
    original = await received.get_received(pool, tenant_id, named)
    thread = original is None
    if original is None:  # a thread's id: its newest received message
        latest = await threads.latest_received(pool, tenant_id, named)
        original = await _received(request, latest) if latest is not None else None
    if original is None:
        raise ApiError(errors.REPLY_NOT_FOUND)
    if reply_all and body.get("cc") is None:
        body["cc"] = [a for a in original.cc_addresses if not _ours(a, original)] or None
    answer = functools.partial(e2_answer, thread=thread)
    return await answer_received(request, original.id, body, E2_REPLY, answer, named=str(named))


async def _sender(request: web.Request, original: ReceivedEmail) -> str:
    """Where the email was received, as the reply's From; for a reply address (a token), the
    address the email it answers was sent from."""
    for address in original.rcpt_to:
        if not address.lower().startswith(REPLY_LOCAL_PREFIX):
            return address
    if original.reply_to_email_id is not None:
        sent = await sending.get_email(
            request.app[POOL], request[CALLER].tenant_id, original.reply_to_email_id
        )
        if sent is not None:
            return str(sent["from_address"])
    raise ApiError(errors.REPLY_FROM_REQUIRED)


@routes.post("/api/v2/mail")
async def mail_reply(request: web.Request) -> web.Response:
    request[CALLER].require_full_access()  # it reads the email first (answer_received's reason)
    body = await read_body(request)
    email_id = body.get("emailId")
    received_id = received_id_of(email_id if isinstance(email_id, str) else "")
    original = await _received(request, received_id)
    fields = {
        "from": await _sender(request, original),
        "to": body.get("to"),
        "subject": body.get("subject"),
        "text": body.get("textBody"),
        "html": body.get("htmlBody"),
    }
    given = {name: value for name, value in fields.items() if value is not None}
    return await answer_received(request, received_id, given, MAIL_REPLY, mail_answer)


@routes.get("/api/e2/emails/{id}")
async def e2_retrieve(request: web.Request) -> web.Response:
    """A received email, else a sent one, as `inboundemail`'s EmailRetrieveResponse."""
    caller = request[CALLER]
    caller.require_full_access()
    email_id = path_uuid(request)
    pool = request.app[POOL]
    found = await received.get_received(pool, caller.tenant_id, email_id)
    if found is not None:
        return web.json_response(_received_e2(found))
    sent = await sending.get_email(pool, caller.tenant_id, email_id)
    attachments = await sending.get_attachments(pool, caller.tenant_id, email_id)
    if sent is None or attachments is None:
        raise ApiError(errors.NOT_FOUND, "Email not found.")
    resend = emails_manage.render_email(sent)
    return web.json_response(
        {
            **resend,
            "type": "scheduled" if sent["status"] == "scheduled" else "sent",
            "status": str(sent["status"]),
            "subject": resend["subject"] or "",
            "has_attachments": bool(attachments),
            "attachments": [{k: v for k, v in a.items() if v is not None} for a in attachments],
        }
    )


def _received_e2(email: ReceivedEmail) -> dict[str, Any]:
    return {
        "object": "email",
        "id": str(email.id),
        "type": "received",
        "status": "received",
        "created_at": email.received_at.isoformat(),
        "from": display_address(email.from_name, email.from_address) or "",
        "to": list(email.to_addresses),
        "subject": email.subject or "",
        "has_attachments": bool(email.attachments),
        "attachments": [
            receiving.attachment_json(a, i, email.id) for i, a in enumerate(email.attachments)
        ],
        "cc": list(email.cc_addresses),
        "reply_to": list(email.reply_to_addresses),
        "headers": receiving.header_object(email.headers),
        "html": email.html_body,
        "text": email.text_body,
        "sent_at": email.sent_at.isoformat() if email.sent_at else None,
        "thread_id": str(email.thread_id) if email.thread_id else None,
    }
