"""A local development certificate authority, so the local broker and registry can speak TLS.

Made with `cryptography` on first use and kept under the run directory (never in git). It is for
one machine: the CA key sits next to the certificates, which no real deployment would accept.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from liaison.security.credentials import private_dir, write_private

VALID_DAYS = 365
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class DevTls:
    """The files of the development CA and the one server certificate it signed."""

    home: Path

    @property
    def ca_cert(self) -> Path:
        """Public: what every client trusts (`LIAISON_SSL_CAFILE`)."""
        return self.home / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.home / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        return self.home / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.home / "server-key.pem"

    @property
    def server_bundle(self) -> Path:
        """Key then certificate chain in one PEM file: the broker's `ssl.keystore.type=PEM` form."""
        return self.home / "server-bundle.pem"

    def ensure(self) -> bool:
        """Create the CA and the server certificate unless they exist and are valid a while yet."""
        if self._still_valid():
            return False
        private_dir(self.home)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Liaison local development"),
                             x509.NameAttribute(NameOID.COMMON_NAME, "Liaison development CA")])
        now = dt.datetime.now(dt.UTC)
        start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=VALID_DAYS)
        ca_cert = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        server_key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_NAMES[1:]]
        server_cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = _private_pem(server_key)
        cert_pem = server_cert.public_bytes(serialization.Encoding.PEM)
        ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
        # Certificates are public, but the whole run directory is its owner's only: 0600 for all.
        for path, data in ((self.ca_key, _private_pem(ca_key)), (self.server_key, key_pem),
                           (self.server_cert, cert_pem + ca_pem),
                           (self.server_bundle, key_pem + cert_pem + ca_pem), (self.ca_cert, ca_pem)):
            write_private(path, data)
        return True

    def _still_valid(self, margin: dt.timedelta = dt.timedelta(days=7)) -> bool:
        files = (self.ca_cert, self.ca_key, self.server_cert, self.server_key, self.server_bundle)
        if not all(f.exists() for f in files):
            return False
        cert = x509.load_pem_x509_certificate(self.server_cert.read_bytes())
        return cert.not_valid_after_utc - margin > dt.datetime.now(dt.UTC)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: the form Kafka's PEM key store reads without a key password."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
