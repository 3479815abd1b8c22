"""Text that PostgreSQL can store, from what a message's parser returned.

Shared by the parsing of received mail and the reading of bounce reports; imports nothing of ours.
"""

from __future__ import annotations


def clean_text(value: str) -> str:
    """Text PostgreSQL can store: undecodable bytes become U+FFFD, NUL is dropped."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: bytes the parser could not decode
            raw = value.encode("utf-8", "surrogateescape") if _only_escapes(value) else None
            value = (
                raw.decode("utf-8", "replace")
                if raw is not None
                else value.encode("utf-8", "replace").decode("utf-8")
            )
    return value.replace("\x00", "") if "\x00" in value else value


def _only_escapes(value: str) -> bool:
    """True when every surrogate is one of surrogateescape's (U+DC80 to U+DCFF)."""
    return all(not "\ud800" <= c <= "\udfff" or "\udc80" <= c <= "\udcff" for c in value)
