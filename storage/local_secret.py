"""The development reply-token secret: generated once and kept in the data directory.

Production refuses to start without OPENSEND_REPLY_TOKEN_SECRET (policy.settings); in
development a secret persisted here keeps tokens valid across restarts (DESIGN.md 4).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_FILE = "reply-token-secret"


def load_or_create_secret(data_dir: Path) -> bytes:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    try:
        # O_EXCL: of two processes starting at once, one writes and both read the same secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    value = path.read_text().strip()
    if len(value) < 32:
        raise RuntimeError(f"{path} holds no usable secret; delete it to generate a new one")
    return value.encode()
