"""Signed download links (api.downloads): every `download_url` (raw message, attachments received
and sent) works without an API key until `expires_at`, and a link that is expired, tampered
with, or carried to another path or tenant does not work."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit
from uuid import UUID

import aiohttp
import pytest

from mta.listeners import MXListener
from policy.download_links import LINK_LIFETIME, DownloadLinks
from policy.tokens import ReplyTokens
from tests.api.conversations.test_receiving import deliver, with_attachments
from tests.api.sending.emails_client import email, emails_api
from tests.conftest import ApiServer, MakeTenant

PDF = b"%PDF-1.4 order 42"
LOGO = b"\x89PNG logo"


@pytest.fixture
async def anonymous() -> AsyncIterator[aiohttp.ClientSession]:
    """A client with no API key, as the SDKs fetch Resend's signed URLs."""
    async with aiohttp.ClientSession() as http:
        yield http


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, str]:
    async with http.get(url) as response:
        return response.status, await response.read(), response.headers["Content-Type"]


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(query)).geturl()


def link_expiry(url: str) -> datetime:
    return datetime.fromtimestamp(int(parse_qs(urlsplit(url).query)["expires"][0]), UTC)


async def test_received_raw_and_attachment_links_need_no_api_key(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant, anonymous: aiohttp.ClientSession
) -> None:
    acme = await make_tenant(catch_all=True)
    content = with_attachments(f"x@{acme.name}", [("order.pdf", PDF, "application/pdf")])
    received_id = await deliver(mx, acme, content, rcpt=f"x@{acme.name}")
    async with emails_api(api, await acme.api_key()) as client:
        detail = (await client.call("GET", f"/emails/receiving/{received_id}")).body
        listed = (await client.call("GET", f"/emails/receiving/{received_id}/attachments")).body
        with_key = await fetch(client.http, f"{api.url}/emails/receiving/{received_id}/raw")
    raw = await fetch(anonymous, detail["raw"]["download_url"])
    attachment = await fetch(anonymous, listed["data"][0]["download_url"])
    assert raw[0] == 200 and raw[2] == "message/rfc822" and content in raw[1]
    assert attachment == (200, PDF, "application/pdf")
    assert with_key == raw  # the bearer route stays
    for item in (detail["raw"], listed["data"][0]):
        expires = datetime.fromisoformat(item["expires_at"])
        assert expires == link_expiry(item["download_url"])
        assert datetime.now(UTC) < expires <= datetime.now(UTC) + LINK_LIFETIME


async def test_sent_attachments_are_listed_with_uuids_and_links_that_need_no_key(
    api: ApiServer, make_tenant: MakeTenant, anonymous: aiohttp.ClientSession
) -> None:
    acme = await make_tenant()
    attachments = [
        {"filename": "order.pdf", "content": base64.b64encode(PDF).decode()},
        {
            "filename": "logo.png",
            "content": base64.b64encode(LOGO).decode(),
            "content_type": "image/png",
            "content_id": "logo",
        },
    ]
    body = email(acme, html='<p>Hi <img src="cid:logo"></p>', attachments=attachments)
    async with emails_api(api, await acme.api_key()) as client:
        sent_id = await client.sent_id(body)
        listed = (await client.call("GET", f"/emails/{sent_id}/attachments")).body
        pdf, logo = listed["data"]
        one = (await client.call("GET", f"/emails/{sent_id}/attachments/{logo['id']}")).body
        content = f"{api.url}/emails/{sent_id}/attachments/{pdf['id']}/content"
        with_key = await fetch(client.http, content)
        unknown = await client.call("GET", f"/emails/{sent_id}/attachments/{UUID(int=1)}")
    assert listed["object"] == "list" and listed["has_more"] is False
    assert all(UUID(item["id"]) for item in (pdf, logo)) and one["id"] == logo["id"]
    assert (pdf["filename"], pdf["size"], pdf["content_disposition"]) == (
        "order.pdf",
        len(PDF),
        "attachment",
    )
    assert "content_id" not in pdf  # absent, never null (Resend's SDK types)
    assert (logo["content_id"], logo["content_disposition"]) == ("logo", "inline")
    assert await fetch(anonymous, pdf["download_url"]) == (200, PDF, "application/pdf")
    assert await fetch(anonymous, logo["download_url"]) == (200, LOGO, "image/png")
    assert with_key == (200, PDF, "application/pdf") and unknown.status == 404


async def test_expired_tampered_and_moved_links_are_refused(
    api: ApiServer,
    mx: MXListener,
    make_tenant: MakeTenant,
    tokens: ReplyTokens,
    anonymous: aiohttp.ClientSession,
) -> None:
    acme, other = await make_tenant(catch_all=True), await make_tenant(catch_all=True)
    content = with_attachments(f"x@{acme.name}", [("order.pdf", PDF, "application/pdf")])
    received_id = await deliver(mx, acme, content, rcpt=f"x@{acme.name}")
    elsewhere = await deliver(mx, acme, content, rcpt=f"x@{acme.name}")
    async with emails_api(api, await acme.api_key()) as client:
        url = (await client.call("GET", f"/emails/receiving/{received_id}")).body["raw"][
            "download_url"
        ]
    path = f"/emails/receiving/{received_id}/raw"
    # A link signed with the server's own secret an hour and a minute ago: expired a minute ago.
    past = datetime.now(UTC) - LINK_LIFETIME - timedelta(minutes=1)
    link, signature = DownloadLinks(tokens.secrets).sign(acme.id, path, past)
    expired = f"{api.url}/download{path}?" + urlencode(
        {"tenant": str(acme.id), "expires": link.expires, "signature": signature}
    )
    later = str(int(link_expiry(url).timestamp()) + 86400)
    signature_now = parse_qs(urlsplit(url).query)["signature"][0]
    refused = {
        "expired": expired,
        "signature changed": with_query(url, signature="0" * len(signature_now)),
        "expiry extended": with_query(url, expires=later),
        "another tenant": with_query(url, tenant=str(other.id)),
        "another email": url.replace(str(received_id), str(elsewhere)),
        "no signature": url.split("?")[0],
        "signature not hex": with_query(url, signature="é" * len(signature_now)),
    }
    assert (await fetch(anonymous, url))[0] == 200
    for why, bad in refused.items():
        async with anonymous.get(bad) as response:
            answer = await response.json()
            assert (response.status, answer["name"]) == (403, "invalid_download_link"), why
            assert "fetch the email again" in answer["message"]
