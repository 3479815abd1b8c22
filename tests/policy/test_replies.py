"""The reply catalogue: codes that agree in class (RFC 3463), texts that say nothing internal."""

from __future__ import annotations

import re

import pytest

from policy import replies
from policy.replies import CATALOGUE, ENHANCED_FOR_ENGINE_REPLY, Reply, with_enhanced_code

ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")

# Words that name a mechanism, a library or an internal reason; public texts stay generic.
INTERNAL_WORDS = (
    "postgres",
    "sql",
    "asyncpg",
    "aiosmtpd",
    "exception",
    "traceback",
    "token",
    "hmac",
    "tenant",
    "database",
    "opensend_",
)


def catalogue_final_replies() -> list[object]:
    # RFC 2034 section 3: intermediate 3xx replies (354) carry no enhanced code, and RFC 3463
    # has no class 3; every other reply must carry one of its own class.
    return [
        pytest.param(reply, id=name)
        for name, reply in CATALOGUE.items()
        if reply.code >= 400 or reply.code < 300
    ]


def catalogue_all() -> list[object]:
    return [pytest.param(reply, id=name) for name, reply in CATALOGUE.items()]


def engine_codes_with_enhanced() -> list[object]:
    return [
        pytest.param(code, enhanced, id=f"engine_{code}")
        for code, enhanced in ENHANCED_FOR_ENGINE_REPLY.items()
        if enhanced
    ]


def test_catalogue_holds_every_reply_constant() -> None:
    constants = {name for name, value in vars(replies).items() if isinstance(value, Reply)}
    assert set(CATALOGUE) == constants
    assert all(name.startswith(f"S{reply.code}_") for name, reply in CATALOGUE.items())


@pytest.mark.parametrize("reply", catalogue_final_replies())
def test_catalogue_reply_codes_agree_in_class(reply: Reply) -> None:
    assert re.fullmatch(r"[2345]\d\d", str(reply.code))
    assert ENHANCED.fullmatch(reply.enhanced)
    assert str(reply.code)[0] == reply.enhanced[0]


@pytest.mark.parametrize("reply", catalogue_all())
def test_catalogue_reply_is_temporary_exactly_when_4xx(reply: Reply) -> None:
    assert reply.temporary == (str(reply.code)[0] == "4")


def test_intermediate_354_has_no_enhanced_code() -> None:
    assert CATALOGUE["S354_DATA"].enhanced == ""
    assert str(CATALOGUE["S354_DATA"]) == "354 End data with <CR><LF>.<CR><LF>"


@pytest.mark.parametrize(("code", "enhanced"), engine_codes_with_enhanced())
def test_engine_reply_codes_agree_in_class(code: int, enhanced: str) -> None:
    assert re.fullmatch(r"[245]\d\d", str(code))
    assert ENHANCED.fullmatch(enhanced)
    assert str(code)[0] == enhanced[0]


def test_engine_replies_without_enhanced_code_are_intermediate() -> None:
    bare = [code for code, enhanced in ENHANCED_FOR_ENGINE_REPLY.items() if not enhanced]
    assert bare
    assert all(300 <= code < 400 for code in bare)


@pytest.mark.parametrize("reply", catalogue_all())
def test_public_text_names_nothing_internal(reply: Reply) -> None:
    text = reply.text.lower()
    assert not [word for word in INTERNAL_WORDS if word in text]
    assert reply.text.strip() == reply.text
    assert "\r" not in reply.text
    assert "\n" not in reply.text


# -- with_enhanced_code -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param("250 OK", "250 2.0.0 OK", id="ok"),
        pytest.param("503 Error: need RCPT command", "503 5.5.1 need RCPT command", id="error"),
        pytest.param("501 Syntax: NOOP", "501 5.5.4 Syntax: NOOP", id="syntax"),
        pytest.param("502 Command not implemented", "502 5.5.1 Command not implemented", id="502"),
        pytest.param("220 Ready to start TLS", "220 2.0.0 Ready to start TLS", id="starttls"),
        pytest.param("221 Bye", "221 2.0.0 Bye", id="bye"),
        pytest.param("554 Transaction failed", "554 5.0.0 Transaction failed", id="554"),
        pytest.param("250-first line", "250-2.0.0 first line", id="multiline_continued"),
        pytest.param("214-Supported commands:", "214-2.0.0 Supported commands:", id="help"),
    ],
)
def test_with_enhanced_code_adds_a_code_to_engine_replies(line: str, expected: str) -> None:
    assert with_enhanced_code(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("250 2.1.5 Recipient OK", id="ours"),
        pytest.param("250-2.0.0 first line", id="ours_multiline"),
        pytest.param("354 End data with <CR><LF>.<CR><LF>", id="data"),
        pytest.param("334 VXNlcm5hbWU6", id="auth_challenge"),
        pytest.param("334 ", id="empty_challenge"),
        pytest.param("299 unheard of", id="unknown_code"),
        pytest.param("not a reply", id="not_a_reply"),
        pytest.param("25 short", id="short_code"),
        pytest.param("250", id="code_only"),
        pytest.param("", id="empty"),
    ],
)
def test_with_enhanced_code_leaves_other_lines_alone(line: str) -> None:
    assert with_enhanced_code(line) == line


@pytest.mark.parametrize("reply", catalogue_all())
def test_with_enhanced_code_leaves_catalogue_replies_alone(reply: Reply) -> None:
    assert with_enhanced_code(str(reply)) == str(reply)


def test_reply_renders_code_enhanced_code_and_text() -> None:
    assert str(replies.S550_NO_SUCH_USER) == "550 5.1.1 No such user here"
    assert str(replies.S250_QUEUED.format(id="abc")) == "250 2.0.0 Ok: queued as abc"


# -- engine_reply: aiosmtpd's own replies answered from the catalogue ----------------------------


@pytest.mark.parametrize("engine_text", sorted(replies.ENGINE_REPLIES))
def test_every_engine_reply_is_answered_with_a_catalogue_entry(engine_text: str) -> None:
    answer = replies.engine_reply(engine_text)
    assert answer in {str(reply) for reply in CATALOGUE.values()}
    assert answer[:3] == engine_text[:3]  # the engine's basic code is kept


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param('500 Error: command "NOOP\rQUIT" not recognized', "S500_UNKNOWN_COMMAND"),
        pytest.param("502 Could not VRFY <\udcff@x>", "S501_SYNTAX_ADDRESS"),
        pytest.param("500 Error: bad syntax", "S500_SYNTAX_ERROR"),
    ],
)
def test_engine_replies_never_echo_the_client(line: str, expected: str) -> None:
    assert replies.engine_reply(line) == str(CATALOGUE[expected])
