"""The reply composer over plain HTTP (JavaScript off): it answers through the reply API's own
code, into the conversation; its Idempotency-Key makes a double submit one email; a refusal
is shown in words with the text kept."""

from __future__ import annotations

import re

from mta.listeners import MXListener
from tests.api.dashboard.support import make_user, reader, reply_through_mx, session
from tests.conftest import ApiServer, MakeTenant

_FIELD = re.compile(r'name="(idempotency_key|back|from)" value="([^"]*)"')


async def test_a_reply_sent_from_the_composer_joins_the_conversation_once(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email(subject="Your order")
    received_id = await reply_through_mx(
        mx.port, token.address(acme.reply_domain), text="Where is it?"
    )
    async with session() as http:
        me = reader(api.url, http)
        await me.sign_in(await make_user(acme))
        page = await me.get(f"/dashboard/emails/{email.id}")
        fields = dict(_FIELD.findall(page.text))
        assert fields["from"] == f"support@{acme.name}"
        assert f'action="/dashboard/received/{received_id}/reply"' in page.text
        form = {**fields, "csrf_token": page.csrf, "text": "It ships tomorrow."}
        first = await me.post(f"/dashboard/received/{received_id}/reply", form)
        again = await me.post(f"/dashboard/received/{received_id}/reply", form)  # double submit
        after = await me.get(f"/dashboard/emails/{email.id}")

    assert first.status == again.status == 303
    assert first.location is not None
    assert first.location.startswith(f"/dashboard/emails/{email.id}?replied=")
    assert first.location == again.location  # the same email, replayed
    answers = await acme.pool.fetch(
        "SELECT id, thread_id, subject, text_body FROM emails WHERE in_reply_to_received_id = $1",
        received_id,
    )
    assert len(answers) == 1
    [answer] = answers
    assert answer["thread_id"] == email.thread_id
    assert answer["subject"] == "Re: Your order"
    assert answer["text_body"].startswith("It ships tomorrow.")
    conversation = after.text.split('id="conversation"', 1)[1]
    assert conversation.index("Where is it?") < conversation.index("It ships tomorrow.")


async def test_a_refused_reply_says_why_and_keeps_the_form(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    _email, token = await acme.sent_email()
    received_id = await reply_through_mx(mx.port, token.address(acme.reply_domain), text="Hi")
    async with session() as http:
        me = reader(api.url, http)
        await me.sign_in(await make_user(acme))
        page = await me.get(f"/dashboard/received/{received_id}")
        fields = dict(_FIELD.findall(page.text))
        refused = await me.post(
            f"/dashboard/received/{received_id}/reply",
            {**fields, "csrf_token": page.csrf, "from": "someone@not-ours.example", "text": "x"},
        )
    assert refused.status == 403
    assert "You don&#39;t have permission to send from domain: not-ours.example" in refused.text
    assert 'name="from" value="someone@not-ours.example"' in refused.text
    count = await acme.pool.fetchval(
        "SELECT count(*) FROM emails WHERE in_reply_to_received_id = $1", received_id
    )
    assert count == 0
