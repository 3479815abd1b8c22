"""A NUL (U+0000) anywhere a request can carry text: a 400 in Resend's shape that names the field,
from the one check where JSON bodies are read (api.context.parse_json) and the one middleware for
paths and queries (api.app.refuse_nul). PostgreSQL's text cannot store it; it is never stripped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from yarl import URL

from api.context import nul_field
from mta.listeners import MXListener
from storage.database import Pool
from tests.api.sending.emails_client import Answer, EmailsApi, count_emails, email, emails_api
from tests.api.sending.reply_client import post_reply, received_email, reply_body
from tests.conftest import ApiServer, MakeTenant, TenantWorld

NUL = "\0"


def assert_refused(answer: Answer, field: str) -> None:
    assert (answer.status, answer.name) == (400, "validation_error"), answer.body
    assert answer.body["statusCode"] == 400
    assert answer.message == (
        f"`{field}` contains a NUL character (U+0000), which cannot be stored: remove it."
    )


# (the field the answer names, a POST /emails body with a NUL in that field)
EMAIL_FIELDS: list[tuple[str, Callable[[TenantWorld], Any]]] = [
    ("text", lambda w: email(w, text=f"Hello{NUL}")),
    ("html", lambda w: email(w, html=f"<p>{NUL}</p>")),
    ("from", lambda w: email(w, sender=f"Acme{NUL} <a@{w.name}>")),
    ("to[1]", lambda w: email(w, to=["ok@example.net", f"x{NUL}@example.net"])),
    ("bcc", lambda w: email(w, bcc=f"b{NUL}@example.com")),
    ("subject", lambda w: email(w, subject=f"Hello{NUL}")),
    ("headers.X-Ref", lambda w: email(w, headers={"X-Ref": f"1{NUL}"})),
    ("headers.X-A\\u0000", lambda w: email(w, headers={f"X-A{NUL}": "1"})),
    (
        "attachments[0].filename",
        lambda w: email(w, attachments=[{"filename": f"a{NUL}.pdf", "content": "aGk="}]),
    ),
    ("tags[0].value", lambda w: email(w, tags=[{"name": "n", "value": f"v{NUL}"}])),
]


@pytest.mark.parametrize(("field", "body"), [pytest.param(f, b, id=f) for f, b in EMAIL_FIELDS])
async def test_nul_in_any_field_of_an_email_is_400_naming_it_and_nothing_is_stored(
    api: ApiServer,
    pool: Pool,
    make_tenant: MakeTenant,
    field: str,
    body: Callable[[TenantWorld], Any],
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        answer = await client.send(body(acme))
    assert_refused(answer, field)
    assert await count_emails(pool, acme) == 0


async def test_nul_in_a_batch_names_the_email_by_its_index(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    batch = [email(acme), email(acme), email(acme, html=f"<p>{NUL}</p>")]
    async with emails_api(api, await acme.api_key()) as client:
        strict = await client.batch(batch)
        permissive = await client.batch(batch, batch_validation="permissive")
    assert_refused(strict, "[2].html")
    assert_refused(permissive, "[2].html")  # the body cannot be read: no email goes
    assert await count_emails(pool, acme) == 0


async def test_an_escaped_backslash_before_u0000_is_text_not_a_nul(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    """`"\\\\u0000"` in JSON is a backslash and five characters, which are stored as sent."""
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        answer = await client.send(email(acme, text="C:\\u0000 is a path, not a NUL"))
        stored = await client.get(answer.body["id"])
    assert answer.status == 200, answer.body
    assert stored.body["text"] == "C:\\u0000 is a path, not a NUL"


async def contact_calls(client: EmailsApi) -> list[tuple[str, Answer]]:
    created = await client.call("POST", "/contacts", {"email": "ann@example.net"})
    assert created.status == 201, created.body
    contact = created.body["id"]
    return [
        ("email", await client.call("POST", "/contacts", {"email": f"b{NUL}@example.net"})),
        (
            "first_name",
            await client.call(
                "POST", "/contacts", {"email": "c@example.net", "first_name": f"C{NUL}"}
            ),
        ),
        (
            "last_name",
            await client.call("PATCH", f"/contacts/{contact}", {"last_name": f"L{NUL}"}),
        ),
        ("name", await client.call("POST", "/api-keys", {"name": f"ci{NUL}"})),
        ("name", await client.call("POST", "/domains", {"name": f"a{NUL}.example.org"})),
    ]


async def test_nul_in_contacts_api_keys_and_domains_is_400_naming_the_field(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        calls = await contact_calls(client)
        contact = await client.call("GET", "/contacts/ann@example.net")
    for field, answer in calls:
        assert_refused(answer, field)
    assert contact.body["last_name"] is None  # the PATCH changed nothing
    assert await pool.fetchval("SELECT count(*) FROM contacts WHERE tenant_id = $1", acme.id) == 1


async def test_nul_in_a_reply_is_400_naming_the_field_in_inbounds_shape_too(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    received_id = await received_email(acme, mx)
    async with emails_api(api, await acme.api_key()) as client:
        answer = await post_reply(client, received_id, reply_body(acme, text=f"Thanks{NUL}"))
    assert_refused(answer, "text")
    assert answer.body["error"] == answer.message


async def test_nul_in_an_ingested_event_is_400_naming_the_field(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    event = {"raw_mime": f"Subject: hi\r\n\r\nHi{NUL}\r\n", "recipients": [f"x@{acme.name}"]}
    async with emails_api(api, "unused: the ingester has no token here") as client:
        answer = await client.call("POST", "/events/inbound", event)
    assert_refused(answer, "raw_mime")


@pytest.mark.parametrize(
    ("path", "field"),
    [
        pytest.param("/contacts/a%00b@example.test", "path", id="contact-by-email"),
        pytest.param("/domains/%00", "path", id="domain-id"),
        pytest.param("/nowhere%00", "path", id="unrouted"),
        pytest.param("/emails/receiving?from=a%00b@example.net", "query.from", id="query-value"),
        pytest.param("/contacts?a%00b=1", "query.a\\u0000b", id="query-name"),
    ],
)
async def test_nul_in_a_path_or_query_is_400_naming_where(
    api: ApiServer, make_tenant: MakeTenant, path: str, field: str
) -> None:
    acme = await make_tenant()
    # Sent as written: %00 is the only way a URL carries a NUL.
    async with (
        emails_api(api, await acme.api_key()) as client,
        client.http.get(URL(api.url + path, encoded=True)) as response,
    ):
        body = await response.json()
    assert_refused(Answer(response.status, body, response.headers), field)


async def test_nul_in_a_path_still_needs_an_api_key_first(api: ApiServer) -> None:
    async with (
        emails_api(api, "re_not_a_key") as client,
        client.http.get(URL(api.url + "/contacts/a%00b", encoded=True)) as response,
    ):
        body = await response.json()
    assert (response.status, body["name"]) == (403, "invalid_api_key")


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"a": {"b": [1, "x\0"]}}, "a.b[1]"),
        ([{"ok": "y"}, {"k\0": 1}], "[1].k\\u0000"),
        ("\0", "body"),
        ({"clean": ["a", {"b": "c"}]}, None),
    ],
    ids=["nested", "key", "whole-body", "none"],
)
def test_the_field_is_named_as_a_path_into_the_json(value: Any, field: str | None) -> None:
    assert nul_field(value) == field
