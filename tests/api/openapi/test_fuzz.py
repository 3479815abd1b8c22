"""Fuzzing the real API with schemathesis, from our own document and from Resend's.

No generated request may get a 5xx; every answer is JSON (binary downloads excepted, on success)
and matches the document; every 4xx is in Resend's error shape. Against Resend's published document
(../shared/reference/resend-openapi.yaml, never copied here) our answers to the operations we
implement must match Resend's schemas, except where the document disagrees with Resend's own SDK
(the `resend` package's TypedDicts) or with itself: RESEND_QUIRKS lists those, with the reason.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
import yaml

from api.openapi.document import DOCUMENT
from storage.account import directory
from tests.api.openapi.fuzz import (
    ALL_CHECKS,
    EVENT_TYPES,
    LOOPBACK_ENDPOINT,
    Report,
    World,
    fuzz,
    undocumented,
)
from tests.conftest import DOMAIN_VIEW, ApiServer, MakeTenant

# Generated requests per operation and mode (valid, invalid): the whole file stays well under a
# minute on two busy cores, and derandomized runs make a finding reproducible. A deeper run:
# OPENSEND_FUZZ_EXAMPLES=100.
EXAMPLES = int(os.environ.get("OPENSEND_FUZZ_EXAMPLES", "12"))
RESEND_DOCUMENT = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference"
RESEND_DOCUMENT = RESEND_DOCUMENT / "resend-openapi.yaml"

# The operations of Resend's document that this server implements.
RESEND_OPERATIONS = frozenset(
    {
        "POST /emails",
        "GET /emails",
        "POST /emails/batch",
        "GET /emails/{email_id}",
        "PATCH /emails/{email_id}",
        "POST /emails/{email_id}/cancel",
        "GET /emails/receiving",
        "GET /emails/receiving/{email_id}",
        "GET /emails/receiving/{email_id}/attachments",
        "GET /emails/receiving/{email_id}/attachments/{attachment_id}",
        "POST /domains",
        "GET /domains",
        "GET /domains/{domain_id}",
        "PATCH /domains/{domain_id}",
        "DELETE /domains/{domain_id}",
        "POST /domains/{domain_id}/verify",
        "POST /api-keys",
        "GET /api-keys",
        "DELETE /api-keys/{api_key_id}",
        "POST /contacts",
        "GET /contacts",
        "GET /contacts/{id}",
        "PATCH /contacts/{id}",
        "DELETE /contacts/{id}",
        "POST /webhooks",
        "GET /webhooks",
        "GET /webhooks/{webhook_id}",
        "PATCH /webhooks/{webhook_id}",
        "DELETE /webhooks/{webhook_id}",
        "POST /suppressions",
        "GET /suppressions",
        "POST /suppressions/batch/add",
        "POST /suppressions/batch/remove",
        "GET /suppressions/{suppression}",
        "DELETE /suppressions/{suppression}",
    }
)

Quirk = tuple[str, Callable[[dict[str, Any]], None]]


def widen(schema: str, *path: str, to: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """A patch that replaces one property's schema in components.schemas."""

    def patch(document: dict[str, Any]) -> None:
        node = document["components"]["schemas"][schema]
        for step in path[:-1]:
            node = node[step]
        node["properties"][path[-1]] = to

    return patch


def each(*patches: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def patch(document: dict[str, Any]) -> None:
        for one in patches:
            one(document)

    return patch


NULLABLE_STRING = {"type": ["string", "null"]}
LIST_ITEM = ("properties", "data", "items")
RECEIVED_ATTACHMENT = ("properties", "attachments", "items")

# Where Resend's document disagrees with Resend's SDK (the `resend` package's TypedDicts) or with
# itself: (reason, the patch that makes the document say what the SDK says). Our API answers as
# the SDK types it; every other difference was fixed in our API.
RESEND_QUIRKS: list[Quirk] = [
    (
        "Contact first_name/last_name: the document says string, the SDK's Contact Optional[str].",
        each(
            *(
                widen(schema, *where, name, to=NULLABLE_STRING)
                for schema, where in (
                    ("GetContactResponseSuccess", ()),
                    ("ListContactsResponseSuccess", LIST_ITEM),
                )
                for name in ("first_name", "last_name")
            )
        ),
    ),
    (
        "DomainRecord.record: the document's enum says Receiving, the SDK's Record (str) Inbound.",
        widen("DomainRecord", "record", to={"type": "string"}),
    ),
    (
        "A received email's attachment content_id: the document says string, SDK Optional[str].",
        each(
            widen(
                "ListReceivedEmailsResponse",
                *LIST_ITEM,
                *RECEIVED_ATTACHMENT,
                "content_id",
                to=NULLABLE_STRING,
            ),
            widen(
                "GetReceivedEmailResponse", *RECEIVED_ATTACHMENT, "content_id", to=NULLABLE_STRING
            ),
        ),
    ),
    (
        "Received subject: nullable in ListReceivedEmailsResponse, string in GetReceivedEmail.",
        widen("GetReceivedEmailResponse", "subject", to=NULLABLE_STRING),
    ),
]


# Checks of schemathesis that cannot apply to Resend's document, with the reason.
RESEND_SKIPPED_CHECKS = {
    "status_code_conformance": "The document lists no error answers; Resend's API has them.",
}


def resend_document() -> dict[str, Any]:
    if not RESEND_DOCUMENT.is_file():
        raise AssertionError(
            f"Resend's OpenAPI document is missing: {RESEND_DOCUMENT} (CI has ../shared beside "
            "the checkout; see ../shared/reference/README.md)"
        )
    document: dict[str, Any] = yaml.safe_load(RESEND_DOCUMENT.read_text())
    for _reason, patch in RESEND_QUIRKS:
        patch(document)
    return document


async def make_world(api: ApiServer, make_tenant: MakeTenant) -> World:
    """A tenant with a verified receiving domain, and one of each resource the paths name."""
    acme = await make_tenant(catch_all=True)
    key = await acme.api_key()
    spare = await directory.add_domain(
        acme.pool,
        acme.id,
        f"spare.{acme.name}",
        receiving=False,
        reply_domain=None,
        verified=False,
        event_data=DOMAIN_VIEW.event_data,
    )
    spare_keys = [
        str((await directory.create_api_key(acme.pool, acme.id, f"spare {n}", "full_access"))[0].id)
        for n in range(3)
    ]
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(api.url, headers=headers) as http:

        async def call(method: str, path: str, body: Any) -> Any:
            async with http.request(method, path, json=body) as response:
                assert response.status < 300, await response.text()
                return await response.json()

        # Subscribed before the rest is made, so that their events are in the outbox.
        hook = {"endpoint": LOOPBACK_ENDPOINT, "events": list(EVENT_TYPES)}
        watching = await call("POST", "/webhooks", hook)
        spare_hooks = [(await call("POST", "/webhooks", hook))["id"] for _ in range(3)]
        suppressed = [f"gone{n}@example.net" for n in range(4)]
        entries = (await call("POST", "/suppressions/batch/add", {"emails": suppressed}))["data"]

        message = {"from": f"news@{acme.name}", "to": "ann@example.net", "subject": "Hi"}
        sent = await call("POST", "/emails", {**message, "text": "Hello"})
        later = await call("POST", "/emails", {**message, "text": "Hi", "scheduled_at": "in 1 day"})
        first = await call("GET", f"/emails/{sent['id']}", None)
        thread_id = first["thread_id"]
        raw = (
            f"From: Ann <ann@example.net>\r\nTo: support@{acme.name}\r\nSubject: Re: Hi\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            "--b\r\nContent-Type: text/plain\r\n\r\nThanks\r\n"
            "--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
            'filename="a.pdf"\r\n\r\n%PDF\r\n--b--\r\n'
        )
        received = await call(
            "POST", "/events/inbound", {"raw_mime": raw, "recipients": [f"support@{acme.name}"]}
        )
        # A bounce of the first email (RFC 3464): the received side shows how it was read, the
        # sent email its recipient's report.
        dsn = (
            f"From: MAILER-DAEMON@example.net\r\nTo: bounces@{acme.name}\r\n"
            "Subject: Undelivered Mail\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=r\r\n\r\n"
            "--r\r\nContent-Type: text/plain\r\n\r\nNo such user.\r\n"
            "--r\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.example.net\r\n"
            "\r\nFinal-Recipient: rfc822; ann@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
            "--r\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"Message-ID: {first['message_id']}\r\nTo: ann@example.net\r\n--r--\r\n"
        )
        bounce = await call(
            "POST",
            "/events/inbound",
            {"raw_mime": dsn, "recipients": [f"bounces@{acme.name}"], "mail_from": ""},
        )
        read = await call("GET", f"/emails/receiving/{bounce['emails'][0]['id']}", None)
        assert (read["classification"], read["report"]["form"]) == ("bounce", "delivery-status")
        bounced = await call("GET", f"/emails/{sent['id']}", None)
        assert bounced["deliveries"][0]["report"]["type"] == "Permanent", bounced["deliveries"]
        contact = await call("POST", "/contacts", {"email": "carol@example.net"})
        events = await call("GET", f"/webhooks/{watching['id']}/events", None)
    assert events["data"], "no event reached the outbox"
    return World(
        key=key,
        domain=acme.name,
        ids={
            "email": [sent["id"], later["id"]],
            "received": [received["emails"][0]["id"], bounce["emails"][0]["id"]],
            "thread": [thread_id],
            "contact": [contact["id"], "carol@example.net"],
            "domain": [str(spare.id)],
            "api_key": spare_keys,
            "webhook": spare_hooks,
            "webhook_with_events": [watching["id"]],
            "webhook_event": [event["id"] for event in events["data"]],
            "suppression": [e["id"] for e in entries] + suppressed,
            "none": ["x"],
        },
    )


async def forget_webhooks(api: ApiServer, world: World) -> None:
    """Delete every webhook the fuzz made (and so their pending deliveries): a later test's
    delivery worker claims due deliveries of every tenant, and a generated endpoint may name
    any host."""
    headers = {"Authorization": f"Bearer {world.key}"}
    async with aiohttp.ClientSession(api.url, headers=headers) as http:
        while True:
            async with http.get("/webhooks", params={"limit": "100"}) as response:
                assert response.status == 200, await response.text()
                hooks = (await response.json())["data"]
            if not hooks:
                return
            for hook in hooks:
                async with http.delete(f"/webhooks/{hook['id']}") as response:
                    assert response.status in (200, 404), await response.text()


def assert_clean(report: Report) -> None:
    print(report.summary(), report.successes)  # the figures, with -s
    assert report.findings == [], "\n".join([report.summary(), *report.distinct()])


async def test_fuzzing_our_document_finds_no_5xx_and_no_answer_off_the_document(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    world = await make_world(api, make_tenant)
    document = json.loads(json.dumps(DOCUMENT))
    schema = schemathesis.openapi.from_dict(copy.deepcopy(document))
    try:
        report = await asyncio.to_thread(
            fuzz, schema, world, api.url, checks=ALL_CHECKS, examples=EXAMPLES, strict=document
        )
    finally:
        await forget_webhooks(api, world)
    assert len(report.operations) == sum(
        1 for item in DOCUMENT["paths"].values() for _ in item
    )  # every operation was fuzzed
    assert_clean(report)


async def test_fuzzing_resends_document_finds_our_answers_in_resends_shapes(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    document = resend_document()
    world = await make_world(api, make_tenant)
    schema = schemathesis.openapi.from_dict(copy.deepcopy(document))
    checks = [check for check in ALL_CHECKS if check.__name__ not in RESEND_SKIPPED_CHECKS]
    try:
        report = await asyncio.to_thread(
            fuzz,
            schema,
            world,
            api.url,
            checks=checks,
            examples=EXAMPLES,
            wanted=lambda operation: operation.label in RESEND_OPERATIONS,
        )
    finally:
        await forget_webhooks(api, world)
    assert sorted(report.operations) == sorted(RESEND_OPERATIONS)
    assert_clean(report)


@pytest.mark.parametrize(
    "reason", [reason for reason, _ in RESEND_QUIRKS] + list(RESEND_SKIPPED_CHECKS.values())
)
def test_each_resend_quirk_has_a_one_line_reason(reason: str) -> None:
    assert "\n" not in reason and len(reason) <= 100


def test_strict_check_names_each_undocumented_field_even_through_refs_and_combinations() -> None:
    document = json.loads(json.dumps(DOCUMENT))

    def drift(answer: Any, schema: str) -> list[str]:
        return undocumented(answer, {"$ref": f"#/components/schemas/{schema}"}, document)

    assert drift({"id": "x", "extra": 1}, "EmailId") == ["undocumented field .extra"]
    # allOf (the detail) and oneOf (a nullable report), into a list's items.
    received = {"id": "x", "report": {"form": "text", "recipients": [{"type": "x", "new": 1}]}}
    assert drift(received, "ReceivedEmail") == ["undocumented field .report.recipients[0].new"]
    assert drift({"id": "x", "report": None, "classification": "bounce"}, "ReceivedEmail") == []
    # A free-form object (headers, a webhook payload) may hold anything.
    assert drift({"headers": {"X-Any": "1"}, "envelope": {"tls": True}}, "ReceivedEmail") == []
    assert drift({"data": [{"id": "x", "zzz": 1}]}, "SuppressionList") == [
        "undocumented field .data[0].zzz"
    ]


async def test_a_bounce_and_a_refused_ingest_answer_only_documented_fields(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    """Found by the strict check: a delivery report's `received_id` and the ingester's
    `refused` list were answered but not documented."""
    world = await make_world(api, make_tenant)
    await forget_webhooks(api, world)
    document = json.loads(json.dumps(DOCUMENT))
    headers = {"Authorization": f"Bearer {world.key}"}
    bounced, bounce = world.ids["email"][0], world.ids["received"][1]
    async with aiohttp.ClientSession(api.url, headers=headers) as http:
        answers = []
        for path, schema in (
            (f"/emails/{bounced}", "Email"),
            (f"/emails/receiving/{bounce}", "ReceivedEmail"),
        ):
            async with http.get(path) as response:
                assert response.status == 200
                answers.append((await response.json(), schema))
        refused = {"raw_mime": "Subject: x\r\n\r\nHi\r\n", "recipients": ["nobody@unrouted.test"]}
        async with http.post("/events/inbound", json=refused) as response:
            assert response.status == 422
            answers.append((await response.json(), "Error"))
    assert answers[0][0]["deliveries"][0]["report"]["received_id"] == bounce
    assert answers[2][0]["refused"][0]["recipient"] == "nobody@unrouted.test"
    for answer, schema in answers:
        assert undocumented(answer, {"$ref": f"#/components/schemas/{schema}"}, document) == []
