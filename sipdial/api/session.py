"""Browser sessions for the web page (issue 11): a signed cookie and its CSRF token.

``POST /v1/session {"user", "password"}`` (the SIP account) or ``{"token"}`` (an ``[api]``
token), as JSON from the page's own origin, signs a browser in: the answer sets
``sipdial_session`` (HttpOnly, SameSite=Strict; Secure over TLS or with ``[http]
secure_cookies``, then named ``__Host-sipdial_session`` so that no other host of the domain
can plant one) and names the CSRF token. The cookie is ``<user>.<expiry>.<nonce>.<mac>``
(base64url parts, HMAC-SHA256 over them with the key): nothing is kept on the server, so
it is valid at every worker (they share the key). Every request a session authenticates
that changes something (not GET/HEAD) must carry ``X-CSRF-Token`` — HMAC of the nonce,
which a page of another site cannot read — and must not come from another site
(``Sec-Fetch-Site``, ``Origin``). Sign-out clears the cookie; a copied cookie stays valid
until it expires (``SESSION_SECONDS``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["COOKIE", "SECURE_COOKIE", "SESSION_SECONDS", "Session", "Sessions"]

COOKIE: Final = "sipdial_session"
#: the name with ``secure``: browsers take it only with Secure, Path=/ and no Domain
SECURE_COOKIE: Final = "__Host-sipdial_session"
SESSION_SECONDS: Final = 8 * 3600


@dataclass(frozen=True, slots=True)
class Session:
    user: str | None  #: None: an administrator (signed in with an admin token)
    expires_at: int
    nonce: str
    #: what it was made with: "token:<sha-256 prefix>" or "pw:<HMAC of the password>";
    #: checked on every request, so a removed token or a changed password ends it
    proof: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    def __init__(self, key: bytes, clock: Callable[[], float], *, secure: bool = False) -> None:
        """``secure``: the page is served over https (by sipdial, or by a proxy in front
        that terminates TLS: ``[http] secure_cookies``): the cookie is Secure and named
        :data:`SECURE_COOKIE`, and only that name is read."""
        self._key = key
        self._clock = clock
        self.secure = secure

    @property
    def cookie_name(self) -> str:
        return SECURE_COOKIE if self.secure else COOKIE

    def set_cookie(self, value: str, *, tls: bool = False) -> str:
        """The ``Set-Cookie`` value for a new session (``tls``: this request came over
        TLS, so Secure even without ``secure``)."""
        return (f"{self.cookie_name}={value}; Path=/; HttpOnly; SameSite=Strict; "
                f"Max-Age={SESSION_SECONDS}" + ("; Secure" if self.secure or tls else ""))

    def clear_cookie(self) -> str:
        return (f"{self.cookie_name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
                + ("; Secure" if self.secure else ""))

    def issue(self, user: str | None, proof: str = "") -> tuple[str, Session]:
        """A cookie value for ``user`` (None: admin)."""
        session = Session(user, int(self._clock()) + SESSION_SECONDS, os.urandom(12).hex(),
                          proof)
        body = ".".join((_b64((user or "*").encode()), str(session.expires_at), session.nonce,
                         _b64(proof.encode())))
        return f"{body}.{self._mac('session|' + body)}", session

    def check(self, cookie: str) -> Session | None:
        """The session a cookie value names, if genuine and not expired."""
        body, _, mac = cookie.rpartition(".")
        if not body or len(cookie) > 512 or not hmac.compare_digest(
                mac.encode("ascii", "replace"), self._mac("session|" + body).encode()):
            return None
        try:
            user_part, expiry, nonce, proof_part = body.split(".")
            user = _unb64(user_part).decode()
            expires_at = int(expiry)
            proof = _unb64(proof_part).decode()
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        if self._clock() >= expires_at:
            return None
        return Session(None if user == "*" else user, expires_at, nonce, proof)

    def password_proof(self, user: str, password: str) -> str:
        return "pw:" + self._mac(f"password|{user}|{password}")[:32]

    def csrf(self, session: Session) -> str:
        return self._mac("csrf|" + session.nonce)[:32]

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode("ascii", "replace"),
                                                         self.csrf(session).encode())

    def _mac(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode("utf-8", "replace"),
                             hashlib.sha256).digest())


def cookie_value(header: str | None, wanted: str = COOKIE) -> str | None:
    """The value of the cookie ``wanted`` (the session's) in a ``Cookie`` header."""
    if not header:
        return None
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == wanted and value:
            return value
    return None
