"""The dashboard's search syntax: `to:`, `from:`, `subject:`, `status:`, `domain:`, `tag:`,
`after:`/`before:` (YYYY-MM-DD, UTC), `has:reply` and free words; values may be quoted."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

OPERATORS = ("to", "from", "subject", "status", "domain", "tag", "after", "before")


@dataclass(frozen=True, slots=True)
class SearchTerms:
    to: str | None = None
    sender: str | None = None
    subject: str | None = None
    status: str | None = None
    has_reply: bool = False
    words: str | None = None
    domain: str | None = None
    tag: str | None = None
    sent_after: datetime | None = None  # inclusive: from the start of that day
    sent_before: datetime | None = None  # exclusive: up to the start of that day


def _day(value: str | None) -> datetime | None:
    """The start of that UTC day; None for no value or one that is not YYYY-MM-DD."""
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(), UTC)
    except ValueError:
        return None


def parse_search(text: str) -> SearchTerms:
    try:
        parts = shlex.split(text)
    except ValueError:  # an unbalanced quote: read it as plain words
        parts = text.split()
    values: dict[str, str] = {}
    words: list[str] = []
    has_reply = False
    for part in parts:
        name, colon, value = part.partition(":")
        name = name.lower()
        if colon and name in OPERATORS and value:
            values[name] = value
        elif colon and name == "has" and value.lower() == "reply":
            has_reply = True
        else:
            words.append(part)
    return SearchTerms(
        to=values.get("to"),
        sender=values.get("from"),
        subject=values.get("subject"),
        status=values.get("status", "").lower() or None,
        has_reply=has_reply,
        words=" ".join(words) or None,
        domain=values.get("domain", "").lower() or None,
        tag=values.get("tag"),
        sent_after=_day(values.get("after")),
        # "before:2026-12-07" reads as "up to that day, not including it".
        sent_before=_day(values.get("before")),
    )
