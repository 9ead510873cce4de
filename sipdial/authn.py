"""Authenticating requests from our users (REGISTER with 401, calls with 407, and the HTTP
compatibility URLs' plain passwords).

Thin policy on top of :class:`sipdial.sip.auth.DigestServer`: which header to read, which
challenge header to answer with, ``stale=true`` re-challenges (RFC 7616 §3.3), nonces bound
to the client's address, and the password-guessing limits of :mod:`sipdial.guard`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable

from sipdial.guard import FailureGuard, source_key
from sipdial.sip import (
    URI,
    AuthError,
    Credentials,
    DigestServer,
    NonceManager,
    Request,
    Response,
    SipError,
    SipURI,
    make_response,
    parse_uri,
)

__all__ = ["Authenticator"]

log = logging.getLogger("sipdial.auth")

class Authenticator:
    """Digest authentication of our users' requests, limited by a :class:`FailureGuard`.

    Each nonce is bound to the client's address (:func:`sipdial.guard.source_key`): an answer
    sent from elsewhere, spoofed datagrams included, is not evaluated at all. For each
    credentials header naming the request's target the guard is asked first; while it blocks
    the (source, user) pair the password is not checked and the answer is the same fresh
    challenge a wrong password gets. A wrong password is reported to the guard, a right one
    makes the pair trusted.
    """

    def __init__(self, realm: str, lookup_password: Callable[[str], str | None],
                 secret: bytes, nonce_lifetime: float = 300.0,
                 algorithms: tuple[str, ...] = ("MD5",), *,
                 guard: FailureGuard | None = None) -> None:
        self.realm = realm
        self.guard = guard if guard is not None else FailureGuard()
        self._lookup_password = lookup_password
        self.server = DigestServer(realm, lookup_password,
                                   NonceManager(secret, lifetime=nonce_lifetime),
                                   algorithms=algorithms)

    def check(self, request: Request, now: float, *, proxy: bool,
              source: str) -> str | Response:
        """The authenticated user id, or the 401/407 response to send. ``source`` is the
        client's address (its host)."""
        header = "Proxy-Authorization" if proxy else "Authorization"
        bind = source_key(source)
        stale = False
        for value in request.headers.get_all(header):
            try:
                creds = Credentials.parse(value)
            except AuthError:
                continue
            if not _same_target(creds, request):
                continue
            if not self.guard.allows(source, creds.username, now):
                log.debug("password not checked (guessing limit): %r from %s",
                          creds.username, source)
                continue  # answered like a wrong password
            result, username = self.server.verify_credentials(creds, request.method, now,
                                                              bind=bind)
            if result == "ok" and username is not None:
                self.guard.succeeded(source, username, now)
                return username
            if result == "wrong":
                log.debug("wrong password: %r from %s", creds.username, source)
                self.guard.failed(source, creds.username, now)
            elif result == "stale":
                stale = True
        status = 407 if proxy else 401
        response = make_response(request, status)
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        for challenge in self.server.challenges(now, stale=stale, bind=bind):
            response.headers.add(name, challenge.to_header())
        return response

    def check_password(self, user: str, password: str, source: str, now: float) -> bool:
        """A plain ``user``/``password`` (HTTP ``auth=`` or Basic), under the same guard:
        False while blocked (not checked), for a wrong password and for an unknown user."""
        if not self.guard.allows(source, user, now):
            log.debug("password not checked (guessing limit): %r from %s", user, source)
            return False
        expected = self._lookup_password(user)
        # digests: equal lengths, and an unknown user costs the same work as a known one
        matches = hmac.compare_digest(_digest(expected if expected is not None else ""),
                                      _digest(password))
        if matches and expected is not None:
            self.guard.succeeded(source, user, now)
            return True
        log.debug("wrong password: %r from %s", user, source)
        self.guard.failed(source, user, now)
        return False


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _same_target(creds: Credentials, request: Request) -> bool:
    """RFC 3261 §22.4: the digest-uri names the Request-URI, so an answer captured for one
    target cannot be replayed for another. Phones differ in URI parameters (pyVoIP adds
    ``;transport=UDP``), so scheme, user, host and port are compared."""
    try:
        digest_uri = parse_uri(creds.uri)
    except (AuthError, SipError):
        return False
    return _target(digest_uri) == _target(request.uri)


def _target(uri: URI) -> tuple[str, ...]:
    if isinstance(uri, SipURI):
        return (uri.scheme, uri.unquote_user() or "", uri.host, str(uri.port or ""))
    return (str(uri),)
