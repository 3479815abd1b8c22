"""The content of SMTP DATA, assembled block by block as the bytes arrive (RFC 5321 section 4.5.2).

Each block is normalised and unstuffed as it comes, so a large message costs one more copy of
itself at the end (the join) instead of several at once, and no step holds the event loop for
longer than one block takes. Pure: no sockets, so every split of a message can be tested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_END_OF_DATA = b"\r\n.\r\n"
_LONGEST_END_PREFIX = len(_END_OF_DATA) - 1

# A stretch with no line end this long is taken without waiting for its line to end, so a
# client that sends megabytes without one cannot make us keep them apart (beyond the limit).
LONGEST_UNTAKEN = 64 * 1024

# Postfix 3.9's default, smtpd_forbid_bare_newline = normalize (postconf(5), and "SMTP
# Smuggling" at https://www.postfix.org/smtp-smuggling.html): a line that ends in a bare LF is
# taken as if it ended in CRLF, while DATA still ends ONLY at CRLF.CRLF, so none of the
# smuggling look-alikes (LF.LF, CRLF.LF, LF.CRLF, CR.CR) ends a message and what follows them
# stays inside it. A lone dot on a line so ended is an ordinary line, unstuffed like any other
# (RFC 5321 section 4.5.2). A CR that does not start a CRLF ends no line for Postfix either;
# its cleanup replaces such a stray CR with a space (cleanup_replace_stray_cr_lf, Postfix 3.9),
# so the message we store, sign and relay holds CRLF line ends only and no remote server can
# read a line end, or a signature, differently from us. That is the reading under
# OPENSEND_BARE_NEWLINE=normalize. By default (reject) the assembler only notes the first bare
# LF or CR (`bare_newline`) and drops the message, which the protocol refuses (RFC 5321 section
# 2.3.8: CR and LF occur only together, as CRLF).
_BARE_LF = re.compile(rb"(?<!\r)\n")
_STRAY_CR = re.compile(rb"\r(?!\n)")


def has_bare_newline(data: bytes) -> bool:
    """Whether `data` holds an LF without its CR or a CR without its LF."""
    pairs = data.count(b"\r\n")
    return data.count(b"\n") != pairs or data.count(b"\r") != pairs


def normalise_line_endings(data: bytes) -> bytes:
    """`data` with every bare LF made CRLF and every stray CR made a space (see above)."""
    pairs = data.count(b"\r\n")
    if data.count(b"\n") != pairs:
        data = _BARE_LF.sub(b"\r\n", data)
        pairs = data.count(b"\r\n")
    if data.count(b"\r") != pairs:
        data = _STRAY_CR.sub(b" ", data)
    return data


@dataclass
class DataBudget:
    """The bytes of message content that the sessions of one listener may hold in memory at
    once (OPENSEND_DATA_MEMORY). A message that would pass it is read to its end and deferred
    with 452 4.3.1, so many large messages at once cannot exhaust the process's memory."""

    limit: int
    held: int = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


class DataAssembler:
    """Feed it the bytes after the 354 as they arrive; it finds CRLF.CRLF and builds the content.

    Blocks are cut after a line end, so normalising and unstuffing a block alone gives what the
    whole message would give; only a line longer than LONGEST_UNTAKEN is cut inside, never
    just after a CR (which may start a CRLF). The end of DATA is looked for in the bytes as
    sent, and may straddle two blocks: the CRLF in one, ".\\r\\n" in the next.
    """

    __slots__ = (
        "_after_crlf",
        "_budget",
        "_counted",
        "_limit",
        "_line_start",
        "_parts",
        "_refuse_bare_newline",
        "_size",
        "_untaken",
        "bare_newline",
        "over_budget",
        "too_big",
    )

    def __init__(
        self, limit: int, budget: DataBudget | None = None, *, refuse_bare_newline: bool = False
    ) -> None:
        self._limit = limit  # bytes of content, 0 for none (RFC 1870 counts it unstuffed)
        self._budget = budget  # shared with the listener's other sessions; `release` at the end
        # Whether a bare LF or CR dooms the message (OPENSEND_BARE_NEWLINE=reject): it is then
        # read to its end and dropped, as one too big is; else normalised.
        self._refuse_bare_newline = refuse_bare_newline
        self._untaken = bytearray()  # arrived, not yet taken: no line end in it
        self._parts: list[bytes] = []
        self._size = 0  # bytes held, taken from the budget
        self._counted = 0  # bytes of content so far, held or not (RFC 1870's measure)
        # Whether the bytes taken so far end in CRLF as sent. The start counts as one, so that
        # an empty message (".\r\n" straight after the 354) ends DATA.
        self._after_crlf = True
        self._line_start = True  # whether the next byte taken starts a line
        self.too_big = False
        self.over_budget = False  # the listener's DataBudget ran out while this was arriving
        # Whether a line ended in a bare LF, or a CR stood outside CRLF, in the message as sent
        # (up to where it was found too big or over the budget, if it was).
        self.bare_newline = False

    def feed(self, data: bytes) -> int:
        """Take the next bytes. -1 while DATA goes on; at its end, how many bytes at the end
        of `data` came after it (the client's next commands: RFC 2920 pipelining)."""
        untaken = self._untaken
        scan_from = max(0, len(untaken) - _LONGEST_END_PREFIX)
        untaken += data
        if self._after_crlf and untaken.startswith(b".\r\n"):
            end, after = 0, 3
        else:
            found = untaken.find(_END_OF_DATA, scan_from)
            end, after = found + 2, found + len(_END_OF_DATA)  # the last CRLF is the content's
            if found < 0:
                self._take_lines(scan_from)
                return -1
        self._take(untaken, end)
        self._untaken = bytearray()
        return len(untaken) - after

    def release(self) -> None:
        """Give the bytes held back to the budget: the message is stored, refused or gone."""
        if self._budget is not None:
            self._budget.give_back(self._size)
        self._size = 0
        self._parts.clear()

    def content(self) -> bytes:
        """The message once DATA has ended: CRLF line ends, unstuffed; b"" when too big."""
        parts, self._parts = self._parts, []
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _take_lines(self, scan_from: int) -> None:
        """Take every complete line arrived; an overlong unfinished one too."""
        untaken = self._untaken
        cut = untaken.rfind(b"\n", scan_from) + 1  # the part before scan_from has no LF
        if not cut and len(untaken) > LONGEST_UNTAKEN:
            cut = len(untaken) - 1 if untaken.endswith(b"\r") else len(untaken)
        if cut:
            self._take(untaken, cut)
            del untaken[:cut]

    def _take(self, untaken: bytearray, end: int) -> None:
        if not end:
            return
        with memoryview(untaken) as view:
            block = bytes(view[:end])
        starts_line = self._line_start
        self._line_start = block.endswith(b"\n")
        self._after_crlf = block.endswith(b"\r\n")
        if self.too_big:
            return  # read to its end and dropped, so the refusal answers the DATA (RFC 5321 4.2.5)
        # Lines first (bare LF and stray CR), then dot-stuffing: a line that starts "." lost
        # its first dot in the sending (RFC 5321 section 4.5.2).
        if has_bare_newline(block):
            self.bare_newline = True
            block = normalise_line_endings(block)
        if starts_line and block.startswith(b"."):
            block = block[1:]
        block = block.replace(b"\r\n.", b"\r\n")
        # Counted whole even when it will be refused for a bare line end or deferred for the
        # memory budget: too big (552) is the answer whatever else is wrong with a message, as
        # Postfix answers it, and a client must not be told to retry (452) what can never fit.
        self._counted += len(block)
        if self._limit and self._counted > self._limit:
            self.too_big = True
            self.release()
            return
        if self.over_budget or (self.bare_newline and self._refuse_bare_newline):
            self.release()  # doomed: nothing of it is kept, though it is still measured
            return
        if self._budget is not None and not self._budget.take(len(block)):
            self.over_budget = True
            self.release()
            return
        self._size += len(block)
        self._parts.append(block)
