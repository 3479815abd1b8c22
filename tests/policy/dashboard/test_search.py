"""The dashboard's search syntax: operators, quoting, dates, and plain words left over."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from policy.dashboard.search import SearchTerms, parse_search


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", SearchTerms(), id="nothing"),
        pytest.param("invoice", SearchTerms(words="invoice"), id="plain_word"),
        pytest.param(
            'to:dana@example.org subject:"order 42" has:reply',
            SearchTerms(to="dana@example.org", subject="order 42", has_reply=True),
            id="operators_and_quotes",
        ),
        pytest.param(
            "status:Delivered from:support@",
            SearchTerms(status="delivered", sender="support@"),
            id="status_lowercased",
        ),
        pytest.param(
            "domain:Example.COM tag:welcome",
            SearchTerms(domain="example.com", tag="welcome"),
            id="domain_and_tag",
        ),
        pytest.param(
            "after:2026-12-01 before:2026-12-07",
            SearchTerms(
                sent_after=datetime(2026, 12, 1, tzinfo=UTC),
                sent_before=datetime(2026, 12, 7, tzinfo=UTC),
            ),
            id="date_range",
        ),
        pytest.param("after:yesterday", SearchTerms(), id="date_not_iso_is_ignored"),
        pytest.param("to: lonely", SearchTerms(words="to: lonely"), id="operator_without_value"),
        pytest.param('subject:"unclosed', SearchTerms(subject='"unclosed'), id="unbalanced_quote"),
        pytest.param("has:attachment", SearchTerms(words="has:attachment"), id="unknown_has"),
    ],
)
def test_search_text_is_read_into_terms(text: str, expected: SearchTerms) -> None:
    assert parse_search(text) == expected
