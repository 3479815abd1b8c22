"""A private, stock Postfix instance on loopback that queues mail and then discards it.

The MX benchmark (`bench_mx.py`) compares OpenSend with Postfix on the same machine. This module
starts a throwaway Postfix that never touches the system's own instance: it gets its own
`config_directory`, `queue_directory` and `data_directory` under a temporary directory, listens
only on 127.0.0.1 at a port of our choosing (never port 25), and is stopped and deleted afterwards,
also when the benchmark fails half way.

What is changed from the machine's stock configuration (`/etc/postfix/main.cf` and `master.cf` are
copied, then edited with `postconf -c DIR`), and why:

* `queue_directory`, `data_directory`, `maillog_file`: private paths, so the system instance is
  untouched and the log can be counted.
* `inet_interfaces = 127.0.0.1`, `inet_protocols = ipv4`, and the `smtp inet` service in master.cf
  replaced by `127.0.0.1:PORT inet ... smtpd`: loopback only, on a free port.
* `mydestination =` (empty), `relay_domains = bench.test`, `relay_transport = discard:`,
  `default_transport = discard:`: mail for the benchmark domain is accepted, written to the queue
  (cleanup fsyncs the queue file before smtpd answers 250; that is Postfix's durable store, the
  equivalent of OpenSend's database commit), and then handed to the `discard` delivery agent.
* `alias_maps =`: there is no local delivery, and Debian's `hash:/etc/aliases` may not be built.
* `myhostname`: so it starts cleanly whatever the machine is called.
* master.cf's chroot column set to `n` for every service: Debian ships `y`, which needs copies of
  /etc files inside the queue directory; upstream Postfix's own default is `n`. It is not a
  performance setting.
* `maillog_file` (Postfix's own `postlogd` writing a file) instead of syslog, so the benchmark can
  count accepted and discarded messages; on this machine there is no syslog daemon at all.
* With `tls=(cert, key)` (the submission benchmark's STARTTLS comparison): `smtpd_tls_cert_file`,
  `smtpd_tls_key_file` and `smtpd_tls_security_level = may`, Postfix's own setting for
  opportunistic STARTTLS; every other TLS setting stays at its default.

Every performance setting (process limits, `in_flow_delay`, queue manager concurrency, smtpd
limits) stays at Postfix's default.

Relay mode (`relay_to=(host, port)`, used by the delivery benchmark `bench_delivery.py`):
`relay_transport = smtp:[host]:port` instead of `discard:`, so mail for the domain is relayed by
Postfix's own SMTP client to that host (an `smtp-sink`), with its stock connection caching and
destination concurrency. `hold()` sets `defer_transports = smtp` so injected mail waits in the
deferred queue untouched; `release()` clears it, reloads and flushes (`postqueue -f`), so the
delivery can be timed on its own, from a full queue, as OpenSend's is.

Running it needs root (Postfix's master runs as root and drops to the `postfix` user).

Standalone use, for poking at it by hand::

    .venv/bin/python tests/perf/postfix_peer.py --port 10025 --hold 60
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

POSTFIX = shutil.which("postfix", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/postfix"
POSTCONF = shutil.which("postconf", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/postconf"
STOCK_CONFIG_DIR = Path("/etc/postfix")
# Queue subdirectories in which a message waits before it is gone for good.
_QUEUE_SUBDIRS = ("maildrop", "incoming", "active", "deferred", "hold")
_COMMAND_TIMEOUT = 60.0
_MASTER_LINE = re.compile(r"^(?P<name>\S+)\s+(?P<type>inet|unix|unix-dgram|fifo|pass)\s")
_WARNING = re.compile(r"\bwarning:")
_ERROR = re.compile(r"\b(error|fatal|panic):")
# service type private unpriv CHROOT ...: the fifth column of a master.cf service line.
_CHROOT_FIELD = re.compile(r"^((?:\S+\s+){4})(y)(\s)")


class PostfixPeerError(RuntimeError):
    """The private Postfix instance could not be set up, started or stopped."""


@dataclass(frozen=True, slots=True)
class LogCounts:
    """Counts taken from the instance's maillog file."""

    accepted: int  # qmgr "(queue active)": the message was committed to the queue
    discarded: int  # discard agent "status=sent": delivered to the bit bucket
    deferred: int
    bounced: int
    warnings: int  # lines with warning:
    errors: int  # lines with error:, fatal: or panic:
    relayed: int = 0  # smtp client "status=sent": handed to the relay host (relay mode)


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the usual bind-to-0 trick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_banner(host: str, port: int, timeout: float) -> str:
    """Connect until the server greets with 220; return the banner line."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=5.0) as sock:
                banner = sock.makefile("rb").readline().decode("ascii", "replace").strip()
                if banner.startswith("220"):
                    with contextlib.suppress(OSError):
                        sock.sendall(b"QUIT\r\n")
                    return banner
                last_error = PostfixPeerError(f"unexpected greeting {banner!r}")
        except OSError as exc:
            last_error = exc
        time.sleep(0.1)
    raise PostfixPeerError(f"no 220 banner on {host}:{port} within {timeout:.0f}s: {last_error}")


class PostfixPeer:
    """A private Postfix on 127.0.0.1:`port` that accepts mail for `domain` and discards it.

    Use it as a context manager; `stop()` is safe to call more than once and also runs at exit of
    the `with` block when an exception is propagating.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        domain: str = "bench.test",
        hostname: str = "postfix.bench.test",
        base_dir: Path | None = None,
        keep: bool = False,
        relay_to: tuple[str, int] | None = None,
        tls: tuple[Path, Path] | None = None,
        settings: tuple[str, ...] = (),
    ) -> None:
        self.port = port if port is not None else free_loopback_port()
        # More `name=value` main.cf settings, for a benchmark that must change a stock limit.
        self.settings = settings
        self.relay_to = relay_to
        self.tls = tls
        self.domain = domain
        self.hostname = hostname
        self._base_dir = base_dir
        self._keep = keep
        self.root: Path | None = None
        self._master_pid: int | None = None
        self._started = False

    # ----------------------------------------------------------------------------------- paths

    def _path(self, name: str) -> Path:
        if self.root is None:
            raise PostfixPeerError("the instance has not been set up")
        return self.root / name

    @property
    def config_dir(self) -> Path:
        return self._path("etc")

    @property
    def queue_dir(self) -> Path:
        return self._path("spool")

    @property
    def data_dir(self) -> Path:
        return self._path("data")

    @property
    def maillog(self) -> Path:
        return self._path("maillog")

    # ------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> PostfixPeer:
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

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(
                list(args),
                capture_output=True,
                text=True,
                timeout=_COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostfixPeerError(f"{' '.join(args)} timed out after {exc.timeout}s") from exc
        if check and proc.returncode != 0:
            raise PostfixPeerError(
                f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout}"
            )
        return proc

    def _postconf(self, *args: str) -> None:
        self._run(POSTCONF, "-c", str(self.config_dir), *args)

    def setup(self) -> None:
        """Write the private configuration and create the queue; does not start anything."""
        if os.geteuid() != 0:
            raise PostfixPeerError("a private Postfix needs root (its master process runs as root)")
        for tool in (POSTFIX, POSTCONF):
            if not Path(tool).exists():
                raise PostfixPeerError(f"{tool} not found; install the postfix package")
        try:
            postfix_user = pwd.getpwnam("postfix")
        except KeyError as exc:
            raise PostfixPeerError(
                "there is no 'postfix' user; install the postfix package"
            ) from exc

        self.root = Path(tempfile.mkdtemp(prefix="postfix-peer-", dir=self._base_dir))
        # Postfix's daemons run as the postfix user and must reach the queue below this directory.
        self.root.chmod(0o755)
        for sub in ("etc", "spool", "data"):
            (self.root / sub).mkdir()
        os.chown(self.data_dir, postfix_user.pw_uid, postfix_user.pw_gid)
        for name in ("main.cf", "master.cf"):
            shutil.copy2(STOCK_CONFIG_DIR / name, self.config_dir / name)

        self._postconf(
            "-e",
            f"queue_directory={self.queue_dir}",
            f"data_directory={self.data_dir}",
            f"maillog_file={self.maillog}",
            f"maillog_file_prefixes={self.root}",
            "inet_interfaces=127.0.0.1",
            "inet_protocols=ipv4",
            f"myhostname={self.hostname}",
            f"mydomain={self.domain}",
            "myorigin=$myhostname",
            "mydestination=",
            f"relay_domains={self.domain}",
            (
                f"relay_transport=smtp:[{self.relay_to[0]}]:{self.relay_to[1]}"
                if self.relay_to
                else "relay_transport=discard:"
            ),
            "default_transport=discard:",
            "alias_maps=",
            "alias_database=",
            "smtpd_banner=$myhostname ESMTP $mail_name",
        )
        if self.tls is not None:
            cert, key = self.tls
            self._postconf(
                "-e",
                f"smtpd_tls_cert_file={cert}",
                f"smtpd_tls_key_file={key}",
                "smtpd_tls_security_level=may",
            )
        if self.settings:
            self._postconf("-e", *self.settings)
        self._rewrite_master_cf()
        # Creates the queue subdirectories with the right owners and modes.
        self._run(POSTFIX, "-c", str(self.config_dir), "check")

    def _rewrite_master_cf(self) -> None:
        """Drop the port-25 `smtp inet` service, add ours on loopback, turn chroot off."""
        master_cf = self.config_dir / "master.cf"
        out: list[str] = []
        skipping_continuation = False
        for line in master_cf.read_text().splitlines():
            if skipping_continuation and line[:1].isspace():
                continue
            skipping_continuation = False
            match = _MASTER_LINE.match(line)
            if match is None:
                out.append(line)
                continue
            if match["type"] == "inet":
                # Every inet service is dropped: only our loopback listener remains.
                skipping_continuation = True
                continue
            out.append(_CHROOT_FIELD.sub(r"\1n\3", line))
        out.append(f"127.0.0.1:{self.port} inet n - n - - smtpd")
        master_cf.write_text("\n".join(out) + "\n")

    def start(self, timeout: float = 30.0) -> None:
        if self.root is None:
            self.setup()
        self._started = True
        self._run(POSTFIX, "-c", str(self.config_dir), "start")
        wait_for_banner("127.0.0.1", self.port, timeout)
        self._master_pid = self.master_pid()

    def master_pid(self) -> int | None:
        """The pid of this instance's master process, from its own pid file."""
        if self.root is None:
            return None
        pid_file = self.queue_dir / "pid" / "master.pid"
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Stop the instance (by its own master pid if `postfix stop` fails) and delete it."""
        if self.root is None:
            return
        if self._started:
            pid = self.master_pid() or self._master_pid
            with contextlib.suppress(PostfixPeerError):
                self._run(POSTFIX, "-c", str(self.config_dir), "stop", check=False)
            if pid is not None and not _wait_gone(pid, 15.0):
                _signal(pid, signal.SIGTERM)
                if not _wait_gone(pid, 10.0):
                    _signal(pid, signal.SIGKILL)
                    _wait_gone(pid, 5.0)
            self._started = False
        if not self._keep:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def hold(self) -> None:
        """Relay mode: queue what arrives, deliver nothing (defer_transports = smtp)."""
        self._postconf("-e", "defer_transports=smtp")
        if self._started:
            self._run(POSTFIX, "-c", str(self.config_dir), "reload")

    def release(self) -> None:
        """Relay mode: deliver the held mail now (clear defer_transports, reload, flush)."""
        self._postconf("-e", "defer_transports=")
        self._run(POSTFIX, "-c", str(self.config_dir), "reload")
        postqueue = shutil.which("postqueue", path="/usr/sbin:/usr/bin") or "/usr/sbin/postqueue"
        self._run(postqueue, "-c", str(self.config_dir), "-f")

    # ----------------------------------------------------------------------------- observation

    def queue_size(self) -> int:
        """How many messages are still in the queue (not yet discarded)."""
        total = 0
        for sub in _QUEUE_SUBDIRS:
            for _dirpath, _dirs, files in os.walk(self.queue_dir / sub):
                total += len(files)
        return total

    def wait_drained(self, timeout: float = 120.0) -> bool:
        """Wait until every queued message has been discarded; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queue_size() == 0:
                return True
            time.sleep(0.1)
        return self.queue_size() == 0

    def log_counts(self) -> LogCounts:
        accepted = discarded = deferred = bounced = warnings = errors = relayed = 0
        try:
            text = self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        for line in text.splitlines():
            if "/qmgr[" in line and "(queue active)" in line:
                accepted += 1
            elif "/discard[" in line and "status=sent" in line:
                discarded += 1
            elif "/smtp[" in line and "status=sent" in line:
                relayed += 1
            elif "status=deferred" in line:
                deferred += 1
            elif "status=bounced" in line:
                bounced += 1
            if _WARNING.search(line):
                warnings += 1
            elif _ERROR.search(line):
                errors += 1
        return LogCounts(accepted, discarded, deferred, bounced, warnings, errors, relayed)

    def log_lines(self, *, errors: bool, limit: int = 20) -> list[str]:
        """The last `limit` error (error:, fatal:, panic:) or warning: lines of the maillog."""
        try:
            lines = self.maillog.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        pattern = _ERROR if errors else _WARNING
        return [line for line in lines if pattern.search(line)][-limit:]


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        time.sleep(0.05)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port", type=int, default=None, help="loopback port (default: a free one)"
    )
    parser.add_argument("--domain", default="bench.test")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds to keep it running")
    parser.add_argument("--keep", action="store_true", help="keep the directory afterwards")
    args = parser.parse_args(argv)
    with PostfixPeer(args.port, domain=args.domain, keep=args.keep) as peer:
        print(f"postfix listening on 127.0.0.1:{peer.port}, root {peer.root}", flush=True)
        print(f"holding for {args.hold:.0f}s (Ctrl-C stops it earlier)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            time.sleep(args.hold)
        print(f"log counts: {peer.log_counts()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
