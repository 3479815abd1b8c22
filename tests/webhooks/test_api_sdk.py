"""/webhooks through the official `resend` SDK, unchanged: create, get, list, update, rotate,
remove, and the validation and tenant isolation around them."""

from __future__ import annotations

import base64
from typing import Any
from uuid import UUID

import pytest
import resend
from resend.exceptions import ResendError

from policy.webhooks.events import EVENT_TYPES
from storage.database import Pool
from tests.conftest import ApiServer, MakeTenant, StartApi
from tests.support.dns_server import LoopbackDNSServer
from tests.webhooks.world import call


async def test_sdk_creates_gets_lists_updates_rotates_and_removes(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant, sdk: None
) -> None:
    acme = await make_tenant()
    resend.api_key, resend.api_url = await acme.api_key(), api.url
    created = await call(
        resend.Webhooks.create,
        {"endpoint": "http://127.0.0.1:9/hook", "events": ["email.received", "email.sent"]},
    )
    secret = created["signing_secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    got = await call(resend.Webhooks.get, created["id"])
    assert got["object"] == "webhook" and got["status"] == "enabled"
    assert got["events"] == ["email.received", "email.sent"]
    assert got["endpoint"] == "http://127.0.0.1:9/hook" and got["signing_secret"] == secret
    second = await call(
        resend.Webhooks.create, {"endpoint": "http://127.0.0.1:9/two", "events": ["domain.created"]}
    )
    listed = await call(resend.Webhooks.list, {"limit": 1})
    assert listed["has_more"] is True and [w["id"] for w in listed["data"]] == [second["id"]]
    rest = await call(resend.Webhooks.list, {"limit": 1, "after": second["id"]})
    assert [w["id"] for w in rest["data"]] == [created["id"]] and rest["has_more"] is False
    updated = await call(
        resend.Webhooks.update,
        {"webhook_id": created["id"], "status": "disabled", "events": ["email.delivered"]},
    )
    assert updated["id"] == created["id"]
    got = await call(resend.Webhooks.get, created["id"])
    assert (got["status"], got["events"], got["disabled_reason"]) == (
        "disabled",
        ["email.delivered"],
        "api",
    )
    rotated = await call(resend.Webhooks.rotate_signing_secret, created["id"])
    assert rotated["signing_secret"].startswith("whsec_")
    assert rotated["signing_secret"] != secret
    row = await pool.fetchrow(
        "SELECT previous_secret, previous_secret_until > now() AS grace "
        "FROM webhooks WHERE id = $1",
        UUID(created["id"]),
    )
    assert row["previous_secret"] == secret and row["grace"] is True
    removed = await call(resend.Webhooks.remove, created["id"])
    assert (removed["id"], removed["deleted"]) == (created["id"], True)
    with pytest.raises(ResendError) as missing:
        await call(resend.Webhooks.get, created["id"])
    assert missing.value.code == 404


async def test_every_sdk_event_type_is_accepted(
    api: ApiServer, make_tenant: MakeTenant, sdk: None
) -> None:
    acme = await make_tenant()
    resend.api_key, resend.api_url = await acme.api_key(), api.url
    created = await call(
        resend.Webhooks.create, {"endpoint": "http://127.0.0.1:9/", "events": list(EVENT_TYPES)}
    )
    got = await call(resend.Webhooks.get, created["id"])
    assert got["events"] == list(EVENT_TYPES)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (
            {"endpoint": "http://127.0.0.1:9/", "events": ["email.sent", "email.exploded"]},
            "email.exploded",
        ),
        ({"endpoint": "http://127.0.0.1:9/", "events": []}, "non-empty"),
        ({"endpoint": "ftp://127.0.0.1/", "events": ["email.sent"]}, "http or https"),
        ({"endpoint": "not a url", "events": ["email.sent"]}, "URL"),
        ({"endpoint": "http://127.0.0.1:99999/", "events": ["email.sent"]}, "not a valid URL"),
        ({"events": ["email.sent"]}, "Missing `endpoint`"),
    ],
    ids=["unknown-event", "no-events", "ftp", "spaces", "bad-port", "no-endpoint"],
)
async def test_invalid_webhooks_are_refused_with_the_reason(
    api: ApiServer, make_tenant: MakeTenant, sdk: None, body: dict[str, Any], named: str
) -> None:
    acme = await make_tenant()
    resend.api_key, resend.api_url = await acme.api_key(), api.url
    with pytest.raises(ResendError) as refused:
        await call(resend.Webhooks.create, body)
    assert refused.value.code in (400, 422) and named in refused.value.message


async def test_another_tenants_webhook_answers_404(
    api: ApiServer, make_tenant: MakeTenant, sdk: None
) -> None:
    acme, other = await make_tenant(), await make_tenant()
    resend.api_key, resend.api_url = await acme.api_key(), api.url
    created = await call(
        resend.Webhooks.create, {"endpoint": "http://127.0.0.1:9/", "events": ["email.sent"]}
    )
    resend.api_key = await other.api_key()
    for attempt in (
        lambda: resend.Webhooks.get(created["id"]),
        lambda: resend.Webhooks.update({"webhook_id": created["id"], "status": "disabled"}),
        lambda: resend.Webhooks.remove(created["id"]),
        lambda: resend.Webhooks.rotate_signing_secret(created["id"]),
        lambda: resend.Webhooks.list_events(created["id"]),
    ):
        with pytest.raises(ResendError) as refused:
            await call(attempt)
        assert refused.value.code == 404
    assert (await call(resend.Webhooks.list))["data"] == []


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::ffff:192.168.0.1]/",
        "https://224.0.0.1/",
        "http://93.184.216.34/plain-http",
        "https://１２７.０.０.１/hook",
        "https://1６9.254.169.254/latest/meta-data",
        "https://[64:ff9b::a9fe:a9fe]/",
        "https://[2002:7f00:1::]/",
        "https://2130706433/",
    ],
    ids=[
        "loopback",
        "loopback6",
        "private",
        "metadata",
        "mapped",
        "multicast",
        "http",
        "fullwidth_loopback",
        "fullwidth_metadata",
        "nat64_metadata",
        "6to4_loopback",
        "decimal_loopback",
    ],
)
async def test_production_refuses_unsafe_endpoints(
    start_test_api: StartApi, make_tenant: MakeTenant, sdk: None, endpoint: str
) -> None:
    api = await start_test_api(
        OPENSEND_ENV="production",
        OPENSEND_DATABASE_URL="postgresql://unused",
        OPENSEND_WEBHOOK_ALLOW_PRIVATE="off",
    )
    acme = await make_tenant()
    resend.api_key, resend.api_url = await acme.api_key(), api.url
    with pytest.raises(ResendError) as refused:
        await call(resend.Webhooks.create, {"endpoint": endpoint, "events": ["email.sent"]})
    assert refused.value.code == 400 and "must " in refused.value.message


async def test_production_refuses_a_name_that_resolves_to_loopback(
    start_test_api: StartApi, make_tenant: MakeTenant, sdk: None, dns: LoopbackDNSServer
) -> None:
    dns.zone.add("hook.rebind.test", "A", "127.0.0.1")
    api = await start_test_api(
        OPENSEND_ENV="production",
        OPENSEND_DATABASE_URL="postgresql://unused",
        OPENSEND_DNS_SERVERS=dns.address,
    )
    acme = await make_tenant()
    resend.api_key, resend.api_url = await acme.api_key(), api.url
    with pytest.raises(ResendError) as refused:
        await call(
            resend.Webhooks.create,
            {"endpoint": "https://hook.rebind.test/", "events": ["email.sent"]},
        )
    assert refused.value.code == 400
    assert "hook.rebind.test resolves to 127.0.0.1 (a loopback address)" in refused.value.message
