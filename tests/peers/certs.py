"""A certificate authority and certificates made at run time for the TLS tests.

``make_ca(directory, "Test CA")`` writes ``<name>.pem``/``<name>.key`` of a self-signed CA;
``ca.issue("server", dns=["localhost"], ips=["127.0.0.1"])`` writes a leaf certificate signed
by it (``.pem``, ``.key`` and ``-combined.pem``: certificate then key, as baresip's
``sip_certificate`` wants). Keys are EC P-256: quick to make, accepted by OpenSSL 3 and
baresip 1.0's libre.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    """Files of one certificate."""

    cert: Path  #: PEM certificate
    key: Path  #: PEM private key (unencrypted PKCS#8)
    combined: Path  #: certificate then key in one file


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(directory: Path, name: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> Issued:
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = _key_pem(key)
    files = Issued(directory / f"{name}.pem", directory / f"{name}.key",
                   directory / f"{name}-combined.pem")
    files.cert.write_bytes(cert_pem)
    files.key.write_bytes(key_pem)
    files.combined.write_bytes(cert_pem + key_pem)
    return files


@dataclass(frozen=True)
class CertificateAuthority:
    directory: Path
    name: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    files: Issued

    def issue(self, name: str, *, dns: Sequence[str] = (), ips: Sequence[str] = (),
              common_name: str | None = None) -> Issued:
        """A server-and-client certificate for the names ``dns`` and addresses ``ips``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                common_name or (dns[0] if dns else name))])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _write(self.directory, name, cert, key)


def make_ca(directory: Path, name: str = "ca", common_name: str = "sipdial test CA"
            ) -> CertificateAuthority:
    """A new self-signed CA whose files are ``directory/<name>.pem`` and ``.key``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    files = _write(directory, name, cert, key)
    return CertificateAuthority(directory, name, cert, key, files)
