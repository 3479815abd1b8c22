"""One attachment out of a stored raw message, and a Content-Disposition that is safe to send.

Attachments are not stored apart: the MX records each one's MIME part path ("2", "1.2"), numbered
as policy/inbound/message.py walks the tree, and the bytes are decoded again from the raw message
here.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from urllib.parse import quote


@dataclass(frozen=True, slots=True)
class Part:
    payload: bytes
    content_type: str


# A filename longer than this is cut: file systems stop at 255 bytes.
MAX_FILENAME = 200

# RFC 2045 section 5.1 tokens. A part can declare anything; only a clean type becomes a header.
_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_CHARSET = re.compile(r"[A-Za-z0-9!#$&^_.+:-]+")


def find_part(raw: bytes, path: str) -> Part | None:
    """The decoded leaf at `path`, or None. Never raises: the message may be malformed.

    The numbering mirrors policy.inbound.message._walk: children of a multipart (or of a
    message/rfc822 part) count from 1; a message that is not multipart is its own part "1".
    """
    try:
        return _find_in(message_from_bytes(raw, policy=compat32), path)
    except (ValueError, RecursionError, LookupError, UnicodeError, AssertionError):
        return None


def _find_in(node: Message, path: str) -> Part | None:
    """find_part in a message parsed already."""
    try:
        steps = [int(step) for step in path.split(".")]
        if not node.is_multipart():
            return _leaf(node) if steps == [1] else None
        for step in steps:
            payload = node.get_payload() if node.is_multipart() else None
            if not isinstance(payload, list):
                return None
            children = [child for child in payload if isinstance(child, Message)]
            if not 1 <= step <= len(children):
                return None
            node = children[step - 1]
        return None if node.is_multipart() else _leaf(node)
    except (ValueError, RecursionError, LookupError, UnicodeError, AssertionError):
        return None


def _leaf(part: Message) -> Part:
    payload = part.get_payload(decode=True)
    content_type = part.get_content_type()
    if not _MEDIA_TYPE.fullmatch(content_type):
        content_type = "application/octet-stream"
    charset = part.get_content_charset()
    if charset and content_type.startswith("text/") and _CHARSET.fullmatch(charset):
        content_type += f"; charset={charset}"
    return Part(payload if isinstance(payload, bytes) else b"", content_type)


@dataclass(frozen=True, slots=True)
class Attached:
    """A leaf part with a Content-Disposition (attachment or inline), as sent."""

    filename: str | None
    content_id: str | None
    part: Part


def attached_parts(raw: bytes) -> list[Attached]:
    """Every leaf with a Content-Disposition, in tree order; [] for a message that will not
    parse. Sent messages are ours (policy.sending.compose), so this finds what their metadata
    lists."""
    try:
        found = []
        for node in message_from_bytes(raw, policy=compat32).walk():
            if node.is_multipart() or node.get("Content-Disposition") is None:
                continue
            content_id = node.get("Content-ID")
            found.append(
                Attached(
                    node.get_filename(),
                    str(content_id).strip().strip("<>") if content_id else None,
                    _leaf(node),
                )
            )
        return found
    except (ValueError, RecursionError, LookupError, UnicodeError, AssertionError):
        return []


def find_parts(raw: bytes, paths: list[str]) -> dict[str, Part]:
    """The decoded leaves at `paths` that exist, the message parsed once."""
    try:
        root = message_from_bytes(raw, policy=compat32)
    except (ValueError, RecursionError, LookupError, UnicodeError, AssertionError):
        return {}
    found = {path: _find_in(root, path) for path in paths}
    return {path: part for path, part in found.items() if part is not None}


async def extract_many(raw: bytes, paths: list[str]) -> dict[str, Part]:
    """find_parts off the event loop, in one call: one parse for every part wanted."""
    return await asyncio.get_running_loop().run_in_executor(None, find_parts, raw, paths)


async def extract(raw: bytes, path: str) -> Part | None:
    """find_part off the event loop: parsing a 25 MB message takes long enough to stall it."""
    return await asyncio.get_running_loop().run_in_executor(None, find_part, raw, path)


def safe_filename(name: str | None) -> str:
    """The last path segment, without control or format characters (CR, LF, NUL, bidi
    overrides that disguise an extension), quotes, backslashes or leading dots."""
    if not name:
        return ""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c not in '"' and not unicodedata.category(c).startswith("C"))
    return name.strip().lstrip(".").strip()[:MAX_FILENAME]


def content_disposition(filename: str | None, fallback: str) -> str:
    """`attachment` with an ASCII filename and, when needed, the UTF-8 one (RFC 6266 section 4.3,
    RFC 8187), so every client downloads the file under a harmless name."""
    name = safe_filename(filename) or fallback
    ascii_name = "".join(c if c.isascii() else "_" for c in name)
    header = f'attachment; filename="{ascii_name}"'
    if ascii_name != name:
        header += "; filename*=UTF-8''" + quote(name, safe="")
    return header
