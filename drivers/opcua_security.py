"""Certificates for OPC UA secure channels: application certificates and the trust list.

An OPC UA application (client or server) proves itself with an X.509 application
instance certificate whose subjectAltName carries its application URI; the other
side decides whether it trusts that certificate. metrogate trusts a server only
when its certificate is in the configured trust list (files or folders of PEM/DER
certificates), compared by SHA-256 fingerprint, unless the device says
``trust_unknown_server``. :func:`create_application_certificate` makes the
self-signed pair a gateway (or a simulated server) presents.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "TrustList",
    "application_uri_of",
    "check_key_pair",
    "create_application_certificate",
    "fingerprint",
    "load_certificate",
]


def create_application_certificate(
    cert_path: Path,
    key_path: Path,
    application_uri: str,
    *,
    common_name: str = "metrogate",
    hostnames: Sequence[str] = ("localhost",),
    addresses: Sequence[str] = ("127.0.0.1",),
    server: bool = False,
    days: int = 365,
) -> None:
    """Write a self-signed RSA-2048/SHA-256 application certificate (PEM) and its key (PEM).

    The certificate carries what OPC UA asks of an application instance
    certificate (OPC 10000-6 §6.2.2): the application URI and host names in
    subjectAltName, digitalSignature, nonRepudiation, keyEncipherment and
    dataEncipherment key usage, and serverAuth or clientAuth extended key usage.
    The key file is written with mode 0600.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    alt += [x509.DNSName(h) for h in hostnames]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.touch(mode=0o600, exist_ok=True)
    key_path.chmod(0o600)
    key_path.write_bytes(pem)


def load_certificate(path: Path) -> x509.Certificate:
    """A certificate from a PEM or DER file; :class:`ValueError` naming the file if neither."""
    data = path.read_bytes()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ValueError(f"{path}: not a PEM or DER certificate ({exc})") from exc


def der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as colon-separated hex (as certificate tools print it)."""
    return hashlib.sha256(der).digest().hex(":").upper()


def application_uri_of(cert: x509.Certificate) -> str | None:
    """The application URI in a certificate's subjectAltName, if it has one."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def check_key_pair(certificate: Path, private_key: Path) -> None:
    """Raise :class:`ValueError` naming the file unless ``private_key`` (PEM or DER, not
    encrypted) is the key of ``certificate``."""
    cert = load_certificate(certificate)
    data = private_key.read_bytes()
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{private_key}: not an unencrypted PEM or DER private key ({exc})"
        ) from exc
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = key.public_key().public_bytes(serialization.Encoding.DER, spki)
    if mine != cert.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise ValueError(f"{private_key}: not the key of the certificate {certificate}")


_SUFFIXES = (".pem", ".der", ".crt")


class TrustList:
    """The server certificates a client trusts, by SHA-256 fingerprint.

    Built from files (one PEM or DER certificate each) and folders (every
    ``*.pem``, ``*.der``, ``*.crt`` in them). A file that is not a certificate is an
    error naming it, so a typo in the list is never a silent "trust nothing".
    """

    def __init__(self, locations: Iterable[Path] = ()) -> None:
        self.fingerprints: set[str] = set()
        for location in locations:
            files = (
                sorted(
                    p for p in location.iterdir() if p.suffix.lower() in (".pem", ".der", ".crt")
                )
                if location.is_dir()
                else [location]
            )
            for f in files:
                self.fingerprints.add(fingerprint(der_of(load_certificate(f))))

    def trusts(self, der: bytes) -> bool:
        return fingerprint(der) in self.fingerprints
