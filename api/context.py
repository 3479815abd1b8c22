"""What every route module needs from the application: its typed resources and body reading.

Kept apart from `api.app`, which composes the route modules, so that no route module imports
the module that imports it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from api import errors
from api.errors import ApiError
from policy.dns import DnsLookup
from policy.proxies import client_address
from policy.sending.request import SenderDomain
from policy.settings import Settings
from policy.tokens import ReplyTokens
from storage.account_caches import DomainCache, KeyCache, LastUseRecorder, LimitCache
from storage.database import Pool
from storage.sending.writer import EmailWriter

POOL = web.AppKey("pool", Pool)
SETTINGS = web.AppKey("settings", Settings)


def client_ip(request: web.Request) -> str | None:
    """The client's address: the connection's peer, or behind a trusted reverse proxy what it
    says in X-Forwarded-For (policy.proxies, OPENSEND_TRUSTED_PROXIES)."""
    trusted = request.config_dict[SETTINGS].trusted_proxies
    forwarded = request.headers.getall("X-Forwarded-For", []) if trusted else []
    return client_address(request.remote, forwarded, trusted)


TOKENS = web.AppKey("tokens", ReplyTokens)
DNS = web.AppKey("dns", DnsLookup)

# The application's per-process state, made before it freezes (`install_state`): a plain key
# read per request, where a module-level WeakKeyDictionary by application cost a weak
# reference and a hash on every use (tests/perf/README.md, the API section).
API_KEYS = web.AppKey("api_keys", KeyCache)  # valid keys by hash, a few seconds
KEY_USES = web.AppKey("api_key_uses", LastUseRecorder)  # last_used_at, once a minute
SENDER_DOMAINS: web.AppKey[DomainCache[SenderDomain]] = web.AppKey("sender_domains")
SENDING_LIMITS = web.AppKey("sending_limits", LimitCache)  # the plan's monthly limit
WRITER = web.AppKey("email_writer", EmailWriter)  # group commit of POST /emails and replies
# What a sub-application that sends (the dashboard's composer) shares with the API's.
SENDING_STATE = (POOL, SETTINGS, TOKENS, DNS, SENDER_DOMAINS, SENDING_LIMITS, WRITER)


def install_state(app: web.Application, pool: Pool) -> None:
    """The caches and the group-commit writer: one of each per application."""
    app[API_KEYS] = KeyCache()
    app[KEY_USES] = LastUseRecorder()
    app[SENDER_DOMAINS] = DomainCache(SenderDomain)
    app[SENDING_LIMITS] = LimitCache()
    app[WRITER] = EmailWriter(pool)


class LoneSurrogate(ValueError):
    """JSON whose syntax allows a `\\u` escape that Unicode does not: half a surrogate pair."""


# A \u escape of U+D800 to U+DFFF: only these can put a surrogate into the parsed strings.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class NulCharacter(ValueError):
    """JSON whose strings (or keys) hold U+0000: valid JSON, but not text PostgreSQL can store."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


def parse_json(text: str) -> Any:
    """`json.loads`, refusing an unpaired surrogate escape such as `"\\ud800"`: JSON's grammar
    allows it, but it names no character (RFC 8259 section 8.2), no UTF-8 message can carry it,
    and it would fail only later, deep in building the message, as a 500. A NUL (`\\u0000`, the
    only way JSON can carry one) is refused too, naming where it is: stripping it would change
    what the caller sent."""
    value = json.loads(text)
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise LoneSurrogate(
            "Invalid JSON in request body: a \\u escape names half of a surrogate pair "
            "(U+D800 to U+DFFF) without the other half, which is not a character"
        )
    if "\\u0000" in text:  # a raw NUL is not valid JSON; cheap test before the walk
        field = nul_field(value)
        if field is not None:
            raise NulCharacter(field)
    return value


def nul_field(value: Any, where: str = "") -> str | None:
    """Where in a parsed JSON value the first NUL is, as `text`, `[2].html`, `headers.X-Foo`."""
    if isinstance(value, str):
        return (where or "body") if "\0" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{where}.{key}" if where else key
            if "\0" in key:
                return inner.replace("\0", "\\u0000")
            found = nul_field(item, inner)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_field(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None


def nul_refusal(field: str) -> ApiError:
    return ApiError(
        errors.NUL_CHARACTER,
        f"`{field}` contains a NUL character (U+0000), which cannot be stored: remove it.",
    )


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


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """`web.json_response`, encoded by orjson (a tenth of `json.dumps`' time); the same
    Content-Type, and the same JSON values. What orjson cannot encode (an integer beyond 64
    bits) is left to `json.dumps`."""
    try:
        body = orjson.dumps(data)
    except TypeError:
        body = json.dumps(data).encode()
    return web.Response(
        body=body, status=status, headers=headers, content_type="application/json", charset="utf-8"
    )


class InvalidJson(ValueError):
    """The body is not JSON, or not text JSON can carry; the message says which."""


def parse_json_bytes(body: bytes) -> Any:
    """A UTF-8 body parsed by orjson, which is several times faster than `json.loads` on the
    hot path (POST /emails: tests/perf/README.md) and, being strict, refuses every body that
    `parse_json` refuses except one with a NUL: unpaired surrogate escapes, NaN and Infinity,
    integers beyond 64 bits, invalid UTF-8. Whatever it refuses goes to `parse_json`, which
    accepts what JSON allows and words the refusal, so the answers are the same either way."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return parse_json(body.decode("utf-8"))
    if b"\\u0000" in body:  # a raw NUL is not valid JSON; cheap test before the walk
        field = nul_field(value)
        if field is not None:
            raise NulCharacter(field)
    return value


# The charsets a JSON body may declare that are read as UTF-8 (RFC 8259 section 8.1).
_UTF8 = frozenset({"utf-8", "utf8"})


async def request_json(request: web.Request) -> Any:
    """The request body parsed as JSON, or InvalidJson with a message a person can act on; a
    NUL anywhere in it is a 400 naming the field."""
    try:
        charset = request.charset
        if charset is None or charset.lower() in _UTF8:
            return parse_json_bytes(await request.read())
        return await request.json(loads=parse_json)
    except NulCharacter as problem:
        raise nul_refusal(problem.field) from None
    except LoneSurrogate as problem:
        raise InvalidJson(str(problem)) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidJson("Invalid JSON in request body") from None
    except RecursionError:
        raise InvalidJson("Invalid JSON in request body: it is nested too deeply") from None
    except LookupError:  # a charset Python does not know
        raise InvalidJson(
            f"Invalid JSON in request body: {request.charset!r} is not a charset this server "
            "reads; send UTF-8"
        ) from None


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
