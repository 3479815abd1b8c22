"""TLS for the SMTP listeners: the operator's certificate, or a development one made here.

Submission needs TLS before a client may log in (RFC 8314, RFC 4954 section 4). Production
refuses to start it without OPENSEND_TLS_CERT/KEY (policy.settings.check_serve); development
generates a self-signed certificate for OPENSEND_HOSTNAME once, keeps it under
OPENSEND_DATA_DIR/tls/, and says so in the log, so `opensend serve` works on a fresh machine.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from policy.settings import Settings

log = logging.getLogger(__name__)

DEVELOPMENT_DIR = "tls"
DEVELOPMENT_VALIDITY = datetime.timedelta(days=365)
# Renewed this long before it expires, so a running development server never holds a dead one.
DEVELOPMENT_RENEW_BEFORE = datetime.timedelta(days=30)


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    # RFC 8996 retires TLS 1.0 and 1.1; an MX must still accept any client certificate or none.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    return context


def submission_tls_context(settings: Settings) -> ssl.SSLContext:
    """The operator's certificate; in development without one, the generated certificate."""
    if settings.tls_cert is not None and settings.tls_key is not None:
        return server_tls_context(settings.tls_cert, settings.tls_key)
    if settings.production:  # policy.settings.check_serve stops this before we get here
        raise RuntimeError("submission needs OPENSEND_TLS_CERT and OPENSEND_TLS_KEY")
    cert, key = development_certificate(settings.data_dir, settings.hostname)
    log.warning(
        "submission uses a self-signed development certificate; clients must trust it "
        "explicitly (set OPENSEND_TLS_CERT and OPENSEND_TLS_KEY for a real one)",
        extra={"certificate": str(cert), "hostname": settings.hostname},
    )
    return server_tls_context(cert, key)


def development_certificate(data_dir: Path, hostname: str) -> tuple[Path, Path]:
    """A self-signed certificate for `hostname`, localhost and the loopback addresses: made
    once under `data_dir`, made again when it nears its end or names another host."""
    directory = data_dir / DEVELOPMENT_DIR
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = directory / "development.crt", directory / "development.key"
    now = datetime.datetime.now(datetime.UTC)
    if _still_good(cert_path, key_path, hostname, now):
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        names.append(x509.DNSName("localhost"))
    names += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + DEVELOPMENT_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(key_path, key_pem)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    log.info("generated a development TLS certificate", extra={"certificate": str(cert_path)})
    return cert_path, key_path


def _still_good(cert_path: Path, key_path: Path, hostname: str, now: datetime.datetime) -> bool:
    if not cert_path.is_file() or not key_path.is_file():
        return False
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return False
    fresh = certificate.not_valid_after_utc - now > DEVELOPMENT_RENEW_BEFORE
    return fresh and hostname in names.value.get_values_for_type(x509.DNSName)


def _write_private(path: Path, data: bytes) -> None:
    """Owner-only from the first byte: the key is never readable by others, even briefly."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
