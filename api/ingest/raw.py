"""The ingester: inbound mail handed over by a provider over HTTP, into port 25's pipeline.

`POST /events/inbound` takes raw MIME from a trusted provider; `ingest_raw` is what every
ingester route (this one, the SES/S3 one) feeds. Recipients are judged and messages matched by
`policy.inbound.pipeline`, exactly as on port 25; only the rendering differs: 202 once committed, a
4xx naming the reason for refusals (the provider must not retry those), 503 when storage is out of
reach (the provider retries, and a retry with the same event id stores nothing twice).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from api import errors
from api.context import POOL, SETTINGS, TOKENS, client_ip, read_json
from api.errors import ApiError
from api.metrics import INGEST_EVENTS
from policy.bounces.dsn import late_dsn_maker
from policy.delivery.result import email_status
from policy.inbound.message import parse_message
from policy.inbound.pipeline import Arrival, judge_recipient, received_messages
from policy.inbound.routing import Action, RcptDecision
from storage.errors import StorageError
from storage.ids import uuid7
from storage.inbound.inbox import InboxLookups, StoredCopy, store_ingested, store_received

log = logging.getLogger(__name__)

INBOX = web.AppKey("inbox_lookups", InboxLookups)
INGESTER_PATH = "/events/inbound"

# Envelope facts of the raw form travel in these request headers, or in the query string.
RECIPIENTS_HEADER = "X-OpenSend-Recipients"
EVENT_ID_HEADER = "X-OpenSend-Event-Id"
MAIL_FROM_HEADER = "X-OpenSend-Mail-From"
MAX_EVENT_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class InboundEvent:
    raw: bytes
    recipients: list[str]
    event_id: str | None
    mail_from: str


def check_ingester_token(request: web.Request, source: str) -> None:
    """The provider's bearer token, compared in constant time.

    SNS and other providers that cannot set a header may put it in the endpoint URL's userinfo
    (HTTP Basic, any user name). Without a configured token (development only: production does
    not serve the ingester without one) every caller is trusted.
    """
    expected = request.app[SETTINGS].ingester_inbound_token
    if expected is None:
        return
    offered = _offered_token(request.headers.get("Authorization", ""))
    if offered is not None and hmac.compare_digest(offered.encode(), expected.encode()):
        return
    INGEST_EVENTS.labels(source, "unauthorized").inc()
    if offered is None:
        # RFC 9110 section 11.6.1: a 401 names the scheme. SNS, given credentials in its
        # endpoint URL, posts without them first and sends them only when challenged.
        raise ApiError(
            errors.INGESTER_TOKEN_MISSING,
            headers={"WWW-Authenticate": 'Basic realm="opensend-ingester", charset="UTF-8"'},
        )
    raise ApiError(errors.INGESTER_TOKEN_INVALID)


def _offered_token(authorization: str) -> str | None:
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


async def post_inbound(request: web.Request) -> web.Response:
    check_ingester_token(request, "inbound")
    event = await read_event(request)
    return await ingest_raw(
        request.app,
        event.raw,
        event.recipients,
        event_id=event.event_id,
        source="inbound",
        mail_from=event.mail_from,
        peer_ip=client_ip(request),
    )


async def read_event(request: web.Request) -> InboundEvent:
    """The JSON form ({raw_mime | raw_mime_base64, recipients, event_id}) or a raw MIME body."""
    if request.content_type == "application/json":
        body = await read_json(request)
        raw = _raw_from_json(body)
        recipients = body.get("recipients")
        if isinstance(recipients, str):
            recipients = [recipients]
        if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
            raise ApiError(
                errors.MISSING_REQUIRED_FIELD,
                "`recipients` must be a list of the envelope recipients' addresses",
            )
        event_id = body.get("event_id")
        mail_from = body.get("mail_from") or ""
        if event_id is not None and not isinstance(event_id, str):
            raise ApiError(errors.VALIDATION_ERROR, "`event_id` must be a string")
        if not isinstance(mail_from, str):
            raise ApiError(errors.VALIDATION_ERROR, "`mail_from` must be a string")
    else:
        raw = await request.read()
        recipients = _listed(request.headers.getall(RECIPIENTS_HEADER, []))
        recipients += _listed(request.query.getall("recipient", []))
        recipients += _listed(request.query.getall("recipients", []))
        event_id = request.headers.get(EVENT_ID_HEADER) or request.query.get("event_id")
        mail_from = request.headers.get(MAIL_FROM_HEADER) or request.query.get("mail_from", "")
    if not raw:
        raise ApiError(errors.MISSING_REQUIRED_FIELD, "The message (raw MIME) is empty")
    if not recipients:
        raise ApiError(
            errors.MISSING_REQUIRED_FIELD,
            f"No envelope recipients: give them in `recipients` (JSON), the {RECIPIENTS_HEADER} "
            "header or the `recipient` query parameter",
        )
    if event_id is not None:
        event_id = event_id.strip() or None
    if event_id is not None and (len(event_id) > MAX_EVENT_ID_LENGTH or not event_id.isprintable()):
        raise ApiError(
            errors.VALIDATION_ERROR,
            f"`event_id` must be printable and at most {MAX_EVENT_ID_LENGTH} characters",
        )
    # The reverse-path as SMTP would carry it: without angle brackets, "" for a bounce.
    return InboundEvent(raw, recipients, event_id, mail_from.strip().strip("<>"))


def _raw_from_json(body: dict[str, Any]) -> bytes:
    text, encoded = body.get("raw_mime"), body.get("raw_mime_base64")
    if (text is None) == (encoded is None):
        raise ApiError(
            errors.MISSING_REQUIRED_FIELD, "Give exactly one of `raw_mime` and `raw_mime_base64`"
        )
    if text is not None:
        if not isinstance(text, str):
            raise ApiError(errors.VALIDATION_ERROR, "`raw_mime` must be a string")
        # 8-bit headers and bodies (RFC 6532) survive as UTF-8; a JSON string has no other bytes.
        return text.encode("utf-8", "surrogateescape")
    if not isinstance(encoded, str):
        raise ApiError(errors.VALIDATION_ERROR, "`raw_mime_base64` must be a string")
    try:
        return base64.b64decode(encoded, validate=True)
    except ValueError:  # binascii.Error, or a character outside ASCII
        raise ApiError(errors.VALIDATION_ERROR, "`raw_mime_base64` is not valid base64") from None


def _listed(values: Sequence[str]) -> list[str]:
    return [
        part.strip().strip("<>") for value in values for part in value.split(",") if part.strip()
    ]


async def ingest_raw(
    app: web.Application,
    raw: bytes,
    recipients: Sequence[str],
    *,
    event_id: str | None,
    source: str,
    mail_from: str = "",
    peer_ip: str | None = None,
) -> web.Response:
    """Judge, match and store one provider event the way port 25 would, and answer for it."""
    settings = app[SETTINGS]
    if len(raw) > settings.max_message_size:
        INGEST_EVENTS.labels(source, "too_large").inc()
        raise ApiError(
            errors.PAYLOAD_TOO_LARGE,
            f"The message is {len(raw)} bytes; this server accepts at most "
            f"{settings.max_message_size}",
        )
    parsed = parse_message(raw)
    if parsed.received_count > settings.max_received_headers:
        INGEST_EVENTS.labels(source, "loop").inc()
        raise ApiError(
            errors.INGEST_LOOP,
            f"The message has {parsed.received_count} Received header fields (at most "
            f"{settings.max_received_headers}): probable mail loop",
        )

    unique = list(dict.fromkeys(recipients))
    if len(unique) > settings.max_recipients:
        INGEST_EVENTS.labels(source, "refused").inc()
        raise ApiError(
            errors.INGEST_TOO_MANY_RECIPIENTS,
            f"{len(unique)} recipients; at most {settings.max_recipients} per event",
        )
    accepted, refused = await _judge(app, unique)
    if not accepted:
        INGEST_EVENTS.labels(source, "refused").inc()
        raise ApiError(
            errors.INGEST_RECIPIENTS_REFUSED,
            "No recipient is routed to a tenant here: "
            + "; ".join(f"{r['recipient']} ({r['reason']})" for r in refused),
            extra={"refused": refused},
        )

    arrival = Arrival(
        mail_from=mail_from,
        peer_ip=peer_ip,
        helo=None,
        tls_version=None,
        hostname=settings.hostname,
        received_at=datetime.now(UTC),
        # Not an SMTP session of ours: the provider received it and handed it over.
        protocol="HTTP",
        source=source,
        event_id=event_id,
    )
    try:
        records = await received_messages(
            accepted,
            parsed,
            raw,
            arrival,
            lookups=app[INBOX],
            tokens=app[TOKENS],
            new_id=uuid7,
        )
        late_dsn = late_dsn_maker(app[SETTINGS].hostname, uuid7, lambda: datetime.now(UTC))
        if event_id is None:
            await store_received(app[POOL], records, roll_up=email_status, late_dsn=late_dsn)
            stored = [StoredCopy(r.id, r.tenant_id, r.reply_match_status) for r in records]
            duplicate = False
        else:
            stored, duplicate = await store_ingested(
                app[POOL],
                records,
                source=source,
                event_id=event_id,
                roll_up=email_status,
                late_dsn=late_dsn,
            )
    except StorageError as error:
        INGEST_EVENTS.labels(source, "storage").inc()
        log.warning("ingested message not stored", extra={"source": source, "error": str(error)})
        raise _retry_later() from None

    INGEST_EVENTS.labels(source, "duplicate" if duplicate else "stored").inc()
    return web.json_response(
        {
            "object": "inbound_event",
            "event_id": event_id,
            "duplicate": duplicate,
            "emails": [
                {"id": str(copy.id), "reply_match_status": copy.reply_match_status}
                for copy in stored
            ],
            "refused": refused,
        },
        status=202,
    )


async def _judge(
    app: web.Application, recipients: Sequence[str]
) -> tuple[list[RcptDecision], list[dict[str, str]]]:
    settings = app[SETTINGS]
    accepted: list[RcptDecision] = []
    refused: list[dict[str, str]] = []
    for address in recipients:
        try:
            decision = await judge_recipient(
                address,
                len(accepted),
                max_recipients=settings.max_recipients,
                lookups=app[INBOX],
                tokens=app[TOKENS],
            )
        except StorageError as error:
            log.warning("ingester recipient lookup failed", extra={"error": str(error)})
            raise _retry_later() from None
        if decision.action is Action.ACCEPT:
            accepted.append(decision)
        elif decision.action is Action.DEFER:
            raise _retry_later()
        else:
            refused.append(
                {
                    "recipient": address,
                    # The source document's words: unrouted mail is refused as missing-domain.
                    "reason": decision.reason.replace("_", "-"),
                    "message": decision.reply.text,
                }
            )
    return accepted, refused


def _retry_later() -> ApiError:
    return ApiError(errors.SERVICE_UNAVAILABLE)


def ingester_served(app: web.Application) -> bool:
    """Whether the ingester routes are served: always, except in production without the token.

    The source document: production ingesters reject inbound MIME requests without
    INGESTER_INBOUND_TOKEN. Not serving them at all means no request is trusted by mistake.
    """
    settings = app[SETTINGS]
    return not (settings.production and settings.ingester_inbound_token is None)


def install(app: web.Application) -> None:
    """Serve POST /events/inbound, unless production lacks the token (then say so at start)."""
    settings = app[SETTINGS]
    if not ingester_served(app):
        log.warning(
            "ingester endpoints not served: INGESTER_INBOUND_TOKEN is unset in production",
            extra={"path": INGESTER_PATH},
        )
        return
    if settings.ingester_inbound_token is None:
        log.warning(
            "ingester endpoints accept unauthenticated posts: INGESTER_INBOUND_TOKEN is unset "
            "(development only)",
            extra={"path": INGESTER_PATH},
        )
    # Every ingester route feeds `ingest_raw`, which uses these lookups.
    app[INBOX] = InboxLookups(app[POOL])
    app.router.add_post(INGESTER_PATH, post_inbound)
