"""What every route module needs from the application: its typed resources and body reading.

Kept apart from `api.app`, which composes the route modules, so that no route module imports
the module that imports it.
"""

from __future__ import annotations

import json
import re
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


class LoneSurrogate(ValueError):
    """JSON whose syntax allows a `\\u` escape that Unicode does not: half a surrogate pair."""


# A \u escape of U+D800 to U+DFFF: only these can put a surrogate into the parsed strings.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def parse_json(text: str) -> Any:
    """`json.loads`, refusing an unpaired surrogate escape such as `"\\ud800"`: JSON's grammar
    allows it, but it names no character (RFC 8259 section 8.2), no UTF-8 message can carry it,
    and it would fail only later, deep in building the message, as a 500."""
    value = json.loads(text)
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise LoneSurrogate(
            "Invalid JSON in request body: a \\u escape names half of a surrogate pair "
            "(U+D800 to U+DFFF) without the other half, which is not a character"
        )
    return value


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


class InvalidJson(ValueError):
    """The body is not JSON, or not text JSON can carry; the message says which."""


async def request_json(request: web.Request) -> Any:
    """The request body parsed as JSON, or InvalidJson with a message a person can act on."""
    try:
        return await request.json(loads=parse_json)
    except LoneSurrogate as problem:
        raise InvalidJson(str(problem)) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidJson("Invalid JSON in request body") from None


async def read_json(request: web.Request, *, array: bool = False) -> Any:
    """The request body as a JSON object (with `array`, an array of emails), or a 400 that
    says what is wrong with it."""
    try:
        body = await request_json(request)
    except InvalidJson as problem:
        raise ApiError(errors.VALIDATION_ERROR, str(problem)) from None
    expected, kind = (list, "an array of emails") if array else (dict, "a JSON object")
    if not isinstance(body, expected):
        raise ApiError(errors.VALIDATION_ERROR, f"The request body must be {kind}.")
    return body
