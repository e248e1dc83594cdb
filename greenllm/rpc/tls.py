"""A cluster's own certificate authority, for TLS on the controller's port.

When a cluster spans machines, ``greenllm up`` keeps a self-signed CA in
``<state_dir>/tls/`` (``ca.pem``, and ``ca-key.pem`` mode 0600) and the controller gets a
certificate from it for the addresses it listens on. Agents and the CLI trust that CA only:
it is handed to agents at start, and the CLI finds it beside the controller's address.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from greenllm.errors import GreenllmError

TLS_SUBDIR = "tls"
CA_VALID_DAYS = 3650
CERT_VALID_DAYS = 825


@dataclass(frozen=True)
class CertPaths:
    """A certificate and its key, PEM files."""

    cert_file: Path
    key_file: Path


def tls_dir(state_dir: Path) -> Path:
    """Where a cluster keeps its CA and the controller's certificate."""
    return Path(state_dir) / TLS_SUBDIR


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def ensure_ca(state_dir: Path, name: str = "greenllm") -> CertPaths:
    """The cluster's CA, created (an EC P-256 key, valid ten years) when absent.

    Raises:
        GreenllmError: The state directory is not writable, or the CA files are unreadable.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tls_dir(state_dir)
    paths = CertPaths(folder / "ca.pem", folder / "ca-key.pem")
    if paths.cert_file.exists() and paths.key_file.exists():
        return paths
    try:
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} cluster CA")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_private(
            paths.key_file,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        _write_public(paths.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise GreenllmError(f"cannot create the cluster CA in {folder}: {exc.strerror}") from None
    return paths


def issue_server_cert(state_dir: Path, hosts: list[str], stem: str = "controller") -> CertPaths:
    """A server certificate for ``hosts`` (IP addresses or DNS names) signed by the cluster's
    CA (created when absent), written as ``<stem>.pem`` and ``<stem>-key.pem`` (0600).

    Raises:
        GreenllmError: The CA is unreadable or the state directory not writable.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_paths = ensure_ca(state_dir)
    folder = tls_dir(state_dir)
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_paths.cert_file.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_paths.key_file.read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise GreenllmError(f"cannot read the cluster CA in {folder}: {exc}") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise GreenllmError(f"{ca_paths.key_file}: not an EC private key")
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h.strip("[]") for h in hosts if h):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"greenllm {stem}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = CertPaths(folder / f"{stem}.pem", folder / f"{stem}-key.pem")
    try:
        _write_private(
            paths.key_file,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        _write_public(paths.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise GreenllmError(f"cannot write {paths.cert_file}: {exc.strerror}") from None
    return paths
