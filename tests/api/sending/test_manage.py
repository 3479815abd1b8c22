"""GET /emails/{id}, GET /emails (cursor pages), PATCH /emails/{id}, POST /emails/{id}/cancel:
Resend's shapes plus our tracking fields, each tenant seeing only its own emails."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from storage.database import Pool
from tests.api.sending.emails_client import deliveries, email, email_row, emails_api, events
from tests.conftest import ApiServer, MakeTenant

LATER = "in 2 hours"


async def test_get_answers_resend_fields_tracking_and_each_recipients_delivery(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    body = email(
        acme, to="ann@example.net", cc=["cc@example.org"], bcc="bcc@example.com", reply_to=None
    )
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(body)
        got = await client.get(email_id)
    row = await email_row(pool, email_id)
    assert got.status == 200
    assert got.body == {
        "object": "email",
        "id": email_id,
        "from": body["from"],
        "to": ["ann@example.net"],
        "cc": ["cc@example.org"],
        "bcc": ["bcc@example.com"],
        "reply_to": [],
        "subject": body["subject"],
        "html": body["html"],
        "text": body["text"],
        "created_at": row["created_at"].isoformat(),
        "scheduled_at": None,
        "last_event": "sent",
        "tags": [],
        "message_id": row["message_id"],
        "thread_id": str(row["thread_id"]),
        "reply_address": row["reply_address"],
        "deliveries": got.body["deliveries"],
        "thread": {
            "thread_id": str(row["thread_id"]),
            "match_status": None,
            "original_email_id": email_id,
            "contact_id": None,
            "messages": got.body["thread"]["messages"],
        },
    }
    [only] = got.body["thread"]["messages"]
    assert (only["direction"], only["id"], only["subject"]) == (
        "outbound",
        email_id,
        body["subject"],
    )
    assert [(d["recipient"], d["status"], d["attempts"]) for d in got.body["deliveries"]] == [
        ("ann@example.net", "queued", 0),
        ("bcc@example.com", "queued", 0),
        ("cc@example.org", "queued", 0),
    ]
    assert all(
        {"last_response", "last_code", "updated_at", "next_attempt_at"} <= set(d)
        for d in got.body["deliveries"]
    )


async def test_absent_addresses_and_body_are_empty_lists_and_strings_as_resend_types_them(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    """Resend's document and SDK type cc/bcc/reply_to as lists and html/text as strings; null
    broke both (found by tests/api/openapi/test_fuzz.py)."""
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(email(acme, html=None))
        got = await client.get(email_id)
        listed = await client.call("GET", "/emails")
    [summary] = [e for e in listed.body["data"] if e["id"] == email_id]
    for answer in (got.body, summary):
        assert (answer["cc"], answer["bcc"], answer["reply_to"]) == ([], [], [])
    assert (got.body["html"], got.body["text"]) == ("", email(acme)["text"])


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("PATCH", ""), ("POST", "/cancel")],
    ids=["get", "reschedule", "cancel"],
)
async def test_another_tenants_unknown_or_malformed_id_is_404_not_found(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant, method: str, suffix: str
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    async with emails_api(api, await globex.api_key()) as client:
        theirs = await client.sent_id(email(globex, scheduled_at=LATER))
    async with emails_api(api, await acme.api_key()) as client:
        for email_id in (theirs, str(uuid.uuid4()), "not-an-id", theirs.upper()):
            answer = await client.call(
                method, f"/emails/{email_id}{suffix}", {"scheduled_at": "in 3 hours"}
            )
            assert (answer.status, answer.name) == (404, "not_found"), email_id
            assert "scheduled" not in str(answer.body) and globex.name not in str(answer.body)
    row = await email_row(pool, theirs)
    assert row["status"] == "scheduled"


async def test_list_pages_newest_first_with_after_and_before_cursors(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    async with emails_api(api, await globex.api_key()) as client:
        await client.sent_id(email(globex))
    async with emails_api(api, await acme.api_key()) as client:
        ids = [await client.sent_id(email(acme, subject=f"n{i}")) for i in range(5)]
        newest_first = list(reversed(ids))
        everything = await client.call("GET", "/emails")
        first = await client.call("GET", "/emails", params={"limit": "2"})
        second = await client.call(
            "GET", "/emails", params={"limit": "2", "after": first.body["data"][-1]["id"]}
        )
        last = await client.call(
            "GET", "/emails", params={"limit": "2", "after": second.body["data"][-1]["id"]}
        )
        back = await client.call(
            "GET", "/emails", params={"limit": "2", "before": last.body["data"][0]["id"]}
        )
        top = await client.call("GET", "/emails", params={"before": newest_first[1]})
    assert everything.body["object"] == "list"
    assert [e["id"] for e in everything.body["data"]] == newest_first  # no other tenant's
    assert "html" not in everything.body["data"][0]
    pages = [first, second, last]
    assert [e["id"] for p in pages for e in p.body["data"]] == newest_first
    assert [p.body["has_more"] for p in pages] == [True, True, False]
    assert [e["id"] for e in back.body["data"]] == newest_first[2:4]
    assert back.body["has_more"] is True
    assert ([e["id"] for e in top.body["data"]], top.body["has_more"]) == ([newest_first[0]], False)


LIMIT = "The `limit` parameter must be a whole number between 1 and 100."


@pytest.mark.parametrize(
    ("params", "status", "name", "message"),
    [
        ({"limit": "0"}, 400, "validation_error", LIMIT),
        ({"limit": "101"}, 400, "validation_error", LIMIT),
        ({"limit": "ten"}, 400, "validation_error", LIMIT),
        (
            {"after": "nope"},
            422,
            "invalid_parameter",
            "The `after` parameter must be a valid UUID.",
        ),
        (
            {"before": "nope"},
            422,
            "invalid_parameter",
            "The `before` parameter must be a valid UUID.",
        ),
        (
            {"after": str(uuid.uuid4()), "before": str(uuid.uuid4())},
            400,
            "validation_error",
            "Use either the `after` or the `before` parameter, not both.",
        ),
        (
            {"after": str(uuid.uuid4())},
            422,
            "invalid_parameter",
            "The `after` parameter must be the id of an item of this list.",
        ),
    ],
    ids=["limit_zero", "limit_101", "limit_word", "after_bad", "before_bad", "both", "unknown"],
)
async def test_list_refuses_bad_parameters(
    api: ApiServer,
    make_tenant: MakeTenant,
    params: dict[str, str],
    status: int,
    name: str,
    message: str,
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        answer = await client.call("GET", "/emails", params=params)
    assert (answer.status, answer.name, answer.message) == (status, name, message)


async def test_reschedule_moves_the_email_and_its_queue_rows(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(email(acme, scheduled_at=LATER, cc="c@example.org"))
        moved = await client.call("PATCH", f"/emails/{email_id}", {"scheduled_at": str(when)})
        got = await client.get(email_id)
    assert (moved.status, moved.body) == (200, {"object": "email", "id": email_id})
    assert got.body["scheduled_at"] == when.isoformat()
    assert [d["next_attempt_at"] for d in await deliveries(pool, email_id)] == [when, when]


async def test_cancel_stops_a_scheduled_email_and_records_it(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(email(acme, scheduled_at=LATER))
        canceled = await client.call("POST", f"/emails/{email_id}/cancel")
        again = await client.call("POST", f"/emails/{email_id}/cancel")
        moved = await client.call("PATCH", f"/emails/{email_id}", {"scheduled_at": LATER})
        got = await client.get(email_id)
    assert (canceled.status, canceled.body) == (200, {"object": "email", "id": email_id})
    row = await email_row(pool, email_id)
    assert (row["status"], row["last_event"], got.body["last_event"]) == (
        "canceled",
        "email.canceled",
        "canceled",
    )
    assert [d["status"] for d in await deliveries(pool, email_id)] == ["canceled"]
    assert await events(pool, email_id) == ["email.scheduled", "email.canceled"]
    for answer in (again, moved):
        assert (answer.status, answer.name) == (400, "validation_error")
        assert answer.message.endswith("this one is canceled.")


async def test_an_email_already_sent_cannot_be_rescheduled_or_canceled(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(email(acme))
        moved = await client.call("PATCH", f"/emails/{email_id}", {"scheduled_at": LATER})
        canceled = await client.call("POST", f"/emails/{email_id}/cancel")
    assert (moved.status, moved.name) == (400, "validation_error")
    assert moved.message == (
        "Only a scheduled email that is not yet due can be rescheduled; this one is sent."
    )
    assert canceled.message == (
        "Only a scheduled email that is not yet due can be canceled; this one is sent."
    )
    assert [d["status"] for d in await deliveries(pool, email_id)] == ["queued"]


@pytest.mark.parametrize(
    ("body", "status", "name", "message"),
    [
        ({}, 422, "missing_required_field", "Missing `scheduled_at` field."),
        ({"scheduled_at": "2020-01-01T00:00:00Z"}, 400, "validation_error", "in the future"),
        ({"scheduled_at": "soon"}, 400, "validation_error", "must be an ISO 8601 date"),
        ({"scheduled_at": "in 40 days"}, 400, "validation_error", "at most 30 days ahead"),
    ],
    ids=["missing", "past", "garbage", "too_far"],
)
async def test_reschedule_refuses_bad_times(
    api: ApiServer,
    make_tenant: MakeTenant,
    body: dict[str, str],
    status: int,
    name: str,
    message: str,
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(email(acme, scheduled_at=LATER))
        answer = await client.call("PATCH", f"/emails/{email_id}", body)
    assert (answer.status, answer.name) == (status, name)
    assert message in answer.message


async def test_sending_access_key_only_sends(api: ApiServer, make_tenant: MakeTenant) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key("sending_access")) as client:
        email_id = await client.sent_id(email(acme, scheduled_at=LATER))
        answers = [
            await client.call("GET", "/emails"),
            await client.get(email_id),
            await client.call("PATCH", f"/emails/{email_id}", {"scheduled_at": LATER}),
            await client.call("POST", f"/emails/{email_id}/cancel"),
        ]
    for answer in answers:
        assert (answer.status, answer.name) == (401, "restricted_api_key")
