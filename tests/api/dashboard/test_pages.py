"""Dashboard pages over plain HTTP, as with JavaScript off: the outbound email's page with its
reply address and conversation, received mail served sandboxed, search, API keys, and another
tenant's ids answering 404 everywhere."""

from __future__ import annotations

import html
from uuid import UUID

from mta.listeners import MXListener
from policy.dashboard.mailbody import BODY_CSP, BODY_CSP_WITH_IMAGES
from storage.account import directory
from storage.conversations import contacts as contacts_store
from tests.api.dashboard.support import (
    HOSTILE_HTML,
    reply_through_mx,
    session,
    signed_in,
)
from tests.conftest import ApiServer, MakeTenant


async def test_the_outbound_email_page_shows_its_reply_address_and_the_conversation(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email(subject="Your order 1234")
    address = token.address(acme.reply_domain)
    reply_id = await reply_through_mx(
        mx.port, address, text="Where is my parcel?\n\nOn Monday you wrote:\n> Your order ships\n"
    )
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        page = await me.get(f"/dashboard/emails/{email.id}")

    assert page.status == 200
    text = html.unescape(page.text)
    assert f'<code id="reply-address-value">{address}</code>' in text
    assert f"<code>{token}</code>" in text
    assert f"<code>{email.id}</code>" in text
    assert '<dd class="ok">valid</dd>' in text
    assert f"<code><{token}@{acme.name}></code>" in text
    conversation = text.split('id="conversation"', 1)[1]
    assert conversation.index("Your order 1234") < conversation.index("Where is my parcel?")
    assert "matched by reply address" in conversation
    assert f"/dashboard/received/{reply_id}" in conversation
    # The quoted history is folded apart from the reply's own words.
    own, quoted = conversation.split("Quoted history", 1)
    assert "Where is my parcel?" in own and "&gt; Your order ships" not in own
    assert "> Your order ships" in quoted


async def test_received_html_is_served_cleaned_on_its_own_url_with_a_sandbox_csp(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    _email, token = await acme.sent_email()
    reply_id = await reply_through_mx(
        mx.port, token.address(acme.reply_domain), text="plain part", html=HOSTILE_HTML
    )
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        detail = await me.get(f"/dashboard/received/{reply_id}")
        body = await me.get(f"/dashboard/received/{reply_id}/body")
        with_images = await me.get(f"/dashboard/received/{reply_id}/body?images=1")

    assert detail.status == 200
    assert f'<iframe title="Message body" sandbox src="/dashboard/received/{reply_id}/body"' in (
        detail.text
    )
    assert "unsafe-inline" not in detail.headers["Content-Security-Policy"]
    assert "unsafe-eval" not in detail.headers["Content-Security-Policy"]
    assert body.status == 200
    assert body.headers["Content-Security-Policy"] == BODY_CSP
    assert BODY_CSP == "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    assert with_images.headers["Content-Security-Policy"] == BODY_CSP_WITH_IMAGES
    assert body.headers["X-Content-Type-Options"] == "nosniff"
    assert body.headers["Referrer-Policy"] == "no-referrer"
    assert "Hello <b>there</b>" in body.text
    cleaned = body.text.split("<body>", 1)[1]
    for hostile in ("<script", "onerror", "onload", "javascript:", "<meta", "<form", "url(",
                    "<iframe", "evil.example"):  # fmt: skip
        assert hostile not in cleaned.lower(), hostile
    assert "color:red" in body.text.replace(" ", "")  # presentation kept


async def test_search_finds_sent_emails_by_operator(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    replied, token = await acme.sent_email(to="dana@example.org", subject="Invoice 77")
    quiet, _ = await acme.sent_email(to="erik@example.org", subject="Invoice 78")
    await reply_through_mx(mx.port, token.address(acme.reply_domain), text="Paid.")
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        by_to = await me.get("/dashboard/emails?q=to:erik@example.org")
        by_subject = await me.get("/dashboard/emails?q=subject:invoice")
        replied_only = await me.get("/dashboard/emails?q=has:reply+invoice")
        nothing = await me.get("/dashboard/emails?q=subject:%22no+such%22")

    def ids(page_text: str) -> set[str]:
        return {str(e.id) for e in (replied, quiet) if f"/dashboard/emails/{e.id}" in page_text}

    assert ids(by_to.text) == {str(quiet.id)}
    assert ids(by_subject.text) == {str(replied.id), str(quiet.id)}
    assert ids(replied_only.text) == {str(replied.id)}
    assert ids(nothing.text) == set()
    assert "No sent email matches" in nothing.text


async def test_an_api_key_is_shown_once_and_can_be_revoked(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        csrf = (await me.get("/dashboard/api-keys")).csrf
        created = await me.post("/dashboard/api-keys", {"name": "crm", "csrf_token": csrf})
        token = created.text.split('<code id="new-key">')[1].split("</code>")[0]
        listed = await me.get("/dashboard/api-keys")
        key_id = listed.text.split("/dashboard/api-keys/")[1].split("/revoke")[0]
        revoked = await me.post(f"/dashboard/api-keys/{key_id}/revoke", {"csrf_token": csrf})
        after = await me.get("/dashboard/api-keys")

    assert token.startswith("re_")
    assert token not in listed.text  # shown once
    assert "<strong>crm</strong>" in listed.text
    assert revoked.status == 303
    assert "<strong>crm</strong>" not in after.text
    assert (
        await acme.pool.fetchval("SELECT count(*) FROM api_keys WHERE id = $1", UUID(key_id)) == 0
    )


async def test_every_page_of_another_tenant_answers_404(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme, other = await make_tenant(), await make_tenant()
    email, token = await other.sent_email()
    received_id = await reply_through_mx(mx.port, token.address(other.reply_domain), text="hi")
    their_key, _token = await directory.create_api_key(other.pool, other.id, "theirs")
    key_id = their_key.id
    domain_id = other.domain.id
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        csrf = (await me.get("/dashboard/emails")).csrf
        pages = [
            await me.get(f"/dashboard/emails/{email.id}"),
            await me.get(f"/dashboard/received/{received_id}"),
            await me.get(f"/dashboard/received/{received_id}/body"),
            await me.get(f"/dashboard/threads/{email.thread_id}"),
            await me.get("/dashboard/emails/not-a-uuid"),
            await me.post(f"/dashboard/api-keys/{key_id}/revoke", {"csrf_token": csrf}),
            await me.post(f"/dashboard/domains/{domain_id}/verify", {"csrf_token": csrf}),
        ]
        own_list = await me.get("/dashboard/received")
    assert [p.status for p in pages] == [404] * len(pages)
    assert all("There is nothing here" in p.text for p in pages)
    assert str(received_id) not in own_list.text
    assert await other.pool.fetchval("SELECT count(*) FROM api_keys WHERE id = $1", key_id) == 1


async def test_lists_and_account_pages_render_for_the_tenant(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email(subject="Welcome aboard")
    reply_id = await reply_through_mx(mx.port, token.address(acme.reply_domain), text="Thanks")
    await contacts_store.create_contact(
        acme.pool, acme.id, "dana@example.org", "Dana", "Lee", False
    )
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        received = await me.get("/dashboard/received?status=matched")
        unmatched = await me.get("/dashboard/received?status=unmatched")
        threads = await me.get("/dashboard/threads")
        thread = await me.get(f"/dashboard/threads/{email.thread_id}")
        domains = await me.get("/dashboard/domains")
        contacts = await me.get("/dashboard/contacts")

    assert f"/dashboard/received/{reply_id}" in received.text
    assert f"/dashboard/received/{reply_id}" not in unmatched.text
    assert f"/dashboard/threads/{email.thread_id}" in threads.text
    assert "Welcome aboard" in thread.text and "Thanks" in thread.text
    assert acme.name in domains.text and "Check now" in domains.text
    assert "dana@example.org" in contacts.text and "Dana Lee" in contacts.text


async def test_a_contacts_page_lists_their_conversations(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme, other = await make_tenant(), await make_tenant()
    carol = await contacts_store.create_contact(
        acme.pool, acme.id, "customer@example.net", "Carol", None, False
    )
    theirs = await contacts_store.create_contact(
        other.pool, other.id, "customer@example.net", None, None, False
    )
    email, token = await acme.sent_email(subject="Carol's order")
    quiet, _ = await acme.sent_email(subject="Nobody answered this")
    await reply_through_mx(mx.port, token.address(acme.reply_domain), text="Thanks")
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        listed = await me.get("/dashboard/contacts")
        page = await me.get(f"/dashboard/contacts/{carol.id}")
        foreign = await me.get(f"/dashboard/contacts/{theirs.id}")
    assert f"/dashboard/contacts/{carol.id}" in listed.text
    assert f"/dashboard/threads/{email.thread_id}" in page.text
    assert f"/dashboard/threads/{quiet.thread_id}" not in page.text
    assert foreign.status == 404


async def test_search_by_sending_domain_tag_and_date(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    tagged, _ = await acme.sent_email(subject="Welcome")
    plain, _ = await acme.sent_email(subject="Receipt")
    await acme.pool.execute(
        """UPDATE emails SET tags = '[{"name": "welcome", "value": "v1"}]' WHERE id = $1""",
        tagged.id,
    )
    today = await acme.pool.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        by_tag = await me.get("/dashboard/emails?q=tag:welcome")
        by_domain = await me.get(f"/dashboard/emails?q=domain:{acme.name.upper()}")
        other_domain = await me.get("/dashboard/emails?q=domain:elsewhere.example")
        since_today = await me.get(f"/dashboard/emails?q=after:{today}")
        before_today = await me.get(f"/dashboard/emails?q=before:{today}")

    def found(page_text: str) -> set[str]:
        return {s for s in ("Welcome", "Receipt") if f'"subject">{s}<' in page_text}

    assert found(by_tag.text) == {"Welcome"}
    assert found(by_domain.text) == found(since_today.text) == {"Welcome", "Receipt"}
    assert found(other_domain.text) == found(before_today.text) == set()
    assert plain.id != tagged.id


async def test_an_unknown_dashboard_path_answers_the_html_404_page(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        page = await me.get("/dashboard/no-such-page")
    assert page.status == 404
    assert page.headers["Content-Type"].startswith("text/html")
    assert "There is nothing here" in page.text


async def test_an_error_page_has_the_security_headers_of_every_page(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    """It carries the session's CSRF token and the sign-out form: never framed by another
    site, never kept by a shared cache."""
    async with session() as http:
        me = await signed_in(api.url, await make_tenant(), http)
        missing = await me.get("/dashboard/emails/00000000-0000-0000-0000-000000000000")
    assert missing.status == 404
    assert "frame-ancestors 'self'" in missing.headers["Content-Security-Policy"]
    assert missing.headers["Cache-Control"] == "no-store"
    assert missing.headers["X-Content-Type-Options"] == "nosniff"
