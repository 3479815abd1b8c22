"""Sending, in Resend's shapes: POST /emails and POST /emails/batch.

Each email is checked, given its reply-tracking identity and built once (`api.sending.build`),
then stored with its queue rows in one transaction (`storage.sending.emails`); the answer comes
after the COMMIT. Reading and changing sent emails is in `api.sending.manage`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api import errors
from api.auth import CALLER
from api.context import POOL, SENDING_LIMITS, WRITER, read_json
from api.errors import ApiError
from api.sending import manage as emails_manage
from api.sending.build import Builder
from api.sending.idempotency import idempotent, lost_claim
from policy.sending.request import EmailDraft
from storage.sending import idempotency
from storage.sending.emails import Completion, NewEmail, Stored
from storage.sending.idempotency import Claim

send_routes = web.RouteTableDef()

MAX_BATCH = 100
BATCH_MODES = ("strict", "permissive")


async def refuse_over_limit(request: web.Request) -> None:
    """The plan's monthly sending limit, as replies and the submission ports have it: a soft
    limit, checked before a request's emails are built (a batch that starts below it goes)."""
    if await request.app[SENDING_LIMITS].reached(request.app[POOL], request[CALLER].tenant_id):
        raise ApiError(errors.MONTHLY_QUOTA_EXCEEDED)


async def store(
    request: web.Request, emails: list[NewEmail], claim: Claim | None, payload: Any
) -> Stored:
    """The emails and the Idempotency-Key's completion (200 and `payload`), all or nothing."""
    pool = request.app[POOL]
    completion = Completion(claim.key, claim.claimed_at, 200, payload) if claim else None
    if emails:
        return await request.app[WRITER].store(emails, completion)
    if claim is not None:  # a permissive batch of nothing but invalid emails
        tenant_id = request[CALLER].tenant_id
        if not await idempotency.complete(pool, tenant_id, claim, 200, payload):
            return Stored.LOST_CLAIM
    return Stored.STORED


def unstored(outcome: Stored) -> ApiError:
    if outcome is Stored.LOST_CLAIM:
        return lost_claim()
    # The domain changed twice while we built: rare enough to be a retry-later.
    return ApiError(errors.SERVICE_UNAVAILABLE)


@send_routes.post("/emails")
async def send_email(request: web.Request) -> web.Response:
    body = await read_json(request)

    async def work(claim: Claim | None) -> tuple[int, Any]:
        await refuse_over_limit(request)  # in `work`: a replayed Idempotency-Key still answers
        # Built from the cached domain first; if the domain changed meanwhile, once more from
        # a fresh read (storage.sending.emails.INSERT_EMAIL stores nothing for a stale domain).
        for fresh in (False, True):
            email = await Builder(request, fresh=fresh).prepare(body)
            payload = {"id": str(email.id)}
            outcome = await store(request, [email], claim, payload)
            if outcome is Stored.STORED:
                return 200, payload
            if outcome is Stored.LOST_CLAIM:
                break
        raise unstored(outcome)

    return await idempotent(request, "POST /emails", body, work)


@send_routes.post("/emails/batch")
async def send_batch(request: web.Request) -> web.Response:
    """Resend's batch: strict (the default) refuses the whole batch for one invalid email;
    permissive sends the valid ones and lists the others in `errors`, by index."""
    items = await read_json(request, array=True)
    if not 1 <= len(items) <= MAX_BATCH:
        raise ApiError(
            errors.VALIDATION_ERROR,
            f"A batch holds 1 to {MAX_BATCH} emails; this one has {len(items)}.",
        )
    mode = request.headers.get("x-batch-validation", "strict").strip().lower()
    if mode not in BATCH_MODES:
        raise ApiError(
            errors.VALIDATION_ERROR, "The x-batch-validation header must be strict or permissive."
        )

    async def work(claim: Claim | None) -> tuple[int, Any]:
        await refuse_over_limit(request)
        for fresh in (False, True):
            builder = Builder(request, fresh=fresh)
            built: list[tuple[NewEmail, EmailDraft]] = []
            failures: list[dict[str, Any]] = []
            for index, item in enumerate(items):
                try:
                    built.append(await builder.checked(item, batch=True))
                except ApiError as error:  # storage trouble is a StorageError: all of it 503s
                    if mode == "strict":
                        raise ApiError(error.kind, f"emails[{index}]: {error.message}") from None
                    failures.append({"index": index, "message": error.message})
            # Every email checked: only now may one open the thread of a message it answers.
            emails = [await builder.in_conversation(email, draft) for email, draft in built]
            payload: dict[str, Any] = {"data": [{"id": str(e.id)} for e in emails]}
            if mode == "permissive":
                payload["errors"] = failures
            outcome = await store(request, emails, claim, payload)
            if outcome is Stored.STORED:
                return 200, payload
            if outcome is Stored.LOST_CLAIM:
                break
        raise unstored(outcome)

    return await idempotent(request, "POST /emails/batch", {"mode": mode, "emails": items}, work)


routes = [*send_routes, *emails_manage.routes]
