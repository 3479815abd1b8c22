"""The ids of a received message's attachments: its MIME part path, and the stable UUID that the
receiving API, signed links and webhook payloads all name it by; and which inline images the HTML
body may carry as data: URIs. Imports nothing of ours."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote
from uuid import UUID, uuid5


def part_path(entry: Mapping[str, Any], index: int) -> str:
    """The attachment's MIME part path ("2", "1.2"): enough to find it again in the raw message."""
    return str(entry.get("part") or index + 1)


def attachment_id(email_id: UUID, entry: Mapping[str, Any], index: int) -> UUID:
    """A UUID as Resend's attachment ids are, derived from the email's id and the part path
    (RFC 9562 section 5.5): stable, and kept nowhere."""
    return uuid5(email_id, part_path(entry, index))


# Inline images written into the HTML as data: URIs (Resend's `html_format=data_uri`, the
# default of GET /emails/receiving/{id}): each at most this big, and all of them together; a
# larger one keeps its cid: reference, which its attachment's download_url serves.
MAX_INLINE_IMAGE_BYTES = 2 * 1024 * 1024
MAX_INLINE_TOTAL_BYTES = 10 * 1024 * 1024  # of data: URIs written, every reference counted
MAX_INLINE_IMAGES = 50
# A cid: URL (RFC 2392) where a URL can start: not inside a word; it ends at a quote, space,
# bracket or entity, as in src="cid:a@b", src=cid:a@b>, url(cid:a@b) and url(&quot;cid:a@b&quot;).
_CID_REFERENCE = re.compile(r"(?<![\w.-])cid:([^\s\"'<>()&/]+)", re.IGNORECASE)


def _content_id(match: re.Match[str]) -> str:
    """The Content-ID a cid: URL names: %-escapes decoded (RFC 2392 section 2), lowercase."""
    return unquote(match.group(1)).lower()


def referenced_images(
    html: str, entries: Sequence[Mapping[str, Any]]
) -> dict[str, tuple[str, str]]:
    """The inline parts `html` names by `cid:` (RFC 2392) that may be written as data: URIs:
    content id (lowercase) -> (part path, media type), within the size bounds above."""
    named = {_content_id(match) for match in _CID_REFERENCE.finditer(html)}
    chosen: dict[str, tuple[str, str]] = {}
    total = 0
    # Parts labelled as images first: unlabelled bytes, which may prove to be no image once
    # read, take what of the bounds is left.
    ordered = sorted(
        enumerate(entries),
        key=lambda item: not str(item[1].get("content_type") or "").startswith("image/"),
    )
    for index, entry in ordered:
        content_id = str(entry.get("content_id") or "").strip("<>").lower()
        size = int(entry.get("size") or 0)
        content_type = str(entry.get("content_type") or "")
        if content_id not in named or not may_be_image(content_type):
            continue
        if size > MAX_INLINE_IMAGE_BYTES or total + size > MAX_INLINE_TOTAL_BYTES:
            continue
        chosen[content_id] = (part_path(entry, index), content_type)
        total += size
        if len(chosen) == MAX_INLINE_IMAGES:
            break
    return chosen


# Mail clients label an inline image application/octet-stream often enough (Outlook, some
# mailers' attachments pasted into HTML) that the HTML names it by cid: all the same. A part,
# labelled an image or not, is written as a data: URI only when its bytes are one of these
# raster images, by signature.
_IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def may_be_image(content_type: str) -> bool:
    """A part whose media type lets it be an inline image: image/*, or unlabelled bytes."""
    return content_type.startswith("image/") or content_type == "application/octet-stream"


def image_type(content_type: str, payload: bytes) -> str | None:
    """The media type to write a part's data: URI with, or None: the raster type the part's
    bytes show by their signature, whatever its label says (image/* or unlabelled bytes). Only
    these four: an image/svg+xml can carry script, and a cid: may be named by an iframe or an
    object as well as an img."""
    if not may_be_image(content_type):
        return None
    if payload[:4] == b"RIFF" and payload[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in _IMAGE_SIGNATURES if payload.startswith(magic)), None)


def with_data_uris(html: str, images: Mapping[str, tuple[str, bytes]]) -> str:
    """`html` with each `cid:` reference to one of `images` (content id, lowercase ->
    (media type, bytes)) replaced by its data: URI (RFC 2397), each URI made once; past
    MAX_INLINE_TOTAL_BYTES written (one image named ten thousand times would otherwise make a
    body of gigabytes), and for the other references, the `cid:` is kept as it was."""
    uris = {
        content_id: f"data:{media_type};base64,{base64.b64encode(payload).decode('ascii')}"
        for content_id, (media_type, payload) in images.items()
    }
    written = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal written
        uri = uris.get(_content_id(match))
        if uri is None or written + len(uri) > MAX_INLINE_TOTAL_BYTES:
            return match.group(0)
        written += len(uri)
        return uri

    return _CID_REFERENCE.sub(replace, html)
