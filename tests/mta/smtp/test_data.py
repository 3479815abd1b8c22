"""DATA assembled block by block reads exactly as the whole message read at once.

The reference below is the reading of the whole message in one piece (RFC 5321 section 4.5.2,
with Postfix 3.9's handling of bare LF and stray CR); the assembler must agree with it however
the bytes are split into blocks, since TCP may split them anywhere.
"""

from __future__ import annotations

import random
import re

import pytest

from mta.smtp.data import LONGEST_UNTAKEN, DataAssembler, DataBudget, normalise_line_endings

END = b"\r\n.\r\n"


def read_whole(sent: bytes) -> tuple[bytes, bytes]:
    """(content, what follows) of DATA sent as `sent`, read in one piece."""
    framed = b"\r\n" + sent  # the start of DATA counts as a line end
    end = framed.index(END)
    body = framed[: end + 2]
    content = normalise_line_endings(body).replace(b"\r\n.", b"\r\n")[2:]
    return content, framed[end + len(END) :]


def assemble(blocks: list[bytes], limit: int = 0) -> tuple[bytes, bytes, bool]:
    """(content, what follows, too big) of DATA arriving in `blocks`."""
    assembler = DataAssembler(limit)
    for number, block in enumerate(blocks):
        after = assembler.feed(block)
        if after >= 0:
            rest = block[len(block) - after :] + b"".join(blocks[number + 1 :])
            return assembler.content(), rest, assembler.too_big
    raise AssertionError("DATA did not end")


def splits(sent: bytes) -> list[list[bytes]]:
    """`sent` whole, in two pieces at every point, and one byte at a time."""
    ways = [[sent], [bytes([b]) for b in sent]]
    ways += [[sent[:cut], sent[cut:]] for cut in range(1, len(sent))]
    return ways


MESSAGES = [
    pytest.param(b".\r\n", id="empty"),
    pytest.param(b"Subject: a\r\n\r\nbody\r\n.\r\nQUIT\r\n", id="pipelined_quit"),
    pytest.param(b"..\r\n...x\r\n.\r\n", id="dot_stuffed_lines"),
    pytest.param(b".x\r\n.\r\n", id="dot_stuffed_first_line"),
    pytest.param(b"a\n.\r\nb\r\n.\n\r\n.\r\n", id="bare_lf_around_dots"),
    pytest.param(b"a\r.\r\nb\r\n.\r\r\n.\r\n", id="stray_cr_around_dots"),
    pytest.param(b"a\r\r\n\r\r\r\n\n\n.\r\n\r\n.\r\n", id="runs_of_cr_and_lf"),
    pytest.param(b"hello\r\n.\nMAIL FROM:<x@y>\r\n\r\n.\r\nNOOP\r\n", id="smuggling_look_alike"),
]


@pytest.mark.parametrize("sent", MESSAGES)
def test_every_split_of_a_message_reads_as_the_whole_message(sent: bytes) -> None:
    expected = read_whole(sent)
    for blocks in splits(sent):
        content, rest, too_big = assemble(blocks)
        assert (content, rest) == expected, blocks
        assert not too_big


def holds_a_bare_newline(sent: bytes) -> bool:
    """Whether the message, up to its CRLF.CRLF, has an LF without its CR or a CR without its LF
    (RFC 5321 section 2.3.8): what OPENSEND_BARE_NEWLINE=reject refuses."""
    framed = b"\r\n" + sent
    body = framed[: framed.index(END) + 2]
    return re.search(rb"(?<!\r)\n|\r(?!\n)", body) is not None


@pytest.mark.parametrize("sent", MESSAGES)
def test_every_split_of_a_message_tells_whether_it_held_a_bare_newline(sent: bytes) -> None:
    expected = holds_a_bare_newline(sent)
    for blocks in splits(sent):
        assembler = DataAssembler(0)
        for block in blocks:
            if assembler.feed(block) >= 0:
                break
        assert assembler.bare_newline is expected, blocks


def test_a_bare_newline_in_what_follows_the_end_of_data_is_not_the_messages() -> None:
    assembler = DataAssembler(0)
    assert assembler.feed(b"Subject: a\r\n\r\nfine\r\n.\r\nNOOP\n") == len(b"NOOP\n")
    assert assembler.bare_newline is False


def test_random_messages_in_random_blocks_read_as_the_whole_message() -> None:
    chooser = random.Random(5321)  # fixed: the same cases on every run
    for _ in range(3000):
        sent = bytes(chooser.choice(b"\r\n.a") for _ in range(chooser.randrange(60))) + END
        cuts = sorted(chooser.sample(range(1, len(sent)), min(len(sent) - 1, 4)))
        blocks = [sent[a:b] for a, b in zip([0, *cuts], [*cuts, len(sent)], strict=True)]
        content, rest, _ = assemble(blocks)
        # The reference stops at the first CRLF.CRLF, as the assembler does.
        assert (content, rest) == read_whole(sent), blocks
        # Refusing, the assembler keeps nothing of a message with a bare line end, and finds
        # the same end of DATA.
        refusing = DataAssembler(0, refuse_bare_newline=True)
        assert any(refusing.feed(block) >= 0 for block in blocks), blocks  # stops at the end
        assert refusing.bare_newline is holds_a_bare_newline(sent), blocks
        expected = b"" if refusing.bare_newline else read_whole(sent)[0]
        assert refusing.content() == expected, blocks


def test_a_line_longer_than_a_block_is_taken_in_pieces_and_reads_the_same() -> None:
    line = (b"x" * 999 + b"\r") * (3 * LONGEST_UNTAKEN // 1000) + b".y"
    sent = line + b"\r\n..z\r\n.\r\n"
    for size in (1000, 4093, LONGEST_UNTAKEN, LONGEST_UNTAKEN + 1):
        blocks = [sent[i : i + size] for i in range(0, len(sent), size)]
        assert assemble(blocks)[:2] == read_whole(sent), size


def test_a_message_of_exactly_the_limit_unstuffed_is_accepted_one_byte_more_is_too_big() -> None:
    content = b"..\r\n" * 10  # sent dot-stuffed: 40 bytes, 30 as content (RFC 1870 section 3)
    accepted, _, too_big = assemble([content + b".\r\n"], limit=30)
    assert (accepted, too_big) == (b".\r\n" * 10, False)
    refused, rest, too_big = assemble([content + b"x\r\n.\r\nQUIT\r\n"], limit=30)
    assert (refused, rest, too_big) == (b"", b"QUIT\r\n", True)


def test_a_message_over_the_limit_is_read_to_its_end_however_it_arrives() -> None:
    sent = b"0123456789\r\n" * 1000 + END[2:] + b"NOOP\r\n"
    blocks = [sent[i : i + 777] for i in range(0, len(sent), 777)]
    assert assemble(blocks, limit=5000) == (b"", b"NOOP\r\n", True)


def test_a_message_past_the_shared_budget_is_read_to_its_end_and_dropped() -> None:
    budget = DataBudget(1000)
    first, second = DataAssembler(0, budget), DataAssembler(0, budget)
    assert first.feed(b"x" * 598 + b"\r\n") == -1  # 600 bytes held, no end yet
    assert budget.held == 600
    assert second.feed(b"y" * 498 + b"\r\n") == -1  # 500 more would pass 1000
    assert second.over_budget
    assert budget.held == 600  # what the second held went back
    assert second.feed(b"z" * 5000 + b"\r\n.\r\nNOOP\r\n") == len(b"NOOP\r\n")
    assert (second.content(), budget.held) == (b"", 600)
    second.release()
    assert first.feed(b".\r\n") == 0
    assert first.content() == b"x" * 598 + b"\r\n"
    first.release()
    assert budget.held == 0


def test_a_message_released_gives_its_bytes_back_whatever_it_became() -> None:
    budget = DataBudget(100)
    too_big = DataAssembler(50, budget)
    too_big.feed(b"a" * 40 + b"\r\n")
    too_big.feed(b"b" * 40 + b"\r\n.\r\n")
    assert too_big.too_big and not too_big.over_budget
    cut_off = DataAssembler(0, budget)
    cut_off.feed(b"c" * 60 + b"\r\n")  # the client goes away here
    for assembler in (too_big, cut_off):
        assembler.release()
    assert budget.held == 0
    # With the budget free again, a message of the whole budget fits.
    whole = DataAssembler(0, budget)
    assert whole.feed(b"d" * 98 + b"\r\n.\r\n") == 0
    assert not whole.over_budget and budget.held == 100


def test_a_message_over_the_size_limit_is_too_big_even_after_the_budget_ran_out() -> None:
    """552, not 452: a client told to retry would retry what can never fit."""
    budget = DataBudget(100)
    held = DataAssembler(0, budget)
    held.feed(b"h" * 98 + b"\r\n")  # the whole budget
    large = DataAssembler(500, budget)
    large.feed(b"a" * 98 + b"\r\n")
    assert large.over_budget and not large.too_big
    assert large.feed(b"b" * 998 + b"\r\n.\r\n") == 0
    assert large.too_big and budget.held == 100
