"""A dashboard reader over plain HTTP (no JavaScript, as a text browser would be): it keeps the
session cookie by hand, since a client's jar keeps a Secure cookie away from http, and sends our
own Origin and the page's CSRF token with every form, as a browser does."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import aiohttp

from policy.dashboard.passwords import hash_password
from policy.dashboard.sessions import COOKIE_NAME
from storage.dashboard import users
from tests.conftest import TenantWorld

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

    @property
    def origin(self) -> str:
        return self.base

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.cookie:
            headers["Cookie"] = f"{COOKIE_NAME}={self.cookie}"
        return headers

    async def _page(self, response: aiohttp.ClientResponse) -> Page:
        self.last_set_cookie = response.headers.getall("Set-Cookie", [])
        for raw in self.last_set_cookie:
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(raw)
            if COOKIE_NAME in parsed:
                self.cookie = parsed[COOKIE_NAME].value or None
        return Page(
            response.status, await response.text(), response.headers, response.headers.get("Location")
        )

    async def get(self, path: str) -> Page:
        async with self.http.get(
            self.base + path, headers=self._headers(), allow_redirects=False
        ) as response:
            return await self._page(response)

    async def post(
        self, path: str, form: dict[str, str], *, origin: str | None = "self"
    ) -> Page:
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


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
