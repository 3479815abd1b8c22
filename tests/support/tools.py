"""The system programs the tests drive (swaks, Postfix's smtp-source), found by name.

A missing program fails the test with the Debian package to install: it never passes as a skip.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Program -> the Debian package `.ci/run` installs for it (README, "Run the tests").
DEBIAN_PACKAGE = {
    "swaks": "swaks libnet-ssleay-perl",
    "smtp-source": "postfix",
}


def system_tool(name: str) -> str:
    """The path of `name`, looked up on PATH and in /usr/sbin (Postfix's tools live there)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found is None:
        pytest.fail(
            f"{name} is not installed: apt-get install {DEBIAN_PACKAGE[name]}, "
            "or run the tests through `bash .ci/run`",
            pytrace=False,
        )
    return str(Path(found))
