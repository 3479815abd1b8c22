"""Our own server for the MX benchmark: routing, `opensend serve --only mta`, and its database.

Everything goes through the operator interface (DESIGN.md section 5): the `opensend` command and
`OPENSEND_*` environment variables, an embedded PostgreSQL under `OPENSEND_DATA_DIR` unless a
database URL is given. Stored messages are counted straight from `received_emails`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
from postfix_peer import free_loopback_port, wait_for_banner

REPO_ROOT = Path(__file__).resolve().parents[2]
_ADMIN_TIMEOUT = 180.0  # the first command may initdb an embedded PostgreSQL


class OpenSendError(RuntimeError):
    """The server could not be set up, started, queried or stopped."""


def default_command() -> list[str]:
    """`opensend` from this working tree, whatever is installed in the venv."""
    return [sys.executable, "-c", "import sys; from mta.cli import main; sys.exit(main())"]


@dataclass(frozen=True, slots=True)
class DatabaseFacts:
    url: str
    database: str
    fsync: str
    synchronous_commit: str


class OpenSendPeer:
    """`opensend serve --only mta` on loopback, with its own data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        processes: int = 1,
        max_connections: int | None = 100,
        database_url: str | None = None,
        command: list[str] | None = None,
        hostname: str = "mx.bench.test",
        log_path: Path | None = None,
        dns_server: str = "127.0.0.1:1",
        auth_checks: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.processes = processes
        self.max_connections = max_connections
        self.database_url = database_url
        self.command = command or default_command()
        self.hostname = hostname
        self.dns_server = dns_server
        self.auth_checks = auth_checks
        self.log_path = log_path or data_dir / f"serve-{processes}p.log"
        self.mx_port = free_loopback_port()
        self.metrics_port = free_loopback_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._facts: DatabaseFacts | None = None

    # ----------------------------------------------------------------------------- environment

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSEND_")}
        env.update(
            OPENSEND_DATA_DIR=str(self.data_dir),
            OPENSEND_MX_LISTEN=f"127.0.0.1:{self.mx_port}",
            # `serve --only mta` serves /healthz and /metrics here.
            OPENSEND_METRICS_LISTEN=f"127.0.0.1:{self.metrics_port}",
            # Not used by --only mta, but kept off the defaults so nothing else is disturbed.
            OPENSEND_API_LISTEN=f"127.0.0.1:{free_loopback_port()}",
            OPENSEND_SUBMISSION_LISTEN=f"127.0.0.1:{free_loopback_port()}",
            OPENSEND_SUBMISSIONS_LISTEN=f"127.0.0.1:{free_loopback_port()}",
            OPENSEND_HOSTNAME=self.hostname,
            OPENSEND_MX_PROCESSES=str(self.processes),
            OPENSEND_LOG_LEVEL="WARNING",
            # Loopback only: the benchmark must never query a resolver off this machine.
            OPENSEND_DNS_SERVERS=self.dns_server,
            OPENSEND_AUTH_CHECKS="on" if self.auth_checks else "off",
        )
        if self.max_connections is not None:  # None: the server's own default
            env["OPENSEND_MAX_CONNECTIONS"] = str(self.max_connections)
        if self.database_url:
            env["OPENSEND_DATABASE_URL"] = self.database_url
        python_path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(python_path)
        return env

    def admin(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one `opensend` administration command with this server's environment."""
        try:
            proc = subprocess.run(
                [*self.command, *args],
                env=self.env(),
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=_ADMIN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise OpenSendError(
                f"opensend {' '.join(args)} timed out after {exc.timeout}s"
            ) from exc
        if check and proc.returncode != 0:
            raise OpenSendError(
                f"opensend {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stderr.strip()}\n{proc.stdout.strip()}"
            )
        return proc

    def setup_routing(self, domain: str, tenant: str) -> dict[str, Any]:
        """Tenant, receiving domain and catch-all route, as an operator would create them."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.admin("migrate", check=False)  # the other commands may migrate by themselves
        created: dict[str, Any] = {}
        for key, args in (
            ("tenant", ("tenant", "create", tenant, "--json")),
            (
                "domain",
                (
                    "domain",
                    "add",
                    domain,
                    "--tenant",
                    tenant,
                    "--receiving",
                    "--verified",
                    "--json",
                ),
            ),
            ("route", ("route", "add", f"*@{domain}", "--tenant", tenant, "--json")),
        ):
            proc = self.admin(*args, check=False)
            if proc.returncode != 0:
                text = f"{proc.stderr}\n{proc.stdout}"
                if "exist" in text.lower() and self.database_url:
                    created[key] = {"note": "already existed"}
                    continue
                raise OpenSendError(f"opensend {' '.join(args)} exited {proc.returncode}:\n{text}")
            try:
                created[key] = json.loads(proc.stdout)
            except json.JSONDecodeError:
                created[key] = {"stdout": proc.stdout.strip()}
        return created

    # ------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> OpenSendPeer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def serve_command(self) -> list[str]:
        """The server's command line; a benchmark may run the same parts another way."""
        return [*self.command, "serve", "--only", "mta"]

    def start(self, timeout: float = 180.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.serve_command(),
            env=self.env(),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches its workers
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise OpenSendError(
                    f"opensend serve exited {self._proc.returncode} while starting:\n"
                    f"{self.log_tail()}"
                )
            try:
                wait_for_banner("127.0.0.1", self.mx_port, 1.0)
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise OpenSendError(
                        f"no 220 banner on 127.0.0.1:{self.mx_port} within {timeout:.0f}s: {exc}\n"
                        f"{self.log_tail()}"
                    ) from exc
        # With several processes on one port, greet a few times so every worker is likely up.
        for _ in range(4 * self.processes):
            wait_for_banner("127.0.0.1", self.mx_port, max(1.0, deadline - time.monotonic()))

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the server, then to its process group, SIGKILL as a last resort."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10.0)
        if proc is not None:
            # Workers left behind in the group we created for the server.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # ----------------------------------------------------------------------------- observation

    def postmaster_pid(self) -> int | None:
        """The embedded PostgreSQL's postmaster, from a postmaster.pid under the data dir."""
        if self.database_url:
            return None
        for pid_file in sorted(self.data_dir.rglob("postmaster.pid")):
            try:
                pid = int(pid_file.read_text().splitlines()[0])
            except (OSError, ValueError, IndexError):
                continue
            if _alive(pid):
                return pid
        return None

    def stop_embedded_postgres(self, timeout: float = 30.0) -> None:
        """Stop the embedded PostgreSQL, which the server leaves running by design.

        `opensend db stop` first; if the postmaster is still there, a fast shutdown (SIGINT) of
        exactly that pid, read from its postmaster.pid.
        """
        if self.database_url or self.postmaster_pid() is None:
            return
        with contextlib.suppress(OpenSendError):
            self.admin("db", "stop", check=False)
        pid = self.postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)

    def metrics_text(self) -> str | None:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=10.0) as response:
                body: bytes = response.read()
                return body.decode("utf-8", "replace")
        except (OSError, urllib.error.URLError):
            return None

    def healthz(self) -> int | None:
        url = f"http://127.0.0.1:{self.metrics_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=10.0) as response:
                status: int = response.status
                return status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (OSError, urllib.error.URLError):
            return None

    def _candidate_urls(self) -> list[str]:
        if self.database_url:
            return [self.database_url]
        proc = self.admin("db", "url", check=False)
        if proc.returncode == 0 and proc.stdout.strip().startswith("postgres"):
            return [proc.stdout.strip().splitlines()[-1]]
        # No `opensend db url`: read the embedded cluster's socket from its postmaster.pid.
        urls: list[str] = []
        for pid_file in sorted(self.data_dir.rglob("postmaster.pid")):
            try:
                lines = pid_file.read_text().splitlines()
                pid, socket_dir = int(lines[0]), lines[4].strip()
            except (OSError, ValueError, IndexError):
                continue
            if _alive(pid) and socket_dir:
                urls.append(f"postgresql://postgres:@/postgres?host={socket_dir}")
        return urls

    async def _find_database_url(self) -> str:
        """The URL of the database that holds `received_emails` (the server may pick its name)."""
        for url in self._candidate_urls():
            conn = await asyncpg.connect(url, timeout=30.0)
            try:
                current = await conn.fetchval("SELECT current_database()")
                rows = await conn.fetch(
                    "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname"
                )
            finally:
                await conn.close()
            for name in [current, *(row["datname"] for row in rows if row["datname"] != current)]:
                candidate = _with_database(url, name)
                conn = await asyncpg.connect(candidate, timeout=30.0)
                try:
                    if await conn.fetchval("SELECT to_regclass('received_emails') IS NOT NULL"):
                        return candidate
                finally:
                    await conn.close()
        raise OpenSendError(
            "could not find a database with table received_emails "
            f"(data dir {self.data_dir}); pass --database-url"
        )

    async def database_facts(self) -> DatabaseFacts:
        """Where the messages are stored, and whether a COMMIT there waits for the disk."""
        if self._facts is None:
            url = await self._find_database_url()
            conn = await asyncpg.connect(url, timeout=30.0)
            try:
                self._facts = DatabaseFacts(
                    url=url,
                    database=await conn.fetchval("SELECT current_database()"),
                    fsync=await conn.fetchval("SHOW fsync"),
                    synchronous_commit=await conn.fetchval("SHOW synchronous_commit"),
                )
            finally:
                await conn.close()
        return self._facts

    async def subscribe(self, tenant: str, endpoint: str, event: str) -> None:
        """An enabled webhook of `tenant` for `event` at `endpoint`, as POST /webhooks makes it
        (a `whsec_` secret of 24 random bytes)."""
        facts = await self.database_facts()
        conn = await asyncpg.connect(facts.url, timeout=30.0)
        try:
            # One subscriber at a time: an earlier configuration's endpoint is gone.
            await conn.execute(
                "UPDATE webhooks SET status = 'disabled' "
                "WHERE tenant_id = (SELECT id FROM tenants WHERE name = $1)",
                tenant,
            )
            await conn.execute(
                "INSERT INTO webhooks (id, tenant_id, endpoint, events, signing_secret) "
                "SELECT opensend_uuid7(), id, $2, $3, $4 FROM tenants WHERE name = $1",
                tenant,
                endpoint,
                [event],
                "whsec_" + base64.b64encode(os.urandom(24)).decode(),
            )
        finally:
            await conn.close()

    async def wait_filled_in(self, limit: float) -> float | None:
        """Seconds until no received message waits for its body's parse (stored by a busy MX,
        migration 0019), or None when some still wait after `limit` seconds. 0 for a server
        from before that migration."""
        facts = await self.database_facts()
        conn = await asyncpg.connect(facts.url, timeout=30.0)
        started = time.monotonic()
        try:
            while True:
                try:
                    pending = await conn.fetchval(
                        "SELECT count(*) FROM received_emails WHERE parse_pending"
                    )
                except asyncpg.UndefinedColumnError:
                    return 0.0
                if not pending:
                    return time.monotonic() - started
                if time.monotonic() - started > limit:
                    return None
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    async def count_received(self) -> int:
        """Rows in received_emails: one per message per recipient tenant (DESIGN.md section 3)."""
        facts = await self.database_facts()
        conn = await asyncpg.connect(facts.url, timeout=30.0)
        try:
            count: int = await conn.fetchval("SELECT count(*) FROM received_emails")
            return count
        finally:
            await conn.close()


def _with_database(url: str, database: str) -> str:
    """The same connection URL pointed at another database (pgserver's form included)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
