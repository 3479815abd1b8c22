"""Requests no client library would send, written byte by byte: each gets a 4xx that says what is
wrong, never a 500 (and its traceback in the log). Bytes in headers that are not UTF-8, JSON nested
past what a parser walks, a charset nobody knows, dates that leave the calendar in UTC."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.api.sending.emails_client import email
from tests.conftest import ApiServer, MakeTenant


async def raw_request(url: str, head: bytes, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """One HTTP/1.1 request as these bytes (the request line and headers, without the blank
    line); the status and the JSON answer."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        length = f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        writer.write(head + length + body)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def post_emails(
    key: bytes, *, content_type: bytes = b"application/json", extra: bytes = b""
) -> bytes:
    return (
        b"POST /emails HTTP/1.1\r\nHost: opensend.test\r\nContent-Type: " + content_type + b"\r\n"
        b"Authorization: Bearer " + key + b"\r\n" + extra
    )


async def test_an_api_key_that_is_not_utf8_is_an_invalid_key_403(api: ApiServer) -> None:
    status, body = await raw_request(
        api.url, b"GET /emails HTTP/1.1\r\nHost: opensend.test\r\nAuthorization: Bearer abc\xff\r\n"
    )
    assert (status, body["name"]) == (403, "invalid_api_key")


async def test_an_idempotency_key_that_is_not_ascii_is_refused_400(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    key = (await acme.api_key()).encode()
    sent = json.dumps(email(acme)).encode()
    status, body = await raw_request(
        api.url, post_emails(key, extra=b"Idempotency-Key: k\xff\xfe\r\n"), sent
    )
    assert (status, body["name"]) == (400, "invalid_idempotency_key")


@pytest.mark.parametrize(
    ("depth", "idempotent", "says"),
    [
        pytest.param(2000, False, "nested too deeply", id="past_the_parser"),
        pytest.param(1010, True, "nested too deeply", id="past_the_fingerprint"),
    ],
)
async def test_json_nested_past_what_is_walked_is_refused_400(
    api: ApiServer, make_tenant: MakeTenant, depth: int, idempotent: bool, says: str
) -> None:
    acme = await make_tenant()
    key = (await acme.api_key()).encode()
    # In a field the API does not read, so only the parser and the fingerprint walk it.
    nested = {**email(acme), "unread": "[" * depth + "]" * depth}
    sent = json.dumps(nested).replace(
        '"' + "[" * depth + "]" * depth + '"', "[" * depth + "]" * depth
    )
    extra = b"Idempotency-Key: deep-1\r\n" if idempotent else b""
    status, body = await raw_request(api.url, post_emails(key, extra=extra), sent.encode())
    assert status == 400, body
    assert says in body["message"]


async def test_a_charset_nobody_knows_is_refused_400_asking_for_utf8(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    key = (await acme.api_key()).encode()
    sent = json.dumps(email(acme)).encode()
    head = post_emails(key, content_type=b"application/json; charset=x-bogus")
    status, body = await raw_request(api.url, head, sent)
    assert status == 400
    assert "send UTF-8" in body["message"]


@pytest.mark.parametrize(
    "moment",
    ["0001-01-01T00:00:00%2B01:00", "9999-12-31T23:59:59-01:00"],
    ids=["before_1", "after_9999"],
)
async def test_a_date_outside_the_calendar_in_utc_is_a_validation_error(
    api: ApiServer, make_tenant: MakeTenant, moment: str
) -> None:
    acme = await make_tenant()
    key = (await acme.api_key()).encode()
    head = (
        b"GET /emails/receiving?received_after=" + moment.encode() + b" HTTP/1.1\r\n"
        b"Host: opensend.test\r\nAuthorization: Bearer " + key + b"\r\n"
    )
    status, body = await raw_request(api.url, head)
    assert (status, body["name"]) == (400, "validation_error"), body
    assert "`received_after`" in body["message"]
