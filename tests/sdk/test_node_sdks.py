"""The official Node SDKs, unchanged but for the base URL, against the real server: every call
they make of a route we serve answers without an SDK error and with the data their types promise.

Node and the pinned SDKs are installed by .ci/run (`npm ci` in tests/sdk/node); without them the
tests fail with the command that installs them, never skip.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

from mta.server import MXListener
from tests.conftest import ApiServer, MakeTenant, TenantWorld, smtp_send
from tests.sdk.node_sdks import Call, node_available, run_script


def require_node() -> None:
    assert node_available(), "Node SDKs missing: run `npm ci` in tests/sdk/node (or .ci/run)"


async def received_with_attachment(world: TenantWorld, mx: MXListener) -> str:
    """A message with a text body and one attachment, received through the real MX."""
    address = f"support@{world.name}"
    await world.route(address)
    msg = EmailMessage()
    msg["From"] = "Carol <customer@example.net>"
    msg["To"] = address
    msg["Subject"] = "Where is my order?"
    msg["Message-ID"] = f"<order-question@{world.name}.example.net>"
    msg.set_content("Hi,\nwhere is my order?\n")
    msg.add_attachment(b"order 42", maintype="application", subtype="pdf", filename="order.pdf")
    delivery = await smtp_send(mx.port, "customer@example.net", [address], msg.as_bytes())
    [stored] = delivery.stored_ids
    return str(stored)


def assert_all_pass(calls: list[Call]) -> None:
    failed = [c.why() for c in calls if c.failed]
    summary = f"{len(failed)} of {len(calls)} calls fail:\n"
    assert not failed, summary + "\n".join(failed)


async def sdk_world(api: ApiServer, mx: MXListener, make_tenant: MakeTenant) -> dict[str, Any]:
    acme = await make_tenant()
    received = await received_with_attachment(acme, mx)
    return {"domain": acme.name, "received": received, "key": await acme.api_key()}


async def test_resend_node_sdk_every_served_method(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    require_node()
    world = await sdk_world(api, mx, make_tenant)
    env = {"RESEND_API_KEY": world["key"], "RESEND_BASE_URL": api.url}
    calls = await run_script("resend_calls.mjs", world, env)
    assert_all_pass(calls)


async def test_inboundemail_sdk_replies(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    require_node()
    world = await sdk_world(api, mx, make_tenant)
    env = {"INBOUND_API_KEY": world["key"], "INBOUND_BASE_URL": api.url}
    calls = await run_script("inboundemail_calls.mjs", world, env)
    assert_all_pass(calls)


async def test_inbound_sdk_replies(api: ApiServer, mx: MXListener, make_tenant: MakeTenant) -> None:
    require_node()
    world = await sdk_world(api, mx, make_tenant)
    env = {"INBOUND_API_KEY": world["key"], "INBOUND_BASE_URL": api.url}
    calls = await run_script("inbound_sdk_calls.mjs", world, env)
    assert_all_pass(calls)
