"""POST /events/inbound/ses-s3: Amazon SES receipt rules with an S3 action, announced over SNS.

SNS posts three kinds of message to the subscribed HTTPS endpoint. Each is checked and its
signature verified first (`policy.aws.sns`: topic allow-list, certificate host, age, then the
signature with the certificate fetched from SNS). Then a SubscriptionConfirmation is confirmed
by visiting its SubscribeURL; a Notification's SES receipt (`policy.aws.ses`) names the S3 object
holding the raw email, which is read and handed to `api.ingest.raw.ingest_raw`, the pipeline that
port 25 and POST /events/inbound share. Answers follow SNS's retry rule (see api.errors).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiohttp import web

from api import errors
from api.context import DNS, SETTINGS
from api.errors import ApiError
from api.http_client import client_session, resolver
from api.ingest.raw import check_ingester_token, ingest_raw, ingester_served
from api.ingest.s3_objects import S3Objects, s3_client
from api.ingest.sns_peer import FETCH_TIMEOUT, SnsPeer
from api.metrics import INGEST_EVENTS
from policy.aws import ses, sns
from policy.aws.sns import MessageType, Problem
from policy.settings import SesIngester

log = logging.getLogger(__name__)

PATH = "/events/inbound/ses-s3"
SOURCE = "ses-s3"  # received_emails.ingest_source
# An SNS message is at most 256 KiB; its JSON envelope, with escapes, stays well under this.
MAX_SNS_BODY = 1024 * 1024

_REFUSED = {
    Problem.MALFORMED: errors.SNS_INVALID_MESSAGE,
    Problem.UNSUPPORTED: errors.SNS_INVALID_MESSAGE,
    Problem.UNTRUSTED: errors.SNS_UNTRUSTED,
}
# opensend_ingest_events_total{source="ses-s3"} outcomes of what is answered before the pipeline
# (which counts its own: stored, duplicate, refused, ...).
_OUTCOMES = {
    errors.SNS_INVALID_MESSAGE: "invalid",
    errors.SNS_UNTRUSTED: "untrusted",
    errors.SES_BUCKET_NOT_ALLOWED: "bucket_not_allowed",
    errors.SES_NOTIFICATION_UNUSABLE: "invalid",
    errors.SNS_CONFIRMATION_REFUSED: "invalid",
    errors.SES_OBJECT_MISSING: "s3_missing",
    errors.PAYLOAD_TOO_LARGE: "too_large",
    errors.AWS_UNAVAILABLE: "aws_unavailable",
}


@dataclass(frozen=True, slots=True)
class SesClients:
    """The ingester's connections to AWS, open for the application's lifetime."""

    peer: SnsPeer
    objects: S3Objects


SES_CLIENTS = web.AppKey("ses_clients", SesClients)


def trust(config: SesIngester) -> sns.Trust:
    return sns.Trust(
        topic_arns=config.topic_arns,
        cert_host=config.cert_host,
        max_age=timedelta(seconds=config.max_age),
    )


async def receive(request: web.Request) -> web.StreamResponse:
    try:
        # The provider's token first (SNS sends it as HTTP Basic credentials from the endpoint
        # URL), then SNS's own signature: both must hold.
        check_ingester_token(request, SOURCE)
        message, clients = await _authentic(request)
        if message.type is not MessageType.NOTIFICATION:
            return await _subscription(request, message, clients)
        receipt = _receipt(message)
        if isinstance(receipt, ses.OtherNotification):
            # SES's test notification when a rule is created, or a topic that also carries other
            # events: nothing to store, and a 4xx would only fill SNS's failure metrics.
            log.info("SES notification ignored", extra={"type": receipt.notification_type})
            INGEST_EVENTS.labels(SOURCE, "ignored").inc()
            return web.json_response(
                {
                    "object": "ses_notification",
                    "notification_type": receipt.notification_type,
                    "stored": False,
                }
            )
        if not request.app[SETTINGS].ses.reads_bucket(receipt.bucket):
            # SNS does not retry a 4xx: what an operator needs to fetch the mail by hand, should
            # the list be wrong, goes to the log.
            log.warning(
                "SES notification names a bucket not in OPENSEND_SES_S3_BUCKETS",
                extra={"bucket": receipt.bucket, "key": receipt.key, "event": receipt.event_id},
            )
            raise ApiError(
                errors.SES_BUCKET_NOT_ALLOWED,
                f"s3://{receipt.bucket} is not a bucket this server reads; nothing was read.",
            )
        raw = await clients.objects.read(
            receipt.bucket, receipt.key, request.app[SETTINGS].max_message_size
        )
    except ApiError as error:
        INGEST_EVENTS.labels(SOURCE, _OUTCOMES.get(error.kind, "refused")).inc()
        raise
    return await ingest_raw(
        request.app,
        raw,
        receipt.recipients,
        event_id=receipt.event_id,
        source=SOURCE,
        mail_from=receipt.sender,
    )


async def _authentic(request: web.Request) -> tuple[sns.SnsMessage, SesClients]:
    """The SNS message, once every check of `policy.aws.sns` and its signature hold."""
    body = await _read_capped(request)
    try:
        message = sns.parse_message(body, request.headers.get("x-amz-sns-message-type"))
        certificate_url = sns.check_message(
            message, trust(request.app[SETTINGS].ses), datetime.now(UTC)
        )
        # Reached only with an allowed topic, so the ingester is configured and its clients open.
        clients = request.app[SES_CLIENTS]
        sns.verify_signature(message, await clients.peer.signing_key(certificate_url))
    except sns.Refusal as refusal:
        log.warning(
            "SNS message refused",
            extra={"problem": refusal.problem.value, "reason": refusal.message},
        )
        raise ApiError(_REFUSED[refusal.problem], refusal.message) from None
    return message, clients


async def _read_capped(request: web.Request) -> bytes:
    """The body, refused past what an SNS message can be before it is all read and parsed."""
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > MAX_SNS_BODY:
            raise ApiError(
                errors.SNS_INVALID_MESSAGE,
                f"The body is over {MAX_SNS_BODY} bytes, larger than an SNS message can be.",
            )
    return bytes(body)


async def _subscription(
    request: web.Request, message: sns.SnsMessage, clients: SesClients
) -> web.Response:
    if message.type is MessageType.UNSUBSCRIBE_CONFIRMATION:
        # Someone unsubscribed this endpoint: nothing to do but tell the operator.
        log.warning("SNS subscription ended", extra={"topic": message.topic_arn})
        return web.json_response(
            {"object": "sns_subscription", "topic_arn": message.topic_arn, "confirmed": False}
        )
    # An HTTPS endpoint confirms its subscription by visiting the SubscribeURL (already checked).
    url = sns.allowed_url(message.subscribe_url, trust(request.app[SETTINGS].ses), "SubscribeURL")
    await clients.peer.confirm_subscription(url)
    log.info("SNS subscription confirmed", extra={"topic": message.topic_arn})
    INGEST_EVENTS.labels(SOURCE, "confirmed").inc()
    return web.json_response(
        {"object": "sns_subscription", "topic_arn": message.topic_arn, "confirmed": True}
    )


def _receipt(message: sns.SnsMessage) -> ses.S3Receipt | ses.OtherNotification:
    try:
        return ses.parse_receipt(message.message)
    except ses.NotificationError as error:
        log.warning("SES notification refused", extra={"reason": str(error)})
        raise ApiError(errors.SES_NOTIFICATION_UNUSABLE, str(error)) from None


async def aws_clients(app: web.Application) -> AsyncIterator[None]:
    """Open the SNS session and S3 client with the application (aiohttp's cleanup_ctx)."""
    settings = app[SETTINGS]
    names = resolver(app[DNS], settings.dns_servers)
    session = client_session(resolver=names, ca_file=settings.ses.ca_file, timeout=FETCH_TIMEOUT)
    try:
        async with s3_client(
            region=settings.ses.s3_region,
            endpoint=settings.ses.s3_endpoint,
            connector_args={"resolver": names} if names is not None else {},
        ) as s3:
            app[SES_CLIENTS] = SesClients(SnsPeer(session), S3Objects(s3))
            yield
    finally:
        await session.close()


def install(app: web.Application) -> None:
    """The route, and the AWS clients when the ingester has a topic to accept."""
    if not ingester_served(app):
        return  # production without INGESTER_INBOUND_TOKEN (api.ingest.raw.install logs it)
    app.router.add_post(PATH, receive)
    config = app[SETTINGS].ses
    if config.enabled:
        log.info("SES ingester accepts SNS topics", extra={"topics": sorted(config.topic_arns)})
        if not config.s3_buckets:
            log.warning(
                "SES ingester reads any S3 bucket a notification names: "
                "set OPENSEND_SES_S3_BUCKETS to the bucket of your receipt rule"
            )
        app.cleanup_ctx.append(aws_clients)
