"""Inline images of a received message's HTML as data: URIs: which, and how written."""

from __future__ import annotations

import pytest

from policy.inbound.attachments import (
    MAX_INLINE_TOTAL_BYTES,
    image_type,
    referenced_images,
    with_data_uris,
)


def test_only_images_the_html_names_by_cid_and_within_the_bounds_become_data_uris() -> None:
    entries = [
        {"part": "2", "content_id": "<Logo@X>", "content_type": "image/png", "size": 10},
        {"part": "3", "content_id": "doc@x", "content_type": "application/pdf", "size": 10},
        {"part": "4", "content_id": "big@x", "content_type": "image/png", "size": 3 << 20},
        {"part": "5", "content_id": "unused@x", "content_type": "image/gif", "size": 10},
    ]
    html = '<img src="cid:logo@x"><a href="cid:doc@x">doc</a><img src="CID:big@x">'
    wanted = referenced_images(html, entries)
    assert wanted == {"logo@x": ("2", "image/png")}
    written = with_data_uris(html, {"logo@x": ("image/png", b"\x89PNG")})
    assert written == (
        '<img src="data:image/png;base64,iVBORw=="><a href="cid:doc@x">doc</a><img src="CID:big@x">'
    )


def test_an_image_named_ten_thousand_times_is_written_only_within_the_budget() -> None:
    """Each reference would get its own copy: a 2 MiB image named 10,000 times, 27 GB."""
    payload = b"x" * (2 << 20)
    html = '<img src="cid:a@b">' * 10_000
    written = with_data_uris(html, {"a@b": ("image/png", payload)})
    assert len(written) < MAX_INLINE_TOTAL_BYTES + len(html)
    assert written.count("data:image/png") == 3  # 2.8 MB each in base64: three fit in 10 MiB
    assert written.count("cid:a@b") == 10_000 - 3


@pytest.mark.parametrize(
    ("html", "replaced"),
    [
        pytest.param('<img src="cid:a@b">', True, id="quoted"),
        pytest.param("<img src=cid:a@b>", True, id="unquoted"),
        pytest.param("<img src=cid:a@b/>", True, id="self_closing"),
        pytest.param('<div style="background:url(&quot;cid:a@b&quot;)">', True, id="entity"),
        pytest.param("<p>see xcid:a@b</p>", False, id="inside_a_word"),
        pytest.param('<img src="cid:a%40b">', True, id="percent_escaped"),
    ],
)
def test_a_cid_url_is_found_where_a_url_starts(html: str, replaced: bool) -> None:
    written = with_data_uris(html, {"a@b": ("image/png", b"\x89PNG")})
    assert ("data:image/png;base64,iVBORw==" in written) is replaced


@pytest.mark.parametrize(
    ("content_type", "payload", "written_as"),
    [
        ("image/png", b"\x89PNG\r\n\x1a\n...", "image/png"),
        ("image/jpeg", b"\x89PNG\r\n\x1a\n...", "image/png"),  # by its bytes, not its label
        ("image/svg+xml", b"<svg onload=alert(1)>", None),  # labelled an image, can script
        ("image/png", b"<html><script>", None),
        ("application/octet-stream", b"\x89PNG\r\n\x1a\n...", "image/png"),
        ("application/octet-stream", b"\xff\xd8\xff\xe0...", "image/jpeg"),
        ("application/octet-stream", b"GIF89a...", "image/gif"),
        ("application/octet-stream", b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        ("application/octet-stream", b"<svg onload=alert(1)>", None),  # not by signature
        ("application/octet-stream", b"%PDF-1.7", None),
        ("application/pdf", b"\x89PNG\r\n\x1a\n", None),  # labelled as something else
    ],
)
def test_an_inline_part_labelled_as_bytes_is_written_as_an_image_only_by_its_signature(
    content_type: str, payload: bytes, written_as: str | None
) -> None:
    assert image_type(content_type, payload) == written_as
    entries = [{"part": "2", "content_id": "a@b", "content_type": content_type, "size": 9}]
    named = referenced_images('<img src="cid:a@b">', entries)
    assert bool(named) is (content_type != "application/pdf")


def test_parts_labelled_as_images_come_first_in_the_bounds() -> None:
    """Unlabelled bytes may prove to be no image once read: they cannot crowd out one that
    says it is."""
    entries = [
        {
            "part": str(n),
            "content_id": f"blob{n}@x",
            "content_type": "application/octet-stream",
            "size": 2 << 20,
        }
        for n in range(5)
    ] + [{"part": "9", "content_id": "logo@x", "content_type": "image/png", "size": 10}]
    html = "".join(f'<img src="cid:blob{n}@x">' for n in range(5)) + '<img src="cid:logo@x">'
    wanted = referenced_images(html, entries)
    assert wanted["logo@x"] == ("9", "image/png")
