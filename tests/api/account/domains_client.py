"""A small client for the /domains tests: plain HTTP with aiohttp, every body kept, so a test
can assert that nothing the server ever answered carried a private key."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.conftest import ApiServer
from tests.support.dns_server import ZoneData

HOST = "mx.opensend.test"  # OPENSEND_HOSTNAME in tests/conftest.make_settings


def new_name(prefix: str = "d") -> str:
    return f"{prefix}{secrets.token_hex(4)}.test"


@dataclass
class Answer:
    status: int
    body: Any


@dataclass
class DomainsApi:
    http: aiohttp.ClientSession
    url: str
    bodies: list[str] = field(default_factory=list)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Answer:
        async with self.http.request(
            method, self.url + path, json=body, params=params, data=data
        ) as response:
            text = await response.text()
            self.bodies.append(text)
            assert response.content_type == "application/json", text
            return Answer(response.status, json.loads(text))

    async def create(self, name: str, **fields: Any) -> dict[str, Any]:
        answer = await self.call("POST", "/domains", {"name": name, **fields})
        assert answer.status == 201, answer
        created: dict[str, Any] = answer.body
        return created

    async def get(self, domain_id: str) -> Answer:
        return await self.call("GET", f"/domains/{domain_id}")

    async def verify(self, domain_id: str) -> Answer:
        return await self.call("POST", f"/domains/{domain_id}/verify")

    async def patch(self, domain_id: str, body: Any) -> Answer:
        return await self.call("PATCH", f"/domains/{domain_id}", body)

    async def delete(self, domain_id: str) -> Answer:
        return await self.call("DELETE", f"/domains/{domain_id}")


@asynccontextmanager
async def domains_api(server: ApiServer | str, key: str) -> AsyncIterator[DomainsApi]:
    """A client of `server` (or of the server at that URL) with one tenant's key."""
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        yield DomainsApi(http, server if isinstance(server, str) else server.url)


def all_records(domain: dict[str, Any]) -> list[dict[str, Any]]:
    """The records to publish, then the suggested ones (DMARC), as a tenant reads them."""
    return [*domain["records"], *domain["suggested_records"]]


def record(domain: dict[str, Any], label: str) -> dict[str, Any]:
    [found] = [r for r in all_records(domain) if r["record"] == label]
    return found


def publish(zone: ZoneData, domain: dict[str, Any], *, skip: tuple[str, ...] = ()) -> None:
    """Put the records the API asked for into the test's DNS zone, as a tenant would."""
    for item in all_records(domain):
        if item["record"] in skip:
            continue
        if item["type"] == "MX":
            zone.add(item["name"], "MX", f"{item['priority']} {item['value']}.")
        else:
            zone.add(item["name"], item["type"], item["value"])
