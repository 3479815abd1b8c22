"""The new text of a plain-text reply: what the person wrote, without quoted history or signature.

A single pass over the lines, each looked at a bounded number of times (an attribution may wrap
over a few lines), so the work is linear in the capped input; markers are string tests from
policy/stripping/markers.py, never backtracking patterns.

The rules, in the order a line meets them:
1. A quote (`>`) is history when an attribution or a header block introduced it (outside it or
   as its first line), and so is every quote after one such: the answers between them are kept
   (inline and bottom posting). A quote nothing introduced is a passage the person chose to cite,
   not history a client added, and is kept.
2. An attribution line ("On <date>, <name> wrote:", in many languages) followed by a quote
   introduces it. One followed by unquoted text ends the new text (the client quoted without
   marks), unless nothing was written above it: then it only opens the message.
3. A header block ("From: ... Sent: ...", localized), a separator line ("-----Original
   Message-----", "____", "-- " before a signature) or a device signature ("Sent from my
   iPhone") ends the new text. A forward separator with nothing above it opens a message that
   only forwards another: its header block is dropped and the forwarded text is the content.
"""

from __future__ import annotations

import re

from policy.stripping import markers

# Longer text is cut before stripping: the new text of a reply comes first, and a body of this
# size is no longer a person's reply but a document, which the stripper need not read through.
MAX_TEXT_CHARS = 100_000
# Attribution lines wrapped by the client ("On ..., Name <\naddress> wrote:") span this many.
MAX_ATTRIBUTION_LINES = 5
# A quoted line this short may still end an attribution: "> wrote:", ">:".
MAX_QUOTED_TAIL = 12
# A device signature names the device in this many words at most ("Sent from my Galaxy S5").
MAX_DEVICE_WORDS = 6
# Header fields of a quoted message are looked for this far below the first one.
HEADER_BLOCK_WINDOW = 6
# A decimal digit, in any script (_has_digit).
_DIGIT = re.compile(r"\d")

_QUOTE_MARK = ">"
_SEPARATOR_CHARS = frozenset("-_=")


def strip_text(text: str) -> str:
    """The new text of `text`, with line ends made LF and no blank lines around it."""
    lines = _lines(text[:MAX_TEXT_CHARS])
    kept: list[str | None] = []  # None marks where history was taken out
    history = False  # an introduced quote was seen: every later quote is history too
    # Whether a line with text is kept yet: tracked, not looked up in `kept` at each marker,
    # which made blank lines before many markers quadratic work.
    written = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if is_quoted(line):
            end = index
            while end < len(lines) and is_quoted(lines[end]):
                end += 1
            if history or opens_history([unquote(quoted) for quoted in lines[index:end]]):
                history = True
                kept.append(None)
                while end < len(lines) and _rewrapped(lines[end]):
                    end += 1  # a quoted line the client wrapped after quoting it
            else:
                kept.extend(lines[index:end])
                written = True  # a quoted line always holds its mark
            index = end
            continue
        span = attribution_span(lines, index)
        if span:
            following = _next_nonblank(lines, index + span)
            if following is not None and is_quoted(lines[following]):
                history = True
                kept.append(None)
                index = following
                continue
            if not written:
                index += span  # an attribution that only opens the message
                continue
            break
        if is_forward_separator(line) and not written:
            index = _after_header_block(lines, index + 1)
            continue
        if is_separator(line) or header_block_at(lines, index) or is_device_signature(line):
            break
        kept.append(line)
        written = written or bool(line.strip())
        index += 1
    return tidy(kept)


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def is_quoted(line: str) -> bool:
    return line.lstrip(" ").startswith(_QUOTE_MARK)


def unquote(line: str) -> str:
    """The line without its quote marks, at any depth ("> > >", ">>>")."""
    return line[: markers.MAX_MARKER_LINE].lstrip("> ")


def opens_history(block: list[str]) -> bool:
    """Whether a quote begins with the marks of a quoted message (an attribution, a header
    block, a separator): then the client quoted history, nested in the quote."""
    first = _next_nonblank(block, 0)
    if first is None:
        return False
    return bool(
        attribution_span(block, first)
        or header_block_at(block, first)
        or is_separator(block[first])
        or is_forward_separator(block[first])
    )


def _rewrapped(line: str) -> bool:
    """An unquoted line right under a quoted one that goes on with a lowercase word: the tail of a
    quoted line wrapped by a client after the quote marks were added, not an answer."""
    text = line.lstrip()
    return bool(text) and text[0].islower()


def _next_nonblank(lines: list[str], start: int) -> int | None:
    for index in range(start, len(lines)):
        if lines[index].strip():
            return index
    return None


# -- attribution lines -----------------------------------------------------------------------


def attribution_span(lines: list[str], index: int) -> int:
    """How many lines, from `index`, make an attribution line; 0 when none starts there."""
    span = _joined_attribution(lines, index)
    # The attribution starts at the latest line it can: a line of the reply above it that has a
    # date or an address in it is not part of it, though joined to it the whole still reads as one.
    for later in range(index + 1, index + span):
        if not _continues(lines[later - 1], lines[later]) and _joined_attribution(lines, later):
            return 0
    return span


def _joined_attribution(lines: list[str], index: int) -> int:
    """How many lines from `index`, joined, read as an attribution; 0 when none do."""
    joined = ""
    for offset in range(MAX_ATTRIBUTION_LINES):
        if index + offset >= len(lines):
            break
        part = lines[index + offset].strip()
        if offset and is_quoted(part) and len(part) > MAX_QUOTED_TAIL:
            break  # the quote has begun (a short "> wrote:" or ">:" is the line's wrapped end)
        joined = f"{joined} {part}".strip() if part else joined
        if len(joined) > markers.MAX_MARKER_LINE:
            break
        if joined and is_attribution(joined):
            return offset + 1
        if offset == 0 and not _may_start_attribution(joined):
            break
    return 0


def _continues(previous: str, line: str) -> bool:
    """Whether `line` is the wrapped rest of `previous` in an attribution: an address, or what
    follows an opening bracket or quote."""
    text = line.strip()
    first_word = text.split(" ", 1)[0] if text else ""
    return (
        text.startswith(("<", ">", "(", "@"))
        or "@" in first_word
        or previous.rstrip().endswith(("<", "(", ",", '"'))
    )


def _may_start_attribution(line: str) -> bool:
    """Only a line with a date or an address begins a wrapped attribution: a sentence of the
    reply above one never joins it."""
    if not line or not (_has_digit(line) or "@" in line):
        return False
    # A line that ends a sentence ends there ("... then.", but not "28." of a date).
    return not (line.endswith((".", "!", "?")) and len(line) > 1 and line[-2].isalpha())


def is_attribution(line: str) -> bool:
    """ "On <date>, <name> wrote:" and its kin: a verb of writing and a date or an address,
    ending the line; or Gmail's dated forms "<date> <name> <address>:" and "<yyyy/m/d> <name>
    <address>"."""
    text = line.strip().strip("-*_ ").strip()
    if len(text) < 8 or len(text) > markers.MAX_MARKER_LINE:
        return False
    has_address = "@" in text
    if not (has_address or _has_digit(text)):
        return False
    lower = text.lower()
    if lower.endswith((":", "：")):
        body = lower[:-1].rstrip()
        if has_address and body.endswith(">") and _has_digit(body):
            return True  # "<date>, <name> <address>:"
        return any(_has_word(body, verb) for verb in markers.ATTRIBUTION_VERBS)
    if has_address and _starts_with_date(lower) and lower.endswith(">"):
        return True  # "2013/7/20 <name> <address>"
    # Without the colon some clients write "On <date> <name> <address> wrote".
    return has_address and any(lower.endswith(verb) for verb in markers.ATTRIBUTION_VERBS)


def _has_word(text: str, word: str) -> bool:
    """`word` in `text`, not inside a longer word (for alphabetic scripts)."""
    start = text.find(word)
    bounded = ord(word[0]) < 0x3000  # CJK is written without spaces between words
    while start >= 0:
        end = start + len(word)
        before = text[start - 1] if start else " "
        after = text[end] if end < len(text) else " "
        if not bounded or (not before.isalpha() and not after.isalpha()):
            return True
        start = text.find(word, start + 1)
    return False


def _has_digit(text: str) -> bool:
    # Decimal digits of any script (a regular expression's \d), not str.isdigit's superscripts
    # and circled numbers, which write no date. A search, not a loop over the characters: this
    # runs for every line of every message stripped, twice (a third of the stripper's time).
    return _DIGIT.search(text) is not None


def _starts_with_date(text: str) -> bool:
    """ "2013/7/20" or "2016-03-03": four digits, then a slash or a dash."""
    return len(text) > 5 and text[:4].isdigit() and text[4] in "/-"


# -- header blocks, separators, signatures -------------------------------------------------


def field_name(line: str) -> str | None:
    """The lowercase name of a "Name: value" line ("*From:*", "De :", "Envoyé le :"), if any."""
    text = line[: markers.MAX_FIELD_NAME + 8].strip().lstrip("*").lstrip()
    colon = min((at for at in (text.find(":"), text.find("：")) if at > 0), default=-1)
    if colon < 0 or colon > markers.MAX_FIELD_NAME + 2:
        return None
    return text[:colon].strip().strip("*").strip().lower()


def header_block_at(lines: list[str], index: int) -> bool:
    """A quoted message's header fields start here: a From field with another field near it,
    or another field with a From field near it."""
    name = field_name(lines[index])
    if name is None or (name not in markers.FROM_FIELDS and name not in markers.OTHER_FIELDS):
        return False
    found_from = name in markers.FROM_FIELDS
    fields = 1
    for line in lines[index + 1 : index + HEADER_BLOCK_WINDOW]:
        other = field_name(line)
        if other in markers.FROM_FIELDS:
            found_from = True
            fields += 1
        elif other in markers.OTHER_FIELDS:
            fields += 1
        if found_from and fields >= 2:
            return True
    return False


def _after_header_block(lines: list[str], index: int) -> int:
    """The first line after the header fields that follow a forward separator (their values may
    wrap onto lines of their own); up to the first blank line."""
    start = _next_nonblank(lines, index)
    if start is None or field_name(lines[start]) is None:
        return index
    while start < len(lines) and lines[start].strip():
        start += 1
    return start


def is_separator(line: str) -> bool:
    """A line of dashes, underscores or equals signs ("--" before a signature, Outlook's
    underscores), or words between dashes ("-----Original Message-----")."""
    text = line[: markers.MAX_MARKER_LINE].strip().strip("*").strip()
    if len(text) < 2:
        return False
    if all(char in _SEPARATOR_CHARS for char in text):
        return True
    return text[:2] in ("--", "__") and text[-2:] in ("--", "__") and any(c.isalpha() for c in text)


def is_forward_separator(line: str) -> bool:
    """ "---------- Forwarded message ----------", "Begin forwarded message:" and the like."""
    text = unquote(line).strip().strip("*-_ :").strip().lower()
    return bool(text) and text.startswith(markers.FORWARD_WORDS) and len(text) < 80


def is_device_signature(line: str) -> bool:
    """ "Sent from my iPhone", "Envoyé depuis mon iPhone": a client's phrase and a few words
    naming the device; a sentence that happens to start alike ("Sent from my desk, is much
    easier") is text."""
    text = line.strip().strip("()<>").strip().lower()
    if len(text) > markers.MAX_DEVICE_SIGNATURE or "," in text:
        return False
    if not text.startswith(markers.DEVICE_SIGNATURES):  # most lines: one call, not one a phrase
        return False
    prefix = next(p for p in markers.DEVICE_SIGNATURES if text.startswith(p))
    return len(text[len(prefix) :].split()) <= MAX_DEVICE_WORDS


# -- the result ------------------------------------------------------------------------------


def tidy(kept: list[str | None]) -> str:
    """Lines without trailing spaces; where history was taken out, one blank line at most; no
    blank lines at either end."""
    out: list[str] = []
    gap = False
    for line in kept:
        if line is None:
            gap = True
            continue
        line = line.rstrip()
        if gap and not line:
            continue
        if gap:
            while out and not out[-1]:
                out.pop()
            if out:
                out.append("")
            gap = False
        out.append(line)
    while out and not out[-1]:
        out.pop()
    start = 0
    while start < len(out) and not out[start]:
        start += 1
    return "\n".join(out[start:])
