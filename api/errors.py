"""The one catalogue of API errors, in Resend's shape: {"statusCode", "name", "message"}.

Handlers raise `ApiError`; the middleware in `api.app` renders it. Every response, success or
not, is JSON. Storage outages are 503 (retry later), never a 500 that reads like our bug.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorKind:
    status: int
    name: str
    default_message: str


# Resend's documented errors (resend.com/docs/api-reference/errors), by name and status.
INVALID_IDEMPOTENCY_KEY = ErrorKind(
    400, "invalid_idempotency_key", "The key must be between 1-256 chars."
)
VALIDATION_ERROR = ErrorKind(
    400, "validation_error", "We found an error with one or more fields in the request."
)
# U+0000 in a JSON string, a path or a query: PostgreSQL's text cannot store it, and no header or
# address may hold it (RFC 5322 section 2.2, RFC 5321 section 4.1.2). The message names the field.
NUL_CHARACTER = ErrorKind(
    400, "validation_error", "A field contains a NUL character (U+0000), which cannot be stored."
)
MISSING_API_KEY = ErrorKind(401, "missing_api_key", "Missing API key in the authorization header.")
RESTRICTED_API_KEY = ErrorKind(
    401, "restricted_api_key", "This API key is restricted to only send emails."
)
INVALID_API_KEY = ErrorKind(403, "invalid_api_key", "API key is invalid.")
FORBIDDEN = ErrorKind(403, "validation_error", "You do not have access to this resource.")
NOT_FOUND = ErrorKind(404, "not_found", "The requested resource was not found.")
# A signed download link (api.downloads) that is tampered with, expired or used for another path.
INVALID_DOWNLOAD_LINK = ErrorKind(
    403,
    "invalid_download_link",
    "This download link is invalid or has expired: fetch the email again for a new link.",
)
METHOD_NOT_ALLOWED = ErrorKind(
    405, "method_not_allowed", "Method is not allowed for the requested path."
)
INVALID_IDEMPOTENT_REQUEST = ErrorKind(
    409, "invalid_idempotent_request", "Same idempotency key used with a different request payload."
)
CONCURRENT_IDEMPOTENT_REQUESTS = ErrorKind(
    409,
    "concurrent_idempotent_requests",
    "Same idempotency key used while original request is still in progress.",
)
PAYLOAD_TOO_LARGE = ErrorKind(413, "validation_error", "The request body is too large.")
INVALID_ATTACHMENT = ErrorKind(
    422, "invalid_attachment", "Attachment must have either a content or path."
)
INVALID_FROM_ADDRESS = ErrorKind(422, "invalid_from_address", "Invalid `from` field.")
INVALID_ACCESS = ErrorKind(
    422, "invalid_access", 'Access must be "full_access" | "sending_access".'
)
INVALID_PARAMETER = ErrorKind(422, "invalid_parameter", "The parameter must be a valid UUID.")
MISSING_REQUIRED_FIELD = ErrorKind(
    422, "missing_required_field", "The request body is missing one or more required fields."
)
RATE_LIMIT_EXCEEDED = ErrorKind(
    429, "rate_limit_exceeded", "Too many requests. Please limit the number of requests per second."
)
DAILY_QUOTA_EXCEEDED = ErrorKind(
    429, "daily_quota_exceeded", "You have reached your daily email sending quota."
)
# The plan's monthly sending limit (`opensend tenant set-limit`) on POST /emails and its batch,
# as the reply endpoint (REPLY_LIMIT_REACHED) and the submission ports (450 4.7.1) apply it.
MONTHLY_QUOTA_EXCEEDED = ErrorKind(
    429, "monthly_quota_exceeded", "You have reached your monthly email sending quota."
)
APPLICATION_ERROR = ErrorKind(500, "application_error", "An unexpected error occurred.")
# Not Resend's: the database is out of reach, so the request did nothing; the client retries.
SERVICE_UNAVAILABLE = ErrorKind(
    503, "application_error", "Temporarily unable to process the request; try again shortly."
)

# POST /emails/{id}/reply, in the texts of Inbound's reply API (its error table), with Resend's
# names beside them; api.sending.replies adds Inbound's `"error": <message>` to every body.
# Inbound's 500 "Email service not configured" row has no counterpart: there is no outside provider
# here.
REPLY_INVALID_EMAIL_ID = ErrorKind(400, "validation_error", "Valid email ID is required")
REPLY_FROM_REQUIRED = ErrorKind(400, "validation_error", "From address is required")
REPLY_CONTENT_REQUIRED = ErrorKind(
    400, "validation_error", "Either html or text content must be provided"
)
REPLY_NO_RECIPIENT = ErrorKind(400, "validation_error", "Cannot determine recipient email address")
REPLY_INVALID_EMAIL_FORMAT = ErrorKind(400, "validation_error", "Invalid email format: ")
REPLY_INVALID_JSON = ErrorKind(400, "validation_error", "Invalid JSON in request body")
REPLY_UNAUTHORIZED = ErrorKind(401, "unauthorized", "Unauthorized")
REPLY_FORBIDDEN_DOMAIN = ErrorKind(
    403, "validation_error", "You don't have permission to send from domain: "
)
REPLY_NOT_FOUND = ErrorKind(404, "not_found", "Email not found")
REPLY_LIMIT_REACHED = ErrorKind(
    429,
    "monthly_quota_exceeded",
    "Email sending limit reached. Please upgrade your plan to send more emails.",
)
REPLY_INTERNAL_ERROR = ErrorKind(500, "application_error", "Internal server error")
# Inbound answers 500 here; a storage outage is temporary, so it is 503 (retry later), as for
# every other route (see SERVICE_UNAVAILABLE), with Inbound's text.
REPLY_FAILED = ErrorKind(503, "application_error", "Failed to send reply. Please try again later.")

# The ingester endpoints (POST /events/inbound, .../ses-s3). A provider retries on 5xx only, so
# every refusal that a retry cannot cure is a 4xx that says why.
INGESTER_TOKEN_MISSING = ErrorKind(
    401,
    "missing_ingester_token",
    "Missing ingester token: send INGESTER_INBOUND_TOKEN as a bearer token.",
)
INGESTER_TOKEN_INVALID = ErrorKind(403, "invalid_ingester_token", "Ingester token is invalid.")
INGEST_RECIPIENTS_REFUSED = ErrorKind(
    422, "recipients_refused", "No recipient is routed to a tenant here."
)
INGEST_TOO_MANY_RECIPIENTS = ErrorKind(
    422, "too_many_recipients", "Too many recipients in this event."
)
INGEST_LOOP = ErrorKind(422, "mail_loop", "Too many Received header fields: probable mail loop.")

# POST /events/inbound/ses-s3. SNS retries an HTTPS delivery only after a 5xx or a timeout, and
# any 4xx ends it: a 4xx answers only what no retry can mend; S3 or SNS out of reach is a 503.
SNS_INVALID_MESSAGE = ErrorKind(
    400, "invalid_sns_message", "The request body is not an Amazon SNS message this server takes."
)
SNS_UNTRUSTED = ErrorKind(
    403, "untrusted_sns_message", "The SNS message could not be authenticated."
)
SES_NOTIFICATION_UNUSABLE = ErrorKind(
    422, "unusable_ses_notification", "The SES notification does not name a stored email."
)
SES_BUCKET_NOT_ALLOWED = ErrorKind(
    403, "s3_bucket_not_allowed", "The S3 bucket named in the SES notification is not read here."
)
SES_OBJECT_MISSING = ErrorKind(
    422, "s3_object_missing", "The S3 object named in the SES notification does not exist."
)
SNS_CONFIRMATION_REFUSED = ErrorKind(
    422, "sns_confirmation_refused", "Amazon SNS refused the subscription confirmation."
)
AWS_UNAVAILABLE = ErrorKind(
    503, "application_error", "Amazon S3 or SNS could not be reached; try again shortly."
)

CATALOGUE: dict[str, ErrorKind] = {
    name: value for name, value in globals().items() if isinstance(value, ErrorKind)
}


class ApiError(Exception):
    def __init__(
        self,
        kind: ErrorKind,
        message: str | None = None,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or kind.default_message)
        self.kind = kind
        self.message = message or kind.default_message
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "statusCode": self.kind.status,
            "name": self.kind.name,
            "message": self.message,
            **self.extra,
        }
