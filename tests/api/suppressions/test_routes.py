"""The suppression list through the official `resend` SDK, unchanged (resend.Suppressions):
add, batch add, list with its origin filter, get by id and by address, remove, batch remove.
Another tenant's entries are never seen."""

from __future__ import annotations

from typing import Any

import pytest
import resend
from resend.exceptions import ResendError

from storage.database import Pool
from storage.suppressions.store import suppress
from tests.api.sending.test_sdk import call, sdk
from tests.conftest import ApiServer, MakeTenant

__all__ = ["sdk"]  # the SDK's key and URL, set per test and put back (a fixture)


async def test_sdk_adds_lists_gets_and_removes_suppressions(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant, sdk: None
) -> None:
    acme = await make_tenant()
    resend.api_key, resend.api_url = await acme.api_key(), api.url

    added: Any = await call(resend.Suppressions.add, {"email": "Gone@Example.net"})
    again: Any = await call(resend.Suppressions.add, {"email": "gone@example.net"})
    assert added["object"] == "suppression"
    assert again["id"] == added["id"]  # adding again returns the existing entry

    batch: Any = await call(
        resend.Suppressions.Batch.add,
        {"emails": ["a@example.net", "b@example.net", "A@example.net"]},
    )
    assert len(batch["data"]) == 2  # duplicates collapse into one

    got: Any = await call(resend.Suppressions.get, "gone@example.net")
    assert (got["object"], got["id"], got["email"]) == (
        "suppression",
        added["id"],
        "gone@example.net",
    )
    assert (got["origin"], got["source_id"]) == ("manual", None)
    by_id: Any = await call(resend.Suppressions.get, added["id"])
    assert by_id["email"] == "gone@example.net"

    # A bounce's entry, as the MX writes one: with its origin and source.
    email, _token = await acme.sent_email(to="bounced@example.net")
    await suppress(pool, acme.id, ["bounced@example.net"], origin="bounce", source_ids=[email.id])

    listed: Any = await call(resend.Suppressions.list)
    assert listed["object"] == "list"
    assert [e["email"] for e in listed["data"]] == [
        "bounced@example.net",
        "b@example.net",
        "a@example.net",
        "gone@example.net",
    ]
    bounces: Any = await call(resend.Suppressions.list, {"origin": "bounce"})
    [entry] = bounces["data"]
    assert (entry["origin"], entry["source_id"]) == ("bounce", str(email.id))
    assert "object" not in entry
    page: Any = await call(resend.Suppressions.list, {"limit": 2})
    assert page["has_more"] is True
    rest: Any = await call(resend.Suppressions.list, {"after": page["data"][-1]["id"]})
    assert [e["email"] for e in rest["data"]] == ["a@example.net", "gone@example.net"]

    removed: Any = await call(resend.Suppressions.remove, "gone@example.net")
    assert (removed["id"], removed["deleted"]) == (added["id"], True)
    gone: Any = await call(
        resend.Suppressions.Batch.remove, {"emails": ["a@example.net", "b@example.net"]}
    )
    assert {d["deleted"] for d in gone["data"]} == {True}
    assert len(gone["data"]) == 2
    by_ids: Any = await call(resend.Suppressions.Batch.remove, {"ids": [entry["id"]]})
    assert [d["id"] for d in by_ids["data"]] == [entry["id"]]
    with pytest.raises(ResendError) as missing:
        await call(resend.Suppressions.get, "gone@example.net")
    assert missing.value.code == 404


async def test_another_tenants_suppressions_are_not_found(
    api: ApiServer, make_tenant: MakeTenant, sdk: None
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    resend.api_key, resend.api_url = await acme.api_key(), api.url
    added: Any = await call(resend.Suppressions.add, {"email": "x@example.net"})
    resend.api_key = await globex.api_key()
    for key in (added["id"], "x@example.net"):
        with pytest.raises(ResendError) as missing:
            await call(resend.Suppressions.get, key)
        assert missing.value.code == 404
    listed: Any = await call(resend.Suppressions.list)
    assert listed["data"] == []


async def test_invalid_address_is_refused(
    api: ApiServer, make_tenant: MakeTenant, sdk: None
) -> None:
    acme = await make_tenant()
    resend.api_key, resend.api_url = await acme.api_key(), api.url
    with pytest.raises(ResendError) as refused:
        await call(resend.Suppressions.add, {"email": "not an address"})
    assert refused.value.code == 400  # validation_error, as for every other body field
