"""Attachment downloads: the part found again in the raw message, under a harmless filename."""

from __future__ import annotations

import pytest

from api.conversations.mime_parts import content_disposition, find_part, safe_filename

MULTIPART = (
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    b"--b\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"AAEC\r\n"
    b"--b--\r\n"
)


def test_part_paths_follow_the_mime_tree_into_attached_messages() -> None:
    inner = find_part(MULTIPART, "2.1")
    assert inner is not None
    assert (inner.payload, inner.content_type) == (b"\x00\x01\x02", "application/octet-stream")
    assert find_part(MULTIPART, "2") is None  # a container, not a leaf
    assert find_part(MULTIPART, "3") is None
    assert find_part(MULTIPART, "x.1") is None


def test_a_single_part_message_is_its_own_part_one() -> None:
    raw = b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n"
    part = find_part(raw, "1")
    assert part is not None and part.payload == b"%PDF"
    assert find_part(raw, "1.1") is None


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ('evil"\r\nSet-Cookie: x=1.txt', "evilSet-Cookie: x=1.txt"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        ("/etc/passwd", "passwd"),
        ("invoice\u202egnp.exe", "invoicegnp.exe"),
        ("...hidden", "hidden"),
        (None, ""),
    ],
    ids=["quotes_and_crlf", "backslash_path", "slash_path", "bidi_override", "dots", "none"],
)
def test_download_filename_is_sanitised(filename: str | None, expected: str) -> None:
    assert safe_filename(filename) == expected
    header = content_disposition(filename, "attachment-1")
    assert "\r" not in header and "\n" not in header
    assert header.count('"') == 2
