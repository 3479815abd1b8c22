"""The stripped text and HTML of one received message, from the bodies the MX parsed.

What the API shows as `stripped_text` and `stripped_html`; the original bodies stay as they are.
`strip_message` reads the bodies with the MX's own parser (policy/inbound/message.py), so the
stripped text is always of the body the API shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.inbound.message import parse_message
from policy.stripping.html import strip_html
from policy.stripping.text import strip_text


@dataclass(frozen=True, slots=True)
class StrippedBodies:
    text: str | None  # None: the message has neither a text nor an HTML body
    html: str | None  # None: the message has no HTML body


def strip_bodies(text_body: str | None, html_body: str | None) -> StrippedBodies:
    """The text comes from the text body, or from the HTML one when there is no text body."""
    html: str | None = None
    html_text: str | None = None
    if html_body is not None:
        html, html_text = strip_html(html_body)
    if text_body is not None:
        return StrippedBodies(strip_text(text_body), html)
    return StrippedBodies(html_text, html)


def strip_message(raw: bytes) -> StrippedBodies:
    """The stripped bodies of a message as received."""
    parsed = parse_message(raw)
    return strip_bodies(parsed.text, parsed.html)
