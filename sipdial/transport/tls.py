"""SIP over TLS (RFC 3261 §26, RFC 5630): the TLS contexts of sipdial's connections.

A TLS connection is a TCP connection wrapped by Twisted's TLS (``listenSSL`` /
``connectSSL``): the driver frames, limits and times it exactly as it does TCP. This module
only decides what the wrapping trusts and presents, from ``[sip.tls]``:

* listeners present ``certificate`` (with any chain in the same file) and ``key``; when a
  ``ca`` is configured (and ``verify`` is on) they ask the client for its certificate without
  requiring one, and a certificate a client does present must be signed by that CA: only
  such a client may ask for its connection to be reused (RFC 5923 ``alias``, §10.2), and only
  for the sent-by its certificate names (:func:`certificate_names_host`);
* outgoing connections check the server's certificate against ``ca`` (else the system's
  trust store) and its host name against :attr:`Peer.name` (RFC 5922 §4: the host of the URI
  that led there), presenting sipdial's own certificate when there is one. ``verify = false``
  turns both checks off; nothing else does.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Final

from OpenSSL import crypto
from twisted.internet import ssl

from sipdial.config import TlsConfig

__all__ = ["TlsContexts", "TlsError", "certificate_names_host", "handshake_failure"]

_PEM_CERT: Final = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)
_CLIENTS_MAX: Final = 1024  # client contexts kept (one per server name)


class TlsError(ValueError):
    """A certificate, key or CA file is unusable; ``str()`` names the file and why."""


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TlsError(f'cannot read the TLS {what} "{path}": {exc.strerror or exc}') from exc


def _certificates(path: str, what: str) -> list[ssl.Certificate]:
    data = _read(path, what)
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise TlsError(f'the TLS {what} "{path}" holds no PEM certificate')
    try:
        return [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception as exc:
        raise TlsError(f'the TLS {what} "{path}" is not a valid certificate: {exc}') from exc


class TlsContexts:
    """The server context and the per-host-name client contexts for ``[sip.tls]``.

    Construction reads and checks the files (:class:`TlsError` if one is unusable, e.g. a
    key that does not belong to the certificate)."""

    def __init__(self, certificate: str | None = None, key: str | None = None,
                 ca: str | None = None, *, verify: bool = True) -> None:
        self.verify = verify
        self._own: ssl.PrivateCertificate | None = None
        self._chain: list[ssl.Certificate] = []
        if certificate is not None and key is not None:
            chain = _certificates(certificate, "certificate")
            key_pem = _read(key, "key")
            try:
                keypair = ssl.KeyPair.load(key_pem, crypto.FILETYPE_PEM)
            except Exception as exc:
                raise TlsError(f'the TLS key "{key}" is not a PEM private key: {exc}') from exc
            try:
                self._own = ssl.PrivateCertificate.fromCertificateAndKeyPair(  # type: ignore[no-untyped-call]
                    chain[0], keypair)
                ssl.CertificateOptions(privateKey=self._own.privateKey.original,
                                       certificate=self._own.original)
            except Exception as exc:
                raise TlsError(f'the TLS key "{key}" does not match the certificate '
                               f'"{certificate}": {exc}') from exc
            self._chain = chain[1:]
        self._ca = _certificates(ca, "CA") if ca is not None else None
        self._clients: dict[str, Any] = {}

    @classmethod
    def from_config(cls, tls: TlsConfig) -> TlsContexts:
        """From ``[sip.tls]``."""
        return cls(tls.certificate, tls.key, tls.ca, verify=tls.verify)

    @property
    def asks_client_certificates(self) -> bool:
        """Whether listeners ask clients for a certificate (checked against ``ca``)."""
        return self.verify and self._ca is not None

    def server(self) -> ssl.CertificateOptions:
        """The context of ``tls:`` listeners."""
        own = self._own
        if own is None:
            raise TlsError("a tls: listener needs sip.tls.certificate and sip.tls.key")
        options: dict[str, Any] = {
            "privateKey": own.privateKey.original,
            "certificate": own.original,
            "extraCertChain": [c.original for c in self._chain],
        }
        if self.asks_client_certificates:
            assert self._ca is not None
            options.update(verify=True, requireCertificate=False,
                           caCerts=[c.original for c in self._ca])
        return ssl.CertificateOptions(**options)

    def client(self, name: str) -> Any:
        """The connection creator for a TLS connection to a server that must prove it is
        ``name`` (a host name or an IP literal), unless ``verify`` is off."""
        found = self._clients.get(name)
        if found is not None:
            return found
        own = self._own
        if not self.verify:
            options: dict[str, Any] = {"verify": False}
            if own is not None:
                options.update(privateKey=own.privateKey.original, certificate=own.original,
                               extraCertChain=[c.original for c in self._chain])
            creator: Any = ssl.CertificateOptions(**options)
        else:
            trust = (ssl.trustRootFromCertificates(self._ca)  # type: ignore[no-untyped-call]
                     if self._ca is not None
                     else ssl.platformTrust())  # type: ignore[no-untyped-call]
            creator = ssl.optionsForClientTLS(name, trustRoot=trust, clientCertificate=own)
        if len(self._clients) >= _CLIENTS_MAX:
            self._clients.clear()
        self._clients[name] = creator
        return creator


def certificate_names_host(certificate: Any, host: str) -> bool:
    """Whether ``certificate`` (a pyOpenSSL X509, None when the peer presented none) is
    valid for ``host`` (a DNS name or an IP literal) by RFC 6125 rules."""
    if certificate is None:
        return False
    from service_identity import VerificationError
    from service_identity.cryptography import (
        verify_certificate_hostname,
        verify_certificate_ip_address,
    )
    cert = certificate.to_cryptography()
    try:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            verify_certificate_hostname(cert, host)
        else:
            verify_certificate_ip_address(cert, host)
    except (VerificationError, ValueError):
        return False
    return True


def handshake_failure(error: BaseException, name: str) -> str:
    """One line saying why a TLS connection to a server that had to prove it is ``name``
    failed (``error``: the exception its connection was lost with)."""
    from service_identity import VerificationError

    if isinstance(error, VerificationError):
        return f"its certificate is not valid for {name} (host name check, RFC 5922)"
    text = str(error)
    if "certificate verify failed" in text:
        return ("its certificate is not signed by a trusted CA (sip.tls.ca) "
                "(certificate verify failed)")
    return f"TLS handshake failed: {text or type(error).__name__}"
