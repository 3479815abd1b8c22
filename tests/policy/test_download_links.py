"""Download link signatures (policy.download_links): bound to tenant, path and expiry; previous
secrets still verify after a rotation, and a link expires at its time exactly."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from policy.download_links import LINK_LIFETIME, DownloadLinks

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
PATH = "/emails/receiving/0b0f/raw"


def test_a_link_holds_for_its_tenant_path_and_lifetime_only() -> None:
    links = DownloadLinks([b"secret"])
    tenant = uuid4()
    link, signature = links.sign(tenant, PATH, NOW)
    assert links.valid(link, signature, NOW + LINK_LIFETIME - timedelta(seconds=1))
    assert not links.valid(link, signature, NOW + LINK_LIFETIME)
    assert not links.valid(replace(link, tenant_id=uuid4()), signature, NOW)
    assert not links.valid(replace(link, path=PATH + "x"), signature, NOW)
    assert not links.valid(replace(link, expires=link.expires + 1), signature, NOW)


def test_links_signed_before_a_rotation_still_verify_and_new_ones_use_the_new_secret() -> None:
    tenant = uuid4()
    old_link, old_signature = DownloadLinks([b"old"]).sign(tenant, PATH, NOW)
    rotated = DownloadLinks([b"new", b"old"])
    assert rotated.valid(old_link, old_signature, NOW)
    new_link, new_signature = rotated.sign(tenant, PATH, NOW)
    assert not DownloadLinks([b"old"]).valid(new_link, new_signature, NOW)
