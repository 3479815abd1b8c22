"""POST /emails refusals: every check, with its status, Resend's error name, and a message that
names the field and says what is wrong. Nothing is stored for a refused request.

Header injection gets its own tables: a line break in any field that becomes a header,
and every header the server owns, whatever its case.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from policy.sending.fields import OWNED_HEADERS
from storage.database import Pool
from tests.api.sending.emails_client import count_emails, email, emails_api
from tests.conftest import ApiServer, MakeTenant, StartApi, TenantWorld

Body = Callable[[TenantWorld], Any]

# (id, body, status, error name, words the message must contain)
REFUSALS: list[tuple[str, Body, int, str, str]] = [
    (
        "missing_from",
        lambda w: email(w, sender=None),
        422,
        "missing_required_field",
        "Missing `from` field.",
    ),
    (
        "missing_to",
        lambda w: email(w, to=None),
        422,
        "missing_required_field",
        "Missing `to` field.",
    ),
    ("empty_to", lambda w: email(w, to=[]), 422, "missing_required_field", "Missing `to` field."),
    (
        "missing_subject",
        lambda w: email(w, subject=None),
        422,
        "missing_required_field",
        "Missing `subject` field.",
    ),
    (
        "missing_bodies",
        lambda w: email(w, text=None, html=None),
        422,
        "missing_required_field",
        "Missing `html` or `text` field.",
    ),
    (
        "empty_bodies",
        lambda w: email(w, text="", html=""),
        422,
        "missing_required_field",
        "Missing `html` or `text` field.",
    ),
    (
        "from_not_an_address",
        lambda w: email(w, sender="Acme Support"),
        422,
        "invalid_from_address",
        "Invalid `from` field. The email address needs to follow the `email@example.com` or ",
    ),
    (
        "from_without_domain_dot",
        lambda w: email(w, sender="a@localhost"),
        422,
        "invalid_from_address",
        "Invalid `from` field",
    ),
    (
        "from_not_a_string",
        lambda w: email(w, sender=42),
        400,
        "validation_error",
        "`from` must be a string.",
    ),
    (
        "to_half_an_address",
        lambda w: email(w, to=["ok@example.net", "bob@"]),
        400,
        "validation_error",
        "Invalid `to[1]` field.",
    ),
    (
        "to_two_in_one_string",
        lambda w: email(w, to="a@example.net, b@example.net"),
        400,
        "validation_error",
        "Invalid `to[0]` field.",
    ),
    (
        "to_an_object",
        lambda w: email(w, to={"a": "b"}),
        400,
        "validation_error",
        "`to` must be a string or a list of strings.",
    ),
    (
        "to_a_number_inside",
        lambda w: email(w, to=[7]),
        400,
        "validation_error",
        "`to[0]` must be a string.",
    ),
    (
        "to_local_part_too_long",
        lambda w: email(w, to="x" * 65 + "@example.net"),
        400,
        "validation_error",
        "Invalid `to[0]` field.",
    ),
    (
        "cc_bad",
        lambda w: email(w, cc="not-an-address"),
        400,
        "validation_error",
        "Invalid `cc[0]` field.",
    ),
    (
        "bcc_bad",
        lambda w: email(w, bcc=["a@b@example.net"]),
        400,
        "validation_error",
        "Invalid `bcc[0]` field.",
    ),
    (
        "reply_to_bad",
        lambda w: email(w, reply_to="Help <help@>"),
        400,
        "validation_error",
        "Invalid `reply_to[0]` field.",
    ),
    (
        "fifty_one_recipients",
        lambda w: email(
            w,
            to=[f"t{i}@example.net" for i in range(30)],
            cc=[f"c{i}@example.net" for i in range(20)],
            bcc="b@example.net",
        ),
        400,
        "validation_error",
        "Too many recipients: 51 in `to`, `cc` and `bcc`; at most 50",
    ),
    (
        # Counted before any is parsed: three million in one field are refused at once.
        "a_million_to",
        lambda w: email(w, to=["x@example.net"] * 1_000_000),
        400,
        "validation_error",
        "`to` lists 1000000 addresses; at most 50 are allowed.",
    ),
    (
        # Refused before the "Name <addr>" pattern, which a long run of spaces made slow.
        "a_long_address_string",
        lambda w: email(w, to="a" + " " * 40_000 + "b@example.net"),
        400,
        "validation_error",
        "`to[0]` is longer than 998 characters.",
    ),
    (
        "fifty_one_reply_to",
        lambda w: email(w, reply_to=[f"r{i}@example.net" for i in range(51)]),
        400,
        "validation_error",
        "`reply_to` lists 51 addresses; at most 50 are allowed.",
    ),
    (
        "subject_not_text",
        lambda w: email(w, subject=["a"]),
        400,
        "validation_error",
        "`subject` must be a string.",
    ),
    (
        "subject_too_long",
        lambda w: email(w, subject="s" * 999),
        400,
        "validation_error",
        "`subject` is over 998 characters.",
    ),
    (
        "html_not_text",
        lambda w: email(w, html={"p": 1}),
        400,
        "validation_error",
        "`html` must be a string.",
    ),
    (
        "text_not_text",
        lambda w: email(w, text=1),
        400,
        "validation_error",
        "`text` must be a string.",
    ),
    (
        "headers_a_list",
        lambda w: email(w, headers=["X-A: 1"]),
        400,
        "validation_error",
        "`headers` must be an object of strings.",
    ),
    (
        "header_value_a_number",
        lambda w: email(w, headers={"X-Count": 3}),
        400,
        "validation_error",
        "`headers.X-Count` must be a string.",
    ),
    (
        "header_name_with_space",
        lambda w: email(w, headers={"X Bad": "1"}),
        400,
        "validation_error",
        "Header name `X Bad` is not valid",
    ),
    (
        "header_name_with_colon",
        lambda w: email(w, headers={"X-Bad:": "1"}),
        400,
        "validation_error",
        "Header name `X-Bad:` is not valid",
    ),
    (
        "header_name_not_ascii",
        lambda w: email(w, headers={"X-Grüße": "1"}),
        400,
        "validation_error",
        "Header name `X-Grüße` is not valid",
    ),
    (
        "header_given_twice",
        lambda w: email(w, headers={"X-Ref": "1", "x-ref": "2"}),
        400,
        "validation_error",
        "Header `x-ref` is given twice.",
    ),
    (
        "in_reply_to_not_an_id",
        lambda w: email(w, headers={"In-Reply-To": "hello"}),
        400,
        "validation_error",
        "`headers.In-Reply-To` must be message IDs",
    ),
    (
        "header_too_long",
        lambda w: email(w, headers={"X-Long": "v" * 991}),
        400,
        "validation_error",
        "`headers.X-Long` is longer than 998 octets.",
    ),
    (
        "too_many_headers",
        lambda w: email(w, headers={f"X-H{i}": "1" for i in range(51)}),
        400,
        "validation_error",
        "At most 50 `headers` are allowed.",
    ),
    (
        "attachments_an_object",
        lambda w: email(w, attachments={"filename": "a"}),
        400,
        "validation_error",
        "`attachments` must be a list of at most 100.",
    ),
    (
        "attachment_by_url",
        lambda w: email(
            w, attachments=[{"path": "https://example.com/a.pdf", "filename": "a.pdf"}]
        ),
        422,
        "invalid_attachment",
        "`attachments[0].path` is not supported: this server does not fetch URLs.",
    ),
    (
        "attachment_without_content",
        lambda w: email(w, attachments=[{"filename": "a.pdf"}]),
        422,
        "invalid_attachment",
        "Attachment must have either a content or path.",
    ),
    (
        "attachment_not_base64",
        lambda w: email(w, attachments=[{"filename": "a.txt", "content": "**not base64**"}]),
        422,
        "invalid_attachment",
        "`attachments[0].content` must be base64-encoded.",
    ),
    (
        "attachment_bytes_out_of_range",
        lambda w: email(w, attachments=[{"filename": "a", "content": [1, 300]}]),
        422,
        "invalid_attachment",
        "must hold byte values 0 to 255.",
    ),
    (
        "attachment_without_filename",
        lambda w: email(w, attachments=[{"content": "aGk="}]),
        422,
        "invalid_attachment",
        "`attachments[0].filename` is required.",
    ),
    (
        "attachment_not_an_object",
        lambda w: email(w, attachments=["aGk="]),
        422,
        "invalid_attachment",
        "`attachments[0]` must be an object.",
    ),
    (
        "attachment_bad_content_type",
        lambda w: email(
            w, attachments=[{"filename": "a", "content": "aGk=", "content_type": "pdf"}]
        ),
        400,
        "validation_error",
        "`attachments[0].content_type` must be a media type",
    ),
    (
        "attachment_bad_content_id",
        lambda w: email(
            w, attachments=[{"filename": "a.png", "content": "aGk=", "content_id": "<logo>"}]
        ),
        400,
        "validation_error",
        "`attachments[0].content_id` may hold",
    ),
    (
        "attachment_filename_too_long",
        lambda w: email(w, attachments=[{"filename": "a" * 256, "content": "aGk="}]),
        400,
        "validation_error",
        "`attachments[0].filename` is over 255 characters.",
    ),
    (
        "tags_an_object",
        lambda w: email(w, tags={"name": "a"}),
        400,
        "validation_error",
        "`tags` must be a list of at most 50.",
    ),
    (
        "tag_a_string",
        lambda w: email(w, tags=["a"]),
        400,
        "validation_error",
        "Each tag must be {name, value}.",
    ),
    (
        "tag_without_name",
        lambda w: email(w, tags=[{"value": "x"}]),
        400,
        "validation_error",
        "`tags[0].name` can only contain ASCII letters",
    ),
    (
        "tag_name_with_space",
        lambda w: email(w, tags=[{"name": "my tag", "value": "x"}]),
        400,
        "validation_error",
        "`tags[0].name` can only contain ASCII letters",
    ),
    (
        "tag_value_with_dot",
        lambda w: email(w, tags=[{"name": "a", "value": "v.1"}]),
        400,
        "validation_error",
        "`tags[0].value` can only contain ASCII letters",
    ),
    (
        "tag_name_too_long",
        lambda w: email(w, tags=[{"name": "a" * 257}]),
        400,
        "validation_error",
        "at most 256 characters",
    ),
    (
        "scheduled_at_a_number",
        lambda w: email(w, scheduled_at=1700000000),
        400,
        "validation_error",
        "`scheduled_at` must be a string.",
    ),
    (
        "scheduled_at_garbage",
        lambda w: email(w, scheduled_at="next tuesday-ish"),
        400,
        "validation_error",
        "`scheduled_at` must be an ISO 8601 date and time with a time zone",
    ),
    (
        "scheduled_at_without_zone",
        lambda w: email(w, scheduled_at="2030-01-01T10:00:00"),
        400,
        "validation_error",
        "with a time zone",
    ),
    (
        "scheduled_at_too_far",
        lambda w: email(w, scheduled_at="in 31 days"),
        400,
        "validation_error",
        "`scheduled_at` must be at most 30 days ahead.",
    ),
    (
        "body_an_array",
        lambda w: [email(w)],
        400,
        "validation_error",
        "The request body must be a JSON object.",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "name", "words"),
    [
        pytest.param(body, status, name, words, id=case)
        for case, body, status, name, words in REFUSALS
    ],
)
async def test_refused_email_answers_why_and_stores_nothing(
    api: ApiServer,
    pool: Pool,
    make_tenant: MakeTenant,
    body: Body,
    status: int,
    name: str,
    words: str,
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        answer = await client.send(body(acme))
    assert (answer.status, answer.name) == (status, name), answer.body
    assert words in answer.message
    assert answer.body["statusCode"] == status
    assert await count_emails(pool, acme) == 0


async def test_invalid_json_is_400_and_fifty_recipients_are_fine(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        broken = await client.call("POST", "/emails", data=b'{"from": ')
        fifty = await client.send(
            email(acme, to=[f"t{i}@example.net" for i in range(49)], bcc="b@example.net")
        )
    assert (broken.status, broken.message) == (400, "Invalid JSON in request body")
    assert fifty.status == 200


# -- text that is not text --------------------------------------------------------------------

# JSON with an unpaired surrogate escape: valid JSON syntax, but no character (RFC 8259 8.2).
LONE = "\\ud800"


@pytest.mark.parametrize(
    ("path", "template"),
    [
        (
            "/emails",
            '{{"from": "{sender}", "to": "b@example.net", "subject": "x{bad}y", "text": "t"}}',
        ),
        (
            "/emails",
            '{{"from": "{sender}", "to": "b@example.net", "subject": "s", "text": "{bad}"}}',
        ),
        (
            "/emails",
            '{{"from": "{sender}", "to": "b@example.net", "subject": "s", "text": "t",'
            ' "headers": {{"X-Ref": "{bad}"}}}}',
        ),
        (
            "/emails",
            '{{"from": "{sender}", "to": "Bo{bad} <b@example.net>", "subject": "s", "text": "t"}}',
        ),
        (
            "/emails/batch",
            '[{{"from": "{sender}", "to": "b@example.net", "subject": "{bad}", "text": "t"}}]',
        ),
    ],
    ids=["subject", "text", "header", "display-name", "batch"],
)
async def test_a_lone_surrogate_escape_is_400_not_500(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant, path: str, template: str
) -> None:
    """`"\\ud800"` parses as JSON but names no character, and no UTF-8 message can carry it: it
    is refused where the body is read, with the reason, instead of failing as a 500 later."""
    acme = await make_tenant()
    body = template.format(sender=f"a@{acme.name}", bad=LONE).encode()
    paired = template.format(sender=f"a@{acme.name}", bad="\\ud83d\\ude00").encode()
    async with emails_api(api, await acme.api_key()) as client:
        refused = await client.call("POST", path, data=body)
        accepted = await client.call("POST", path, data=paired)  # a whole pair is a character
    assert (refused.status, refused.name) == (400, "validation_error"), refused.body
    assert "half of a surrogate pair" in refused.message
    assert accepted.status == 200, accepted.body
    assert await count_emails(pool, acme) == 1


# -- header injection --------------------------------------------------------------------------

# A NUL is refused earlier, where the body is read (tests/api/test_nul_characters.py).
INJECTIONS = ["\r\nBcc: victim@example.org", "\nX-Evil: 1", "\rX-Evil: 1"]

# (field named in the message, body with `{bad}` where the injected text goes)
HEADER_FIELDS: list[tuple[str, Callable[[TenantWorld, str], Any]]] = [
    ("from", lambda w, bad: email(w, sender=f"Acme{bad} <a@{w.name}>")),
    ("to[0]", lambda w, bad: email(w, to=[f"x@example.net{bad}"])),
    ("cc[1]", lambda w, bad: email(w, cc=["ok@example.net", f"Name{bad} <c@example.net>"])),
    ("bcc[0]", lambda w, bad: email(w, bcc=f"b@example.net{bad}")),
    ("reply_to[0]", lambda w, bad: email(w, reply_to=f"r@example.net{bad}")),
    ("subject", lambda w, bad: email(w, subject=f"Hello{bad}")),
    ("headers", lambda w, bad: email(w, headers={f"X-A{bad}": "1"})),
    ("headers.X-Ref", lambda w, bad: email(w, headers={"X-Ref": f"1{bad}"})),
    (
        "attachments[0].filename",
        lambda w, bad: email(w, attachments=[{"filename": f"a{bad}.pdf", "content": "aGk="}]),
    ),
    (
        "attachments[0].content_type",
        lambda w, bad: email(
            w,
            attachments=[
                {"filename": "a.pdf", "content": "aGk=", "content_type": f"application/pdf{bad}"}
            ],
        ),
    ),
    (
        "attachments[0].content_id",
        lambda w, bad: email(
            w, attachments=[{"filename": "a.png", "content": "aGk=", "content_id": f"logo{bad}"}]
        ),
    ),
    ("tags[0].name", lambda w, bad: email(w, tags=[{"name": f"n{bad}", "value": "v"}])),
    ("tags[0].value", lambda w, bad: email(w, tags=[{"name": "n", "value": f"v{bad}"}])),
]


@pytest.mark.parametrize("injected", INJECTIONS, ids=["crlf", "lf", "cr"])
@pytest.mark.parametrize(("field", "body"), [pytest.param(f, b, id=f) for f, b in HEADER_FIELDS])
async def test_line_break_or_nul_in_a_header_bound_field_is_400_naming_the_field(
    api: ApiServer,
    pool: Pool,
    make_tenant: MakeTenant,
    field: str,
    body: Callable[[TenantWorld, str], Any],
    injected: str,
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        answer = await client.send(body(acme, injected))
    assert (answer.status, answer.name) == (400, "validation_error"), answer.body
    assert answer.message == f"`{field}` must not contain line breaks (CR, LF) or NUL."
    assert await count_emails(pool, acme) == 0


OWNED = [*sorted(OWNED_HEADERS), "X-OpenSend-Tenant"]


@pytest.mark.parametrize("header", OWNED)
async def test_headers_the_server_owns_cannot_be_set_in_any_case(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant, header: str
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        for spelling in (header, header.upper(), header.title()):
            answer = await client.send(email(acme, headers={spelling: "<x@example.net>"}))
            assert (answer.status, answer.name) == (400, "validation_error"), spelling
            assert answer.message.startswith(f"Header `{spelling}` cannot be set: ")
    assert await count_emails(pool, acme) == 0


async def test_message_id_override_attempt_leaves_ours_in_place(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    """Refused, not silently replaced: a caller who tries learns why."""
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        answer = await client.send(email(acme, headers={"Message-ID": "<mine@example.net>"}))
    assert answer.message == "Header `Message-ID` cannot be set: it carries the reply token."


# -- size --------------------------------------------------------------------------------------


async def test_oversize_body_is_413_json_and_an_oversize_built_message_too(
    start_test_api: StartApi, pool: Pool, make_tenant: MakeTenant
) -> None:
    small = await start_test_api(OPENSEND_MAX_MESSAGE_SIZE="100000")
    acme = await make_tenant()
    async with emails_api(small, await acme.api_key()) as client:
        # Over the body limit (4/3 of the message size for base64, plus 1 MiB): aiohttp stops
        # reading and the middleware answers in JSON.
        huge = await client.send(email(acme, text="x" * 1_300_000))
        attachment = base64.b64encode(b"\x00" * 150_000).decode()
        built = await client.send(
            email(acme, attachments=[{"filename": "zeros.bin", "content": attachment}])
        )
    assert (huge.status, huge.name) == (413, "validation_error")
    assert huge.message == "The request body is too large."
    assert (built.status, built.name) == (413, "validation_error")
    assert "bytes once built, over the limit of 100000 bytes" in built.message
    assert await count_emails(pool, acme) == 0
