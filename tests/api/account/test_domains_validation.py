"""Every request /domains refuses, with Resend's error shape and a message that says what to fix;
a refused request changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from storage.database import Pool
from tests.api.account.domains_client import DomainsApi, domains_api, new_name
from tests.conftest import ApiServer, MakeTenant

NAME = "valid-name.test"  # never created: every case below is refused before storage


@pytest.fixture
async def client(api: ApiServer, make_tenant: MakeTenant) -> AsyncIterator[DomainsApi]:
    tenant = await make_tenant()
    async with domains_api(api, await tenant.api_key()) as client:
        yield client


def refused(answer: Any, status: int, name: str, says: str) -> None:
    assert answer.status == status, answer
    assert set(answer.body) == {"statusCode", "name", "message"}, answer.body
    assert (answer.body["statusCode"], answer.body["name"]) == (status, name), answer.body
    assert says in answer.body["message"], answer.body["message"]


CREATE_ERRORS = [
    pytest.param({}, 422, "missing_required_field", "Missing `name` field", id="no_name"),
    pytest.param({"name": None}, 422, "missing_required_field", "`name`", id="null_name"),
    pytest.param({"name": 7}, 400, "validation_error", "must be a string", id="number_name"),
    pytest.param({"name": ""}, 400, "validation_error", "empty", id="empty_name"),
    pytest.param({"name": "192.0.2.7"}, 400, "validation_error", "IP address", id="ipv4"),
    pytest.param({"name": "2001:db8::7"}, 400, "validation_error", "IP address", id="ipv6"),
    pytest.param(
        {"name": "https://valid-name.test/"}, 400, "validation_error", "not a domain", id="url"
    ),
    pytest.param({"name": "valid name.test"}, 400, "validation_error", "white space", id="space"),
    pytest.param({"name": "valid_name.test"}, 400, "validation_error", "RFC 1123", id="underscore"),
    pytest.param({"name": "-valid.test"}, 400, "validation_error", "hyphens", id="hyphen_start"),
    pytest.param({"name": "nodot"}, 400, "validation_error", "single label", id="single_label"),
    pytest.param({"name": "x.localhost"}, 400, "validation_error", "reserved", id="localhost"),
    pytest.param({"name": "a..test"}, 400, "validation_error", "empty label", id="empty_label"),
    pytest.param(
        {"name": "a" * 64 + ".test"}, 400, "validation_error", "longer than 63", id="long_label"
    ),
    pytest.param(
        {"name": ".".join(["a" * 60] * 5)}, 400, "validation_error", "253", id="long_name"
    ),
    pytest.param({"name": "☃.test"}, 400, "validation_error", "internationalised", id="bad_idn"),
    pytest.param(
        {"name": NAME, "region": "mars-1"}, 400, "validation_error", "`region`", id="region"
    ),
    pytest.param(
        {"name": NAME, "custom_return_path": "send"},
        400,
        "validation_error",
        "custom Return-Path is not supported",
        id="custom_return_path",
    ),
    pytest.param(
        {"name": NAME, "open_tracking": True}, 400, "validation_error", "open tracking", id="open"
    ),
    pytest.param(
        {"name": NAME, "click_tracking": True},
        400,
        "validation_error",
        "click tracking",
        id="click",
    ),
    pytest.param(
        {"name": NAME, "tracking_subdomain": "links"},
        400,
        "validation_error",
        "tracking",
        id="tracking_subdomain",
    ),
    pytest.param({"name": NAME, "tls": "enforced"}, 400, "validation_error", "TLS", id="tls"),
    pytest.param(
        {"name": NAME, "receiving": "yes"}, 400, "validation_error", "true or false", id="yes"
    ),
    pytest.param(
        {"name": NAME, "capabilities": "receiving"},
        400,
        "validation_error",
        "must be an object",
        id="capabilities_not_object",
    ),
    pytest.param(
        {"name": NAME, "capabilities": {"inbound": "enabled"}},
        400,
        "validation_error",
        "Unknown capability `inbound`",
        id="unknown_capability",
    ),
    pytest.param(
        {"name": NAME, "capabilities": {"receiving": True}},
        400,
        "validation_error",
        '"enabled" or "disabled"',
        id="capability_value",
    ),
    pytest.param(
        {"name": NAME, "capabilities": {"sending": "disabled"}},
        400,
        "validation_error",
        "cannot be disabled",
        id="sending_disabled",
    ),
    pytest.param(
        {"name": NAME, "receiving": True, "capabilities": {"receiving": "disabled"}},
        400,
        "validation_error",
        "disagree",
        id="receiving_disagrees",
    ),
    pytest.param(
        {"name": NAME, "receiving": True, "reply_domain": "inbound.other.test"},
        400,
        "validation_error",
        "must be a subdomain of valid-name.test",
        id="reply_domain_elsewhere",
    ),
    pytest.param(
        {"name": NAME, "receiving": True, "reply_domain": NAME},
        400,
        "validation_error",
        "must be a subdomain",
        id="reply_domain_itself",
    ),
    pytest.param(
        {"name": NAME, "reply_domain": f"inbound.{NAME}"},
        400,
        "validation_error",
        "needs receiving",
        id="reply_domain_without_receiving",
    ),
    pytest.param(
        {"name": NAME, "receiving": True, "reply_domain": "in bound.valid-name.test"},
        400,
        "validation_error",
        "Invalid `reply_domain`",
        id="reply_domain_malformed",
    ),
]


@pytest.mark.parametrize(("body", "status", "name", "says"), CREATE_ERRORS)
async def test_create_refuses(
    client: DomainsApi, pool: Pool, body: dict[str, Any], status: int, name: str, says: str
) -> None:
    refused(await client.call("POST", "/domains", body), status, name, says)
    assert await pool.fetchval("SELECT count(*) FROM domains WHERE name = $1", NAME) == 0


@pytest.mark.parametrize(
    ("data", "says"),
    [
        pytest.param(b"{not json", "Invalid JSON", id="invalid_json"),
        pytest.param(b'["valid-name.test"]', "must be a JSON object", id="array"),
    ],
)
async def test_create_refuses_a_body_that_is_not_a_json_object(
    client: DomainsApi, data: bytes, says: str
) -> None:
    answer = await client.call("POST", "/domains", data=data)
    refused(answer, 400, "validation_error", says)


PATCH_ERRORS = [
    pytest.param({"name": "other.test"}, "cannot be changed", id="rename"),
    pytest.param({"receiving": 1}, "true or false", id="receiving_number"),
    pytest.param({"open_tracking": True}, "open tracking", id="open_tracking"),
    pytest.param({"custom_return_path": "bounce"}, "Return-Path", id="custom_return_path"),
    pytest.param({"tls": "enforced"}, "TLS", id="tls"),
    pytest.param({"reply_domain": "inbound.other.test"}, "subdomain", id="reply_elsewhere"),
    pytest.param({"reply_domain": 42}, "must be a string", id="reply_number"),
    pytest.param(
        {"receiving": False, "reply_domain": "in.{name}"}, "needs receiving", id="reply_but_off"
    ),
]


@pytest.mark.parametrize(("body", "says"), PATCH_ERRORS)
async def test_update_refuses_and_changes_nothing(
    client: DomainsApi, body: dict[str, Any], says: str
) -> None:
    name = new_name()
    created = await client.create(name, receiving=True)
    body = {k: v.format(name=name) if isinstance(v, str) else v for k, v in body.items()}

    refused(await client.patch(created["id"], body), 400, "validation_error", says)
    assert (await client.get(created["id"])).body == created


async def test_update_keeps_the_name_when_it_is_given_unchanged(client: DomainsApi) -> None:
    created = await client.create(new_name())
    answer = await client.patch(created["id"], {"name": created["name"].upper()})
    assert (answer.status, answer.body) == (200, created)


@pytest.mark.parametrize(
    ("params", "status", "name", "says"),
    [
        pytest.param({"limit": "0"}, 400, "validation_error", "`limit`", id="limit_zero"),
        pytest.param({"limit": "101"}, 400, "validation_error", "`limit`", id="limit_too_big"),
        pytest.param({"limit": "ten"}, 400, "validation_error", "`limit`", id="limit_text"),
        pytest.param({"after": "nope"}, 422, "invalid_parameter", "`after`", id="after_not_id"),
        pytest.param(
            {"after": "0190f0e6-0000-7000-8000-000000000000"},
            422,
            "invalid_parameter",
            "id of an item of this list",
            id="after_unknown_id",
        ),
        pytest.param(
            {
                "after": "0190f0e6-0000-7000-8000-000000000000",
                "before": "0190f0e6-0000-7000-8000-000000000001",
            },
            400,
            "validation_error",
            "not both",
            id="after_and_before",
        ),
    ],
)
async def test_list_refuses(
    client: DomainsApi, params: dict[str, str], status: int, name: str, says: str
) -> None:
    refused(await client.call("GET", "/domains", params=params), status, name, says)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/domains/not-a-uuid", id="get"),
        pytest.param("/domains/0190f0e6-0000-7000-8000-000000000000", id="unknown"),
    ],
)
async def test_an_id_that_names_no_domain_is_404(client: DomainsApi, path: str) -> None:
    refused(await client.call("GET", path), 404, "not_found", "")
