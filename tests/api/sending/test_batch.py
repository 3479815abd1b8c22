"""POST /emails/batch: Resend's shapes, strict and permissive validation, all-or-nothing storage."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from mta.listeners import MXListener
from storage.database import Pool
from tests.api.sending.emails_client import count_emails, email, email_row, emails_api
from tests.api.sending.reply_client import received_email
from tests.conftest import ApiServer, MakeTenant


async def test_batch_sends_each_email_tracked_on_its_own_thread(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    batch = [email(acme, to=f"c{i}@example.net", subject=f"n{i}") for i in range(100)]
    async with emails_api(api, await acme.api_key()) as client:
        answer = await client.batch(batch)
    assert answer.status == 200
    assert list(answer.body) == ["data"]
    ids = [item["id"] for item in answer.body["data"]]
    assert len(set(ids)) == 100
    rows = [await email_row(pool, i) for i in ids]
    assert [r["subject"] for r in rows] == [f"n{i}" for i in range(100)]
    assert len({r["thread_id"] for r in rows}) == 100
    assert all(r["reply_token"] for r in rows)


async def test_strict_batch_with_one_invalid_email_sends_none(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    batch = [email(acme), email(acme, to="bob@"), email(acme)]
    async with emails_api(api, await acme.api_key()) as client:
        default = await client.batch(batch)
        strict = await client.batch(batch, batch_validation="strict")
    for answer in (default, strict):
        assert (answer.status, answer.name) == (400, "validation_error")
        assert answer.message == "emails[1]: Invalid `to[0]` field. " + (
            "The email address needs to follow the `email@example.com` or "
            "`Name <email@example.com>` format."
        )
    assert await count_emails(pool, acme) == 0


async def test_a_refused_batch_opens_no_thread_for_the_message_one_of_its_emails_answers(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    """Answering an unmatched received message opens its thread; a batch refused whole must
    not have done that for its valid emails either."""
    acme = await make_tenant(receiving=True)
    received_id = UUID(await received_email(acme, mx))
    message_id = await pool.fetchval(
        "SELECT message_id FROM received_emails WHERE id = $1", received_id
    )
    answer = email(acme, headers={"In-Reply-To": f"<{message_id}>"})
    query = "SELECT thread_id FROM received_emails WHERE id = $1"
    async with emails_api(api, await acme.api_key()) as client:
        refused = await client.batch([answer, email(acme, to="bob@")])
        after_refusal = await pool.fetchval(query, received_id)
        sent = await client.batch([answer])
    assert (refused.status, sent.status) == (400, 200)
    assert after_refusal is None
    [row] = await pool.fetch("SELECT thread_id FROM emails WHERE tenant_id = $1", acme.id)
    assert row["thread_id"] == await pool.fetchval(query, received_id) is not None


async def test_permissive_batch_sends_the_valid_and_lists_the_others(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    batch: list[Any] = [
        email(acme),
        email(acme, subject=None),
        email(globex),
        "not an email",
        email(acme, to="x@example.org"),
    ]
    async with emails_api(api, await acme.api_key()) as client:
        answer = await client.batch(batch, batch_validation="permissive")
        nothing = await client.batch(batch[1:4], batch_validation="Permissive")
    assert answer.status == 200
    assert len(answer.body["data"]) == 2
    assert answer.body["errors"] == [
        {"index": 1, "message": "Missing `subject` field."},
        {
            "index": 2,
            "message": f"The {globex.name} domain is not verified. Please, add and verify your "
            "domain (POST /domains, then POST /domains/{id}/verify).",
        },
        {"index": 3, "message": "Each email must be a JSON object."},
    ]
    assert (nothing.status, nothing.body["data"], len(nothing.body["errors"])) == (200, [], 3)
    assert await count_emails(pool, acme) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attachments", [{"filename": "a.txt", "content": "aGk="}]),
        ("scheduled_at", "in 1 hour"),
    ],
)
async def test_batch_emails_cannot_have_attachments_or_a_schedule(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant, field: str, value: Any
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        answer = await client.batch([email(acme, **{field: value})])
    assert (answer.status, answer.name) == (400, "validation_error")
    assert answer.message == f"emails[0]: `{field}` is not supported in batch emails."
    assert await count_emails(pool, acme) == 0


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        ([], {}, "A batch holds 1 to 100 emails; this one has 0."),
        (None, {}, "A batch holds 1 to 100 emails; this one has 101."),
        ({"emails": []}, {}, "The request body must be an array of emails."),
        (
            None,
            {"batch_validation": "lenient"},
            "The x-batch-validation header must be strict or permissive.",
        ),
    ],
    ids=["empty", "over_100", "object", "unknown_mode"],
)
async def test_batch_as_a_whole_is_refused_400(
    api: ApiServer,
    pool: Pool,
    make_tenant: MakeTenant,
    body: Any,
    headers: dict[str, str],
    message: str,
) -> None:
    acme = await make_tenant()
    if body is None:
        body = [email(acme)] * (101 if not headers else 1)
    async with emails_api(api, await acme.api_key()) as client:
        answer = await client.batch(body, **headers)
    assert (answer.status, answer.name, answer.message) == (400, "validation_error", message)
    assert await count_emails(pool, acme) == 0
