"""The embedded development database: a PostgreSQL cluster kept in the data directory.

Started through pgserver (PostgreSQL binaries shipped as a wheel), so a fresh machine needs
nothing but Python. It listens on a Unix socket only. Production sets OPENSEND_DATABASE_URL.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the cluster in `data_dir/postgres` and return its connection URL.

    The cluster is left running when this process exits, so admin commands and the server can
    share it; `opensend db stop` stops it.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root, CI); pgserver falls back fine.
        warnings.simplefilter("ignore")
        from pgserver import postgres_server  # imported here: production never pays for it

    data_dir.mkdir(parents=True, exist_ok=True)
    server = postgres_server.get_server(data_dir / "postgres", cleanup_mode=None)
    url: str = server.get_uri()
    log.debug("embedded PostgreSQL ready", extra={"pgdata": str(data_dir / "postgres")})
    return url


def stop_embedded(data_dir: Path) -> bool:
    """Stop the embedded cluster if it runs; True when one was stopped."""
    from pgserver import postgres_server

    pgdata = data_dir / "postgres"
    if not (pgdata / "postmaster.pid").exists():
        return False
    server = postgres_server.get_server(pgdata, cleanup_mode="stop")
    server.cleanup()
    return True
