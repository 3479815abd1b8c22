"""A loopback webhook receiver for the MX benchmark: answers every POST 200 and counts them.

It runs its own event loop in a thread, so the (synchronous) benchmark can keep it up for the
whole run; an endpoint subscribed to `email.received` then costs the server what it costs in
production: an outbox row per message and a POST per event.
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web


class WebhookSink:
    def __init__(self) -> None:
        self.posts = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-sink", daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> WebhookSink:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the webhook sink did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.posts += 1
        return web.Response(text="ok")
