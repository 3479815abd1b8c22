"""The suppression page over plain HTTP, as with JavaScript off: the list with its origin filter
and address search, an address added by hand and removed, the link to the email that caused an
entry; CSRF refusal; another tenant's entry answering 404."""

from __future__ import annotations

import html

from storage.suppressions import store
from tests.api.dashboard.support import session, signed_in
from tests.conftest import ApiServer, MakeTenant


async def test_list_filter_by_origin_and_search_by_address(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    email, _token = await acme.sent_email(to="gone@example.org")
    [bounced] = await store.suppress(
        acme.pool, acme.id, ["Gone@Example.org"], origin="bounce", source_ids=[email.id]
    )
    await store.suppress(acme.pool, acme.id, ["angry@example.net"], origin="complaint")
    await store.suppress(acme.pool, acme.id, ["by-hand@example.org"], origin="manual")
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        everything = await me.get("/dashboard/suppressions")
        bounces = await me.get("/dashboard/suppressions?origin=bounce")
        searched = await me.get("/dashboard/suppressions?q=EXAMPLE.ORG")
        both = await me.get("/dashboard/suppressions?q=example.org&origin=manual")
        nothing = await me.get("/dashboard/suppressions?q=nobody")

    assert everything.status == 200
    for address in ("gone@example.org", "angry@example.net", "by-hand@example.org"):
        assert address in everything.text
    assert '<span class="badge">complaint</span>' in everything.text
    entry = everything.text.split(f'id="suppression-{bounced.id}"', 1)[1].split("</li>", 1)[0]
    assert '<span class="badge">bounce</span>' in entry
    assert f'href="/dashboard/emails/{email.id}"' in entry
    assert (
        "/dashboard/emails/"
        not in everything.text.split("angry@example.net", 1)[1].split("</li>", 1)[0]
    )  # a complaint recorded without its email links none
    assert "gone@example.org" in bounces.text and "angry@" not in bounces.text
    assert "by-hand@" not in bounces.text
    assert '<option value="bounce" selected>' in bounces.text
    assert "gone@example.org" in searched.text and "by-hand@example.org" in searched.text
    assert "angry@" not in searched.text
    assert "by-hand@example.org" in both.text and "gone@" not in both.text
    assert "No suppressed addresses match." in nothing.text


async def test_add_an_address_by_hand_then_remove_it(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        csrf = (await me.get("/dashboard/suppressions")).csrf
        added = await me.post(
            "/dashboard/suppressions", {"csrf_token": csrf, "email": "Ann@X.test"}
        )
        entry = await store.find(acme.pool, acme.id, "ann@x.test")
        assert entry is not None
        listed = await me.get("/dashboard/suppressions?done=added")
        refused = await me.post(
            "/dashboard/suppressions", {"csrf_token": csrf, "email": "not an address"}
        )
        removed = await me.post(f"/dashboard/suppressions/{entry.id}/remove", {"csrf_token": csrf})
        after = await me.get("/dashboard/suppressions")
        again = await me.post(f"/dashboard/suppressions/{entry.id}/remove", {"csrf_token": csrf})

    assert added.status == 303
    assert added.location == f"/dashboard/suppressions?done=added#suppression-{entry.id}"
    assert entry.origin == "manual" and entry.source_id is None
    assert "Address suppressed." in listed.text
    assert '<span class="badge">manual</span>' in listed.text
    assert refused.status == 422
    assert "must be an email address" in html.unescape(refused.text)
    assert 'value="not an address"' in refused.text
    assert (removed.status, removed.location) == (303, "/dashboard/suppressions?done=removed")
    assert await store.find(acme.pool, acme.id, "ann@x.test") is None
    assert "ann@x.test" not in after.text
    assert again.status == 404


async def test_csrf_is_required_and_another_tenants_entry_answers_404(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme, other = await make_tenant(), await make_tenant()
    [theirs] = await store.suppress(other.pool, other.id, ["theirs@example.net"], origin="manual")
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        csrf = (await me.get("/dashboard/suppressions")).csrf
        foreign = await me.post(f"/dashboard/suppressions/{theirs.id}/remove", {"csrf_token": csrf})
        listed = await me.get("/dashboard/suppressions?q=theirs")
        no_token = await me.post("/dashboard/suppressions", {"email": "x@example.net"})
        elsewhere = await me.post(
            "/dashboard/suppressions",
            {"csrf_token": csrf, "email": "x@example.net"},
            origin="https://evil.example",
        )
        bad_id = await me.post("/dashboard/suppressions/not-an-id/remove", {"csrf_token": csrf})

    assert foreign.status == 404
    assert await store.find(other.pool, other.id, "theirs@example.net") == theirs
    assert "theirs@" not in listed.text
    assert (no_token.status, elsewhere.status, bad_id.status) == (403, 403, 404)
    assert await store.find(acme.pool, acme.id, "x@example.net") is None
