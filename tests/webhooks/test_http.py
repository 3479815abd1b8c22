"""One attempt's answer as it is stored: what PostgreSQL text cannot hold is cleaned first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from api.http_client import LookupResolver
from mta.dns import Resolver
from mta.webhooks import http
from tests.conftest import make_settings
from tests.support.loopback_http import served_on_loopback


async def post_once(tmp_path: Path, url: str) -> http.Answer:
    """One attempt through the workers' own client session. An address literal is never
    resolved: the resolver is there because the session needs one."""
    session = http.client_session(
        LookupResolver(Resolver(make_settings(tmp_path).dns_servers, lifetime=1.0)),
        allow_private=True,
        connect_timeout=5,
        timeout=10,
    )
    try:
        return await http.post(session, url, b"{}", {})
    finally:
        await session.close()


@pytest.fixture
async def nul_answering_endpoint() -> AsyncIterator[str]:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=b"ok\x00then \xff more", status=200)

    app = web.Application()
    app.router.add_post("/hook", answer)
    async with served_on_loopback(app) as base:
        yield f"{base}/hook"


async def test_an_answer_with_a_nul_and_bad_bytes_is_kept_as_storable_text(
    nul_answering_endpoint: str, tmp_path: Path
) -> None:
    answer = await post_once(tmp_path, nul_answering_endpoint)
    assert answer.status_code == 200
    assert answer.error is None
    assert answer.body == "okthen \ufffd more"


async def test_an_error_quoting_the_endpoint_url_is_stored_and_logged_without_it(
    tmp_path: Path,
) -> None:
    """A URL may carry credentials or a token: the attempt's error names the kind of failure."""
    secret_url = "https://user:s3cret@example.com\\x/hook?token=abc"  # stored before it was refused
    answer = await post_once(tmp_path, secret_url)
    assert answer.status_code is None and answer.error is not None
    assert "s3cret" not in answer.error and "token" not in answer.error
    assert answer.error.endswith("the endpoint is not a URL the client can send to")
