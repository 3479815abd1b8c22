"""The new part of an HTML reply: the body without the quote containers mail clients write.

lxml (libxml2's HTML parser) reads the markup: linear, and its nesting limit bounds the tree a
hostile message can build; the containers are found by XPath over that tree, never by patterns
over the markup. What each client writes:
- Gmail: `div.gmail_quote` (with its `gmail_attr` attribution), `div.gmail_signature`;
- Apple Mail and Thunderbird: `blockquote type="cite"`, Thunderbird's `div.moz-cite-prefix`
  attribution and `div.moz-signature`;
- Outlook on the web: `div#divRplyFwdMsg` (after an `hr`), `#appendonsend`; Outlook desktop:
  the header block `div` with a solid top border and 3pt padding; Outlook for Mac:
  `#OLK_SRC_BODY_SECTION`; these start the history, and all that follows them goes too;
- Yahoo: `div.yahoo_quoted`; Proton: `.protonmail_quote`, `.protonmail_signature_block`;
- any other client: a `blockquote` right after an attribution line ("On ... wrote:"); and
  history marked only by its words (a "From: ... Sent: ..." block, "-----Original Message-----",
  an attribution over unquoted text), found by the text stripper's own tests on the lines a
  reader sees, is cut from the block or line break where that line starts.
"""

from __future__ import annotations

from html import escape
from typing import Any

import lxml.etree
import lxml.html

from policy.stripping.text import (
    attribution_span,
    header_block_at,
    is_attribution,
    is_device_signature,
    is_forward_separator,
    is_quoted,
    is_separator,
    strip_text,
)

# Longer markup is cut before parsing (the new part of a reply comes first).
MAX_HTML_CHARS = 512 * 1024
# An attribution is looked for in this much text before a blockquote.
MAX_ATTRIBUTION_CHARS = 1000


def _class(name: str) -> str:
    return f"contains(concat(' ', normalize-space(@class), ' '), ' {name} ')"


# Containers of quoted history or signature: removed, what follows them stays.
QUOTE_CONTAINERS = lxml.etree.XPath(
    "//*["
    + " or ".join(
        [
            _class("gmail_quote"),
            _class("gmail_quote_container"),
            _class("gmail_attr"),
            _class("gmail_signature"),
            "@data-smartmail='gmail_signature'",
            _class("moz-cite-prefix"),
            _class("moz-signature"),
            _class("yahoo_quoted"),
            _class("protonmail_quote"),
            _class("protonmail_signature_block"),
            "@id='Signature'",  # Outlook
        ]
    )
    + "] | //blockquote[@type='cite']"
)
# Where the history starts: removed with everything after them.
HISTORY_STARTS = lxml.etree.XPath(
    "//*[@id='divRplyFwdMsg' or @id='appendonsend' or @id='OLK_SRC_BODY_SECTION'"
    " or @id='mail-editor-reference-message-container' or " + _class("OutlookMessageHeader") + "]"
    " | //hr[@id='stopSpelling']"
    " | //div[contains(translate(@style, ' ', ''), 'border-top:solid')"
    " and contains(translate(@style, ' ', ''), 'padding:3.0pt0')]"
)
BLOCKQUOTES = lxml.etree.XPath("//blockquote")
BLOCK_TAGS = frozenset(
    {"p", "div", "tr", "li", "ul", "ol", "table", "blockquote", "pre", "hr", "h1", "h2", "h3"}
    | {"h4", "h5", "h6"}
)
HIDDEN_TAGS = frozenset({"script", "style", "head", "title"})


def strip_html(markup: str) -> tuple[str, str]:
    """The new part of `markup` as HTML (the body's content), and as text."""
    try:
        root = lxml.html.document_fromstring(markup[:MAX_HTML_CHARS])
    except (lxml.etree.ParserError, ValueError):  # nothing to parse: no elements at all
        return "", ""
    body = root.find("body")
    if body is None:
        body = root
    starts = HISTORY_STARTS(root)
    if starts:
        _cut_from(starts[0], body)
    for container in QUOTE_CONTAINERS(root):
        if container.getparent() is not None:  # not inside one removed already
            container.drop_tree()
    for quote in BLOCKQUOTES(root):
        if quote.getparent() is not None and _drop_attribution_before(quote):
            quote.drop_tree()
    lines = _lines(body)
    cut = _history_block(lines)
    if cut is not None and cut is not body:
        _cut_from(cut, body)
        lines = _lines(body)
    stripped = _inner_html(body).strip()
    return stripped, strip_text("\n".join(text for text, _ in lines))


def _history_block(lines: list[tuple[str, Any]]) -> Any:
    """Where history the containers did not mark begins, by the text stripper's own markers (a
    "From: ... Sent: ..." block, "-----Original Message-----", an attribution over unquoted
    text, "Sent from my iPhone") below some new text: the element that starts that line (its
    block, or the `br` before it). None when there is none, or when the line starts where no
    element can be cut from."""
    texts = [text for text, _ in lines]
    written = False
    for index, text in enumerate(texts):
        if not written:
            written = bool(text.strip()) and not is_quoted(text)
            continue
        if (
            header_block_at(texts, index)
            or is_separator(text)
            or is_forward_separator(text)
            or is_device_signature(text)
            or attribution_span(texts, index)
        ):
            return lines[index][1]
    return None


def _cut_from(start: lxml.html.HtmlElement, body: lxml.html.HtmlElement) -> None:
    """Remove `start` and everything after it in document order, up to the end of `body`."""
    previous = start.getprevious()
    if start.tag != "hr" and previous is not None and previous.tag == "hr":
        start = previous  # Outlook on the web draws a rule above its header block
    node = start
    while node is not None and node is not body:
        parent = node.getparent()
        if parent is None:
            break
        for sibling in list(node.itersiblings()):
            parent.remove(sibling)
        node.tail = None
        node = parent
    parent = start.getparent()
    if parent is not None:
        parent.remove(start)


def _drop_attribution_before(quote: lxml.html.HtmlElement) -> bool:
    """Whether the last line of text before `quote` is an attribution line; if so it is removed
    (the element that holds it, or that line of the text between them)."""
    previous = quote.getprevious()
    if previous is not None and (previous.tail or "").strip():
        tail = _without_attribution(previous.tail or "")
        if tail is None:
            return False
        previous.tail = tail
        return True
    if previous is not None:
        if not _ends_with_attribution(_bounded_text(previous)):
            return False
        previous.drop_tree()
        return True
    parent = quote.getparent()
    if parent is None or not (parent.text or "").strip():
        return False
    text = _without_attribution(parent.text or "")
    if text is None:
        return False
    parent.text = text
    return True


def _ends_with_attribution(text: str) -> bool:
    lines = [line for line in text[-MAX_ATTRIBUTION_CHARS:].splitlines() if line.strip()]
    return bool(lines) and is_attribution(lines[-1])


def _without_attribution(text: str) -> str | None:
    """`text` without its last line when that is an attribution; None when it is not."""
    if not _ends_with_attribution(text):
        return None
    kept = text.rstrip()
    return kept[: max(kept.rfind("\n"), 0)]


def _bounded_text(element: lxml.html.HtmlElement) -> str:
    """The element's text, or its last MAX_ATTRIBUTION_CHARS when longer."""
    parts: list[str] = []
    size = 0
    for piece in element.itertext():
        parts.append(piece)
        size += len(piece)
        if size > 4 * MAX_ATTRIBUTION_CHARS:
            parts = ["".join(parts)[-MAX_ATTRIBUTION_CHARS:]]
            size = len(parts[0])
    return "".join(parts)


def _inner_html(element: lxml.html.HtmlElement) -> str:
    head = escape(element.text or "", quote=False)
    return head + "".join(
        lxml.html.tostring(child, encoding="unicode", with_tail=True) for child in element
    )


def _lines(body: lxml.html.HtmlElement) -> list[tuple[str, Any]]:
    """The text a reader sees, line by line, each with the element from which removing
    everything would remove exactly that line and what follows: the block it opens, or the
    `br` before it (None when it starts elsewhere, after the end of a block). Each block on
    lines of its own, a line break per `br`, no text of scripts, styles or comments; whitespace
    between blocks (the markup's indentation) adds no blank lines. A walk with events, not
    recursion."""
    lines: list[tuple[str, Any]] = []
    pieces: list[str] = []
    anchor: Any = None  # where the line being gathered starts
    next_anchor: Any = None  # where the next line will start, if it starts now

    def add(text: str | None) -> None:
        nonlocal anchor, next_anchor
        if not text:
            return
        if not pieces:
            rest = text.lstrip()
            if not rest:
                return
            text = text[text.rfind("\n", 0, len(text) - len(rest)) + 1 :]
            anchor, next_anchor = next_anchor, None
        pieces.append(text)

    def end_line(always: bool = False) -> None:
        nonlocal anchor, next_anchor
        if not pieces and not always:
            return
        if not pieces:
            anchor, next_anchor = next_anchor, None
        for number, part in enumerate("".join(pieces).split("\n")):
            lines.append((part, anchor if number == 0 else None))
        pieces.clear()

    for event, element in lxml.etree.iterwalk(body, events=("start", "end")):
        tag = element.tag if isinstance(element.tag, str) else None  # None: a comment
        if event == "start":
            if tag in BLOCK_TAGS:
                end_line()
                next_anchor = next_anchor if next_anchor is not None else element
            if tag == "br":
                end_line(always=True)
                next_anchor = element
            if tag is not None and tag not in HIDDEN_TAGS:
                add(element.text)
            continue
        if tag in BLOCK_TAGS:
            end_line()
            next_anchor = None
        if element is not body:
            add(element.tail)
    end_line()
    return lines
