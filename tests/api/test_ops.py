"""The operational endpoints: /healthz for load balancers and systemd, /metrics for Prometheus.

A real aiohttp server on an ephemeral loopback port per test (aiohttp's test utilities), with
the real pool: healthy when the database answers, 503 while it does not, JSON for every error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import test_utils, web
from prometheus_client.parser import text_string_to_metric_families

from api.app import make_ops_app
from mta.listeners import MXListener
from storage.database import Pool, open_pool
from tests.conftest import MakeTenant, message, smtp_send
from tests.support.databases import disposable_cluster

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
Client = test_utils.TestClient[web.Request, web.Application]


@asynccontextmanager
async def ops_client(pool: Pool) -> AsyncIterator[Client]:
    async with test_utils.TestClient(test_utils.TestServer(make_ops_app(pool))) as client:
        yield client


async def scrape(client: Client) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(
    samples: Samples, name: str, match: Callable[[dict[str, str]], bool] | None = None
) -> float:
    """The sum of a metric's samples whose labels satisfy `match` (all of them without one)."""
    return sum(
        value
        for (sample, labels), value in samples.items()
        if sample == name and (match is None or match(dict(labels)))
    )


async def test_healthz_is_200_ok_while_the_database_answers(pool: Pool) -> None:
    async with ops_client(pool) as client:
        response = await client.get("/healthz")
        assert response.status == 200
        assert await response.json() == {"status": "ok", "database": True}


async def test_healthz_is_503_while_the_database_is_down_and_recovers() -> None:
    async with disposable_cluster() as cluster:
        pool = await open_pool(cluster.url, min_size=1, max_size=2)
        try:
            async with ops_client(pool) as client:
                await cluster.stop()
                down = await client.get("/healthz")
                down_body = await down.json()
                await cluster.start()
                back = await client.get("/healthz")
                back_body = await back.json()
        finally:
            pool.terminate()

    assert (down.status, down_body) == (503, {"status": "unavailable", "database": False})
    assert (back.status, back_body) == (200, {"status": "ok", "database": True})


async def test_metrics_count_a_message_through_the_mx(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    async with ops_client(pool) as client:
        before = await scrape(client)
        sent = await smtp_send(mx.port, "c@example.net", [f"x@{acme.name}"], message())
        after = await scrape(client)

    assert sent.data is not None and sent.data[0] == 250

    def grew(name: str, match: Callable[[dict[str, str]], bool] | None = None) -> float:
        return total(after, name, match) - total(before, name, match)

    unmatched = ("opensend_mx_messages_stored_total", frozenset({("match_status", "unmatched")}))
    assert unmatched in after
    assert (
        grew("opensend_mx_messages_stored_total", lambda k: k["match_status"] == "unmatched") == 1
    )
    assert grew("opensend_mx_rcpt_verdicts_total", lambda k: k["verdict"] == "accept") == 1
    assert grew("opensend_mx_connections_total", lambda k: k["result"] == "served") == 1
    assert grew("opensend_mx_data_to_commit_seconds_count") == 1
    buckets = [key for key in after if key[0] == "opensend_mx_data_to_commit_seconds_bucket"]
    assert ("le", "+Inf") in {label for _, labels in buckets for label in labels}


async def test_unknown_path_is_a_json_404(pool: Pool) -> None:
    async with ops_client(pool) as client:
        response = await client.get("/no/such/thing")
        body = await response.json()

    assert response.status == 404
    assert response.content_type == "application/json"
    assert body["statusCode"] == 404
    assert body["name"] == "not_found"
    assert isinstance(body["message"], str) and body["message"]


async def test_wrong_method_is_a_json_405(pool: Pool) -> None:
    async with ops_client(pool) as client:
        response = await client.post("/healthz")
        body = await response.json()

    assert response.status == 405
    assert (body["statusCode"], body["name"]) == (405, "method_not_allowed")
