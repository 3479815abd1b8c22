"""Helpers for the reply tests: a received email made through the real MX, and reply bodies."""

from __future__ import annotations

from typing import Any

from mta.listeners import MXListener
from tests.api.sending.emails_client import Answer, EmailsApi
from tests.conftest import TenantWorld, message, smtp_send


async def received_email(
    world: TenantWorld,
    mx: MXListener,
    *,
    sender: str = "Carol <customer@example.net>",
    subject: str = "Where is my order?",
    body: str = "Hi,\nwhere is my order?\n",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    to: str | None = None,
) -> str:
    """A message received at the world's routed support@ address; its received email id."""
    address = to or f"support@{world.name}"
    if address.endswith(world.name) and address not in world.routes:
        await world.route(address)
    content = raw or message(sender=sender, to=address, subject=subject, body=body, headers=headers)
    delivery = await smtp_send(mx.port, "customer@example.net", [address], content)
    [stored] = delivery.stored_ids
    return str(stored)


def reply_body(world: TenantWorld, **fields: Any) -> dict[str, Any]:
    """A valid reply body from the world's domain; `fields` replace or add (None drops)."""
    body: dict[str, Any] = {
        "from": f"Acme Support <support@{world.name}>",
        "text": "It ships tomorrow.",
    }
    for name, value in fields.items():
        name = "from" if name == "sender" else name
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return body


async def post_reply(
    client: EmailsApi, email_id: str, body: Any, *, v2: bool = False, **headers: str
) -> Answer:
    prefix = "/api/v2" if v2 else ""
    names = {"idempotency_key": "Idempotency-Key"}
    given = {names.get(k, k): v for k, v in headers.items()}
    return await client.call("POST", f"{prefix}/emails/{email_id}/reply", body, headers=given)


def inbound_error(answer: Answer) -> tuple[int, str, str]:
    """(status, message, error): Inbound's `error` must repeat Resend's `message`."""
    assert answer.body["statusCode"] == answer.status
    return answer.status, answer.message, answer.body.get("error")
