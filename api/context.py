"""What every route module needs from the application: its typed resources and body reading.

Kept apart from `api.app`, which composes the route modules, so that no route module imports
the module that imports it.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from api import errors
from api.errors import ApiError
from policy.dns import DnsLookup
from policy.settings import Settings
from policy.tokens import ReplyTokens
from storage.database import Pool

POOL = web.AppKey("pool", Pool)
SETTINGS = web.AppKey("settings", Settings)
TOKENS = web.AppKey("tokens", ReplyTokens)
DNS = web.AppKey("dns", DnsLookup)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(errors.VALIDATION_ERROR, "Invalid JSON in request body") from None
    if not isinstance(body, dict):
        raise ApiError(errors.VALIDATION_ERROR, "The request body must be a JSON object")
    return body
