"""Cursor pagination in Resend's shape, shared by every list endpoint.

In: `limit` (1..100, default 20) and at most one of `after` / `before`, each the id of an item
of the list (excluded from the page). Out: `{"object": "list", "has_more", "data"}`, newest first;
`has_more` speaks of the direction of travel. Storage pages by key, never by OFFSET.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from api import errors
from api.errors import ApiError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int
    after: UUID | None
    before: UUID | None


def page_request(request: web.Request) -> PageRequest:
    """The page asked for, or a 400/422 naming the parameter that is wrong."""
    query = request.query
    limit = DEFAULT_LIMIT
    if "limit" in query:
        raw = query["limit"].strip()
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
            raise ApiError(
                errors.VALIDATION_ERROR,
                f"The `limit` parameter must be a whole number between 1 and {MAX_LIMIT}.",
            )
        limit = int(raw)
    after = query_uuid(query, "after")
    before = query_uuid(query, "before")
    if after is not None and before is not None:
        raise ApiError(
            errors.VALIDATION_ERROR, "Use either the `after` or the `before` parameter, not both."
        )
    return PageRequest(limit, after, before)


def query_uuid(query: Mapping[str, str], name: str) -> UUID | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return UUID(raw)
    except ValueError:
        raise ApiError(
            errors.INVALID_PARAMETER, f"The `{name}` parameter must be a valid UUID."
        ) from None


def query_datetime(query: Mapping[str, str], name: str) -> datetime | None:
    """An ISO 8601 date or date-time; without a zone it is read as UTC."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw.strip())
        # In UTC, as the database compares it: 0001-01-01T00:00+01:00 is before year 1.
        return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ApiError(
            errors.VALIDATION_ERROR,
            f"The `{name}` parameter must be an ISO 8601 date-time, such as 2026-01-31T09:00:00Z.",
        ) from None


def unknown_cursor(page: PageRequest) -> ApiError:
    """The answer when storage found no item of this list under the cursor's id."""
    name = "after" if page.after is not None else "before"
    return ApiError(
        errors.INVALID_PARAMETER,
        f"The `{name}` parameter must be the id of an item of this list.",
    )


def list_body(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "has_more": has_more, "data": data}
