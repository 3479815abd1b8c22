"""Amazon SES email-receiving notifications (the `Message` of an SNS notification), parsed.

A receipt rule with an S3 action writes the raw message to a bucket and publishes where it put
it: `receipt.action` names the bucket and key, `receipt.recipients` the envelope recipients the
rule matched. Shapes from the SES developer guide, "Notification contents for Amazon SES email
receiving".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

RECEIVED = "Received"


class NotificationError(ValueError):
    """The notification is not one this endpoint can act on; the message says why."""


@dataclass(frozen=True, slots=True)
class S3Receipt:
    """One received email that SES wrote to S3, for the recipients one receipt rule matched."""

    message_id: str  # SES's id of the received email; also the last part of the object key
    sender: str  # the envelope sender (MAIL FROM), "" for a null sender
    recipients: tuple[str, ...]
    bucket: str
    key: str

    @property
    def event_id(self) -> str:
        """The id under which this delivery is stored once, whatever SNS repeats.

        SES's message id names the email, and stays the same when SNS retries, when the email
        reaches us through two topics, or when a rule's notification is published twice. It is
        not enough on its own: an email whose recipients match two receipt rules is announced
        once per rule, with the same message id and each rule's own recipients, and both must
        be stored. So the recipients take part, as a digest that keeps the id short.
        """
        listed = "\n".join(sorted(r.lower() for r in self.recipients)).encode()
        return f"{self.message_id}/{hashlib.sha256(listed).hexdigest()[:16]}"


@dataclass(frozen=True, slots=True)
class OtherNotification:
    """A notification that carries no email to store, e.g. SES's set-up test notification."""

    notification_type: str


def parse_receipt(message: str) -> S3Receipt | OtherNotification:
    """The SNS `Message` of an SES receipt notification; NotificationError when it is unusable."""
    try:
        document = json.loads(message)
    except json.JSONDecodeError:
        raise NotificationError("The SNS Message is not an SES notification (not JSON).") from None
    if not isinstance(document, dict):
        raise NotificationError("The SNS Message is not an SES notification (not an object).")
    kind = document.get("notificationType")
    if not isinstance(kind, str):
        raise NotificationError("The SES notification has no notificationType.")
    if kind != RECEIVED:
        return OtherNotification(kind)
    mail = _object(document, "mail")
    receipt = _object(document, "receipt")
    action = _object(receipt, "action", "receipt.action")
    action_type = _text(action, "type", "receipt.action.type")
    if action_type != "S3":
        raise NotificationError(
            f"The receipt rule's action is {action_type}; this endpoint takes S3 actions, whose "
            "notification names the stored message."
        )
    recipients = receipt.get("recipients")
    if (
        not isinstance(recipients, list)
        or not recipients
        or not all(isinstance(r, str) and r for r in recipients)
    ):
        raise NotificationError("receipt.recipients must be a non-empty list of addresses.")
    source = mail.get("source", "")
    return S3Receipt(
        message_id=_text(mail, "messageId", "mail.messageId"),
        sender=source if isinstance(source, str) else "",
        recipients=tuple(recipients),
        bucket=_text(action, "bucketName", "receipt.action.bucketName"),
        key=_text(action, "objectKey", "receipt.action.objectKey"),
    )


def _object(document: dict[str, Any], name: str, path: str | None = None) -> dict[str, Any]:
    value = document.get(name)
    if not isinstance(value, dict):
        raise NotificationError(f"The SES notification has no {path or name} object.")
    return value


def _text(document: dict[str, Any], name: str, path: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise NotificationError(f"The SES notification has no {path}.")
    return value
