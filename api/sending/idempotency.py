"""The Idempotency-Key header of POST /emails and /emails/batch, in Resend's terms.

A key (1 to 256 characters) is kept 24 hours per tenant. The first request claims it before any
work; a repeat with the same body (same endpoint, same canonical JSON) gets the first response
again without sending; a different body is `409 invalid_idempotent_request`; a repeat while the
first is still working is `409 concurrent_idempotent_requests`. A request that fails (any 4xx or
5xx) releases its key: failures are not replayed, so a corrected or later retry goes through.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from api import errors
from api.auth import CALLER
from api.context import POOL, json_response
from api.errors import ApiError
from storage.errors import StorageError
from storage.sending import idempotency
from storage.sending.idempotency import Claim

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 256

# The work: given the claim (None without a key), it stores its result, completing the claim in
# the same transaction, and returns the status and body to answer.
Work = Callable[[Claim | None], Awaitable[tuple[int, Any]]]


def fingerprint(endpoint: str, body: Any) -> str:
    """The same request twice gives the same hash whatever the key order or spacing."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{endpoint}\n{canonical}".encode()).hexdigest()


async def idempotent(
    request: web.Request, endpoint: str, body: Any, work: Work, *, key: str | None = None
) -> web.Response:
    """`key`: the Idempotency-Key when it does not come in the header (a dashboard form)."""
    key = request.headers.get(HEADER) if key is None else key
    if key is None:
        status, payload = await work(None)
        return json_response(payload, status=status)
    # ASCII only: a header's other bytes reach us as surrogate escapes, which no database
    # text can hold.
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii():
        raise ApiError(errors.INVALID_IDEMPOTENCY_KEY)
    pool, tenant_id = request.app[POOL], request[CALLER].tenant_id
    try:
        request_hash = fingerprint(endpoint, body)
    except RecursionError:  # deeper than the json module walks; no email is
        raise ApiError(errors.VALIDATION_ERROR, "The request body is nested too deeply.") from None
    outcome = await idempotency.claim(pool, tenant_id, key, endpoint, request_hash)
    if not isinstance(outcome, Claim):
        if outcome.request_hash != request_hash:
            raise ApiError(errors.INVALID_IDEMPOTENT_REQUEST)
        if outcome.in_flight:
            raise ApiError(errors.CONCURRENT_IDEMPOTENT_REQUESTS)
        replayed = {"Idempotent-Replayed": "true"}
        return json_response(outcome.response, status=outcome.status_code or 200, headers=replayed)
    try:
        status, payload = await work(outcome)
    except BaseException:
        with contextlib.suppress(StorageError):  # if the database is gone, the claim ages out
            await idempotency.release(pool, tenant_id, outcome)
        raise
    return json_response(payload, status=status)


def lost_claim() -> ApiError:
    """The claim was taken over as abandoned while this request worked; nothing was stored."""
    return ApiError(errors.CONCURRENT_IDEMPOTENT_REQUESTS)
