"""The API's OpenAPI 3.1 document, written once here as data and served at GET /openapi.json;
tests/api/openapi/test_document.py holds it to `api.app`'s router, both ways. Schemas:
api.openapi.schemas.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.openapi.schemas import CLASSIFICATION, SCHEMAS, UUID, Schema, ref

Operation = dict[str, Any]

PATH = "/openapi.json"

# -- parameters -----------------------------------------------------------------------------------


def param(where: str, name: str, description: str, schema: Schema | None = None) -> Schema:
    """A parameter `in` the path, the query or a header; path parameters are always required."""
    found: Schema = {"name": name, "in": where, "description": description}
    if where == "path":
        found["required"] = True
    found["schema"] = schema or {"type": "string"}
    return found


ID = param("path", "id", "The resource's id (a UUID; anything else is 404).")
EMAIL_ID = param(
    "path", "id", "The sent email's id.", {"type": "string", "pattern": "^[0-9A-Fa-f-]{32,36}$"}
)
ATTACHMENT_ID = param(
    "path", "attachment_id", "The attachment's id (its MIME part path, such as `2`, works too)."
)
EVENT_ID = param("path", "event_id", "The event's id: the `webhook-id` header it was sent with.")
SUPPRESSION_KEY = param("path", "id_or_email", "The suppression's id or email address.")
CONTACT_ID = param("path", "id", "The contact's id or email address.")
SENT_ATTACHMENT_ID = param("path", "attachment_id", "The attachment's id (a UUID).")
# What a signed download link (api.downloads) carries instead of an API key.
LINK = [
    param("query", "tenant", "The tenant the link was signed for.", UUID),
    param("query", "expires", "When the link stops working (Unix seconds).", {"type": "integer"}),
    param("query", "signature", "HMAC-SHA256 of the link under the server's secret."),
]
PAGE = [
    param(
        "query",
        "limit",
        "1 to 100 (default 20).",
        {"type": "integer", "minimum": 1, "maximum": 100},
    ),
    param("query", "after", "The id of an item of the list: the page after it.", UUID),
    param("query", "before", "The id of an item of the list: the page before it.", UUID),
]
# Events and their attempts page forward only, as Resend's SDK asks for them.
FORWARD_PAGE = PAGE[:2]
IDEMPOTENCY_KEY = param(
    "header",
    "Idempotency-Key",
    "Sends once per key (1 to 256 characters) for 24 hours; a repeat answers the first response.",
    {"type": "string", "minLength": 1, "maxLength": 256},
)

# -- responses ------------------------------------------------------------------------------------

JSON = "application/json"
ERROR_DESCRIPTIONS = {
    400: "Invalid request: the message says which field and why.",
    401: "Missing API key (or ingester token).",
    403: "Invalid API key, a resource the key may not use, or a bad or expired download link.",
    404: "No such resource for this key's tenant.",
    409: "The Idempotency-Key was used with another request, or is still in progress.",
    413: "The request body is too large.",
    422: "A field's value cannot be accepted: the message says which.",
    429: "Sending limit reached.",
    500: "An unexpected error (a bug: please report it).",
    503: "Storage (or AWS) out of reach: nothing was done; retry later.",
}
# What every authenticated route can answer; each operation adds its own.
COMMON_ERRORS = (400, 401, 403, 404, 422, 500, 503)


def answer(schema_name: str, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ref(schema_name)}}}


def responses(
    ok: dict[str, Any],
    *extra_errors: int,
    status: int = 200,
    errors: tuple[int, ...] = COMMON_ERRORS,
) -> dict[str, Any]:
    """The success answer and the error answers, each in Resend's error shape."""
    found: dict[str, Any] = {str(status): ok}
    for code in sorted({*errors, *extra_errors}):
        found[str(code)] = {
            "description": ERROR_DESCRIPTIONS[code],
            "content": {JSON: {"schema": ref("Error")}},
        }
    return found


def json_body(schema_name: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": ref(schema_name)}}}


def op(
    tag: str,
    summary: str,
    answers: dict[str, Any],
    *,
    params: list[Schema] | None = None,
    body: dict[str, Any] | None = None,
    security: list[dict[str, list[str]]] | None = None,
) -> Operation:
    operation: Operation = {"tags": [tag], "summary": summary, "responses": answers}
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = body
    if security is not None:
        operation["security"] = security  # instead of the API key: see api.auth.PUBLIC_PATHS
    return operation


def binary(media_type: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
    }


PUBLIC: list[dict[str, list[str]]] = []
# The ingesters' own token; without INGESTER_INBOUND_TOKEN (development only) none is asked for.
INGESTER: list[dict[str, list[str]]] = [{"ingesterToken": []}, {}]

# -- the operations -------------------------------------------------------------------------------

SEND = op(
    "Emails",
    "Send an email",
    responses(answer("EmailId"), 409, 413, 429),
    params=[IDEMPOTENCY_KEY],
    body=json_body("SendEmailRequest"),
)
BATCH = op(
    "Emails",
    "Send up to 100 emails (strict: all or none; permissive: the valid ones)",
    responses(answer("BatchResponse"), 409, 413, 429),
    params=[
        IDEMPOTENCY_KEY,
        param(
            "header",
            "x-batch-validation",
            "`strict` (default) or `permissive`.",
            {"enum": ["strict", "permissive"]},
        ),
    ],
    body={
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "array",
                    "items": ref("SendEmailRequest"),
                    "minItems": 1,
                    "maxItems": 100,
                }
            }
        },
    },
)
REPLY = op(
    "Emails",
    "Reply to a received email (Inbound's reply API; errors also carry `error`)",
    responses(answer("ReplyResponse"), 409, 413, 429),
    params=[ID, IDEMPOTENCY_KEY],
    body=json_body("ReplyRequest"),
)

PATHS: dict[str, dict[str, Operation]] = {
    "/healthz": {
        "get": op(
            "Operations",
            "Liveness, with the database's reachability",
            {"200": answer("Health"), "503": answer("Health", "The database is out of reach.")},
            security=PUBLIC,
        )
    },
    "/metrics": {
        "get": op(
            "Operations",
            "Prometheus metrics",
            {
                "200": {
                    "description": "The text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
            security=PUBLIC,
        )
    },
    PATH: {
        "get": op(
            "Operations",
            "This document",
            {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {JSON: {"schema": {"type": "object"}}},
                }
            },
            security=PUBLIC,
        )
    },
    "/emails": {
        "post": SEND,
        "get": op(
            "Emails", "List sent emails, newest first", responses(answer("EmailList")), params=PAGE
        ),
    },
    "/emails/batch": {"post": BATCH},
    "/emails/{id}": {
        "get": op("Emails", "Retrieve a sent email", responses(answer("Email")), params=[EMAIL_ID]),
        "patch": op(
            "Emails",
            "Reschedule a scheduled email",
            responses(answer("EmailObjectId"), 413),
            params=[EMAIL_ID],
            body=json_body("RescheduleRequest"),
        ),
    },
    "/emails/{id}/attachments": {
        "get": op(
            "Emails",
            "List a sent email's attachments",
            responses(answer("SentAttachmentList")),
            params=[EMAIL_ID],
        )
    },
    "/emails/{id}/attachments/{attachment_id}": {
        "get": op(
            "Emails",
            "Retrieve one sent attachment's metadata and signed download link",
            responses(answer("SentAttachment")),
            params=[EMAIL_ID, SENT_ATTACHMENT_ID],
        )
    },
    "/emails/{id}/attachments/{attachment_id}/content": {
        "get": op(
            "Emails",
            "Download one sent attachment's decoded bytes",
            responses(binary("*/*", "The bytes, with the attachment's own Content-Type.")),
            params=[EMAIL_ID, SENT_ATTACHMENT_ID],
        )
    },
    "/download/emails/{id}/attachments/{attachment_id}/content": {
        "get": op(
            "Downloads",
            "A sent attachment's bytes through its signed link (`download_url`)",
            responses(binary("*/*", "The bytes."), errors=(400, 403, 404, 500, 503)),
            params=[EMAIL_ID, SENT_ATTACHMENT_ID, *LINK],
            security=PUBLIC,
        )
    },
    "/download/emails/receiving/{id}/attachments/{attachment_id}/content": {
        "get": op(
            "Downloads",
            "A received attachment's bytes through its signed link (`download_url`)",
            responses(binary("*/*", "The bytes."), errors=(400, 403, 404, 500, 503)),
            params=[ID, ATTACHMENT_ID, *LINK],
            security=PUBLIC,
        )
    },
    "/download/emails/receiving/{id}/raw": {
        "get": op(
            "Downloads",
            "A received message's raw bytes through its signed link (`raw.download_url`)",
            responses(binary("message/rfc822", "The message."), errors=(400, 403, 404, 500, 503)),
            params=[ID, *LINK],
            security=PUBLIC,
        )
    },
    "/emails/{id}/cancel": {
        "post": op(
            "Emails",
            "Cancel a scheduled email",
            responses(answer("EmailObjectId")),
            params=[EMAIL_ID],
        )
    },
    "/emails/{id}/reply": {"post": REPLY},
    "/api/v2/emails/{id}/reply": {
        "post": {**REPLY, "summary": "The same reply, at Inbound's path"}
    },
    "/api/e2/emails/{id}/reply": {
        "post": op(
            "Emails",
            "The same reply, as Inbound's `inboundemail` SDK sends and reads it (the id: a "
            "received email's, or a thread's for its newest received message)",
            responses(answer("E2ReplyResponse"), 409, 413, 429),
            params=[ID, IDEMPOTENCY_KEY],
            body=json_body("E2ReplyRequest"),
        )
    },
    "/api/e2/emails/{id}": {
        "get": op(
            "Emails",
            "A received or sent email, as Inbound's `inboundemail` SDK reads it",
            responses(answer("E2Email")),
            params=[ID],
        )
    },
    "/api/v2/mail": {
        "post": op(
            "Emails",
            "Reply to a received email from the address it came to (`@inboundemail/sdk`)",
            responses(answer("MailReplyResponse"), 409, 413, 429),
            params=[IDEMPOTENCY_KEY],
            body=json_body("MailReplyRequest"),
        )
    },
    "/emails/receiving": {
        "get": op(
            "Receiving",
            "List received emails, newest first",
            responses(answer("ReceivedEmailList")),
            params=[
                *PAGE,
                param(
                    "query",
                    "reply_match_status",
                    "`matched` or `unmatched`.",
                    {"enum": ["matched", "unmatched"]},
                ),
                param(
                    "query",
                    "classification",
                    "Only mail of this kind: "
                    "`human`, `auto_reply`, `bounce`, `complaint` or `auto_generated`.",
                    CLASSIFICATION,
                ),
                param("query", "thread_id", "Only this thread's messages.", UUID),
                param("query", "recipient", "Only messages delivered to this address."),
                param("query", "from", "Only messages from this address."),
                param(
                    "query",
                    "received_after",
                    "ISO 8601 date-time.",
                    {"type": "string", "format": "date-time"},
                ),
                param(
                    "query",
                    "received_before",
                    "ISO 8601 date-time.",
                    {"type": "string", "format": "date-time"},
                ),
            ],
        )
    },
    "/emails/receiving/{id}": {
        "get": op(
            "Receiving",
            "Retrieve a received email",
            responses(answer("ReceivedEmail")),
            params=[ID],
        )
    },
    "/emails/receiving/{id}/attachments": {
        "get": op(
            "Receiving",
            "List a received email's attachments",
            responses(answer("ReceivedAttachmentList")),
            params=[ID],
        )
    },
    "/emails/receiving/{id}/attachments/{attachment_id}": {
        "get": op(
            "Receiving",
            "Retrieve one attachment's metadata and download link",
            responses(answer("ReceivedAttachment")),
            params=[ID, ATTACHMENT_ID],
        )
    },
    "/emails/receiving/{id}/attachments/{attachment_id}/content": {
        "get": op(
            "Receiving",
            "Download one attachment's decoded bytes",
            responses(binary("*/*", "The bytes, with the part's own Content-Type.")),
            params=[ID, ATTACHMENT_ID],
        )
    },
    "/emails/receiving/{id}/raw": {
        "get": op(
            "Receiving",
            "Download the message as received (.eml)",
            responses(binary("message/rfc822", "The message, our trace fields on top.")),
            params=[ID],
        )
    },
    "/threads": {
        "get": op("Threads", "List conversations", responses(answer("ThreadList")), params=PAGE)
    },
    "/threads/{id}": {
        "get": op("Threads", "Retrieve a conversation", responses(answer("Thread")), params=[ID])
    },
    "/contacts": {
        "post": op(
            "Contacts",
            "Create a contact",
            responses(answer("ContactObjectId"), 413, status=201),
            body=json_body("CreateContactRequest"),
        ),
        "get": op("Contacts", "List contacts", responses(answer("ContactList")), params=PAGE),
    },
    "/contacts/{id}": {
        "get": op(
            "Contacts",
            "Retrieve a contact by id or email address",
            responses(answer("Contact")),
            params=[CONTACT_ID],
        ),
        "patch": op(
            "Contacts",
            "Update a contact by id or email address",
            responses(answer("ContactObjectId"), 413),
            params=[CONTACT_ID],
            body=json_body("UpdateContactRequest"),
        ),
        "delete": op(
            "Contacts",
            "Delete a contact by id or email address",
            responses(answer("DeletedContact")),
            params=[CONTACT_ID],
        ),
    },
    "/domains": {
        "post": op(
            "Domains",
            "Add a domain (with a new DKIM key)",
            responses(answer("Domain"), 413, status=201),
            body=json_body("CreateDomainRequest"),
        ),
        "get": op("Domains", "List domains", responses(answer("DomainList")), params=PAGE),
    },
    "/domains/{id}": {
        "get": op(
            "Domains",
            "Retrieve a domain with its DNS records",
            responses(answer("Domain")),
            params=[ID],
        ),
        "patch": op(
            "Domains",
            "Change a domain's receiving and reply domain",
            responses(answer("Domain"), 413),
            params=[ID],
            body=json_body("UpdateDomainRequest"),
        ),
        "delete": op("Domains", "Delete a domain", responses(answer("DeletedDomain")), params=[ID]),
    },
    "/domains/{id}/verify": {
        "post": op(
            "Domains",
            "Check the domain's DNS records now",
            responses(answer("Domain")),
            params=[ID],
        )
    },
    "/api-keys": {
        "post": op(
            "API keys",
            "Create an API key (its token is shown once)",
            responses(answer("NewApiKey"), 413, status=201),
            body=json_body("CreateApiKeyRequest"),
        ),
        "get": op("API keys", "List API keys", responses(answer("ApiKeyList")), params=PAGE),
    },
    "/api-keys/{id}": {
        "delete": op(
            "API keys", "Delete an API key", responses(answer("DeletedApiKey")), params=[ID]
        )
    },
    "/webhooks": {
        "post": op(
            "Webhooks",
            "Create a webhook (its signing secret is in the answer)",
            responses(answer("WebhookSecret"), 413, status=201),
            body=json_body("CreateWebhookRequest"),
        ),
        "get": op("Webhooks", "List webhooks", responses(answer("WebhookList")), params=PAGE),
    },
    "/webhooks/{id}": {
        "get": op("Webhooks", "Retrieve a webhook", responses(answer("Webhook")), params=[ID]),
        "patch": op(
            "Webhooks",
            "Change a webhook's endpoint, events or status",
            responses(answer("WebhookObjectId"), 413),
            params=[ID],
            body=json_body("UpdateWebhookRequest"),
        ),
        "delete": op(
            "Webhooks", "Delete a webhook", responses(answer("DeletedWebhook")), params=[ID]
        ),
    },
    "/webhooks/{id}/signing-secret/rotate": {
        "post": op(
            "Webhooks",
            "Rotate the signing secret (the old one also signs for a grace period)",
            responses(answer("WebhookSecret")),
            params=[ID],
        )
    },
    "/webhooks/{id}/events": {
        "get": op(
            "Webhooks",
            "List the events sent to a webhook, newest first",
            responses(answer("WebhookEventList")),
            params=[ID, *FORWARD_PAGE],
        )
    },
    "/webhooks/{id}/events/{event_id}": {
        "get": op(
            "Webhooks",
            "Retrieve one event with its payload",
            responses(answer("WebhookEvent")),
            params=[ID, EVENT_ID],
        )
    },
    "/webhooks/{id}/events/{event_id}/replay": {
        "post": op(
            "Webhooks",
            "Send an event again",
            responses(answer("WebhookEventObjectId")),
            params=[ID, EVENT_ID],
        )
    },
    "/webhooks/{id}/events/{event_id}/attempts": {
        "get": op(
            "Webhooks",
            "List the delivery attempts of an event",
            responses(answer("WebhookAttemptList")),
            params=[ID, EVENT_ID, *FORWARD_PAGE],
        )
    },
    "/suppressions": {
        "post": op(
            "Suppressions",
            "Add an address to the suppression list",
            responses(answer("SuppressionObjectId"), 413, status=201),
            body=json_body("CreateSuppressionRequest"),
        ),
        "get": op(
            "Suppressions",
            "List suppressed addresses, newest first",
            responses(answer("SuppressionList")),
            params=[
                *PAGE,
                param(
                    "query",
                    "origin",
                    "`bounce`, `complaint` or `manual`.",
                    {"enum": ["bounce", "complaint", "manual"]},
                ),
            ],
        ),
    },
    "/suppressions/batch/add": {
        "post": op(
            "Suppressions",
            "Add up to 100 addresses",
            responses(answer("AddedSuppressions"), 413, status=201),
            body=json_body("AddSuppressionsRequest"),
        )
    },
    "/suppressions/batch/remove": {
        "post": op(
            "Suppressions",
            "Remove up to 100 suppressions, by address or by id",
            responses(answer("RemovedSuppressions"), 413),
            body=json_body("RemoveSuppressionsRequest"),
        )
    },
    "/suppressions/{id_or_email}": {
        "get": op(
            "Suppressions",
            "Retrieve a suppression by id or address",
            responses(answer("Suppression")),
            params=[SUPPRESSION_KEY],
        ),
        "delete": op(
            "Suppressions",
            "Remove a suppression by id or address",
            responses(answer("DeletedSuppression")),
            params=[SUPPRESSION_KEY],
        ),
    },
    "/events/inbound": {
        "post": op(
            "Ingesters",
            "Hand over a received message (raw MIME, or JSON) with its envelope recipients",
            responses(
                answer("InboundEventResponse", "Stored (or a duplicate event)."), 413, status=202
            ),
            params=[
                param(
                    "header",
                    "X-OpenSend-Recipients",
                    "Raw form: envelope recipients, comma-separated.",
                ),
                param(
                    "header",
                    "X-OpenSend-Event-Id",
                    "Raw form: the provider's event id (deduplicates).",
                ),
                param("header", "X-OpenSend-Mail-From", "Raw form: the reverse-path."),
                param("query", "recipient", "Raw form: an envelope recipient."),
                param("query", "recipients", "Raw form: envelope recipients, comma-separated."),
                param("query", "event_id", "Raw form: the provider's event id."),
                param("query", "mail_from", "Raw form: the reverse-path."),
            ],
            body={
                "required": True,
                "content": {
                    JSON: {"schema": ref("InboundEvent")},
                    "message/rfc822": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            security=INGESTER,
        )
    },
    "/events/inbound/ses-s3": {
        "post": op(
            "Ingesters",
            "Amazon SNS: SES receipt notifications (mail stored in S3) and subscription messages",
            responses(answer("SnsResponse"), 413, status=200)
            | {"202": answer("InboundEventResponse", "The SES notification's message was stored.")},
            params=[param("header", "x-amz-sns-message-type", "SNS's message type.")],
            body={
                "required": True,
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    JSON: {"schema": {"type": "object", "description": "An Amazon SNS message."}},
                },
            },
            security=INGESTER,
        )
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "OpenSend MTA",
        "version": "1",
        "description": "A Resend-compatible sending API, received mail, threads and contacts, "
        "webhooks, the suppression list, Inbound's reply endpoint and the ingesters. "
        "Errors: `{statusCode, name, message}`.",
    },
    "security": [{"bearerAuth": []}],
    "paths": PATHS,
    "components": {
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API key."},
            "ingesterToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "INGESTER_INBOUND_TOKEN (also as HTTP Basic's password).",
            },
        },
        "schemas": SCHEMAS,
    },
}


async def serve(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)
