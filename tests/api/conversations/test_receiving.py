"""Received mail over HTTP: mail sent to the real MX, read back through the real API.

Pagination, filters, the detail of a matched reply and its thread, attachments, the raw message,
tenant isolation, and mail the parser could only partly read.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import aiohttp
import pytest
import resend

from mta.listeners import MXListener
from policy.download_links import LINK_LIFETIME
from storage.database import Pool
from tests.conftest import ApiServer, MakeTenant, TenantWorld, message, smtp_send


@asynccontextmanager
async def client(api: ApiServer, key: str) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(base_url=api.url, headers=headers) as http:
        yield http


async def get_json(http: aiohttp.ClientSession, path: str, status: int = 200) -> Any:
    async with http.get(path) as response:
        body = await response.json()
        assert response.status == status, body
        return body


async def deliver(
    mx: MXListener, world: TenantWorld, content: bytes, rcpt: str | None = None
) -> UUID:
    """Send one message through the MX to the tenant and return its received id."""
    to = rcpt or f"support@{world.name}"
    sent = await smtp_send(mx.port, "customer@example.net", [to], content)
    [stored] = sent.stored_ids
    return stored


def with_attachments(to: str, files: list[tuple[str, bytes, str]]) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Carol Customer <customer@example.net>"
    msg["To"] = to
    msg["Subject"] = "Files"
    msg["Message-ID"] = f"<{uuid4().hex}@example.net>"
    msg.set_content("see attached")
    for filename, data, mime in files:
        maintype, subtype = mime.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


async def test_list_is_newest_first_and_pages_with_after_and_before(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    ids = [await deliver(mx, acme, message(subject=f"m{n}")) for n in range(5)]
    m0, m1, m2, m3, m4 = (str(i) for i in ids)

    async with client(api, await acme.api_key()) as http:
        everything = await get_json(http, "/emails/receiving")
        first = await get_json(http, "/emails/receiving?limit=2")
        second = await get_json(http, f"/emails/receiving?limit=2&after={m3}")
        last = await get_json(http, f"/emails/receiving?limit=2&after={m1}")
        back = await get_json(http, f"/emails/receiving?limit=2&before={m0}")
        front = await get_json(http, f"/emails/receiving?limit=2&before={m2}")

    assert everything["object"] == "list"
    assert [e["id"] for e in everything["data"]] == [m4, m3, m2, m1, m0]
    assert everything["has_more"] is False
    assert ([e["id"] for e in first["data"]], first["has_more"]) == ([m4, m3], True)
    assert ([e["id"] for e in second["data"]], second["has_more"]) == ([m2, m1], True)
    assert ([e["id"] for e in last["data"]], last["has_more"]) == ([m0], False)
    # Backwards: the page next to the cursor, still newest first; more lie beyond it.
    assert ([e["id"] for e in back["data"]], back["has_more"]) == ([m2, m1], True)
    assert ([e["id"] for e in front["data"]], front["has_more"]) == ([m4, m3], False)
    assert everything["data"][0]["subject"] == "m4"


@pytest.mark.parametrize(
    ("query", "status", "name"),
    [
        ("limit=0", 400, "validation_error"),
        ("limit=101", 400, "validation_error"),
        ("limit=ten", 400, "validation_error"),
        (f"after={uuid4()}&before={uuid4()}", 400, "validation_error"),
        ("after=not-a-uuid", 422, "invalid_parameter"),
        (f"after={uuid4()}", 422, "invalid_parameter"),
        ("reply_match_status=maybe", 400, "validation_error"),
        ("thread_id=42", 422, "invalid_parameter"),
        ("received_after=yesterday", 400, "validation_error"),
        ("recipient=nobody", 400, "validation_error"),
    ],
    ids=[
        "limit_zero",
        "limit_above_100",
        "limit_not_a_number",
        "after_and_before",
        "malformed_cursor",
        "unknown_cursor",
        "unknown_match_status",
        "malformed_thread_id",
        "date_not_iso_8601",
        "recipient_not_an_address",
    ],
)
async def test_bad_list_parameters_are_refused_with_a_clear_error(
    api: ApiServer, make_tenant: MakeTenant, query: str, status: int, name: str
) -> None:
    acme = await make_tenant()
    async with client(api, await acme.api_key()) as http:
        body = await get_json(http, f"/emails/receiving?{query}", status=status)
    assert body["name"] == name
    assert "`" in body["message"]  # names the parameter


async def test_filters_by_match_status_thread_recipient_sender_and_date(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    await acme.route(f"sales@{acme.name}")
    email, token = await acme.sent_email()
    reply_address = token.address(acme.reply_domain)
    matched = await deliver(mx, acme, message(subject="Re: Your order"), rcpt=reply_address)
    to_support = await deliver(
        mx, acme, message(sender="Other <other@example.org>"), rcpt=f"support@{acme.name}"
    )
    to_sales = await deliver(
        mx, acme, message(sender="CUSTOMER@Example.NET"), rcpt=f"sales@{acme.name}"
    )

    async with client(api, await acme.api_key()) as http:

        async def ids(query: str) -> set[str]:
            return {e["id"] for e in (await get_json(http, f"/emails/receiving?{query}"))["data"]}

        assert await ids("reply_match_status=matched") == {str(matched)}
        assert await ids("reply_match_status=unmatched") == {str(to_support), str(to_sales)}
        assert await ids(f"thread_id={email.thread_id}") == {str(matched)}
        assert await ids(f"recipient=SALES@{acme.name}") == {str(to_sales)}
        assert await ids("from=customer@example.net") == {str(matched), str(to_sales)}
        middle = await get_json(http, f"/emails/receiving/{to_support}")
        since = middle["received_at"].replace("+00:00", "Z")
        assert await ids(f"received_after={since}") == {str(to_support), str(to_sales)}
        assert await ids(f"received_before={since}") == {str(matched)}
        assert await ids(f"received_after={since}&from=other@example.org") == {str(to_support)}


async def test_matched_reply_detail_has_envelope_headers_matching_and_thread(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email(subject="Your order")
    reply_address = token.address(acme.reply_domain)
    content = message(
        sender="Carol Customer <customer@example.net>",
        to=reply_address,
        subject="Re: Your order",
        body="Where is it?\n",
        headers={
            "Cc": "Dan <dan@example.net>",
            "Reply-To": "carol@example.org",
            "In-Reply-To": f"<{email.message_id}>",
            "References": f"<{email.message_id}>",
        },
    )
    received_id = await deliver(mx, acme, content, rcpt=reply_address)

    async with client(api, await acme.api_key()) as http:
        detail = await get_json(http, f"/emails/receiving/{received_id}")

    assert detail["object"] == "email"
    assert detail["id"] == str(received_id)
    assert detail["from"] == "Carol Customer <customer@example.net>"
    assert (detail["from_name"], detail["from_address"]) == (
        "Carol Customer",
        "customer@example.net",
    )
    assert detail["to"] == [reply_address]
    assert detail["cc"] == ["dan@example.net"]
    assert detail["reply_to"] == ["carol@example.org"]
    assert detail["received_for"] == [reply_address]
    assert detail["subject"] == "Re: Your order"
    assert detail["text"] == "Where is it?\n"
    assert detail["html"] is None
    assert detail["message_id"].startswith("<") and detail["message_id"].endswith("@example.net>")
    assert detail["in_reply_to"] == f"<{email.message_id}>"
    assert detail["references"] == f"<{email.message_id}>"
    assert detail["created_at"] == detail["received_at"]
    assert detail["headers"]["Subject"] == "Re: Your order"
    assert ["Cc", "Dan <dan@example.net>"] in detail["header_list"]
    assert detail["envelope"] == {
        "mail_from": "customer@example.net",
        "rcpt_to": [reply_address],
        "remote_ip": "127.0.0.1",
        "helo": "client.example.net",
        "tls": False,
        "tls_version": None,
    }
    assert detail["authentication_results"] is None
    assert detail["parse_defects"] == []
    assert detail["attachments"] == []
    assert detail["reply_match_status"] == "matched"
    assert detail["reply_to_email_id"] == str(email.id)
    assert detail["thread_id"] == str(email.thread_id)
    assert detail["match_source"] == "recipient"
    assert (detail["token_failure"], detail["token_failure_source"]) == (None, None)
    assert detail["contact_id"] is None
    raw_link = urlsplit(detail["raw"]["download_url"])
    assert raw_link.path == f"/download/emails/receiving/{received_id}/raw"

    thread = detail["thread"]
    assert thread["thread_id"] == str(email.thread_id)
    assert thread["match_status"] == "matched"
    assert thread["original_email_id"] == str(email.id)
    outbound, inbound = thread["messages"]
    assert (outbound["direction"], outbound["id"]) == ("outbound", str(email.id))
    assert outbound["from"] == f"support@{acme.name}"
    assert outbound["subject"] == "Your order"
    assert (inbound["direction"], inbound["id"]) == ("inbound", str(received_id))
    assert inbound["from"] == "Carol Customer <customer@example.net>"
    assert inbound["reply_match_status"] == "matched"
    assert outbound["created_at"] < inbound["created_at"]


async def test_thread_object_lists_outbound_then_replies_oldest_first(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email()
    address = token.address(acme.reply_domain)
    first = await deliver(mx, acme, message(subject="Re: 1"), rcpt=address)
    second = await deliver(mx, acme, message(subject="Re: 2"), rcpt=address)

    async with client(api, await acme.api_key()) as http:
        thread = (await get_json(http, f"/emails/receiving/{first}"))["thread"]

    assert [(m["direction"], m["id"]) for m in thread["messages"]] == [
        ("outbound", str(email.id)),
        ("inbound", str(first)),
        ("inbound", str(second)),
    ]


async def test_unmatched_reply_says_why_and_is_a_thread_of_one(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    _email, token = await acme.sent_email()
    tampered = ("0" if token.signature[0] != "0" else "1") + token.signature[1:]
    address = f"reply+osr_{token.email_id.hex}_{tampered}@{acme.reply_domain}"
    received_id = await deliver(mx, acme, message(), rcpt=address)
    async with client(api, await acme.api_key()) as http:
        detail = await get_json(http, f"/emails/receiving/{received_id}")
    assert (detail["reply_match_status"], detail["thread_id"]) == ("unmatched", None)
    assert (detail["token_failure"], detail["token_failure_source"]) == (
        "bad_signature",
        "recipient",
    )
    thread = detail["thread"]
    assert (thread["thread_id"], thread["match_status"]) == (None, "unmatched")
    assert [(m["direction"], m["id"]) for m in thread["messages"]] == [
        ("inbound", str(received_id))
    ]


async def test_attachments_are_listed_described_and_downloaded_byte_for_byte(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    pdf = b"%PDF-1.4\n" + os.urandom(3000)
    png = os.urandom(500)
    content = with_attachments(
        f"x@{acme.name}",
        [("invoice.pdf", pdf, "application/pdf"), ("../../etc/résumé.png", png, "image/png")],
    )
    received_id = await deliver(mx, acme, content, rcpt=f"x@{acme.name}")

    async with client(api, await acme.api_key()) as http:
        detail = await get_json(http, f"/emails/receiving/{received_id}")
        listed = await get_json(http, f"/emails/receiving/{received_id}/attachments")
        first, second = listed["data"]
        one = await get_json(http, f"/emails/receiving/{received_id}/attachments/{first['id']}")
        # Links of earlier versions named the MIME part path; they still find the attachment.
        by_part = await get_json(http, f"/emails/receiving/{received_id}/attachments/2")
        async with http.get(first["download_url"]) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/pdf"
            assert response.headers["Content-Disposition"] == 'attachment; filename="invoice.pdf"'
            assert await response.read() == pdf
        async with http.get(second["download_url"]) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "image/png"
            # No path survives; the UTF-8 name travels as RFC 8187 filename*.
            assert response.headers["Content-Disposition"] == (
                "attachment; filename=\"r_sum_.png\"; filename*=UTF-8''r%C3%A9sum%C3%A9.png"
            )
            assert await response.read() == png
        missing = await get_json(
            http, f"/emails/receiving/{received_id}/attachments/9/content", status=404
        )

    assert listed["object"] == "list" and listed["has_more"] is False
    assert [a["id"] for a in detail["attachments"]] == [first["id"], second["id"]]
    assert first["filename"] == "invoice.pdf"
    assert first["content_type"] == "application/pdf"
    assert first["size"] == len(pdf)
    assert first["content_disposition"] == "attachment"
    assert (first["index"], second["index"]) == (0, 1)
    assert one["object"] == "attachment"
    assert one["id"] == first["id"]
    assert urlsplit(one["download_url"]).path == urlsplit(first["download_url"]).path
    assert by_part["id"] == first["id"]
    # UUIDs, as Resend's attachment ids are, and signed links that expire
    # (tests/api/downloads/test_routes.py holds them to it).
    assert all(UUID(a["id"]) for a in (first, second))
    expires = datetime.fromisoformat(first["expires_at"])
    assert datetime.now(UTC) < expires <= datetime.now(UTC) + LINK_LIFETIME
    # Resend's SDK: absent or a string in the linked form, Optional in the email's own list.
    assert "content_id" not in first and detail["attachments"][0]["content_id"] is None
    assert missing["name"] == "not_found"


async def test_raw_is_our_received_field_then_the_bytes_as_sent(
    api: ApiServer, mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    content = message(to=f"x@{acme.name}", subject="raw please")
    received_id = await deliver(mx, acme, content, rcpt=f"x@{acme.name}")
    trace = await pool.fetchval(
        "SELECT received_header FROM received_emails WHERE id = $1", received_id
    )

    async with (
        client(api, await acme.api_key()) as http,
        http.get(f"/emails/receiving/{received_id}/raw") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "message/rfc822"
        assert response.headers["Content-Disposition"] == (
            f'attachment; filename="{received_id}.eml"'
        )
        body = await response.read()

    assert trace.startswith("Received: from client.example.net")
    assert body == trace.encode() + b"\r\n" + content


async def test_another_tenants_received_mail_answers_404_and_is_not_listed(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme, globex = await make_tenant(catch_all=True), await make_tenant(catch_all=True)
    content = with_attachments(f"x@{acme.name}", [("a.bin", b"secret", "application/octet-stream")])
    acme_id = await deliver(mx, acme, content, rcpt=f"x@{acme.name}")

    async with client(api, await globex.api_key()) as http:
        for path in (
            f"/emails/receiving/{acme_id}",
            f"/emails/receiving/{acme_id}/raw",
            f"/emails/receiving/{acme_id}/attachments",
            f"/emails/receiving/{acme_id}/attachments/2",
            f"/emails/receiving/{acme_id}/attachments/2/content",
            "/emails/receiving/not-a-uuid",
        ):
            body = await get_json(http, path, status=404)
            assert body["name"] == "not_found", path
        listed = await get_json(http, "/emails/receiving")
        refused = await get_json(http, f"/emails/receiving?after={acme_id}", status=422)
    assert str(acme_id) not in {e["id"] for e in listed["data"]}
    assert refused["name"] == "invalid_parameter"


async def test_malformed_message_without_message_id_is_listed_and_readable(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    broken = (
        b"From: =?utf-8?q?broken\r\nSubject: half read\r\n"
        b'Content-Type: multipart/mixed; boundary="never-closed"\r\n\r\n'
        b"--never-closed\r\nContent-Type: text/plain; charset=klingon\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n%%%not base64%%%\r\n"
    )
    received_id = await deliver(mx, acme, broken, rcpt=f"x@{acme.name}")

    async with client(api, await acme.api_key()) as http:
        listed = await get_json(http, "/emails/receiving")
        detail = await get_json(http, f"/emails/receiving/{received_id}")
        async with http.get(f"/emails/receiving/{received_id}/raw") as response:
            raw = await response.read()

    [item] = listed["data"]
    assert item["id"] == str(received_id)
    # Strings, as Resend's document and SDK type them: empty when there is nothing to show.
    assert item["message_id"] == ""
    assert detail["message_id"] == ""
    assert detail["subject"] == "half read"
    assert detail["from"] == ""  # no address could be read from it
    assert detail["parse_defects"] != []
    assert raw.endswith(broken)


async def test_sending_access_key_cannot_read_received_mail(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with client(api, await acme.api_key("sending_access")) as http:
        body = await get_json(http, "/emails/receiving", status=401)
    assert body["name"] == "restricted_api_key"


def sdk_round_trip(url: str, key: str, email_id: str) -> dict[str, Any]:
    """The `resend` package's receiving calls, as an application would make them."""
    resend.api_url, resend.api_key = url, key
    attachments = resend.Emails.Receiving.Attachments.list(email_id)
    return {
        "listed": resend.Emails.Receiving.list({"limit": 1}),
        "got": resend.Emails.Receiving.get(email_id),
        "attachments": attachments,
        "attachment": resend.Emails.Receiving.Attachments.get(
            email_id, attachments["data"][0]["id"]
        ),
    }


async def test_the_resend_sdk_reads_received_mail_unchanged(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    content = with_attachments(f"x@{acme.name}", [("a.txt", b"hello", "text/plain")])
    received_id = str(await deliver(mx, acme, content, rcpt=f"x@{acme.name}"))
    # The SDK is synchronous and the server runs on this loop: call it from a thread.
    calls = await asyncio.to_thread(sdk_round_trip, api.url, await acme.api_key(), received_id)
    assert [e["id"] for e in calls["listed"]["data"]] == [received_id]
    assert calls["got"]["id"] == received_id
    assert calls["got"]["subject"] == "Files"
    assert calls["attachments"]["data"][0]["filename"] == "a.txt"
    assert urlsplit(calls["attachment"]["download_url"]).path.endswith("/content")


async def test_raw_obscures_a_senders_authentication_results_that_claim_our_name(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    """RFC 8601 section 5: only we may speak for our authserv-id (mx.opensend.test here);
    another server's results are left as they came."""
    acme = await make_tenant(catch_all=True)
    content = message(
        to=f"x@{acme.name}",
        headers={
            "Authentication-Results": "MX.opensend.test (forged); dkim=pass; dmarc=pass",
            "ARC-Authentication-Results": "i=1; other.example; spf=pass",
        },
    )
    content = content.replace(
        b"Subject:", b"Authentication-Results: mx.other.example; spf=pass\r\nSubject:", 1
    )
    received_id = await deliver(mx, acme, content, rcpt=f"x@{acme.name}")

    async with (
        client(api, await acme.api_key()) as http,
        http.get(f"/emails/receiving/{received_id}/raw") as response,
    ):
        body = await response.read()

    assert b"\r\nAuthentication-Results: MX.opensend.test" not in body
    assert (
        b"\r\nX-Original-Authentication-Results: MX.opensend.test (forged); dkim=pass; dmarc=pass"
        in body
    )
    assert b"\r\nAuthentication-Results: mx.other.example; spf=pass\r\n" in body
    assert b"\r\nARC-Authentication-Results: i=1; other.example; spf=pass\r\n" in body


async def test_a_message_without_subject_or_message_id_and_an_inline_part_reads_as_the_sdk_types_it(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    """Resend's SDK types `subject` a string and an attachment's `content_disposition` as
    "inline" or "attachment": never null, whatever the message left out."""
    acme = await make_tenant(catch_all=True)
    content = (
        f"From: customer@example.net\r\nTo: x@{acme.name}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/related; boundary="b"\r\n\r\n'
        '--b\r\nContent-Type: text/html\r\n\r\n<img src="cid:logo@x">\r\n'
        "--b\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--b--\r\n"
    ).encode()
    received_id = await deliver(mx, acme, content, rcpt=f"x@{acme.name}")
    async with client(api, await acme.api_key()) as http:
        detail = await get_json(http, f"/emails/receiving/{received_id}")
        as_cid = await get_json(http, f"/emails/receiving/{received_id}?html_format=cid")
        unknown = await get_json(
            http, f"/emails/receiving/{received_id}?html_format=inline", status=400
        )
        listed = await get_json(http, "/emails/receiving")
        [image] = (await get_json(http, f"/emails/receiving/{received_id}/attachments"))["data"]
    # Resend's default html_format, data_uri: the inline image in the HTML itself (RFC 2397).
    assert '<img src="data:image/png;base64,iVBORw0KGgo=">' in detail["html"]
    assert '<img src="cid:logo@x">' in as_cid["html"]
    assert unknown["message"] == "The `html_format` parameter must be data_uri or cid."
    assert (detail["subject"], detail["message_id"]) == ("", "")
    assert [item["subject"] for item in listed["data"] if item["id"] == str(received_id)] == [""]
    assert (image["content_id"], image["content_disposition"]) == ("logo@x", "inline")


async def test_an_inline_image_labelled_as_bytes_is_shown_by_what_its_bytes_are(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    """Outlook and others label inline images application/octet-stream; the HTML names them by
    cid: all the same. A PNG so labelled becomes a data:image/png URI; bytes that are no image
    keep their cid: reference."""
    acme = await make_tenant(catch_all=True)
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR").decode()
    not_an_image = base64.b64encode(b"<svg onload=alert(1)>").decode()
    content = (
        f"From: customer@example.net\r\nTo: x@{acme.name}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/related; boundary="b"\r\n\r\n'
        '--b\r\nContent-Type: text/html\r\n\r\n<img src="cid:logo@x"><img src="cid:svg@x">\r\n'
        "--b\r\nContent-Type: application/octet-stream\r\nContent-ID: <logo@x>\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{png}\r\n"
        "--b\r\nContent-Type: application/octet-stream\r\nContent-ID: <svg@x>\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{not_an_image}\r\n--b--\r\n"
    ).encode()
    received_id = await deliver(mx, acme, content, rcpt=f"x@{acme.name}")
    async with client(api, await acme.api_key()) as http:
        detail = await get_json(http, f"/emails/receiving/{received_id}")
    assert f'<img src="data:image/png;base64,{png}">' in detail["html"]
    assert '<img src="cid:svg@x">' in detail["html"]
