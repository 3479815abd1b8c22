"""The dashboard's search syntax: `to:`, `from:`, `subject:`, `status:`, `has:reply`, and free
words; an operator's value may be quoted ("subject:\"order 42\"")."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

OPERATORS = ("to", "from", "subject", "status")


@dataclass(frozen=True, slots=True)
class SearchTerms:
    to: str | None = None
    sender: str | None = None
    subject: str | None = None
    status: str | None = None
    has_reply: bool = False
    words: str | None = None


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
    )
