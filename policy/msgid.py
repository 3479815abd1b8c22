"""The msg-ids of a Message-ID, In-Reply-To or References field (RFC 5322 section 3.6.4).

One reader for all three fields, for the matcher, the stored row and the reply's References:
comments and folding white space are dropped, bracketed and bare ids are both taken, in order.
"""

from __future__ import annotations

# Folding white space (RFC 5322 section 3.2.2); outside an id it separates ids.
_FWS = frozenset(" \t\r\n")
# A comma cannot occur in a msg-id (id-left and id-right are dot-atom-text, no-fold-literal or,
# obsolete, local-part and domain: none holds "," or ";" outside quotes), so some clients use
# them between bare ids: `References: a1@x.example,b2@y.example`.
_SEPARATORS = frozenset(",;")


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


def first_msg_id(value: str | None) -> str | None:
    """The Message-ID field's id (RFC 5322 section 3.6.4 allows exactly one), or None."""
    ids = msg_ids(value, bare_without_at=True)
    return ids[0] if ids else None
