"""The msg-ids of a Message-ID, In-Reply-To or References field (RFC 5322 section 3.6.4).

One reader for all three fields, for the matcher, the stored row and the reply's References:
comments and folding white space are dropped, bracketed and bare ids are both taken, in order.
"""

from __future__ import annotations

import re

# Folding white space (RFC 5322 section 3.2.2); outside an id it separates ids.
_FWS = frozenset(" \t\r\n")
# A comma cannot occur in a msg-id (id-left and id-right are dot-atom-text, no-fold-literal or,
# obsolete, local-part and domain: none holds "," or ";" outside quotes), so some clients use
# them between bare ids: `References: a1@x.example,b2@y.example`.
_SEPARATORS = frozenset(",;")
# How much of a field is read, from the end where its ids matter: In-Reply-To and Message-ID
# name theirs first; References names the thread oldest first, so its newest ids come last
# (RFC 5322 section 3.6.4), and clients trim the oldest. Real fields stay far below this; a
# hostile one of megabytes (25 MB read in Python took seconds of the MX's event loop, and sent
# a million ids to the lookup) then costs no more than a long real one.
MAX_FIELD_CHARS = 16 * 1024


def _skip_comment(value: str, start: int) -> int:
    """The index after the comment that opens at `start` (RFC 5322 section 3.2.2): comments
    nest, and a quoted-pair ("\\)" or "\\(") is text, not a parenthesis. An unclosed comment
    runs to the end of the field."""
    depth, i = 0, start
    while i < len(value):
        char = value[i]
        if char == "\\":
            i += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(value)


def _skip_quoted(value: str, start: int, end_char: str) -> int:
    """The index after a quoted-string (or a domain literal, `end_char` "]") opening at `start`,
    whose text is kept as written: "(" inside it does not open a comment."""
    i = start + 1
    while i < len(value):
        if value[i] == "\\" and end_char == '"':
            i += 2
            continue
        if value[i] == end_char:
            return i + 1
        i += 1
    return len(value)


# The everyday field: one id in brackets and nothing else, nothing inside that the reader below
# would treat otherwise (comment, quote, literal, bracket, white space). Read at once.
_ONE_PLAIN_ID = re.compile(r'<([^\s()"\[<>]+)>')


def msg_ids(value: str | None, *, bare_without_at: bool = False) -> list[str]:
    """Every msg-id of the field, without angle brackets and without comments, in order.

    `<id>` is taken as written (folding inside the brackets dropped, as the obsolete syntax of
    RFC 5322 section 4.5.4 allows white space around "@" and "."). Bare ids, which some
    clients write without brackets, separated by white space, commas or semicolons, count only
    when they hold "@", so a phrase of old In-Reply-To fields ("your message of ...") does not;
    `bare_without_at` takes any bare word (a Message-ID field, which names one id).
    """
    if not value:
        return []
    plain = _ONE_PLAIN_ID.fullmatch(value)
    if plain is not None:
        return [plain.group(1)]
    found: list[str] = []
    current: list[str] = []
    bracketed = False

    def flush() -> None:
        text = "".join(current)
        if text and (bracketed or bare_without_at or "@" in text):
            found.append(text)
        current.clear()

    i = 0
    while i < len(value):
        char = value[i]
        if char == "(":
            i = _skip_comment(value, i)
            if not bracketed:
                flush()
            continue
        if char in '"[':
            end = _skip_quoted(value, i, '"' if char == '"' else "]")
            current.append(value[i:end])
            i = end
            continue
        if char == "<":
            if not bracketed:
                flush()
            current.clear()  # "<<id>>" or an unclosed "<" before: the innermost one counts
            bracketed = True
        elif char == ">":
            if bracketed:
                flush()
                bracketed = False
        elif char in _SEPARATORS and not bracketed:
            flush()
        elif char in _FWS:
            if not bracketed:
                flush()
        else:
            current.append(char)
        i += 1
    flush()
    return found


def first_msg_ids(value: str | None) -> list[str]:
    """The ids of the first MAX_FIELD_CHARS of an In-Reply-To field, which names one message
    (the cut may leave a piece of a later id, which names nothing stored)."""
    return msg_ids(value[:MAX_FIELD_CHARS] if value else value)


def newest_msg_ids(value: str | None) -> list[str]:
    """The ids of the last MAX_FIELD_CHARS of a References field, oldest first as written,
    without the piece of an id the cut went through."""
    if not value or len(value) <= MAX_FIELD_CHARS:
        return msg_ids(value)
    tail = value[-MAX_FIELD_CHARS:]
    # The next id starts at the first bracket or separator after the cut.
    starts = [at for at in (tail.find(char) for char in _FWS | _SEPARATORS | {"<"}) if at >= 0]
    return msg_ids(tail[min(starts) :]) if starts else []


def first_msg_id(value: str | None) -> str | None:
    """The Message-ID field's id (RFC 5322 section 3.6.4 allows exactly one), or None."""
    ids = msg_ids(value[:MAX_FIELD_CHARS] if value else value, bare_without_at=True)
    return ids[0] if ids else None
