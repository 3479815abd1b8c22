"""Row ids are UUIDv7 and strictly increasing within a process, even inside one millisecond."""

from __future__ import annotations

from uuid import RFC_4122

from storage.ids import uuid7, uuid7_floor, uuid7_millis


def test_ids_are_version_7_with_the_rfc_9562_variant() -> None:
    value = uuid7()
    assert value.version == 7
    assert value.variant == "specified in RFC 4122"


def test_ids_made_in_a_burst_are_strictly_increasing() -> None:
    ids = [uuid7() for _ in range(20_000)]  # far more than one millisecond's worth of counter
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_the_floor_of_a_millisecond_sorts_between_the_ids_before_and_after_it() -> None:
    before = uuid7()
    millis = uuid7_millis(before) + 1
    floor = uuid7_floor(millis)
    while uuid7_millis(after := uuid7()) < millis:
        pass
    assert before < floor <= after
    assert before.bytes < floor.bytes <= after.bytes  # PostgreSQL's uuid order: byte order
    assert (floor.version, floor.variant, uuid7_millis(floor)) == (7, RFC_4122, millis)
