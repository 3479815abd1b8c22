"""Received HTML as the dashboard keeps it: presentation stays, every active part goes; remote
images only when asked for; a reply's quoted history split from its own words."""

from __future__ import annotations

import pytest

from policy.dashboard.mailbody import clean_html, split_quoted


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>alert(1)</script>",
        '<img src="x" onerror="alert(1)">',
        '<svg onload="alert(1)"></svg>',
        '<a href="javascript:alert(1)">x</a>',
        '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
        '<form action="https://evil.example/"><input name="p"></form>',
        '<div style="background: url(https://evil.example/x.png)">x</div>',
        '<iframe src="https://evil.example/"></iframe>',
        '<link rel="stylesheet" href="https://evil.example/s.css">',
        "<style>body { background: url(https://evil.example/x.png) }</style>",
    ],
    ids=[
        "script",
        "onerror",
        "svg_onload",
        "javascript_link",
        "meta_refresh",
        "form",
        "css_url",
        "iframe",
        "link",
        "style_element",
    ],
)
def test_active_content_is_removed(hostile: str) -> None:
    cleaned = clean_html(f"<p>kept</p>{hostile}").lower()
    assert "<p>kept</p>" in cleaned
    for part in ("script", "onerror", "onload", "javascript:", "<meta", "<form", "url(",
                 "<iframe", "<link", "<style", "evil.example"):  # fmt: skip
        assert part not in cleaned, part


def test_remote_images_lose_their_source_unless_shown() -> None:
    html = '<img src="https://tracker.example/p.gif" alt="t"><img src="data:image/png;base64,AA">'
    assert "tracker.example" not in clean_html(html)
    assert "data:image/png" in clean_html(html)
    assert "tracker.example" in clean_html(html, remote_images=True)


def test_presentation_is_kept() -> None:
    cleaned = clean_html('<table><tr><td style="color: red; position: fixed">x</td></tr></table>')
    assert "color:red" in cleaned.replace(" ", "")
    assert "position" not in cleaned


def test_quoted_history_is_split_from_the_reply() -> None:
    own, quoted = split_quoted("Thanks!\n\nOn Monday, Ana wrote:\n> Your order\n> ships\n")
    assert own == "Thanks!"
    assert quoted == "On Monday, Ana wrote:\n> Your order\n> ships"
    assert split_quoted("No quote here.") == ("No quote here.", "")
