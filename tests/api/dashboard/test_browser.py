"""The dashboard in a real browser (Debian's chromium under Playwright) against the real API,
the real MX and PostgreSQL: sign-in, the outbound email page, a reply arriving live, keyboard
shortcuts, JavaScript off, hostile received HTML, 360 px, CSRF from another site, isolation;
a webhook endpoint created and its attempt shown live; the suppression list at 360 px.

Pages are opened as http://localhost:PORT: Chromium treats localhost as a secure context, so the
`__Host-` Secure cookie is kept there as it is on https.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Dialog, Page, expect

from mta.listeners import MXListener
from storage.account import directory, domains
from storage.suppressions import store as suppressions
from storage.webhooks import endpoints as webhook_endpoints
from tests.api.account.domains_client import HOST, publish
from tests.api.dashboard.conftest import new_context
from tests.api.dashboard.live_support import delivered_event
from tests.api.dashboard.support import (
    HOSTILE_HTML,
    PASSWORD,
    deferred_delivery,
    make_user,
    reply_through_mx,
)
from tests.conftest import (
    DOMAIN_VIEW,
    ApiServer,
    MakeTenant,
    StartApi,
    TenantWorld,
    message,
    smtp_send,
)
from tests.support.dns_server import LoopbackDNSServer
from tests.webhooks.receiver import Receiver
from tests.webhooks.world import webhook_workers

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def local(api: ApiServer) -> str:
    return api.url.replace("127.0.0.1", "localhost")


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    made = await new_context(browser)
    yield made
    await made.close()


async def sign_in(page: Page, base: str, email: str) -> None:
    await page.goto(base + "/dashboard/login")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + "/dashboard/emails")


async def signed_in_page(context: BrowserContext, api: ApiServer, world: TenantWorld) -> Page:
    page = await context.new_page()
    await sign_in(page, local(api), await make_user(world))
    return page


async def test_sign_in_then_open_a_sent_email_with_its_reply_address_and_conversation(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant, context: BrowserContext
) -> None:
    acme = await make_tenant()
    _email, token = await acme.sent_email(subject="Order 5521 has shipped")
    address = token.address(acme.reply_domain)
    await reply_through_mx(mx.port, address, text="Thank you, it arrived.")
    page = await signed_in_page(context, api, acme)

    await page.get_by_role("link", name="Order 5521 has shipped").click()

    await expect(page.locator("#reply-address-value")).to_have_text(address)
    await expect(page.locator("#reply-address")).to_contain_text("valid")
    await expect(page.locator("#reply-address")).to_contain_text(str(token))
    conversation = page.locator("#conversation")
    await expect(conversation.locator("details.message")).to_have_count(2)
    await expect(conversation.locator("details.message.outbound")).to_contain_text(
        "Order 5521 has shipped"
    )
    await expect(conversation.locator("details.message.inbound")).to_contain_text(
        "Thank you, it arrived."
    )
    await expect(page.locator("button.copy").first).to_be_visible()  # JavaScript is on


async def test_a_reply_through_the_mx_appears_live_on_the_open_page(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant, context: BrowserContext
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email(subject="Live test")
    page = await signed_in_page(context, api, acme)
    await page.goto(f"{local(api)}/dashboard/emails/{email.id}")
    await expect(page.locator("body")).to_have_attribute("data-live", "ready")
    await expect(page.locator("#conversation details.message")).to_have_count(1)

    await reply_through_mx(mx.port, token.address(acme.reply_domain), text="Is it shipped yet?")

    inbound = page.locator("#conversation details.message.inbound")
    await expect(inbound).to_contain_text("Is it shipped yet?")
    # Updated in place by the script, not by reloading the page.
    await expect(page.locator("body")).to_have_attribute("data-live-updates", "1")


async def test_keyboard_shortcuts_search_move_open_go_back_and_help(
    api: ApiServer, make_tenant: MakeTenant, context: BrowserContext
) -> None:
    acme = await make_tenant()
    for subject in ("Third", "Second", "First"):  # listed newest first
        await acme.sent_email(subject=subject)
    page = await signed_in_page(context, api, acme)
    items = page.locator("[data-list] [data-item]")
    await expect(items).to_have_count(3)

    await page.keyboard.press("j")
    await page.keyboard.press("j")
    await page.keyboard.press("k")
    await page.keyboard.press("j")
    await expect(items.nth(1)).to_have_class("selected")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/dashboard/emails/*")
    await expect(page.locator("h1")).to_have_text("Second")

    await page.keyboard.press("Escape")
    await page.wait_for_url("**/dashboard/emails")
    await page.keyboard.press("/")
    await expect(page.locator("[data-search]")).to_be_focused()
    await page.keyboard.type("subject:first")
    await page.keyboard.press("Enter")
    await expect(items).to_have_count(1)
    await expect(items).to_contain_text("First")

    await page.locator("h1").click()  # out of the search field
    await page.keyboard.press("?")
    await expect(page.locator("#help")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.locator("#help")).to_be_hidden()


async def test_every_flow_works_with_javascript_off(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant, browser: Browser
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email(subject="No script here")
    address = token.address(acme.reply_domain)
    await reply_through_mx(mx.port, address, text="Replying without JS")
    context = await new_context(browser, java_script_enabled=False)
    try:
        page = await signed_in_page(context, api, acme)
        await page.fill("[data-search]", "has:reply")
        await page.get_by_role("button", name="Search").click()
        await page.get_by_role("link", name="No script here").click()
        await expect(page.locator("#reply-address-value")).to_have_text(address)
        await expect(page.locator("#conversation")).to_contain_text("Replying without JS")
        await expect(page.locator("button.copy")).to_be_hidden()  # nothing to copy with

        await page.get_by_role("link", name="API keys").click()
        await page.fill("input[name=name]", "no-js key")
        await page.get_by_role("button", name="Create key").click()
        await expect(page.locator("#new-key")).to_contain_text("re_")
        await page.goto(f"{local(api)}/dashboard/api-keys")
        row = page.locator("li", has_text="no-js key")
        await row.get_by_role("button", name="Revoke").click()
        await expect(page.locator("li", has_text="no-js key")).to_have_count(0)

        await page.get_by_role("link", name="Received").click()
        await page.get_by_role("link", name="Re: Your order").click()
        await expect(page.locator("iframe[sandbox]")).to_have_count(1)

        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url("**/dashboard/login")
        # The browser dropped the session too; the device cookie stays, as signing out does not
        # make the browser a stranger (api.dashboard.signin: DEVICE_COOKIE).
        assert [c["name"] for c in await context.cookies()] == ["__Host-opensend_device"]
        await page.goto(f"{local(api)}/dashboard/emails/{email.id}")
        await page.wait_for_url(re.compile(r".*/dashboard/login\?next=.*"))
    finally:
        await context.close()


async def test_hostile_received_html_runs_nothing_and_loads_nothing_from_elsewhere(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant, context: BrowserContext
) -> None:
    acme = await make_tenant()
    _email, token = await acme.sent_email()
    received_id = await reply_through_mx(
        mx.port, token.address(acme.reply_domain), text="plain", html=HOSTILE_HTML
    )
    page = await signed_in_page(context, api, acme)
    dialogs: list[str] = []
    requested: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismiss)
    context.on("request", lambda request: requested.append(request.url))

    await page.goto(f"{local(api)}/dashboard/received/{received_id}", wait_until="load")
    body = page.frame_locator("iframe[sandbox]")
    await expect(body.get_by_text("Hello")).to_be_visible()
    await body.get_by_text("click me").click()

    assert dialogs == []
    elsewhere = [url for url in requested if urlsplit(url).hostname not in LOOPBACK_HOSTS]
    assert elsewhere == []
    assert page.url.endswith(f"/dashboard/received/{received_id}")  # no meta refresh moved us

    # The check itself can see a remote load: with images shown, the tracking pixel is asked for.
    await page.get_by_role("link", name="Show remote images").click()
    await page.wait_for_load_state("load")
    assert any(urlsplit(url).hostname == "tracker.example" for url in requested), requested
    assert dialogs == []


async def test_the_layout_fits_a_360_pixel_wide_screen(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant, browser: Browser, screenshots: Path
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email(
        subject="A subject long enough to need wrapping on a phone"
    )
    received_id = await reply_through_mx(
        mx.port, token.address(acme.reply_domain), text="Short answer from a phone."
    )
    context = await new_context(browser, viewport={"width": 360, "height": 780})
    try:
        page = await signed_in_page(context, api, acme)
        for name, path in [
            ("emails", "/dashboard/emails"),
            ("email", f"/dashboard/emails/{email.id}"),
            ("received", f"/dashboard/received/{received_id}"),
            ("domains", "/dashboard/domains"),
            ("overview", "/dashboard/overview"),
            ("queue", "/dashboard/queue"),
        ]:
            await page.goto(local(api) + path, wait_until="load")
            width = await page.evaluate("document.scrollingElement.scrollWidth")
            assert width <= 360, f"{name} is {width} px wide"
            await page.screenshot(path=screenshots / f"360-{name}.png", full_page=True)
    finally:
        await context.close()


async def test_a_form_posted_from_another_site_is_refused(
    api: ApiServer, make_tenant: MakeTenant, context: BrowserContext
) -> None:
    acme = await make_tenant()
    page = await signed_in_page(context, api, acme)
    target = f"{local(api)}/dashboard/api-keys"

    async def attacker_page(_request: web.Request) -> web.Response:
        form = (
            f'<form method="post" action="{target}">'
            '<input name="name" value="planted"><input name="csrf_token" value="guess">'
            "<button>win a prize</button></form>"
        )
        return web.Response(text=form, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", attacker_page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        # 127.0.0.1 and localhost are different sites: a real cross-site post.
        await page.goto(f"http://127.0.0.1:{runner.addresses[0][1]}/")
        async with page.expect_response(target) as answer:
            await page.get_by_role("button", name="win a prize").click()
        response = await answer.value
    finally:
        await runner.cleanup()
    assert response.status == 403
    await expect(page.locator("main")).to_contain_text("did not come from a page")
    keys, _more = await directory.list_api_keys_page(acme.pool, acme.id, limit=100)
    assert "planted" not in [key.name for key in keys]


async def test_another_tenants_pages_answer_404_in_the_browser(
    api: ApiServer, make_tenant: MakeTenant, context: BrowserContext
) -> None:
    acme, other = await make_tenant(), await make_tenant()
    theirs, _token = await other.sent_email(subject="Their secret")
    page = await signed_in_page(context, api, acme)
    for path in (f"/dashboard/emails/{theirs.id}", f"/dashboard/threads/{theirs.thread_id}"):
        response = await page.goto(local(api) + path)
        assert response is not None and response.status == 404
        await expect(page.locator("main")).to_contain_text("There is nothing here")
        await expect(page.locator("main")).not_to_contain_text("Their secret")


PAGES = ["overview", "emails", "email", "received", "received_list", "threads", "thread",
         "queue", "domains", "api-keys", "contacts", "sessions", "login"]  # fmt: skip


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_screenshots_of_every_page(
    api: ApiServer,
    mx: MXListener,
    make_tenant: MakeTenant,
    browser: Browser,
    screenshots: Path,
    scheme: Any,
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email(subject="Your order 1234 has shipped")
    received_id = await reply_through_mx(
        mx.port,
        token.address(acme.reply_domain),
        text="Thanks! When will it arrive?\n\nOn Monday you wrote:\n> Your order has shipped\n",
        html='<p style="color:#222;background:#fffbe6">Thanks! <b>When</b> will it arrive?</p>',
    )
    await deferred_delivery(acme, email.id, "customer@example.net")
    paths = {
        "overview": "/dashboard/overview",
        "queue": "/dashboard/queue",
        "emails": "/dashboard/emails",
        "email": f"/dashboard/emails/{email.id}",
        "received": f"/dashboard/received/{received_id}",
        "received_list": "/dashboard/received",
        "threads": "/dashboard/threads",
        "thread": f"/dashboard/threads/{email.thread_id}",
        "domains": "/dashboard/domains",
        "api-keys": "/dashboard/api-keys",
        "contacts": "/dashboard/contacts",
        "sessions": "/dashboard/sessions",
    }
    context = await new_context(
        browser, color_scheme=scheme, viewport={"width": 1100, "height": 800}
    )
    try:
        page = await context.new_page()
        await page.goto(local(api) + "/dashboard/login")
        await page.screenshot(path=screenshots / f"login-{scheme}.png")
        await sign_in(page, local(api), await make_user(acme))
        for name in PAGES[:-1]:
            response = await page.goto(local(api) + paths[name], wait_until="load")
            assert response is not None and response.status == 200, name
            await page.screenshot(path=screenshots / f"{name}-{scheme}.png", full_page=True)
    finally:
        await context.close()
    for name in PAGES:
        assert (screenshots / f"{name}-{scheme}.png").stat().st_size > 0


async def test_a_reply_from_the_composer_appears_in_the_thread_without_a_reload(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant, context: BrowserContext
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email(subject="Composer")
    await reply_through_mx(mx.port, token.address(acme.reply_domain), text="Any news?")
    page = await signed_in_page(context, api, acme)
    await page.goto(f"{local(api)}/dashboard/emails/{email.id}")
    navigations: list[str] = []
    page.on(
        "framenavigated",
        lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
    )

    await page.fill("textarea[name=text]", "Yes: it left the warehouse today.")
    await page.get_by_role("button", name="Send reply").click()

    outbound = page.locator("#conversation details.message.outbound")
    await expect(outbound).to_have_count(2)
    await expect(outbound.nth(1)).to_contain_text("Yes: it left the warehouse today.")
    await expect(page.locator("[data-compose-status]")).to_have_text("Sent.")
    assert navigations == []  # the page was never reloaded nor left
    assert await page.input_value("textarea[name=text]") == ""


async def test_link_an_unmatched_reply_by_hand_in_the_browser(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant, context: BrowserContext
) -> None:
    acme = await make_tenant(catch_all=True)
    email, _token = await acme.sent_email(subject="Warranty claim")
    address = f"help@{acme.name}"
    sent = await smtp_send(
        mx.port, "customer@example.net", [address], message(to=address, subject="my claim?")
    )
    [loose] = sent.stored_ids
    page = await signed_in_page(context, api, acme)
    await page.get_by_role("link", name="Received").click()
    await page.get_by_role("link", name="my claim?").click()
    await expect(page.locator(".badge.match-unmatched").first).to_be_visible()

    await page.fill("input[name=email_id]", str(email.id))
    await page.get_by_role("button", name="Link", exact=True).click()

    await page.wait_for_url(f"**/dashboard/received/{loose}")
    await expect(page.locator("main")).to_contain_text("Linked by hand")
    await page.get_by_role("link", name="the sent email").click()
    await expect(page.locator("#conversation")).to_contain_text("matched by hand")


async def test_check_a_domain_against_the_loopback_dns_server(
    start_test_api: StartApi,
    dns: LoopbackDNSServer,
    make_tenant: MakeTenant,
    context: BrowserContext,
) -> None:
    api = await start_test_api(OPENSEND_DNS_SERVERS=dns.address)
    acme = await make_tenant(verified=False)
    details = await domains.get_domain(acme.pool, acme.id, acme.domain.id)
    assert details is not None
    publish(dns.zone, DOMAIN_VIEW.public(details))
    page = await signed_in_page(context, api, acme)
    await page.get_by_role("link", name="Domains").click()
    card = page.locator(f"#domain-{acme.domain.id}")
    await expect(card.locator("h2 .status")).not_to_have_text("verified")

    await card.get_by_role("button", name="Check now").click()

    card = page.locator(f"#domain-{acme.domain.id}")
    await expect(card.locator("h2 .status")).to_have_text("verified")
    await expect(card.locator("td.status-verified")).to_have_count(4)
    await expect(card).to_contain_text(f"10 {HOST}")


async def test_create_a_webhook_endpoint_and_see_its_attempt_appear_live(
    api: ApiServer,
    make_tenant: MakeTenant,
    context: BrowserContext,
    database_url: str,
    tmp_path: Path,
) -> None:
    acme = await make_tenant()
    receiver = await Receiver.start()
    try:
        async with webhook_workers(acme.pool, database_url, tmp_path):
            page = await signed_in_page(context, api, acme)
            await page.get_by_role("link", name="Webhooks").click()
            await page.get_by_label("Endpoint URL").fill(receiver.url)
            await page.get_by_label("email.delivered", exact=True).check()
            await page.get_by_role("button", name="Create endpoint").click()

            created = page.get_by_role("status")
            await expect(created.locator("#new-secret")).to_contain_text("whsec_")
            await created.get_by_role("link", name=receiver.url).click()
            await expect(page.locator("#webhook-events")).to_contain_text("No events yet.")
            # The page a rotation answers (the POST's address) is live too: it re-reads the
            # endpoint's own page.
            await page.get_by_role("button", name="Rotate signing secret").click()
            await expect(page.get_by_role("status")).to_contain_text("Signing secret rotated")
            await expect(page.locator("body")).to_have_attribute("data-live", "ready")

            await delivered_event(acme)

            attempt = page.locator("#webhook-events tr.attempt")
            await expect(attempt).to_contain_text("200")
            await expect(attempt).to_contain_text("answered 200")
            await expect(page.locator("#webhook-events")).to_contain_text("email.delivered")
            await expect(page.get_by_role("status")).to_contain_text("Signing secret rotated")
            # Updated in place by the script, not by reloading the page.
            await expect(page.locator("body")).to_have_attribute(
                "data-live-updates", re.compile("[1-9]")
            )
    finally:
        await receiver.stop()
    assert len(receiver.posts) == 1


async def test_the_suppression_and_webhook_pages_fit_a_360_pixel_wide_screen(
    api: ApiServer, make_tenant: MakeTenant, browser: Browser, screenshots: Path
) -> None:
    acme = await make_tenant()
    email, _token = await acme.sent_email(to="a.rather.long.mailbox.name@subdomain.example.org")
    await suppressions.suppress(
        acme.pool,
        acme.id,
        ["a.rather.long.mailbox.name@subdomain.example.org"],
        origin="bounce",
        source_ids=[email.id],
    )
    await suppressions.suppress(acme.pool, acme.id, ["angry@example.net"], origin="complaint")
    await suppressions.suppress(acme.pool, acme.id, ["by-hand@example.org"], origin="manual")
    context = await new_context(browser, viewport={"width": 360, "height": 780})
    try:
        page = await signed_in_page(context, api, acme)
        await page.goto(local(api) + "/dashboard/suppressions", wait_until="load")
        await page.get_by_label("Address", exact=True).fill("typed-by-hand@example.com")
        await page.get_by_role("button", name="Suppress").click()
        await expect(page.get_by_role("status")).to_have_text("Address suppressed.")
        entries = page.locator("[data-item]")
        await expect(entries).to_have_count(4)
        await expect(entries.first).to_contain_text("typed-by-hand@example.com")
        await expect(page.get_by_role("link", name="the email that caused it")).to_have_attribute(
            "href", f"/dashboard/emails/{email.id}"
        )
        hook = await webhook_endpoints.create_webhook(
            acme.pool,
            acme.id,
            "https://hooks.example.com/a/rather/long/path/to/a/receiver",
            ["email.delivered", "email.bounced", "suppression.added"],
            "whsec_c2NyZWVu",
        )
        pages = [
            ("suppressions", "/dashboard/suppressions"),
            ("webhooks", "/dashboard/webhooks"),
            ("webhook", f"/dashboard/webhooks/{hook.id}"),
        ]
        for name, path in pages:
            await page.goto(local(api) + path, wait_until="load")
            await page.screenshot(path=screenshots / f"360-{name}.png", full_page=True)
            width = await page.evaluate("document.scrollingElement.scrollWidth")
            assert width <= 360, f"{name} is {width} px wide"
    finally:
        await context.close()
