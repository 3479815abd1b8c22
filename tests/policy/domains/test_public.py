"""The domain as its tenant sees it: one shape for GET /domains/{id} and the domain.* events."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from uuid import UUID

from policy.domains.public import NOT_IN_EVENTS, DomainView
from storage.account.domains import DomainDetails

VIEW = DomainView("mx.opensend.test")
DOMAIN = DomainDetails(
    id=UUID("0193c0de-0000-7000-8000-000000000001"),
    tenant_id=UUID("0193c0de-0000-7000-8000-000000000002"),
    name="acme.test",
    status="not_started",
    verified=False,
    receiving_enabled=True,
    reply_domain="inbound.acme.test",
    region="us-east-1",
    dkim_selector="os202612",
    dkim_public_key="MIIBIjANBgkq",
    records=[],
    last_checked_at=None,
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
)


def test_the_event_data_is_the_public_domain_without_what_describes_an_answer() -> None:
    public = VIEW.public(DOMAIN)
    assert VIEW.event_data(DOMAIN) == {k: v for k, v in public.items() if k not in NOT_IN_EVENTS}
    assert [r["record"] for r in public["records"]] == ["Receiving", "SPF", "DKIM"]
    assert [r["status"] for r in public["records"]] == ["not_started"] * 3
    assert [r["record"] for r in public["suggested_records"]] == ["DMARC"]


def test_a_check_that_only_moved_last_checked_at_leaves_the_event_data_equal() -> None:
    checked = replace(DOMAIN, last_checked_at=datetime(2026, 1, 2, tzinfo=UTC))
    assert VIEW.public(checked) != VIEW.public(DOMAIN)
    assert VIEW.event_data(checked) == VIEW.event_data(DOMAIN)


def test_a_stored_result_shows_until_the_hostname_changes_the_record() -> None:
    [mx, *_] = VIEW.public(DOMAIN)["records"]
    result = {**mx, "record": "MX", "status": "verified", "found": ["10 mx.opensend.test"]}
    checked = replace(DOMAIN, records=[result])
    assert VIEW.event_data(checked)["records"][0]["status"] == "verified"
    moved = DomainView("mx2.opensend.test").event_data(checked)["records"][0]
    assert (moved["value"], moved["status"]) == ("mx2.opensend.test", "not_started")
