"""Inline images of a received message's HTML as data: URIs: which, and how written."""

from __future__ import annotations

from policy.inbound.attachments import referenced_images, with_data_uris


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
