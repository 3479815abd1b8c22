"""The OpenAPI document's `components.schemas` (api.openapi.document refers to them by `$ref`): one
JSON Schema per resource, request and answer, as the route modules render them, with Resend's names.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
UUID: Schema = {"type": "string", "format": "uuid"}
NULLABLE_UUID: Schema = {"type": ["string", "null"], "format": "uuid"}
TIME: Schema = {"type": "string", "format": "date-time"}
NULLABLE_TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
BOOLEAN: Schema = {"type": "boolean"}
INTEGER: Schema = {"type": "integer"}
STRINGS: Schema = {"type": "array", "items": STRING}
# What kind of received mail (policy.classify); auto-replies and bounces stay linked but apart.
CLASSIFICATION: Schema = {"enum": ["human", "auto_reply", "bounce", "complaint", "auto_generated"]}
# Resend takes one address or a list of them wherever addresses go.
ADDRESSES: Schema = {"oneOf": [STRING, {"type": "array", "items": STRING}]}
NULLABLE_ADDRESSES: Schema = {
    "oneOf": [STRING, {"type": "array", "items": STRING}, {"type": "null"}]
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], *required: str, **extra: Any) -> Schema:
    """An object with these properties; the required ones are always in our answers."""
    schema: Schema = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    return schema


def list_of(item: str) -> Schema:
    """Resend's list envelope (api.pagination.list_body)."""
    return obj(
        {
            "object": {"const": "list"},
            "has_more": BOOLEAN,
            "data": {"type": "array", "items": ref(item)},
        },
        "object",
        "has_more",
        "data",
    )


def deleted(kind: str) -> Schema:
    return obj(
        {"object": {"const": kind}, "id": UUID, "deleted": {"const": True}},
        "object",
        "id",
        "deleted",
    )


def object_id(kind: str) -> Schema:
    return obj({"object": {"const": kind}, "id": UUID}, "object", "id")


# -- errors ---------------------------------------------------------------------------------------

ERROR = obj(
    {
        "statusCode": {"type": "integer", "minimum": 400, "maximum": 599},
        "name": STRING,
        "message": STRING,
        # Only on POST /emails/{id}/reply: Inbound's field, the same text as `message`.
        "error": STRING,
        # Only on POST /events/inbound: every recipient refused, and why.
        "refused": {"type": "array", "items": ref("RefusedRecipient")},
    },
    "statusCode",
    "name",
    "message",
    description="Resend's error shape (api.errors); every refusal and failure is one of these.",
)

# -- sending --------------------------------------------------------------------------------------

ATTACHMENT_INPUT = obj(
    {
        "filename": STRING,
        "content": {"description": "Base64, or an array of byte values 0 to 255."},
        "path": STRING,
        "content_type": STRING,
        "content_id": STRING,
    },
    "filename",
)
TAG = obj({"name": STRING, "value": NULLABLE_STRING}, "name")
SEND_EMAIL = obj(
    {
        "from": STRING,
        "to": ADDRESSES,
        "subject": STRING,
        "cc": NULLABLE_ADDRESSES,
        "bcc": NULLABLE_ADDRESSES,
        "reply_to": NULLABLE_ADDRESSES,
        "html": NULLABLE_STRING,
        "text": NULLABLE_STRING,
        "headers": {"type": ["object", "null"], "additionalProperties": STRING},
        "attachments": {"type": ["array", "null"], "items": ref("AttachmentInput")},
        "tags": {"type": ["array", "null"], "items": ref("Tag")},
        "scheduled_at": {
            "type": ["string", "null"],
            "description": "ISO 8601, or natural language such as `in 1 hour`.",
        },
    },
    "from",
    "to",
    "subject",
    description="One email; `html` or `text` (or both) is required.",
)
BATCH_ANSWER = obj(
    {
        "data": {"type": "array", "items": ref("EmailId")},
        "errors": {
            "type": "array",
            "description": "Permissive mode only: the emails not sent, by index.",
            "items": obj({"index": INTEGER, "message": STRING}, "index", "message"),
        },
    },
    "data",
)
EMAIL_SUMMARY = obj(
    {
        "object": {"const": "email"},
        "id": UUID,
        "from": STRING,
        "to": STRINGS,
        "cc": STRINGS,
        "bcc": STRINGS,
        "reply_to": STRINGS,
        "subject": STRING,
        "created_at": TIME,
        "scheduled_at": NULLABLE_TIME,
        "last_event": STRING,
        "tags": {"type": "array", "items": ref("Tag")},
        "message_id": STRING,
        "thread_id": NULLABLE_UUID,
        "reply_address": NULLABLE_STRING,
    },
    "object",
    "id",
    "from",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "subject",
    "created_at",
    "last_event",
)
DELIVERY = obj(
    {
        "recipient": STRING,
        "status": STRING,
        "attempts": INTEGER,
        "last_code": {"type": ["integer", "null"]},
        "last_response": NULLABLE_STRING,
        "next_attempt_at": NULLABLE_TIME,
        "updated_at": NULLABLE_TIME,
        "report": {"oneOf": [ref("DeliveryReport"), {"type": "null"}]},
        "reported_at": NULLABLE_TIME,
        "complained_at": {
            **NULLABLE_TIME,
            "description": "When a complaint (RFC 5965 feedback report) about it arrived.",
        },
    },
    "recipient",
    "status",
)
# What a delivery report (RFC 3464) or complaint says about one recipient, in the SES and Resend
# bounce taxonomy (policy/bounces/report.py).
REPORTED_FIELDS: dict[str, Schema] = {
    "action": {**NULLABLE_STRING, "description": "RFC 3464 Action: failed, delayed, ..."},
    "status": {**NULLABLE_STRING, "description": "RFC 3463 enhanced status code."},
    "diagnostic_code": NULLABLE_STRING,
    "remote_mta": NULLABLE_STRING,
    "type": {"enum": ["Permanent", "Transient", "Undetermined"]},
    "subtype": {
        "enum": [
            "General",
            "NoEmail",
            "Suppressed",
            "MailboxFull",
            "MessageTooLarge",
            "ContentRejected",
            "Undetermined",
        ]
    },
}
DELIVERY_REPORT = obj(
    {
        **REPORTED_FIELDS,
        "received_id": {**UUID, "description": "The report as received: /emails/receiving/{id}."},
    },
    "type",
    "subtype",
)
EMAIL = {
    "allOf": [
        ref("EmailSummary"),
        obj(
            {
                "html": STRING,
                "text": STRING,
                "deliveries": {"type": "array", "items": ref("Delivery")},
                "thread": {"oneOf": [ref("ThreadObject"), {"type": "null"}]},
            },
            "html",
            "text",
            "deliveries",
            "thread",
        ),
    ]
}
RESCHEDULE = obj({"scheduled_at": STRING}, "scheduled_at")
REPLY = obj(
    {
        "from": STRING,
        "from_name": STRING,
        "to": NULLABLE_ADDRESSES,
        "cc": NULLABLE_ADDRESSES,
        "bcc": NULLABLE_ADDRESSES,
        "reply_to": NULLABLE_ADDRESSES,
        "replyTo": NULLABLE_ADDRESSES,
        "subject": NULLABLE_STRING,
        "text": NULLABLE_STRING,
        "html": NULLABLE_STRING,
        "headers": {"type": ["object", "null"], "additionalProperties": STRING},
        "attachments": {"type": ["array", "null"], "items": ref("AttachmentInput")},
        "tags": {"type": ["array", "null"], "items": ref("Tag")},
        "simple": BOOLEAN,
        "include_original": BOOLEAN,
        "includeOriginal": BOOLEAN,
    },
    "from",
    description="Inbound's reply fields; `html` or `text` is required.",
)
# awsMessageId: no SES here; the Message-ID again, as Inbound's SDK types it a string.
MESSAGE_ID_AGAIN: Schema = {**STRING, "description": "The Message-ID (there is no SES here)."}
REPLY_ANSWER = obj(
    {"id": UUID, "messageId": STRING, "awsMessageId": MESSAGE_ID_AGAIN},
    "id",
    "messageId",
    "awsMessageId",
)
E2_REPLY = {
    "allOf": [
        ref("ReplyRequest"),
        obj({"reply_all": {**BOOLEAN, "description": "Copy the original's Cc recipients."}}),
    ]
}
E2_REPLY_ANSWER = obj(
    {
        "id": UUID,
        "aws_message_id": MESSAGE_ID_AGAIN,
        "is_thread_reply": {"const": False},
        "message_id": STRING,
        "replied_to_email_id": UUID,
        "replied_to_thread_id": UUID,
    },
    "id",
    "aws_message_id",
    "is_thread_reply",
    "message_id",
    "replied_to_email_id",
)
E2_EMAIL = obj(
    {
        "object": {"const": "email"},
        "id": UUID,
        "type": {"enum": ["sent", "received", "scheduled"]},
        "status": STRING,
        "created_at": TIME,
        "from": STRING,
        "to": STRINGS,
        "subject": STRING,
        "has_attachments": BOOLEAN,
        "attachments": {"type": "array", "items": {"type": "object"}},
        "thread_id": NULLABLE_UUID,
    },
    "object",
    "id",
    "type",
    "status",
    "created_at",
    "from",
    "to",
    "subject",
    "has_attachments",
    description="A received or sent email as Inbound's e2 API shows it (bodies and headers too).",
)
MAIL_REPLY = obj(
    {
        "emailId": UUID,
        "to": NULLABLE_ADDRESSES,
        "subject": NULLABLE_STRING,
        "textBody": NULLABLE_STRING,
        "htmlBody": NULLABLE_STRING,
    },
    "emailId",
    description="Sent from the address the email was received at.",
)
MAIL_REPLY_ANSWER = obj(
    {"message": STRING, "id": UUID, "messageId": STRING, "awsMessageId": MESSAGE_ID_AGAIN},
    "message",
    "id",
    "messageId",
    "awsMessageId",
)

# -- threads --------------------------------------------------------------------------------------

THREAD_MESSAGE = obj(
    {
        "id": UUID,
        "direction": {"enum": ["outbound", "inbound"]},
        "created_at": TIME,
        "from": NULLABLE_STRING,
        "to": STRINGS,
        "subject": NULLABLE_STRING,
        "reply_match_status": NULLABLE_STRING,
        "reply_to_email_id": NULLABLE_UUID,
        "classification": {**CLASSIFICATION, "description": "Received messages only."},
    },
    "id",
    "direction",
    "created_at",
    "from",
    "to",
    "subject",
)
THREAD_OBJECT = obj(
    {
        "thread_id": NULLABLE_UUID,
        "match_status": NULLABLE_STRING,
        "original_email_id": NULLABLE_UUID,
        "contact_id": NULLABLE_UUID,
        "messages": {"type": "array", "items": ref("ThreadMessage")},
    },
    "thread_id",
    "match_status",
    "original_email_id",
    "contact_id",
    "messages",
    description="The conversation a sent or received email belongs to, oldest message first.",
)
THREAD = obj(
    {
        "object": {"const": "thread"},
        "id": UUID,
        "subject": NULLABLE_STRING,
        "created_at": TIME,
        "last_message_at": TIME,
        "original_email_id": NULLABLE_UUID,
        "contact_id": NULLABLE_UUID,
        "message_count": INTEGER,
        "messages_truncated": BOOLEAN,
        "messages": {"type": "array", "items": ref("ThreadMessage")},
    },
    "object",
    "id",
    "created_at",
    "message_count",
    "messages",
)

# -- received mail --------------------------------------------------------------------------------

# A signed download link (api.downloads): works without the API key until `expires_at`.
LINK_FIELDS: dict[str, Schema] = {
    "download_url": {**STRING, "description": "Signed: needs no API key; expires."},
    "expires_at": {**TIME, "description": "When `download_url` stops working (an hour on)."},
}
RECEIVED_ATTACHMENT = obj(
    {
        "object": {"const": "attachment"},
        "id": UUID,
        "index": INTEGER,
        "filename": NULLABLE_STRING,
        "content_type": NULLABLE_STRING,
        "content_id": {
            **NULLABLE_STRING,
            "description": "Null in the email's own list; left out where the link is given.",
        },
        "content_disposition": NULLABLE_STRING,
        "size": {"type": ["integer", "null"]},
        **LINK_FIELDS,
    },
    "id",
    "index",
    description="The attachments routes add `download_url` and `expires_at`.",
)
SENT_ATTACHMENT = obj(
    {
        "object": {"const": "attachment"},
        "id": UUID,
        "filename": {**STRING, "description": "Left out when none was given."},
        "content_type": STRING,
        "content_id": {**STRING, "description": "Only for an inline attachment."},
        "content_disposition": {"enum": ["inline", "attachment"]},
        "size": INTEGER,
        **LINK_FIELDS,
    },
    "id",
    "content_type",
    "content_disposition",
    "size",
    "download_url",
    "expires_at",
)
RECEIVED_SUMMARY = obj(
    {
        "id": UUID,
        "to": STRINGS,
        "from": {"type": "string", "description": "Empty when no address could be read."},
        "created_at": TIME,
        "subject": NULLABLE_STRING,
        "bcc": {"type": "null"},
        "cc": STRINGS,
        "reply_to": STRINGS,
        "message_id": {"type": "string", "description": "Empty when the message had none."},
        "received_for": STRINGS,
        "attachments": {"type": "array", "items": ref("ReceivedAttachment")},
        "received_at": TIME,
        "size": INTEGER,
        "reply_match_status": {"enum": ["matched", "unmatched"]},
        "reply_to_email_id": NULLABLE_UUID,
        "thread_id": NULLABLE_UUID,
        "contact_id": NULLABLE_UUID,
        "classification": CLASSIFICATION,
        "classification_reason": {
            **NULLABLE_STRING,
            "description": "The rule that gave the classification.",
        },
    },
    "id",
    "to",
    "from",
    "created_at",
    "subject",
    "attachments",
    "reply_match_status",
    "classification",
)
RECEIVED_REPORT = obj(
    {
        "form": {
            "enum": ["delivery-status", "feedback-report", "disposition-notification", "text"],
        },
        "feedback_type": {**NULLABLE_STRING, "description": "RFC 5965 Feedback-Type."},
        "returned_message_id": NULLABLE_STRING,
        "recipients": {
            "type": "array",
            "items": obj({"email": NULLABLE_STRING, **REPORTED_FIELDS}, "type", "subtype"),
        },
    },
    "form",
    "recipients",
    description="How a bounce or complaint was read; null for other mail.",
)
ENVELOPE = obj(
    {
        "mail_from": STRING,
        "rcpt_to": STRINGS,
        "remote_ip": NULLABLE_STRING,
        "helo": NULLABLE_STRING,
        "tls": BOOLEAN,
        "tls_version": NULLABLE_STRING,
    },
    description="The SMTP envelope (or the ingester's) it arrived with.",
)
RECEIVED_EMAIL = {
    "allOf": [
        ref("ReceivedEmailSummary"),
        obj(
            {
                "object": {"const": "email"},
                "from_name": NULLABLE_STRING,
                "from_address": NULLABLE_STRING,
                "html": NULLABLE_STRING,
                "text": NULLABLE_STRING,
                "headers": {"type": "object", "additionalProperties": STRING},
                "header_list": {
                    "type": "array",
                    "items": {"type": "array", "items": STRING, "minItems": 2, "maxItems": 2},
                },
                "in_reply_to": NULLABLE_STRING,
                "references": NULLABLE_STRING,
                "sent_at": {**NULLABLE_TIME, "description": "The Date field, when it parsed."},
                "envelope": ENVELOPE,
                "authentication_results": {
                    "type": ["object", "null"],
                    "description": "SPF, DKIM, DMARC and ARC verdicts; null until checked.",
                    "additionalProperties": True,
                },
                "parse_defects": STRINGS,
                "match_source": {
                    **NULLABLE_STRING,
                    "description": "The evidence that matched it to a sent email.",
                },
                "token_failure": {**NULLABLE_STRING, "description": "Why a reply token failed."},
                "token_failure_source": NULLABLE_STRING,
                "report": {"oneOf": [ref("ReceivedReport"), {"type": "null"}]},
                # What the person wrote, without quoted history; null until the worker ran.
                "stripped_text": NULLABLE_STRING,
                "stripped_html": NULLABLE_STRING,
                "raw": obj(LINK_FIELDS, "download_url", "expires_at"),
                "thread": ref("ThreadObject"),
            },
            "object",
            "headers",
            "envelope",
            "raw",
            "thread",
        ),
    ]
}

# -- contacts, domains, API keys ------------------------------------------------------------------

CONTACT = obj(
    {
        "object": {"const": "contact"},
        "id": UUID,
        "email": STRING,
        "first_name": NULLABLE_STRING,
        "last_name": NULLABLE_STRING,
        "created_at": TIME,
        "unsubscribed": BOOLEAN,
        "properties": obj({}, description="Custom properties: none are kept, always {}."),
    },
    "object",
    "id",
    "email",
    "first_name",
    "last_name",
    "created_at",
    "unsubscribed",
    "properties",
)
CONTACT_FIELDS: dict[str, Schema] = {
    "first_name": NULLABLE_STRING,
    "firstName": NULLABLE_STRING,
    "last_name": NULLABLE_STRING,
    "lastName": NULLABLE_STRING,
    "unsubscribed": {"type": ["boolean", "null"]},
}
CREATE_CONTACT = obj({"email": STRING, **CONTACT_FIELDS}, "email")
UPDATE_CONTACT = obj({"email": STRING, **CONTACT_FIELDS})
DELETED_CONTACT = {
    "allOf": [deleted("contact"), obj({"contact": UUID}, "contact")],
}

CAPABILITIES = obj(
    {
        "sending": {"enum": ["enabled", "disabled"]},
        "receiving": {"enum": ["enabled", "disabled"]},
    }
)
DOMAIN_STATUS: Schema = {
    "enum": ["not_started", "pending", "verified", "failed", "temporary_failure"],
}
DOMAIN_RECORD = obj(
    {
        "record": {"enum": ["Receiving", "SPF", "DKIM", "DMARC"]},
        "name": STRING,
        "type": {"enum": ["MX", "TXT"]},
        "ttl": STRING,
        "status": DOMAIN_STATUS,
        "value": STRING,
        "priority": INTEGER,
        "found": STRINGS,
        "reason": STRING,
    },
    "record",
    "name",
    "type",
    "ttl",
    "status",
    "value",
)
DOMAIN_SUMMARY = obj(
    {
        "id": UUID,
        "name": STRING,
        "status": DOMAIN_STATUS,
        "created_at": TIME,
        "region": STRING,
        "capabilities": ref("DomainCapabilities"),
    },
    "id",
    "name",
    "status",
    "created_at",
    "region",
    "capabilities",
)
DOMAIN = {
    "allOf": [
        ref("DomainSummary"),
        obj(
            {
                "object": {"const": "domain"},
                "open_tracking": {"const": False},
                "click_tracking": {"const": False},
                "reply_domain": NULLABLE_STRING,
                "last_checked_at": NULLABLE_TIME,
                "records": {
                    "type": "array",
                    "items": ref("DomainRecord"),
                    "description": "The records to publish: Receiving (MX), SPF, DKIM.",
                },
                "suggested_records": {
                    "type": "array",
                    "items": ref("DomainRecord"),
                    "description": "Checked, never required: DMARC.",
                },
                "deleted": {**BOOLEAN, "description": "true only in the answer to DELETE."},
            },
            "object",
            "records",
            "suggested_records",
            "deleted",
        ),
    ]
}
DOMAIN_FIELDS: dict[str, Schema] = {
    "capabilities": ref("DomainCapabilities"),
    "receiving": {"type": ["boolean", "null"]},
    "reply_domain": NULLABLE_STRING,
    "open_tracking": {"type": ["boolean", "null"]},
    "click_tracking": {"type": ["boolean", "null"]},
    "tls": {"type": ["string", "null"], "description": "Only `opportunistic` is supported."},
    "tracking_subdomain": {"type": "null", "description": "Not supported."},
    "custom_return_path": {"type": "null", "description": "Not supported."},
}
CREATE_DOMAIN = obj(
    {
        "name": STRING,
        "region": {"enum": ["us-east-1", "eu-west-1", "sa-east-1", "ap-northeast-1", None]},
        **DOMAIN_FIELDS,
    },
    "name",
)
UPDATE_DOMAIN = obj({"name": NULLABLE_STRING, **DOMAIN_FIELDS})

API_KEY = obj(
    {
        "id": UUID,
        "name": STRING,
        "created_at": TIME,
        "last_used_at": {**NULLABLE_TIME, "description": "The last use, to the minute."},
    },
    "id",
    "name",
    "created_at",
    "last_used_at",
)
CREATE_API_KEY = obj(
    {
        "name": {"type": "string", "maxLength": 50},
        "permission": {"enum": ["full_access", "sending_access"]},
        "domain_id": {**NULLABLE_UUID, "description": "Only with `sending_access`."},
    },
    "name",
)
NEW_API_KEY = obj({"id": UUID, "token": STRING}, "id", "token")

# -- webhooks (resend/webhooks/_webhooks.py) and suppressions (resend/suppressions/) ----------

WEBHOOK_STATUS: Schema = {"enum": ["enabled", "disabled"]}
EVENT_TYPES: Schema = {
    "type": "array",
    "items": STRING,
    "minItems": 1,
    "description": "Event types of Resend's SDK (`WebhookEvent`); an unknown one is refused.",
}
WEBHOOK = obj(
    {
        "object": {"const": "webhook"},
        "id": UUID,
        "created_at": TIME,
        "status": WEBHOOK_STATUS,
        "disabled_reason": {
            "enum": ["api", "failing", None],
            "description": "`api`: by its tenant; `failing`: after 5 days of failed deliveries.",
        },
        "endpoint": STRING,
        "events": STRINGS,
        "signing_secret": STRING,
    },
    "object",
    "id",
    "created_at",
    "status",
    "disabled_reason",
    "endpoint",
    "events",
    "signing_secret",
)
CREATE_WEBHOOK = obj(
    {
        "endpoint": {
            "type": "string",
            "description": "https in production, and never to a loopback or private address.",
        },
        "events": EVENT_TYPES,
    },
    "endpoint",
    "events",
)
UPDATE_WEBHOOK = obj({"endpoint": STRING, "events": EVENT_TYPES, "status": WEBHOOK_STATUS})
WEBHOOK_SECRET = obj(
    {
        "object": {"const": "webhook"},
        "id": UUID,
        "signing_secret": {"type": "string", "pattern": "^whsec_"},
    },
    "object",
    "id",
    "signing_secret",
)
EVENT_STATUS: Schema = {"enum": ["pending", "attempting", "success", "failed"]}
WEBHOOK_EVENT_SUMMARY = obj(
    {"id": UUID, "type": STRING, "created_at": TIME, "status": EVENT_STATUS},
    "id",
    "type",
    "created_at",
    "status",
    description="One event sent to this webhook; its id is the `webhook-id` header.",
)
WEBHOOK_EVENT = {
    "allOf": [
        ref("WebhookEventSummary"),
        obj(
            {
                "object": {"const": "webhook_event"},
                "next_attempt_at": NULLABLE_TIME,
                "payload": {
                    "type": "object",
                    "description": "The body as delivered: `type`, `created_at`, `data`.",
                    "additionalProperties": True,
                },
            },
            "object",
            "next_attempt_at",
            "payload",
        ),
    ]
}
WEBHOOK_ATTEMPT = obj(
    {
        "id": UUID,
        "http_status_code": {
            "type": "integer",
            "description": "0 when no HTTP answer came (see `error`).",
        },
        "response": {"type": "string", "description": "The answer's first KiB."},
        "sent_at": TIME,
        "latency_ms": {"type": "number"},
        "error": NULLABLE_STRING,
    },
    "id",
    "http_status_code",
    "response",
    "sent_at",
    "latency_ms",
    "error",
)

SUPPRESSION_ORIGIN: Schema = {"enum": ["bounce", "complaint", "manual"]}
SUPPRESSION_FIELDS: dict[str, Schema] = {
    "id": UUID,
    "email": STRING,
    "origin": SUPPRESSION_ORIGIN,
    "source_id": {**NULLABLE_UUID, "description": "The email that bounced or complained."},
    "created_at": TIME,
}
SUPPRESSION_ITEM = obj(SUPPRESSION_FIELDS, *SUPPRESSION_FIELDS)
SUPPRESSION = obj(
    {"object": {"const": "suppression"}, **SUPPRESSION_FIELDS}, "object", *SUPPRESSION_FIELDS
)
ADDRESS_BATCH: Schema = {"type": "array", "items": STRING, "minItems": 1, "maxItems": 100}
SUPPRESSION_IDS = obj(
    {"data": {"type": "array", "items": ref("SuppressionObjectId")}},
    "data",
)
REMOVE_SUPPRESSIONS = obj(
    {"emails": ADDRESS_BATCH, "ids": {**ADDRESS_BATCH, "items": UUID}},
    description="Either `emails` or `ids`, not both.",
)

# -- operations and ingesters ---------------------------------------------------------------------

HEALTH = obj({"status": {"enum": ["ok", "unavailable"]}, "database": BOOLEAN}, "status", "database")
INBOUND_EVENT = obj(
    {
        "raw_mime": STRING,
        "raw_mime_base64": STRING,
        "recipients": ADDRESSES,
        "event_id": NULLABLE_STRING,
        "mail_from": NULLABLE_STRING,
    },
    "recipients",
    description="The raw message as text (`raw_mime`) or base64 (`raw_mime_base64`), not both.",
)
INBOUND_ANSWER = obj(
    {
        "object": {"const": "inbound_event"},
        "event_id": NULLABLE_STRING,
        "duplicate": BOOLEAN,
        "emails": {
            "type": "array",
            "items": obj({"id": UUID, "reply_match_status": STRING}, "id", "reply_match_status"),
        },
        "refused": {"type": "array", "items": ref("RefusedRecipient")},
    },
    "object",
    "duplicate",
    "emails",
    "refused",
)
REFUSED_RECIPIENT = obj(
    {
        "recipient": STRING,
        "reason": {"type": "string", "description": "Such as `missing-domain`, `bad-syntax`."},
        "message": STRING,
    },
    "recipient",
    "reason",
    "message",
)
SNS_ANSWER = obj(
    {
        "object": {"enum": ["sns_subscription", "ses_notification"]},
        "topic_arn": STRING,
        "confirmed": BOOLEAN,
        "notification_type": STRING,
        "stored": BOOLEAN,
    },
    "object",
)

SCHEMAS: dict[str, Schema] = {
    "Error": ERROR,
    "Health": HEALTH,
    "EmailId": obj({"id": UUID}, "id"),
    "AttachmentInput": ATTACHMENT_INPUT,
    "Tag": TAG,
    "SendEmailRequest": SEND_EMAIL,
    "BatchResponse": BATCH_ANSWER,
    "EmailSummary": EMAIL_SUMMARY,
    "Email": EMAIL,
    "EmailList": list_of("EmailSummary"),
    "EmailObjectId": object_id("email"),
    "Delivery": DELIVERY,
    "DeliveryReport": DELIVERY_REPORT,
    "RescheduleRequest": RESCHEDULE,
    "ReplyRequest": REPLY,
    "ReplyResponse": REPLY_ANSWER,
    "E2ReplyRequest": E2_REPLY,
    "E2ReplyResponse": E2_REPLY_ANSWER,
    "E2Email": E2_EMAIL,
    "MailReplyRequest": MAIL_REPLY,
    "MailReplyResponse": MAIL_REPLY_ANSWER,
    "ThreadMessage": THREAD_MESSAGE,
    "ThreadObject": THREAD_OBJECT,
    "Thread": THREAD,
    "ThreadList": list_of("Thread"),
    "ReceivedAttachment": RECEIVED_ATTACHMENT,
    "ReceivedAttachmentList": list_of("ReceivedAttachment"),
    "SentAttachment": SENT_ATTACHMENT,
    "SentAttachmentList": list_of("SentAttachment"),
    "ReceivedEmailSummary": RECEIVED_SUMMARY,
    "ReceivedEmail": RECEIVED_EMAIL,
    "ReceivedEmailList": list_of("ReceivedEmailSummary"),
    "ReceivedReport": RECEIVED_REPORT,
    "Contact": CONTACT,
    "ContactList": list_of("Contact"),
    "ContactObjectId": object_id("contact"),
    "CreateContactRequest": CREATE_CONTACT,
    "UpdateContactRequest": UPDATE_CONTACT,
    "DeletedContact": DELETED_CONTACT,
    "DomainCapabilities": CAPABILITIES,
    "DomainRecord": DOMAIN_RECORD,
    "DomainSummary": DOMAIN_SUMMARY,
    "Domain": DOMAIN,
    "DomainList": list_of("Domain"),
    "CreateDomainRequest": CREATE_DOMAIN,
    "UpdateDomainRequest": UPDATE_DOMAIN,
    "DeletedDomain": ref("Domain"),
    "ApiKey": API_KEY,
    "ApiKeyList": list_of("ApiKey"),
    "CreateApiKeyRequest": CREATE_API_KEY,
    "NewApiKey": NEW_API_KEY,
    "DeletedApiKey": deleted("api_key"),
    "Webhook": WEBHOOK,
    "WebhookList": list_of("Webhook"),
    "CreateWebhookRequest": CREATE_WEBHOOK,
    "UpdateWebhookRequest": UPDATE_WEBHOOK,
    "WebhookSecret": WEBHOOK_SECRET,
    "WebhookObjectId": object_id("webhook"),
    "DeletedWebhook": deleted("webhook"),
    "WebhookEventSummary": WEBHOOK_EVENT_SUMMARY,
    "WebhookEvent": WEBHOOK_EVENT,
    "WebhookEventList": list_of("WebhookEventSummary"),
    "WebhookEventObjectId": object_id("webhook_event"),
    "WebhookAttempt": WEBHOOK_ATTEMPT,
    "WebhookAttemptList": list_of("WebhookAttempt"),
    "Suppression": SUPPRESSION,
    "SuppressionListItem": SUPPRESSION_ITEM,
    "SuppressionList": list_of("SuppressionListItem"),
    "CreateSuppressionRequest": obj({"email": STRING}, "email"),
    "SuppressionObjectId": object_id("suppression"),
    "AddSuppressionsRequest": obj({"emails": ADDRESS_BATCH}, "emails"),
    "AddedSuppressions": SUPPRESSION_IDS,
    "RemoveSuppressionsRequest": REMOVE_SUPPRESSIONS,
    "RemovedSuppressions": obj(
        {"data": {"type": "array", "items": ref("DeletedSuppression")}}, "data"
    ),
    "DeletedSuppression": deleted("suppression"),
    "InboundEvent": INBOUND_EVENT,
    "InboundEventResponse": INBOUND_ANSWER,
    "RefusedRecipient": REFUSED_RECIPIENT,
    "SnsResponse": SNS_ANSWER,
}
