"""The ids of a received message's attachments: its MIME part path, and the stable UUID that the
receiving API, signed links and webhook payloads all name it by. Imports nothing of ours."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID, uuid5


def part_path(entry: Mapping[str, Any], index: int) -> str:
    """The attachment's MIME part path ("2", "1.2"): enough to find it again in the raw message."""
    return str(entry.get("part") or index + 1)


def attachment_id(email_id: UUID, entry: Mapping[str, Any], index: int) -> UUID:
    """A UUID as Resend's attachment ids are, derived from the email's id and the part path
    (RFC 9562 section 5.5): stable, and kept nowhere."""
    return uuid5(email_id, part_path(entry, index))
