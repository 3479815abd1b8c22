"""Every list endpoint pages and refuses its query the same way (api.pagination, Resend's
shape): one error for a bad `limit`, one for a malformed cursor, an empty cursor ignored."""

from __future__ import annotations

import pytest

from tests.api.sending.emails_client import emails_api
from tests.conftest import ApiServer, MakeTenant

LISTS = ["/emails", "/emails/receiving", "/contacts", "/api-keys", "/domains", "/threads"]
LIMIT = "The `limit` parameter must be a whole number between 1 and 100."


@pytest.mark.parametrize("path", LISTS, ids=[p.strip("/").replace("/", "_") for p in LISTS])
async def test_every_list_refuses_and_accepts_the_same_queries(
    api: ApiServer, make_tenant: MakeTenant, path: str
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        bad_limits = [await client.call("GET", path, params={"limit": v}) for v in ("0", "x")]
        bad_cursor = await client.call("GET", path, params={"after": "nope"})
        empty_cursor = await client.call("GET", path, params={"before": "", "limit": "1"})
    for answer in bad_limits:
        assert (answer.status, answer.name, answer.message) == (400, "validation_error", LIMIT)
    assert (bad_cursor.status, bad_cursor.name) == (422, "invalid_parameter")
    assert empty_cursor.status == 200, empty_cursor.body
    assert set(empty_cursor.body) == {"object", "has_more", "data"}
    assert len(empty_cursor.body["data"]) <= 1
