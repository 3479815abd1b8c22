"""The one msg-id reader of Message-ID, In-Reply-To and References (RFC 5322 section 3.6.4)."""

from __future__ import annotations

import pytest

from policy.msgid import first_msg_id, msg_ids


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        pytest.param(
            "a1@x.example,b2@y.example,c3@z.example",
            ["a1@x.example", "b2@y.example", "c3@z.example"],
            id="comma",
        ),
        pytest.param(
            "a1@x.example, b2@y.example", ["a1@x.example", "b2@y.example"], id="comma_space"
        ),
        pytest.param(
            "a1@x.example;b2@y.example; c3@z.example",
            ["a1@x.example", "b2@y.example", "c3@z.example"],
            id="semicolon",
        ),
        pytest.param(
            "a1@x.example ,\r\n b2@y.example", ["a1@x.example", "b2@y.example"], id="comma_folded"
        ),
        pytest.param(
            "<a1@x.example>,b2@y.example, <c3@z.example>;d4@w.example",
            ["a1@x.example", "b2@y.example", "c3@z.example", "d4@w.example"],
            id="mixed_with_brackets",
        ),
        pytest.param(
            "<a1@x.example>,<b2@y.example>",
            ["a1@x.example", "b2@y.example"],
            id="brackets_and_comma",
        ),
        pytest.param(",,a1@x.example,,", ["a1@x.example"], id="empty_items"),
    ],
)
def test_bare_ids_are_split_on_commas_and_semicolons(value: str, ids: list[str]) -> None:
    assert msg_ids(value) == ids


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        pytest.param(
            "<abc@isp.example> (added by postmaster@isp.example)",
            ["abc@isp.example"],
            id="trailing",
        ),
        pytest.param("(first) <abc@isp.example>", ["abc@isp.example"], id="leading"),
        pytest.param(
            "<abc@isp.example> (outer (inner) still outer)", ["abc@isp.example"], id="nested"
        ),
        pytest.param(
            r"<abc@isp.example> (a \) and a \( do not close or open)",
            ["abc@isp.example"],
            id="quoted_pairs",
        ),
        pytest.param(
            '<abc@isp.example> (a "quote( is text) here', ["abc@isp.example"], id="quote_in_comment"
        ),
        pytest.param("<abc(why)@isp.example>", ["abc@isp.example"], id="inside_brackets"),
        pytest.param(
            "<abc@isp.example> (never closed <x@y.example>", ["abc@isp.example"], id="unclosed"
        ),
        pytest.param(
            "<a@x.example>\r\n (one)\r\n\t<b@y.example> (two)",
            ["a@x.example", "b@y.example"],
            id="folded",
        ),
        pytest.param(
            "(mail from bob@x.example) <a@x.example>", ["a@x.example"], id="address_in_comment"
        ),
    ],
)
def test_comments_and_folding_are_ignored(value: str, ids: list[str]) -> None:
    assert msg_ids(value) == ids


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        pytest.param("<a @ x.example>", ["a@x.example"], id="obsolete_white_space"),
        pytest.param('<"odd (id)"@x.example>', ['"odd (id)"@x.example'], id="quoted_left"),
        pytest.param("<a@[10.0.0.1(x)]>", ["a@[10.0.0.1(x)]"], id="domain_literal"),
        pytest.param("<<a@x.example>>", ["a@x.example"], id="doubled_brackets"),
        pytest.param("<a@x.example", ["a@x.example"], id="unclosed_bracket"),
        pytest.param(
            "<a,b@x.example> <c@y.example>",
            ["a,b@x.example", "c@y.example"],
            id="bracketed_as_written",
        ),
        pytest.param("your message of Monday <a@x.example>", ["a@x.example"], id="old_phrase"),
        pytest.param("no ids here", [], id="words"),
        pytest.param("", [], id="empty"),
        pytest.param(None, [], id="missing"),
    ],
)
def test_odd_but_readable_shapes(value: str | None, ids: list[str]) -> None:
    assert msg_ids(value) == ids


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            "<abc@isp.example> (added by postmaster@isp.example)", "abc@isp.example", id="comment"
        ),
        pytest.param("  <abc@isp.example>  ", "abc@isp.example", id="padded"),
        pytest.param("1234.5678", "1234.5678", id="bare_without_at"),
        pytest.param("<>", None, id="empty_brackets"),
        pytest.param("(only a comment)", None, id="only_comment"),
        pytest.param("", None, id="empty"),
    ],
)
def test_first_msg_id_reads_the_message_id_field(value: str, expected: str | None) -> None:
    assert first_msg_id(value) == expected
