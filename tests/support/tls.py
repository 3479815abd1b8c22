"""Certificates for STARTTLS tests: a throwaway CA (trustme) and a server certificate it signed.

The server gets PEM files, as an operator would configure them; the client trusts only the CA.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class ServerCertificate:
    ca: trustme.CA
    cert: Path  # the certificate chain, leaf first
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that verifies the server against the test CA, and only it."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def ca_file(self, directory: Path) -> Path:
        """The CA certificate as a PEM file, for clients configured by path (swaks)."""
        path = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(path))
        return path


def server_certificate(directory: Path, hostname: str, *also: str) -> ServerCertificate:
    """A certificate for `hostname` and any `also` names or IP addresses (e.g. "127.0.0.1",
    for clients that check the address they connected to)."""
    ca = trustme.CA()
    issued = ca.issue_cert(hostname, *also)
    cert = directory / "server.crt"
    key = directory / "server.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())
    key.chmod(0o600)
    return ServerCertificate(ca, cert, key)
