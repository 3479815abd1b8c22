"""The official `resend` Python SDK, unchanged, against our server.

The SDK is synchronous (requests) and the server runs in the test's event loop, so every SDK
call goes through `asyncio.to_thread`. The SDK keeps its key and URL in module globals; the
fixture sets them for one test and puts them back. One test runs the SDK in a subprocess with
nothing but RESEND_API_KEY and RESEND_API_URL, as a user's program would.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import resend
from resend.exceptions import ResendError

from storage.database import Pool
from tests.api.sending.emails_client import email, email_row
from tests.conftest import ApiServer, MakeTenant

T = TypeVar("T")


@pytest.fixture
def sdk() -> Iterator[None]:
    saved = resend.api_key, resend.api_url
    yield
    resend.api_key, resend.api_url = saved


async def call(function: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(function, *args)


async def test_sdk_sends_gets_lists_and_batches(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant, sdk: None
) -> None:
    acme = await make_tenant()
    resend.api_key, resend.api_url = await acme.api_key(), api.url
    params: Any = {
        "from": f"Acme <onboarding@{acme.name}>",
        "to": ["delivered@example.net"],
        "subject": "hello world",
        "html": "<strong>it works!</strong>",
        "reply_to": "support@example.net",
        "tags": [{"name": "category", "value": "confirm_email"}],
        "headers": {"X-Entity-Ref-ID": "123456789"},
        "attachments": [{"filename": "invoice.txt", "content": list(b"total: 42\n")}],
    }
    sent = await call(resend.Emails.send, params)
    again = await call(resend.Emails.send, params, {"idempotency_key": "sdk-1"})
    replay = await call(resend.Emails.send, params, {"idempotency_key": "sdk-1"})
    got = await call(resend.Emails.get, sent["id"])
    batch = await call(
        resend.Batch.send,
        [email(acme, to="a@example.net"), email(acme, subject=None)],
        {"batch_validation": "permissive"},
    )
    listed = await call(resend.Emails.list, {"limit": 2})
    assert replay["id"] == again["id"] != sent["id"]
    assert got["object"] == "email" and got["id"] == sent["id"]
    assert (got["from"], got["to"], got["subject"]) == (
        params["from"],
        ["delivered@example.net"],
        "hello world",
    )
    assert got["reply_to"] == ["support@example.net"] and got["last_event"] == "sent"
    assert got["reply_address"].startswith("reply+osr_")
    assert len(batch["data"]) == 1
    assert batch["errors"] == [{"index": 1, "message": "Missing `subject` field."}]
    assert listed["object"] == "list" and listed["has_more"] is True
    assert [e["id"] for e in listed["data"]] == [batch["data"][0]["id"], again["id"]]
    stored = await email_row(pool, sent["id"])
    assert stored["attachments"][0]["size"] == len(b"total: 42\n")


async def test_sdk_reschedules_and_cancels(
    api: ApiServer, make_tenant: MakeTenant, sdk: None
) -> None:
    acme = await make_tenant()
    resend.api_key, resend.api_url = await acme.api_key(), api.url
    sent = await call(resend.Emails.send, email(acme, scheduled_at="in 1 hour"))
    updated = await call(resend.Emails.update, {"id": sent["id"], "scheduled_at": "in 2 days"})
    assert (updated["object"], updated["id"]) == ("email", sent["id"])
    # Past Resend's 30 days: refused, and the SDK raises Resend's error with our message.
    with pytest.raises(ResendError) as far:
        await call(resend.Emails.update, {"id": sent["id"], "scheduled_at": "in 60 days"})
    assert far.value.code == 400 and "at most 30 days ahead" in far.value.message
    canceled = await call(resend.Emails.cancel, sent["id"])
    assert canceled["id"] == sent["id"]
    got = await call(resend.Emails.get, sent["id"])
    assert got["last_event"] == "canceled"


async def test_sdk_raises_resends_errors(
    api: ApiServer, make_tenant: MakeTenant, sdk: None
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    resend.api_key, resend.api_url = await acme.api_key(), api.url
    with pytest.raises(ResendError) as unverified:
        await call(resend.Emails.send, email(globex))
    assert (unverified.value.code, unverified.value.error_type) == (403, "validation_error")
    assert f"The {globex.name} domain is not verified" in unverified.value.message
    with pytest.raises(ResendError) as missing:
        await call(resend.Emails.get, "00000000-0000-4000-8000-000000000000")
    assert (missing.value.code, missing.value.error_type) == (404, "not_found")
    resend.api_key = "re_wrong"
    with pytest.raises(ResendError) as wrong:
        await call(resend.Emails.send, email(acme))
    assert (wrong.value.code, wrong.value.error_type) == (403, "invalid_api_key")


SCRIPT = """
import json, resend
sent = resend.Emails.send(json.loads(input()))
print(json.dumps(resend.Emails.get(sent["id"])))
"""


async def test_sdk_in_a_program_of_its_own_configured_by_environment(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    env = {**os.environ, "RESEND_API_KEY": await acme.api_key(), "RESEND_API_URL": api.url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SCRIPT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(
        proc.communicate(json.dumps(email(acme)).encode() + b"\n"), timeout=60
    )
    assert proc.returncode == 0, err.decode()
    got = json.loads(out)
    assert got["object"] == "email" and got["subject"] == "Your order has shipped"
