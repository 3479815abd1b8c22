"""Webhook event types: every type a tenant may subscribe to, and the check of a subscription.

The list is the Resend SDK's `WebhookEvent` (resend/webhooks/_webhook.py), so code written for
Resend subscribes unchanged; some types (opens, clicks, topics, inboxes) are never emitted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum


class EmailEvent(StrEnum):
    """Email events recorded in `email_events`; each one becomes a webhook event of its name.
    The automatic-mail work reports suppressions and complaints with SUPPRESSED and COMPLAINED
    (storage.webhooks.events.record_email_event)."""

    SENT = "email.sent"
    SCHEDULED = "email.scheduled"
    DELIVERED = "email.delivered"
    DELIVERY_DELAYED = "email.delivery_delayed"
    BOUNCED = "email.bounced"
    FAILED = "email.failed"
    SUPPRESSED = "email.suppressed"
    COMPLAINED = "email.complained"


EVENT_TYPES: tuple[str, ...] = (
    "email.sent",
    "email.scheduled",
    "email.delivered",
    "email.delivery_delayed",
    "email.complained",
    "email.bounced",
    "email.opened",
    "email.clicked",
    "email.received",
    "email.failed",
    "email.suppressed",
    "contact.created",
    "contact.updated",
    "contact.deleted",
    "contact.topics.updated",
    "domain.created",
    "domain.updated",
    "domain.deleted",
    "suppression.added",
    "suppression.removed",
    "topic.created",
    "topic.updated",
    "topic.deleted",
    "inbox.created",
    "inbox.updated",
    "inbox.deleted",
    "inbox.thread.created",
    "inbox.email.received",
    "inbox.email.sent",
    "inbox.thread.folder.updated",
    "inbox.thread.assigned",
    "inbox.thread.unassigned",
    "inbox.thread.labels.updated",
    "inbox.draft.created",
    "inbox.draft.updated",
    "inbox.draft.sent",
    "inbox.draft.deleted",
)
_KNOWN = frozenset(EVENT_TYPES)
MAX_EVENTS = len(EVENT_TYPES)


class InvalidEvents(ValueError):
    """A subscription that cannot be stored; the message names what is wrong."""


def subscription(value: object) -> list[str]:
    """The event types of a subscription, each once in the order given, or InvalidEvents."""
    if not isinstance(value, list) or not value:
        raise InvalidEvents("The `events` field must be a non-empty array of event types.")
    if not all(isinstance(item, str) for item in value):
        raise InvalidEvents("The `events` field must be an array of strings.")
    unknown = [item for item in value if item not in _KNOWN]
    if unknown:
        raise InvalidEvents(_unknown_message(unknown))
    return list(dict.fromkeys(value))


def _unknown_message(unknown: Sequence[str]) -> str:
    named = ", ".join(f"`{item[:64]}`" for item in unknown[:5])
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    return f"Unknown event type {named}{more}. Valid types: {', '.join(EVENT_TYPES)}."
