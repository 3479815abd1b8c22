"""A small client for the sending tests: plain HTTP with aiohttp, every answer JSON-checked,
and the rows an accepted email left in the database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from storage.database import Pool
from tests.conftest import ApiServer, TenantWorld


@dataclass
class Answer:
    status: int
    body: Any
    headers: CIMultiDictProxy[str]

    @property
    def name(self) -> str:
        return str(self.body.get("name")) if isinstance(self.body, dict) else ""

    @property
    def message(self) -> str:
        return str(self.body.get("message")) if isinstance(self.body, dict) else ""


@dataclass
class EmailsApi:
    http: aiohttp.ClientSession
    url: str

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        async with self.http.request(
            method, self.url + path, json=body, headers=headers, data=data, params=params
        ) as response:
            text = await response.text()
            assert response.content_type == "application/json", text
            return Answer(response.status, json.loads(text), response.headers)

    async def send(self, body: Any, **headers: str) -> Answer:
        return await self.call("POST", "/emails", body, headers=_headers(headers))

    async def batch(self, body: Any, **headers: str) -> Answer:
        return await self.call("POST", "/emails/batch", body, headers=_headers(headers))

    async def sent_id(self, body: Any) -> str:
        answer = await self.send(body)
        assert answer.status == 200, answer
        email_id: str = answer.body["id"]
        return email_id

    async def get(self, email_id: str) -> Answer:
        return await self.call("GET", f"/emails/{email_id}")


def _headers(given: dict[str, str]) -> dict[str, str]:
    """Python names to header names: idempotency_key -> Idempotency-Key."""
    names = {"idempotency_key": "Idempotency-Key", "batch_validation": "x-batch-validation"}
    return {names.get(k, k): v for k, v in given.items()}


@asynccontextmanager
async def emails_api(server: ApiServer | str, key: str) -> AsyncIterator[EmailsApi]:
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        yield EmailsApi(http, server if isinstance(server, str) else server.url)


def email(world: TenantWorld, **fields: Any) -> dict[str, Any]:
    """A valid POST /emails body from the world's domain; `fields` replace or add (None drops)."""
    body: dict[str, Any] = {
        "from": f"Acme Support <support@{world.name}>",
        "to": ["customer@example.net"],
        "subject": "Your order has shipped",
        "text": "Hello,\nyour order is on its way.\n",
        "html": "<p>Hello,</p><p>your order is on its way.</p>",
    }
    for name, value in fields.items():
        name = "from" if name == "sender" else name
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return body


async def email_row(pool: Pool, email_id: str) -> dict[str, Any]:
    row = await pool.fetchrow("SELECT * FROM emails WHERE id = $1::uuid", email_id)
    assert row is not None, email_id
    return dict(row)


async def deliveries(pool: Pool, email_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT * FROM deliveries WHERE email_id = $1::uuid ORDER BY recipient", email_id
    )
    return [dict(r) for r in rows]


async def events(pool: Pool, email_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT type FROM email_events WHERE email_id = $1::uuid ORDER BY created_at, type",
        email_id,
    )
    return [r["type"] for r in rows]


async def count_emails(pool: Pool, world: TenantWorld) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM emails WHERE tenant_id = $1", world.id)
    return count
