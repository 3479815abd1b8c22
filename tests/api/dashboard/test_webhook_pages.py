"""The webhook pages over plain HTTP, as with JavaScript off: create (the secret shown once, the
endpoint checked by the API's own policy), disable, enable, rotate, delete; an endpoint's events
with their attempts from the real workers, and replay; CSRF refusal; another tenant's ids 404."""

from __future__ import annotations

import html
import re
from pathlib import Path
from uuid import UUID

from policy.webhooks.events import EVENT_TYPES
from storage.webhooks import endpoints
from tests.api.dashboard.live_support import delivered_event, listening
from tests.api.dashboard.support import Reader, session, signed_in
from tests.conftest import ApiServer, MakeTenant, StartApi
from tests.webhooks.receiver import Receiver
from tests.webhooks.world import webhook_workers

RECEIVER_URL = "http://127.0.0.1:9/hook"  # never connected to in the tests that use it


async def create_page(me: Reader, endpoint: str, events: list[str]) -> tuple[UUID, str]:
    """The endpoint made through the form, and the page that answered (with its secret)."""
    csrf = (await me.get("/dashboard/webhooks")).csrf
    form = [("csrf_token", csrf), ("endpoint", endpoint)] + [("events", e) for e in events]
    page = await me.post("/dashboard/webhooks", form)
    assert page.status == 200, page.text
    found = re.search(
        r'role="status">.*?href="/dashboard/webhooks/([0-9a-f-]{36})"', page.text, re.S
    )
    assert found, "no link to the new endpoint"
    return UUID(found.group(1)), page.text


async def create(me: Reader, endpoint: str, events: list[str]) -> UUID:
    webhook_id, _page = await create_page(me, endpoint, events)
    return webhook_id


async def test_create_an_endpoint_shows_its_secret_once_and_lists_it(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        form_page = await me.get("/dashboard/webhooks")
        webhook_id, created = await create_page(
            me, RECEIVER_URL, ["email.delivered", "email.bounced"]
        )
        second_id, _ = await create_page(me, RECEIVER_URL, ["email.sent"])
        listed = await me.get("/dashboard/webhooks")

    for kind in EVENT_TYPES:  # every type the API accepts is a checkbox
        assert f'name="events" value="{kind}"' in form_page.text
    stored = await endpoints.get_webhook(acme.pool, acme.id, webhook_id)
    assert stored is not None
    assert stored.endpoint == RECEIVER_URL
    assert stored.events == ["email.delivered", "email.bounced"]
    assert stored.signing_secret.startswith("whsec_")
    assert f'<code id="new-secret">{stored.signing_secret}</code>' in created
    assert listed.status == 200
    assert stored.signing_secret not in listed.text  # shown once, never listed
    assert f'href="/dashboard/webhooks/{webhook_id}"' in listed.text
    assert listed.text.index(str(second_id)) < listed.text.index(str(webhook_id))  # newest first
    assert "email.delivered, email.bounced" in listed.text
    assert listed.text.count('class="ok">enabled') == 2


async def test_an_endpoint_refused_by_the_policy_comes_back_with_its_words(
    start_test_api: StartApi, make_tenant: MakeTenant
) -> None:
    strict = await start_test_api(OPENSEND_WEBHOOK_ALLOW_PRIVATE="off")
    acme = await make_tenant()
    async with session() as http:
        me = await signed_in(strict.url, acme, http)
        csrf = (await me.get("/dashboard/webhooks")).csrf
        not_http = await me.post(
            "/dashboard/webhooks",
            [("csrf_token", csrf), ("endpoint", "ftp://example.com/x"), ("events", "email.sent")],
        )
        loopback = await me.post(
            "/dashboard/webhooks",
            [("csrf_token", csrf), ("endpoint", RECEIVER_URL), ("events", "email.sent")],
        )
        no_events = await me.post(
            "/dashboard/webhooks", [("csrf_token", csrf), ("endpoint", "https://example.com/h")]
        )

    assert not_http.status == 422
    assert "must be an http or https URL" in html.unescape(not_http.text)
    assert 'value="ftp://example.com/x"' in not_http.text  # the form comes back filled in
    assert loopback.status == 422
    assert "must reach a public address: 127.0.0.1 (a loopback address)" in html.unescape(
        loopback.text
    )
    assert 'value="email.sent" checked' in loopback.text
    assert no_events.status == 422
    assert "non-empty array of event types" in html.unescape(no_events.text)
    hooks, _ = await endpoints.list_webhooks(acme.pool, acme.id, limit=10, after=None, before=None)
    assert hooks == []


async def test_disable_enable_rotate_and_delete_an_endpoint(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        webhook_id = await create(me, RECEIVER_URL, ["email.sent"])
        path = f"/dashboard/webhooks/{webhook_id}"
        before = await endpoints.get_webhook(acme.pool, acme.id, webhook_id)
        csrf = (await me.get(path)).csrf
        disabled = await me.post(f"{path}/status", {"csrf_token": csrf, "status": "disabled"})
        disabled_page = await me.get(path)
        enabled = await me.post(f"{path}/status", {"csrf_token": csrf, "status": "enabled"})
        enabled_page = await me.get(path)
        rotated = await me.post(f"{path}/rotate", {"csrf_token": csrf})
        after_rotation = await endpoints.get_webhook(acme.pool, acme.id, webhook_id)
        deleted = await me.post(f"{path}/delete", {"csrf_token": csrf})
        gone = await me.get(path)

    assert (disabled.status, disabled.location) == (303, path)
    assert 'class="bad">disabled</span> <span class="meta">(by you)' in disabled_page.text
    assert 'action="' + path + '/status"' in disabled_page.text
    assert (enabled.status, enabled.location) == (303, path)
    assert 'class="ok">enabled' in enabled_page.text
    assert before is not None and after_rotation is not None
    assert rotated.status == 200
    assert after_rotation.signing_secret != before.signing_secret
    assert f'<code id="new-secret">{after_rotation.signing_secret}</code>' in rotated.text
    assert (deleted.status, deleted.location) == (303, "/dashboard/webhooks")
    assert await endpoints.get_webhook(acme.pool, acme.id, webhook_id) is None
    assert gone.status == 404


async def test_the_endpoint_page_shows_each_attempt_and_replays_an_event(
    api: ApiServer, make_tenant: MakeTenant, database_url: str, tmp_path: Path
) -> None:
    acme = await make_tenant()
    receiver = await Receiver.start()
    receiver.answers = [503]  # the first attempt fails, the replay succeeds
    try:
        async with (
            session() as http,
            listening(database_url) as heard,
            webhook_workers(
                acme.pool, database_url, tmp_path, OPENSEND_WEBHOOK_RETRY_SCHEDULE="1h"
            ),
        ):
            me = await signed_in(api.url, acme, http)
            webhook_id = await create(me, receiver.url, ["email.delivered"])
            await delivered_event(acme)
            await heard.attempt_on(webhook_id)
            failed_page = await me.get(f"/dashboard/webhooks/{webhook_id}")
            [first] = await receiver.wait_for(1)
            event_id = first.id
            replayed = await me.post(
                f"/dashboard/webhooks/{webhook_id}/events/{event_id}/replay",
                {"csrf_token": failed_page.csrf},
            )
            await heard.attempt_on(webhook_id)
            replayed_page = await me.get(f"/dashboard/webhooks/{webhook_id}")
    finally:
        await receiver.stop()

    assert failed_page.status == 200
    events = failed_page.text.split('id="webhook-events"', 1)[1]
    assert f'id="event-{event_id}"' in events
    assert "email.delivered" in events
    assert '<td class="bad">503</td>' in events
    assert "<code>answered 503</code>" in events  # the first bytes of the answer's body
    assert " ms</td>" in events
    assert "failing since" in failed_page.text
    assert (replayed.status, replayed.location) == (
        303,
        f"/dashboard/webhooks/{webhook_id}#event-{event_id}",
    )
    again = replayed_page.text.split('id="webhook-events"', 1)[1]
    assert '<td class="ok">200</td>' in again and '<td class="bad">503</td>' in again
    assert again.index("answered 200") < again.index("answered 503")  # newest first
    assert "failing since" not in replayed_page.text  # a success ends the streak
    assert len(receiver.posts) == 2 and {p.id for p in receiver.posts} == {event_id}


async def test_forms_without_the_csrf_token_or_from_elsewhere_are_refused(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        webhook_id = await create(me, RECEIVER_URL, ["email.sent"])
        path = f"/dashboard/webhooks/{webhook_id}"
        csrf = (await me.get(path)).csrf
        refused = [
            await me.post("/dashboard/webhooks", [("endpoint", RECEIVER_URL), ("events", "a")]),
            await me.post(f"{path}/status", {"csrf_token": "forged", "status": "disabled"}),
            await me.post(f"{path}/delete", {}),
            await me.post(f"{path}/rotate", {"csrf_token": csrf}, origin="https://evil.example"),
        ]
    assert [p.status for p in refused] == [403] * 4
    stored = await endpoints.get_webhook(acme.pool, acme.id, webhook_id)
    assert stored is not None and stored.status == "enabled"
    hooks, _ = await endpoints.list_webhooks(acme.pool, acme.id, limit=10, after=None, before=None)
    assert len(hooks) == 1


async def test_another_tenants_endpoint_and_events_answer_404(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme, other = await make_tenant(), await make_tenant()
    hook = await endpoints.create_webhook(
        other.pool, other.id, RECEIVER_URL, ["email.delivered"], "whsec_b3RoZXI="
    )
    await delivered_event(other)
    [delivery_id] = [
        row["id"]
        for row in await other.pool.fetch(
            "SELECT id FROM webhook_deliveries WHERE webhook_id = $1", hook.id
        )
    ]
    path = f"/dashboard/webhooks/{hook.id}"
    async with session() as http:
        me = await signed_in(api.url, acme, http)
        csrf = (await me.get("/dashboard/webhooks")).csrf
        pages = [
            await me.get(path),
            await me.post(f"{path}/status", {"csrf_token": csrf, "status": "disabled"}),
            await me.post(f"{path}/rotate", {"csrf_token": csrf}),
            await me.post(f"{path}/events/{delivery_id}/replay", {"csrf_token": csrf}),
            await me.post(f"{path}/delete", {"csrf_token": csrf}),
        ]
        listed = await me.get("/dashboard/webhooks")
    assert [p.status for p in pages] == [404] * len(pages)
    assert RECEIVER_URL not in listed.text
    kept = await endpoints.get_webhook(other.pool, other.id, hook.id)
    assert kept == hook
