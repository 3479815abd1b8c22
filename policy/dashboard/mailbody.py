"""Received HTML is hostile: what the dashboard keeps of it (nh3, an explicit allow-list) and
the Content-Security-Policy its own URL is served with (a sandbox: no script, no origin)."""

from __future__ import annotations

import nh3

# Presentation only: no script, form, frame, object, meta, link, base or style element.
ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "col", "colgroup",
        "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
        "i", "img", "ins", "li", "ol", "p", "pre", "q", "s", "small", "span", "strike",
        "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
    }
)  # fmt: skip
_COMMON = {"style", "title", "align", "dir", "lang"}
ALLOWED_ATTRIBUTES = {
    "*": _COMMON,
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "font": {"color", "face", "size"},
    "table": {"width", "border", "cellpadding", "cellspacing", "bgcolor"},
    "td": {"width", "colspan", "rowspan", "valign", "bgcolor"},
    "th": {"width", "colspan", "rowspan", "valign", "bgcolor"},
    "col": {"span", "width"},
}
# CSS properties kept in style attributes; nh3 drops every other declaration (and so any url()
# in background or list-style, the other way a tracker loads).
ALLOWED_CSS = frozenset(
    {
        "color", "background-color", "font", "font-family", "font-size", "font-style",
        "font-weight", "text-align", "text-decoration", "line-height", "margin", "margin-top",
        "margin-bottom", "margin-left", "margin-right", "padding", "padding-top",
        "padding-bottom", "padding-left", "padding-right", "border", "border-collapse",
        "border-color", "border-style", "border-width", "width", "max-width", "height",
        "vertical-align", "white-space", "display",
    }
)  # fmt: skip
# `javascript:` and friends go; `cid:` names a part of the message itself.
URL_SCHEMES = frozenset({"http", "https", "mailto", "cid", "data"})

# The body's own response: `sandbox` without allow-scripts or allow-same-origin makes it an
# opaque origin that runs nothing (CSP Level 3, sandbox directive); nothing loads but inline
# styles and data: images until the reader asks for remote images.
BODY_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
BODY_CSP_WITH_IMAGES = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data: https:"
)


def _without_remote_images(tag: str, attribute: str, value: str) -> str | None:
    """nh3's attribute filter while images are off: an image from elsewhere loses its source,
    so not even a blocked request is made (the CSP would refuse it too)."""
    if tag == "img" and attribute == "src" and not value.lower().startswith(("data:", "cid:")):
        return None
    return value


def clean_html(html: str, *, remote_images: bool = False) -> str:
    cleaned: str = nh3.clean(
        html,
        attribute_filter=None if remote_images else _without_remote_images,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        filter_style_properties=set(ALLOWED_CSS),
        link_rel="noopener noreferrer nofollow",
    )
    return cleaned


def body_csp(show_images: bool) -> str:
    return BODY_CSP_WITH_IMAGES if show_images else BODY_CSP


def split_quoted(text: str) -> tuple[str, str]:
    """A reply's own words, and the quoted history below them (folded on the page): from the
    first `>` line, or the "On ... wrote:" line that introduces it, to the end."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(">"):
            start = index
            if index > 0 and lines[index - 1].strip().endswith("wrote:"):
                start = index - 1
            return "\n".join(lines[:start]).rstrip(), "\n".join(lines[start:])
    return text, ""
