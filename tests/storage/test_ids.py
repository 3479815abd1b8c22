"""Row ids are UUIDv7 and strictly increasing within a process, even inside one millisecond."""

from __future__ import annotations

from storage.ids import uuid7


def test_ids_are_version_7_with_the_rfc_9562_variant() -> None:
    value = uuid7()
    assert value.version == 7
    assert value.variant == "specified in RFC 4122"


def test_ids_made_in_a_burst_are_strictly_increasing() -> None:
    ids = [uuid7() for _ in range(20_000)]  # far more than one millisecond's worth of counter
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
