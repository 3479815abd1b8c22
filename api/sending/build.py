"""From a request's JSON to a `NewEmail` ready to store: checked, tracked, built once.

`Builder.prepare` runs `policy.sending.request` over the fields, looks the `from` domain up (through
a short per-process cache), lets `policy.sending.request.check_sender` decide, mints the
reply-tracking identity, composes the message and puts an answer in the thread of what it answers.
Refusals come out as `ApiError`s of the one catalogue.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from api import errors
from api.auth import CALLER, Caller
from api.context import POOL, SENDER_DOMAINS, SETTINGS, TOKENS
from api.errors import ApiError
from policy.conversation import outbound_thread
from policy.sending.compose import compose, mint_tracking
from policy.sending.fields import Problem, Refusal
from policy.sending.request import EmailDraft, SenderDomain, check_sender, parse_email
from storage.ids import uuid7
from storage.sending.emails import DomainState, NewEmail
from storage.sending.outbound import new_email_id
from storage.sending.replies import ThreadLookups

# What each kind of refusal answers, from the one catalogue.
REFUSALS = {
    Problem.INVALID: errors.VALIDATION_ERROR,
    Problem.MISSING: errors.MISSING_REQUIRED_FIELD,
    Problem.FROM_ADDRESS: errors.INVALID_FROM_ADDRESS,
    Problem.ATTACHMENT: errors.INVALID_ATTACHMENT,
    Problem.SENDER_DOMAIN: errors.FORBIDDEN,
}


class Builder:
    """Builds the emails of one request; `fresh` reads domains past the cache."""

    def __init__(self, request: web.Request, *, fresh: bool = False) -> None:
        self.request = request
        self.caller: Caller = request[CALLER]
        self.now = datetime.now(UTC)
        self.fresh = fresh
        self._domains: dict[str, SenderDomain | None] = {}

    async def domain(self, name: str) -> SenderDomain | None:
        if name not in self._domains:
            self._domains[name] = await self.request.app[SENDER_DOMAINS].get(
                self.request.app[POOL], self.caller.tenant_id, name, fresh=self.fresh
            )
        return self._domains[name]

    async def prepare(self, body: Any, *, batch: bool = False) -> NewEmail:
        """One email, checked, tracked and built, in its conversation; ApiError says why not."""
        email, draft = await self.checked(body, batch=batch)
        return await self.in_conversation(email, draft)

    async def checked(self, body: Any, *, batch: bool = False) -> tuple[NewEmail, EmailDraft]:
        """One email checked, tracked and built, before its conversation is looked for (which
        may open a thread: a batch checks every email first, so one it refuses writes nothing).
        ApiError says why not."""
        if not isinstance(body, dict):
            raise ApiError(errors.VALIDATION_ERROR, "Each email must be a JSON object.")
        try:
            draft = parse_email(body, self.now, batch=batch)
            found = await self.domain(draft.sender.domain)
            domain = check_sender(draft.sender, found, self.caller.domain_id)
        except Refusal as refusal:
            raise ApiError(REFUSALS[refusal.problem], refusal.message) from None
        return self.build(draft, domain), draft

    async def in_conversation(
        self, email: NewEmail, draft: EmailDraft, *, answering: UUID | None = None
    ) -> NewEmail:
        """The email in the thread of the stored message it answers (policy.conversation): the
        received email `answering` names, else what its In-Reply-To or References name."""
        if answering is None and not draft.headers:
            return email  # names no message: most sent mail, nothing to look up
        headers = {name.lower(): value for name, value in draft.headers}
        answered = await outbound_thread(
            ThreadLookups(self.request.app[POOL]),
            self.request.app[TOKENS],
            self.caller.tenant_id,
            in_reply_to=headers.get("in-reply-to"),
            references=headers.get("references"),
            new_thread_id=uuid7,
            answering=answering,
        )
        if answered is None:
            return email
        return email.in_thread(answered.thread_id, answered.received_id)

    def build(self, draft: EmailDraft, domain: SenderDomain) -> NewEmail:
        app, email_id = self.request.app, new_email_id()
        tracking = mint_tracking(
            app[TOKENS],
            tenant_id=self.caller.tenant_id,
            email_id=email_id,
            sending_domain=domain.name,
            reply_domain=domain.effective_reply_domain if domain.receiving_enabled else None,
            thread_id=uuid7(),
        )
        raw = compose(draft, tracking, self.now)
        limit = app[SETTINGS].max_message_size
        if len(raw) > limit:
            raise ApiError(
                errors.PAYLOAD_TOO_LARGE,
                f"The email is {len(raw)} bytes once built, over the limit of {limit} bytes.",
            )
        return NewEmail(
            id=email_id,
            tenant_id=self.caller.tenant_id,
            domain_id=domain.id,
            thread_id=tracking.thread_id,
            from_address=draft.sender.address,
            from_header=draft.sender.given,
            to=[box.given for box in draft.to],
            cc=[box.given for box in draft.cc],
            bcc=[box.given for box in draft.bcc],
            reply_to=[box.given for box in draft.reply_to],
            subject=draft.subject,
            html=draft.html,
            text=draft.text,
            headers=dict(draft.headers),
            attachments=[
                {
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "size": len(a.content),
                    "content_id": a.content_id,
                }
                for a in draft.attachments
            ],
            tags=[{"name": name, "value": value} for name, value in draft.tags],
            message_id=tracking.message_id,
            reply_token=tracking.reply_token,
            reply_address=tracking.reply_address,
            reply_domain=tracking.reply_domain,
            raw=raw,
            scheduled_at=draft.scheduled_at,
            recipients=draft.envelope,
            domain_state=DomainState(
                domain.verified, domain.status, domain.receiving_enabled, domain.reply_domain
            ),
        )
