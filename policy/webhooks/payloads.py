"""Webhook payloads in Resend's shapes (resend/webhooks/_webhook_event.py), from the snapshot
the outbox took at the change (storage/migrations/0013_webhooks.sql), capped in size. domain.*
events are stored already shaped (policy.domains.public: the domain as GET /domains/{id} shows
it) and go out as stored.

email.received adds what makes this server worth using: the reply match (`reply_match_status`,
`reply_to_email_id`, `thread_id`, `contact_id`), the evidence that matched (`matched_by`) and why
a token did not hold (`token_failure`, `token_failure_source`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from policy.inbound.attachments import attachment_id

# A bounce's remote answer (RFC 3463 class 5) in Resend's words for its `bounce` object.
_BOUNCE_TYPE = "Permanent"


def _message_id(value: Any) -> str:
    """In angle brackets, as the field is written (RFC 5322 section 3.6.4) and Resend sends it;
    "" for a message without one (the SDK types it a string, as the receiving API answers)."""
    if isinstance(value, str) and value and not value.startswith("<"):
        return f"<{value}>"
    return value if isinstance(value, str) else ""


def _tags(value: Any) -> dict[str, str]:
    if isinstance(value, list):
        return {
            # A tag may have no value (Resend's Tag allows it): "" then, never "None".
            str(tag.get("name")): "" if tag.get("value") is None else str(tag.get("value"))
            for tag in value
            if isinstance(tag, Mapping)
        }
    return {}


def _email(kind: str, snap: Mapping[str, Any]) -> dict[str, Any]:
    event: Mapping[str, Any] = snap.get("event") or {}
    recipient = snap.get("recipient")
    data: dict[str, Any] = {
        "email_id": snap.get("email_id"),
        "created_at": snap.get("created_at"),
        "from": snap.get("from"),
        # Resend: "the impacted recipients": the one a per-recipient event is about.
        "to": [recipient] if recipient else list(snap.get("to") or []),
        "subject": snap.get("subject") or "",
        "message_id": _message_id(snap.get("message_id")),
        "tags": _tags(snap.get("tags")),
        "thread_id": snap.get("thread_id"),
    }
    if kind == "email.bounced":
        code, enhanced, response = (
            event.get("code"),
            event.get("enhanced_code"),
            event.get("response"),
        )
        data["bounce"] = {
            "type": _BOUNCE_TYPE,
            "subType": "Expired" if event.get("expired") else "General",
            "message": response or "",
            "diagnosticCode": " ".join(str(p) for p in (code, enhanced, response) if p),
        }
    elif kind == "email.delivery_delayed":
        data["delay"] = {
            "message": event.get("response") or "",
            "retry_in_seconds": event.get("retry_in_seconds"),
        }
    elif kind == "email.failed":
        data["failed"] = {"reason": str(event.get("reason") or "failed")}
    elif kind == "email.suppressed":
        data["suppressed"] = {
            "type": str(event.get("type") or ""),
            "message": str(event.get("message") or ""),
        }
    return data


def _from(snap: Mapping[str, Any]) -> str:
    address, name = snap.get("from_address") or "", snap.get("from_name")
    return f"{name} <{address}>" if name and address else address


def _received(_kind: str, snap: Mapping[str, Any]) -> dict[str, Any]:
    to = list(snap.get("to") or [])
    cc = list(snap.get("cc") or [])
    shown = {a.lower() for a in to + cc}
    rcpt = list(snap.get("rcpt_to") or [])
    return {
        "email_id": snap.get("email_id"),
        "created_at": snap.get("created_at"),
        "from": _from(snap),
        "to": to,
        "cc": cc,
        # Envelope recipients of this tenant that no header names: blind copies.
        "bcc": [a for a in rcpt if a.lower() not in shown],
        "received_for": rcpt,
        "reply_to": list(snap.get("reply_to") or []),
        "message_id": _message_id(snap.get("message_id")),
        "subject": snap.get("subject") or "",
        "attachments": [
            _attachment(snap.get("email_id"), i, a)
            for i, a in enumerate(snap.get("attachments") or [])
        ],
        "reply_match_status": snap.get("reply_match_status"),
        "reply_to_email_id": snap.get("reply_to_email_id"),
        "thread_id": snap.get("thread_id"),
        "contact_id": snap.get("contact_id"),
        # policy.inbound.matching.MatchSource: which evidence matched.
        "matched_by": snap.get("match_source"),
        "token_failure": snap.get("token_failure"),
        "token_failure_source": snap.get("token_failure_source"),
        "in_reply_to": snap.get("in_reply_to"),
        "references": snap.get("references"),
        # policy.classify: human, auto_reply, bounce, complaint or auto_generated, and the rule.
        "classification": snap.get("classification", "human"),
        "classification_reason": snap.get("classification_reason"),
    }


def _attachment(email_id: Any, index: int, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata only (the content is GET /emails/receiving/{id}/attachments/{id}/content); the
    id is the one the receiving API uses."""
    return {
        "id": str(attachment_id(UUID(str(email_id)), entry, index)),
        "filename": entry.get("filename"),
        "content_type": entry.get("content_type"),
        "content_disposition": entry.get("content_disposition"),
        "content_id": entry.get("content_id"),
        "size": entry.get("size"),
    }


def _domain(_kind: str, snap: Mapping[str, Any]) -> dict[str, Any]:
    """As stored, since migration 0023. An event written before it holds the trigger's snapshot
    of the row (with `receiving_enabled`, which the stored shape does not have): it goes out in
    the shape it was written for, so an upgrade changes no event already in the outbox."""
    if "receiving_enabled" not in snap:
        return dict(snap)
    return {
        "id": snap.get("id"),
        "name": snap.get("name"),
        "status": snap.get("status"),
        "created_at": snap.get("created_at"),
        "region": snap.get("region"),
        "records": [
            {
                k: r.get(k)
                for k in ("record", "name", "type", "ttl", "status", "value", "priority")
                if r.get(k) is not None
            }
            for r in snap.get("records") or []
            if isinstance(r, Mapping)
        ],
    }


def _contact(_kind: str, snap: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": snap.get("id"),
        # There are no audiences or segments here (flat contacts); the keys are kept for shape.
        "audience_id": "",
        "segment_ids": [],
        "created_at": snap.get("created_at"),
        "updated_at": snap.get("updated_at"),
        "email": snap.get("email"),
        "unsubscribed": bool(snap.get("unsubscribed")),
        "first_name": snap.get("first_name"),
        "last_name": snap.get("last_name"),
    }


Shaper = Callable[[str, Mapping[str, Any]], dict[str, Any]]
# Which shape each event type has, by the type's family (first dotted part, or the full type).
SHAPES: dict[str, Shaper] = {
    "email.received": _received,
    "email": _email,
    "domain": _domain,
    "contact": _contact,
}


def shape(kind: str, created_at: datetime, snapshot: Mapping[str, Any]) -> dict[str, Any]:
    shaper = SHAPES.get(kind) or SHAPES.get(kind.split(".", 1)[0])
    data = shaper(kind, snapshot) if shaper else dict(snapshot)
    return {"type": kind, "created_at": created_at.isoformat(), "data": data}


def encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# What an oversized payload keeps: enough to fetch the rest through the API.
_KEPT_WHEN_TRUNCATED = ("email_id", "id", "created_at", "thread_id", "reply_match_status")


def body(kind: str, created_at: datetime, snapshot: Mapping[str, Any], max_bytes: int) -> bytes:
    """The JSON body, at most `max_bytes`: an oversized one loses its attachment list first,
    then everything but its ids (`"truncated": true` says so)."""
    payload = shape(kind, created_at, snapshot)
    encoded = encode(payload)
    if len(encoded) <= max_bytes:
        return encoded
    data = payload["data"]
    if "attachments" in data:
        data = {**data, "attachments": [], "truncated": True}
        encoded = encode({**payload, "data": data})
        if len(encoded) <= max_bytes:
            return encoded
    kept = {k: data[k] for k in _KEPT_WHEN_TRUNCATED if k in data}
    return encode({**payload, "data": {**kept, "truncated": True}})
