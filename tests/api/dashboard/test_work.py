"""Daily-work pages over plain HTTP: the overview's figures, the queue (retry now, cancel, for
several at once), linking an unmatched reply by hand with its audit record, the delivery
timeline, and a received message's raw file and attachments."""

from __future__ import annotations

from email.message import EmailMessage
from uuid import uuid4

from mta.listeners import MXListener
from tests.api.dashboard.support import (
    Reader,
    deferred_delivery,
    make_user,
    reader,
    reply_through_mx,
    session,
)
from tests.conftest import ApiServer, MakeTenant, TenantWorld, message, smtp_send


async def signed_in(api: ApiServer, world: TenantWorld, http: object) -> tuple[Reader, str]:
    me = reader(api.url, http)  # type: ignore[arg-type]
    email = await make_user(world)
    await me.sign_in(email)
    return me, email


async def test_the_queue_retries_now_and_cancels_several_at_once(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme, other = await make_tenant(), await make_tenant()
    first, _ = await acme.sent_email(to="a@example.org", subject="First")
    second, _ = await acme.sent_email(to="b@example.org", subject="Second")
    theirs, _ = await other.sent_email(to="c@example.org")
    d1 = await deferred_delivery(acme, first.id, "a@example.org")
    d2 = await deferred_delivery(acme, second.id, "b@example.org")
    d3 = await deferred_delivery(other, theirs.id, "c@example.org")
    async with session() as http:
        me, _ = await signed_in(api, acme, http)
        page = await me.get("/dashboard/queue")
        assert "451 4.7.1 greylisted, try later (mx.example.org)" in page.text
        assert str(d3) not in page.text
        retried = await me.post(
            "/dashboard/queue",
            {"csrf_token": page.csrf, "action": "retry", "delivery": str(d1)},
        )
        due = await acme.pool.fetchval(
            "SELECT next_attempt_at <= now() FROM deliveries WHERE id = $1", d1
        )
        form = [("csrf_token", page.csrf), ("action", "cancel")]
        form += [("delivery", str(d)) for d in (d1, d2, d3)]  # d3 is another tenant's
        async with http.post(
            api.url + "/dashboard/queue",
            data=form,
            headers={"Origin": api.url, "Cookie": f"__Host-opensend_session={me.cookie}"},
            allow_redirects=False,
        ) as canceled:
            assert canceled.status == 303
            assert canceled.headers["Location"] == "/dashboard/queue?done=cancel-2"
    assert retried.location == "/dashboard/queue?done=retry-1" and due
    states = dict(
        await acme.pool.fetch(
            "SELECT id, status FROM deliveries WHERE id = ANY($1::uuid[])", [d1, d2, d3]
        )
    )
    assert states == {d1: "canceled", d2: "canceled", d3: "deferred"}
    assert await acme.pool.fetchval("SELECT status FROM emails WHERE id = $1", first.id) == (
        "canceled"
    )
    events = await acme.pool.fetchval(
        "SELECT count(*) FROM email_events WHERE email_id = ANY($1::uuid[])"
        " AND type = 'email.canceled'",
        [first.id, second.id],
    )
    assert events == 2


async def test_an_unmatched_reply_is_linked_by_hand_with_an_audit_record(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    email, _token = await acme.sent_email(subject="Refund request")
    address = f"help@{acme.name}"
    sent = await smtp_send(
        mx.port, "customer@example.net", [address], message(to=address, subject="about my refund")
    )
    [loose] = sent.stored_ids
    async with session() as http:
        me, who = await signed_in(api, acme, http)
        page = await me.get(f"/dashboard/received/{loose}")
        assert 'id="link-form"' in page.text
        wrong = await me.post(
            f"/dashboard/received/{loose}/link", {"csrf_token": page.csrf, "email_id": str(uuid4())}
        )
        linked = await me.post(
            f"/dashboard/received/{loose}/link",
            {"csrf_token": page.csrf, "email_id": str(email.id)},
        )
        after = await me.get(f"/dashboard/received/{loose}")
        thread = await me.get(f"/dashboard/emails/{email.id}")
    assert wrong.location == f"/dashboard/received/{loose}?problem=no_email"
    assert linked.location == f"/dashboard/received/{loose}"
    row = await acme.pool.fetchrow(
        "SELECT reply_match_status, reply_to_email_id, thread_id, match_source"
        " FROM received_emails WHERE id = $1",
        loose,
    )
    assert dict(row) == {
        "reply_match_status": "matched",
        "reply_to_email_id": email.id,
        "thread_id": email.thread_id,
        "match_source": "manual",
    }
    assert f"Linked by hand</dt><dd>{who}" in after.text
    assert 'id="link-form"' not in after.text
    assert "about my refund" in thread.text and "matched by hand" in thread.text
    audit = await acme.pool.fetchrow(
        "SELECT user_email, email_id FROM dashboard_audit WHERE received_id = $1", loose
    )
    assert dict(audit) == {"user_email": who, "email_id": email.id}


async def test_linking_another_tenants_message_answers_404(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme, other = await make_tenant(), await make_tenant(catch_all=True)
    email, _ = await acme.sent_email()
    address = f"help@{other.name}"
    sent = await smtp_send(mx.port, "x@example.net", [address], message(to=address))
    [theirs] = sent.stored_ids
    async with session() as http:
        me, _ = await signed_in(api, acme, http)
        csrf = (await me.get("/dashboard/emails")).csrf
        page = await me.post(
            f"/dashboard/received/{theirs}/link", {"csrf_token": csrf, "email_id": str(email.id)}
        )
    assert page.status == 404
    status = await other.pool.fetchval(
        "SELECT reply_match_status FROM received_emails WHERE id = $1", theirs
    )
    assert status == "unmatched"


async def test_overview_counts_today_and_the_reply_rate_per_domain(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    answered, token = await acme.sent_email()
    await acme.sent_email()
    await reply_through_mx(mx.port, token.address(acme.reply_domain), text="yes")
    await deferred_delivery(acme, answered.id, "customer@example.net")
    async with session() as http:
        me, _ = await signed_in(api, acme, http)
        page = await me.get("/dashboard/overview")
    assert '<dd id="today-matched" class="match-matched">1</dd>' in page.text
    assert '<dd id="today-deferred" class="status-deferred">1</dd>' in page.text
    assert f"<tr><td>{acme.name}</td><td>2</td><td>1</td>\n      <td>50%</td>" in page.text


async def test_the_timeline_raw_file_and_attachments_of_a_message(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email()
    await deferred_delivery(acme, email.id, "customer@example.net")
    await acme.pool.execute(
        "INSERT INTO email_events (id, tenant_id, email_id, type, recipient, data) VALUES"
        " (gen_random_uuid(), $1, $2, 'email.delivery_delayed', 'customer@example.net', $3)",
        acme.id,
        email.id,
        {"code": 451, "enhanced_code": "4.7.1", "response": "greylisted",
         "remote_host": "mx.example.org", "retry_in_seconds": 300},
    )  # fmt: skip
    address = token.address(acme.reply_domain)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "customer@example.net", address, "Re: invoice"
    msg.set_content("See the attached file.")
    msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="a.pdf")
    sent = await smtp_send(
        mx.port,
        "customer@example.net",
        [address],
        msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")),
    )
    [reply_id] = sent.stored_ids
    async with session() as http:
        me, _ = await signed_in(api, acme, http)
        detail = await me.get(f"/dashboard/emails/{email.id}")
        received = await me.get(f"/dashboard/received/{reply_id}")
        part = received.text.split(f"/dashboard/received/{reply_id}/attachments/")[1].split('"')[0]
        attachment = await me.get(f"/dashboard/received/{reply_id}/attachments/{part}")
        raw = await me.get(f"/dashboard/received/{reply_id}/raw")
    assert "delivery delayed</strong> · customer@example.net" in detail.text
    assert "451 4.7.1 greylisted · MX mx.example.org · next retry in 300 s" in detail.text
    assert ">a.pdf</a>" in received.text
    assert attachment.text == "%PDF-1.4 fake"
    assert attachment.headers["X-Content-Type-Options"] == "nosniff"
    assert attachment.headers["Content-Type"] == "application/octet-stream"
    assert raw.headers["Content-Type"] == "message/rfc822"
    assert "Subject: Re: invoice" in raw.text and raw.text.startswith("Received:")


async def test_an_emails_page_retries_its_deferred_recipient_and_previews_it_sandboxed(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    email, _ = await acme.sent_email(to="a@example.org")
    await acme.pool.execute(
        "UPDATE emails SET html_body = $2, text_body = 'Plain words' WHERE id = $1",
        email.id,
        '<p>Hello</p><script>alert(1)</script><img src="https://tracker.example/p.gif">',
    )
    delivery = await deferred_delivery(acme, email.id, "a@example.org")
    async with session() as http:
        me, _ = await signed_in(api, acme, http)
        page = await me.get(f"/dashboard/emails/{email.id}")
        retried = await me.post(
            "/dashboard/queue",
            {
                "csrf_token": page.csrf,
                "action": "retry",
                "delivery": str(delivery),
                "back": f"/dashboard/emails/{email.id}",
            },
        )
        after = await me.get(retried.location or "")
        body = await me.get(f"/dashboard/emails/{email.id}/body")
    assert f'name="delivery" value="{delivery}"' in page.text
    assert "Plain words" in page.text
    assert retried.location == f"/dashboard/emails/{email.id}?done=retry-1"
    assert "Retried now: 1." in after.text
    assert body.headers["Content-Security-Policy"].startswith("sandbox; default-src 'none'")
    cleaned = body.text.split("<body>", 1)[1]
    assert "<p>Hello</p>" in cleaned
    assert "<script" not in cleaned and "tracker.example" not in cleaned
