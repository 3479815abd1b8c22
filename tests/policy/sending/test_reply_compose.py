"""policy.sending.reply_compose: a reply's threading headers, subject, recipients and quoting."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from policy.sending import reply_compose
from policy.sending.fields import parse_headers
from policy.sending.reply_compose import (
    MAX_REFERENCES,
    MAX_REFERENCES_OCTETS,
    Original,
    Refused,
    ReplyRefusal,
)


def original(**fields: Any) -> Original:
    values: dict[str, Any] = {
        "message_id": "abc@client.example.net",
        "references": None,
        "subject": "Where is my order?",
        "from_address": "carol@example.net",
        "from_name": "Carol",
        "reply_to_addresses": [],
        "date": datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),
        "text": "Hi,\nwhere is it?\n",
        "html": None,
    }
    values.update(fields)
    return Original(**values)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Where is my order?", "Re: Where is my order?"),
        ("Re: Where is my order?", "Re: Where is my order?"),
        ("RE: shouting", "RE: shouting"),
        ("re:lower", "re:lower"),
        ("Re : spaced", "Re : spaced"),
        ("  Re: leading space", "Re: leading space"),
        ("Regarding the invoice", "Re: Regarding the invoice"),
        ("Fwd: forwarded", "Re: Fwd: forwarded"),
        ("", "Re:"),
        (None, "Re:"),
        ("folded\r\n subject", "Re: folded  subject"),
    ],
    ids=[
        "plain",
        "already-re",
        "upper-re",
        "lower-no-space",
        "space-before-colon",
        "leading-space",
        "word-starting-with-re",
        "forward",
        "empty",
        "none",
        "line-break",
    ],
)
def test_subject_gets_one_re_prefix_only_when_it_has_none(given: str | None, expected: str) -> None:
    assert reply_compose.reply_subject(given) == expected


def test_subject_drops_control_characters_and_stays_one_header_line() -> None:
    subject = reply_compose.reply_subject("bad\x07bell" + "x" * 2000)
    assert "\x07" not in subject
    assert len(subject) <= 998


def test_threading_headers_name_the_parent_and_extend_its_references() -> None:
    headers = reply_compose.threading_headers(
        original(references="<root@a.example> <mid@b.example>")
    )
    assert headers == {
        "In-Reply-To": "<abc@client.example.net>",
        "References": "<root@a.example> <mid@b.example> <abc@client.example.net>",
    }


def test_references_without_the_original_start_with_its_message_id() -> None:
    assert reply_compose.threading_headers(original())["References"] == ("<abc@client.example.net>")


def test_references_hold_each_id_once_in_first_seen_order() -> None:
    ids = reply_compose.references(
        "<a@x.example> <b@x.example> <a@x.example>\r\n <b@x.example>", "b@x.example"
    )
    assert ids == ["a@x.example", "b@x.example"]


def test_ids_not_shaped_as_msg_ids_are_left_out() -> None:
    ids = reply_compose.references("<no-at-sign> junk <ok@x.example>", "p@x.example")
    assert ids == ["ok@x.example", "p@x.example"]


def test_bare_comma_separated_and_commented_references_are_carried_bracketed() -> None:
    ids = reply_compose.references(
        "a@x.example,b@x.example; (relayed) <c@x.example> (by isp)", "p@x.example"
    )
    assert ids == ["a@x.example", "b@x.example", "c@x.example", "p@x.example"]


def test_long_references_keep_the_root_and_the_latest_ids() -> None:
    chain = " ".join(f"<id{i}@x.example>" for i in range(100))
    ids = reply_compose.references(chain, "parent@x.example")
    assert len(ids) == MAX_REFERENCES
    assert ids[0] == "id0@x.example"
    assert ids[-1] == "parent@x.example"
    assert ids[1:-1] == [f"id{i}@x.example" for i in range(82, 100)]


def test_long_ids_are_trimmed_to_fit_one_header_line() -> None:
    chain = " ".join(f"<{'x' * 150}{i}@x.example>" for i in range(30))
    headers = reply_compose.threading_headers(original(references=chain))
    value = headers["References"]
    assert len(value) <= MAX_REFERENCES_OCTETS
    assert value.startswith(f"<{'x' * 150}0@x.example>")
    assert value.endswith("<abc@client.example.net>")
    # The send pipeline accepts what we build (it holds caller headers to 998 octets).
    assert parse_headers(headers)


@pytest.mark.parametrize("message_id", [None, "", "no-at-sign", "two words@x"])
def test_no_usable_message_id_means_no_threading_headers(message_id: str | None) -> None:
    assert reply_compose.threading_headers(original(message_id=message_id)) == {}


def test_default_recipient_is_reply_to_then_from() -> None:
    both = original(reply_to_addresses=["help@example.net", "b@example.net"])
    assert reply_compose.default_recipients(both) == ["help@example.net", "b@example.net"]
    assert reply_compose.default_recipients(original()) == ["carol@example.net"]


def test_no_reply_to_and_no_from_cannot_determine_a_recipient() -> None:
    with pytest.raises(ReplyRefusal) as refused:
        reply_compose.default_recipients(original(from_address=None))
    assert refused.value.message == "Cannot determine recipient email address"


def test_text_quote_has_the_attribution_then_each_line_prefixed() -> None:
    quoted = reply_compose.quote_text("Thanks!", original(text="Hi,\n\nwhere is it?\r\n"))
    assert quoted == (
        "Thanks!\n\nOn Wed, 04 Mar 2026 05:06:07 +0000, Carol <carol@example.net> wrote:\n"
        "> Hi,\n>\n> where is it?\n"
    )


def test_text_quote_of_an_html_only_original_drops_the_tags() -> None:
    quoted = reply_compose.quote_text("Ok", original(text=None, html="<p>A &amp; B</p>"))
    assert quoted.endswith("wrote:\n> A & B\n")


def test_html_quote_puts_the_original_body_in_a_blockquote() -> None:
    html = "<html><head><title>t</title></head><body><p>Where?</p></body></html>"
    quoted = reply_compose.quote_html("<p>Here.</p>", original(html=html))
    assert quoted.startswith("<p>Here.</p>")
    assert "<blockquote" in quoted and "<p>Where?</p>\n</blockquote>" in quoted
    assert "<title>" not in quoted
    assert "Carol &lt;carol@example.net&gt; wrote:" in quoted


def test_html_quote_of_a_text_only_original_is_escaped() -> None:
    quoted = reply_compose.quote_html(
        "<p>Ok</p>", original(text="1 < 2 & <script>x</script>\nbye", from_name='Eve "<b>"')
    )
    assert "1 &lt; 2 &amp; &lt;script&gt;x&lt;/script&gt;<br>\nbye" in quoted
    assert "<script>" not in quoted and "<b>" not in quoted


def test_sender_takes_from_name_over_the_display_name() -> None:
    assert reply_compose.sender({"from": "a@x.example"}) == "a@x.example"
    assert reply_compose.sender({"from": "Ann <a@x.example>"}) == "Ann <a@x.example>"
    assert reply_compose.sender({"from": "Ann <a@x.example>", "from_name": 'Support, "A"'}) == (
        '"Support, \\"A\\"" <a@x.example>'
    )


@pytest.mark.parametrize("given", [None, ""], ids=["absent", "empty"])
def test_missing_from_is_refused(given: str | None) -> None:
    with pytest.raises(ReplyRefusal) as refused:
        reply_compose.sender({"from": given})
    assert refused.value.reason is Refused.FROM_REQUIRED
    assert refused.value.message == "From address is required"


@pytest.mark.parametrize("given", ["nobody", "a@b", "Ann <not an address>", "a@@x.example"])
def test_malformed_address_names_itself(given: str) -> None:
    with pytest.raises(ReplyRefusal) as refused:
        reply_compose.addresses([given], "to")
    assert refused.value.message == f"Invalid email format: {given}"


@pytest.mark.parametrize(
    ("snake", "camel", "value"),
    [
        ("reply_to", "replyTo", "r@x.example"),
        ("include_original", "includeOriginal", False),
        ("from_name", "fromName", "Ann"),
    ],
)
def test_both_spellings_of_a_dual_named_field_are_read(snake: str, camel: str, value: Any) -> None:
    assert reply_compose.field({snake: value}, snake) == value
    assert reply_compose.field({camel: value}, snake) == value
