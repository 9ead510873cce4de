"""Authenticating requests from our users (REGISTER with 401, calls with 407).

Thin policy on top of :class:`sipdial.sip.auth.DigestServer`: which header to read, which
challenge header to answer with, and ``stale=true`` re-challenges (RFC 7616 §3.3).
"""

from __future__ import annotations

from collections.abc import Callable

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

class Authenticator:
    def __init__(self, realm: str, lookup_password: Callable[[str], str | None],
                 secret: bytes, nonce_lifetime: float = 300.0,
                 algorithms: tuple[str, ...] = ("MD5",)) -> None:
        self.realm = realm
        self.server = DigestServer(realm, lookup_password,
                                   NonceManager(secret, lifetime=nonce_lifetime),
                                   algorithms=algorithms)

    def check(self, request: Request, now: float, *, proxy: bool) -> str | Response:
        """The authenticated user id, or the 401/407 response to send."""
        header = "Proxy-Authorization" if proxy else "Authorization"
        stale = False
        for value in request.headers.get_all(header):
            if not _same_target(value, request):
                continue
            result, username = self.server.verify(value, request.method, now)
            if result == "ok" and username is not None:
                return username
            if result == "stale":
                stale = True
        status = 407 if proxy else 401
        response = make_response(request, status)
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        for challenge in self.server.challenges(now, stale=stale):
            response.headers.add(name, challenge.to_header())
        return response


def _same_target(header_value: str, request: Request) -> bool:
    """RFC 3261 §22.4: the digest-uri names the Request-URI, so an answer captured for one
    target cannot be replayed for another. Phones differ in URI parameters (pyVoIP adds
    ``;transport=UDP``), so scheme, user, host and port are compared."""
    try:
        digest_uri = parse_uri(Credentials.parse(header_value).uri)
    except (AuthError, SipError):
        return False
    return _target(digest_uri) == _target(request.uri)


def _target(uri: URI) -> tuple[str, ...]:
    if isinstance(uri, SipURI):
        return (uri.scheme, uri.unquote_user() or "", uri.host, str(uri.port or ""))
    return (str(uri),)
