"""Submitted messages made fit for SMTP: MIME parts with lines over 998 octets re-encoded.

RFC 5322 section 2.1.1 and RFC 5321 section 4.5.3.1.6 cap a line at 998 octets; a receiver may
refuse a longer one, and a relay that wraps it breaks our DKIM signature. As MSAs may (RFC 6409
section 8), each MIME leaf part holding such a line is re-encoded before signing: text as
quoted-printable, anything else as base64, with the encodings of `policy.sending.compose`. Its other
header fields, its charset and parameters, the multipart structure and every other part keep
their bytes. A header line over the limit cannot be re-encoded without changing the field:
the message is refused.
"""

from __future__ import annotations

import base64
import binascii
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

from policy import replies
from policy.replies import Reply
from policy.sending.compose import base64_lines, quoted_printable
from policy.submission.message import header_fields

CRLF = b"\r\n"
MAX_LINE = 998  # octets, without the CRLF
# Postfix's mime_nesting_limit: deeper is no mail client's work, and each level costs a pass.
MAX_NESTING = 100


class Unfittable(ValueError):
    """A message whose long lines no transfer encoding can shorten; `reply` refuses it."""

    reply: Reply
    reason: str  # for the metrics label and the log


class HeaderLineTooLong(Unfittable):
    reply = replies.S554_HEADER_LINE_TOO_LONG
    reason = "header_line_too_long"


class NestingTooDeep(Unfittable):
    reply = replies.S554_MIME_TOO_DEEP
    reason = "mime_too_deep"


def fit_line_lengths(raw: bytes) -> bytes:
    """`raw` with every line at most MAX_LINE octets; `raw` itself when it already was.

    Raises HeaderLineTooLong for a header line over the limit at any depth, NestingTooDeep
    for a long line under more than MAX_NESTING multipart or message levels."""
    if _longest_line(raw) <= MAX_LINE:
        return raw
    return _entity(raw, 0, message=True)


def _longest_line(data: bytes) -> int:
    return max(len(line) for line in data.split(CRLF))


def _split(entity: bytes) -> tuple[bytes, bytes, bytes]:
    """Header block (with its CRLFs), the blank line, and the body (RFC 5322 section 2.1)."""
    if entity.startswith(CRLF):
        return b"", CRLF, entity[2:]
    end = entity.find(b"\r\n\r\n")
    if end < 0:
        return entity, b"", b""
    return entity[: end + 2], CRLF, entity[end + 4 :]


def _entity(entity: bytes, depth: int, *, message: bool = False) -> bytes:
    """One MIME entity fitted; `message` when it is a whole message (the top, or the body of
    a message/rfc822 part), whose header may need MIME-Version."""
    head, blank, body = _split(entity)
    if head and _longest_line(head) > MAX_LINE:
        raise HeaderLineTooLong("a header line is longer than 998 octets")
    if not body or _longest_line(body) <= MAX_LINE:
        return entity
    if depth > MAX_NESTING:
        raise NestingTooDeep("MIME parts nested too deep")
    fields: Message = BytesHeaderParser(policy=compat32).parsebytes(head + CRLF)
    content_type = fields.get_content_type()
    boundary = fields.get_param("boundary") if content_type.startswith("multipart/") else None
    if isinstance(boundary, str) and boundary:
        encoded = boundary.encode("utf-8", "surrogateescape")
        return head + blank + _multipart(body, encoded, depth + 1)
    if content_type == "message/rfc822":  # RFC 2046 section 5.2.1: a whole message inside
        return head + blank + _entity(body, depth + 1, message=True)
    return _leaf(head, body, fields, message=message)


def _multipart(body: bytes, boundary: bytes, depth: int) -> bytes:
    """Each body part fitted; delimiter lines, preamble and epilogue as they were (RFC 2046
    section 5.1.1: a delimiter is "--" boundary at the start of a line, then optional white
    space; the CRLF before it belongs to it, so parts are the lines between)."""
    delimiter = b"--" + boundary
    lines = body.split(CRLF)
    out: list[bytes] = []
    part: list[bytes] | None = None  # None: in the preamble or the epilogue
    for line in lines:
        stripped = line.rstrip(b" \t")
        if stripped in (delimiter, delimiter + b"--"):
            if part is not None:
                out.append(_entity(CRLF.join(part), depth))
            out.append(line)
            part = [] if stripped == delimiter else None
        elif part is None:
            out.append(line)
        else:
            part.append(line)
    if part is not None:  # no close-delimiter: the last part runs to the end
        out.append(_entity(CRLF.join(part), depth))
    return CRLF.join(out)


def _leaf(head: bytes, body: bytes, fields: Message, *, message: bool) -> bytes:
    """The part's content decoded from its transfer encoding and encoded again: text (the
    default type, RFC 2045 section 5.2) as quoted-printable, anything else as base64."""
    encoding = str(fields.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    content = _decoded(body, encoding)
    is_text = fields.get_content_maintype() == "text"
    new_body = quoted_printable(content) if is_text else base64_lines(content)
    new_encoding = b"quoted-printable" if is_text else b"base64"
    kept = [
        field
        for field in header_fields(head + CRLF)[0]
        if field.split(b":", 1)[0].strip().lower() != b"content-transfer-encoding"
    ]
    if message and fields.get("MIME-Version") is None:
        kept.append(b"MIME-Version: 1.0\r\n")  # RFC 2045 section 4: encodings need it
    kept.append(b"Content-Transfer-Encoding: " + new_encoding + CRLF)
    # The body keeps ending as it did: a message's final CRLF (RFC 5321 section 4.1.1.4).
    ending = CRLF if body.endswith(CRLF) and not new_body.endswith(CRLF) else b""
    return b"".join(kept) + CRLF + new_body + ending


def _decoded(body: bytes, encoding: str) -> bytes:
    """The content under a transfer encoding (RFC 2045 section 6); 7bit, 8bit and binary are
    the content itself, and an unreadable base64 is kept as the bytes it was."""
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    if encoding == "base64":
        try:
            return base64.b64decode(body)
        except binascii.Error:
            return body
    return body
