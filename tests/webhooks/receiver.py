"""A webhook receiver on loopback: a real aiohttp server that records every POST and answers as
the test says (a status, or hanging), and three independent verifiers of its signatures."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import resend
import standardwebhooks
import svix
from aiohttp import web

# Generous: only stops a hung test; no assertion depends on it.
WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class Post:
    headers: dict[str, str]
    body: bytes
    path: str = "/hook"

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    runner: web.AppRunner | None = None
    posts: list[Post] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # status codes to give, in order; then 200
    hang: bool = False  # never answer (until the server stops)
    hang_paths: set[str] = field(default_factory=set)  # never answer requests to these paths
    gate: asyncio.Event | None = None  # when given, answer only once it is set
    location: str | None = None  # a Location header for every answer (redirects)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @classmethod
    async def start(cls) -> Receiver:
        receiver = cls()
        app = web.Application()
        app.router.add_post("/{path:.*}", receiver._handle)
        receiver.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await receiver.runner.setup()
        await web.TCPSite(receiver.runner, "127.0.0.1", 0).start()
        return receiver

    @property
    def url(self) -> str:
        return self.url_of("/hook")

    def url_of(self, path: str) -> str:
        assert self.runner is not None
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}{path}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        post = Post(headers, await request.read(), request.path)
        async with self.arrived:
            self.posts.append(post)
            self.arrived.notify_all()
        if self.hang or request.path in self.hang_paths:
            await asyncio.Event().wait()
        if self.gate is not None:
            await self.gate.wait()
        status = self.answers.pop(0) if self.answers else 200
        headers = {"Location": self.location} if self.location else {}
        return web.Response(status=status, text=f"answered {status}", headers=headers)

    async def wait_for(self, count: int) -> list[Post]:
        async with asyncio.timeout(WAIT_SECONDS), self.arrived:
            await self.arrived.wait_for(lambda: len(self.posts) >= count)
        return self.posts[:count]

    async def wait_for_path(self, path: str) -> Post:
        def to_path() -> list[Post]:
            return [p for p in self.posts if p.path == path]

        async with asyncio.timeout(WAIT_SECONDS), self.arrived:
            await self.arrived.wait_for(to_path)
        return to_path()[0]

    async def wait_for_type(self, kind: str, count: int = 1) -> list[Post]:
        def of_type() -> list[Post]:
            return [p for p in self.posts if p.payload["type"] == kind]

        async with asyncio.timeout(WAIT_SECONDS), self.arrived:
            await self.arrived.wait_for(lambda: len(of_type()) >= count)
        return of_type()[:count]


def verified(post: Post, secret: str) -> Any:
    """The payload, verified by resend's SDK, the standardwebhooks package and svix's; each
    raises if the signature does not hold for `secret`."""
    text = post.body.decode()
    by_resend = resend.Webhooks.verify(
        {
            "payload": text,
            "headers": {
                "id": post.headers["svix-id"],
                "timestamp": post.headers["svix-timestamp"],
                "signature": post.headers["svix-signature"],
            },
            "webhook_secret": secret,
        }
    )
    by_standard = standardwebhooks.Webhook(secret).verify(
        text,
        {k: post.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")},
    )
    # svix's verify returns nothing; it raises when the svix-* headers do not verify.
    svix.Webhook(secret).verify(
        text, {k: post.headers[k] for k in ("svix-id", "svix-timestamp", "svix-signature")}
    )
    assert by_resend == by_standard
    return by_resend
