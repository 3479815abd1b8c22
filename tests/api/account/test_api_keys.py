"""API keys over HTTP: Resend's shapes, hashed storage, tenant isolation, and JSON errors."""

from __future__ import annotations

import hashlib
from uuid import uuid4

import aiohttp

from storage.account_caches import LastUseRecorder
from storage.database import Pool
from tests.conftest import ApiServer, MakeTenant


async def test_request_without_a_key_is_401_missing_api_key(api: ApiServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{api.url}/api-keys") as response:
        assert response.status == 401
        assert await response.json() == {
            "statusCode": 401,
            "name": "missing_api_key",
            "message": "Missing API key in the authorization header.",
        }


async def test_request_with_an_unknown_key_is_403_invalid_api_key(api: ApiServer) -> None:
    headers = {"Authorization": "Bearer re_not_a_key"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"{api.url}/api-keys") as response,
    ):
        assert response.status == 403
        assert (await response.json())["name"] == "invalid_api_key"


async def test_unknown_path_and_method_answer_json(api: ApiServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api.url}/no/such/path") as response:
            assert response.status == 404
            assert (await response.json())["name"] == "not_found"
        async with http.put(f"{api.url}/api-keys") as response:
            assert response.status == 405
            assert (await response.json())["name"] == "method_not_allowed"


async def test_created_key_works_and_only_its_hash_is_stored(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    headers = {"Authorization": f"Bearer {await acme.api_key()}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{api.url}/api-keys", json={"name": "ci"}) as response:
            assert response.status == 201
            created = await response.json()
        new_headers = {"Authorization": f"Bearer {created['token']}"}
        async with http.get(f"{api.url}/api-keys", headers=new_headers) as response:
            listed = await response.json()
    assert created["id"] in {k["id"] for k in listed["data"]}
    # Resend's list shape, has_more included (found missing by tests/api/openapi/test_fuzz.py).
    assert (listed["object"], listed["has_more"]) == ("list", False)
    stored = await pool.fetchrow("SELECT * FROM api_keys WHERE id = $1::uuid", created["id"])
    assert bytes(stored["key_hash"]) == hashlib.sha256(created["token"].encode()).digest()
    assert created["token"] not in str(dict(stored))


async def test_sending_access_key_cannot_manage_keys(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    headers = {"Authorization": f"Bearer {await acme.api_key('sending_access')}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"{api.url}/api-keys") as response,
    ):
        assert response.status == 401
        assert (await response.json())["name"] == "restricted_api_key"


async def test_another_tenants_key_id_answers_404(api: ApiServer, make_tenant: MakeTenant) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    acme_headers = {"Authorization": f"Bearer {await acme.api_key()}"}
    globex_headers = {"Authorization": f"Bearer {await globex.api_key()}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{api.url}/api-keys", json={"name": "x"}, headers=globex_headers
        ) as response:
            globex_key = (await response.json())["id"]
        async with http.delete(
            f"{api.url}/api-keys/{globex_key}", headers=acme_headers
        ) as response:
            assert response.status == 404
        async with http.get(f"{api.url}/api-keys", headers=globex_headers) as response:
            assert globex_key in {k["id"] for k in (await response.json())["data"]}


async def test_malformed_json_body_is_a_400_validation_error(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    headers = {"Authorization": f"Bearer {await acme.api_key()}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.post(f"{api.url}/api-keys", data=b"{not json") as response,
    ):
        assert response.status == 400
        body = await response.json()
    assert body["name"] == "validation_error"
    assert body["message"] == "Invalid JSON in request body"


async def test_api_keys_list_pages_like_every_list_and_shows_the_last_use(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    idle = await acme.api_key()  # made first, never used
    used = await acme.api_key()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {used}"}) as http:
        async with http.get(f"{api.url}/api-keys", params={"limit": "1"}) as response:
            first = await response.json()
        cursor = {"limit": "1", "after": first["data"][0]["id"]}
        async with http.get(f"{api.url}/api-keys", params=cursor) as response:
            second = await response.json()
        async with http.get(f"{api.url}/api-keys", params={"limit": "0"}) as response:
            refused = response.status, (await response.json())["name"]
    assert first["has_more"] is True and second["has_more"] is False
    [newest], [oldest] = first["data"], second["data"]
    assert newest["last_used_at"] is not None and oldest["last_used_at"] is None
    assert refused == (422, "invalid_parameter") or refused[0] == 400
    stored = await pool.fetchval(
        "SELECT last_used_at FROM api_keys WHERE id = $1::uuid", newest["id"]
    )
    assert stored is not None and idle != used


async def test_last_use_is_written_at_most_once_a_minute_per_key() -> None:
    recorder = LastUseRecorder()
    first, second = uuid4(), uuid4()
    assert [recorder.due(first), recorder.due(first), recorder.due(second)] == [True, False, True]
