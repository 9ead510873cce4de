"""Signed, single-use call links for e-mails and CRM pages (issue 10 §4).

``POST /v1/links {"user", "to", "ttl"}`` issues a token; ``/c/<token>`` places the call it
names, once, with no other credential: the token is the credential.

Token: ``<payload>.<mac>``, both base64url without padding. The payload is the compact JSON
``[1, user, to, expires_at, nonce]``; the MAC is HMAC-SHA256 over ``"sipdial-link." +
payload`` with ``[links] secret``. Nothing in it is secret (the user and number are readable)
but nothing can be changed: a tampered, truncated or foreign token is ``404 invalid_link``,
an expired one ``410 link_expired``, a used one ``410 link_used``.

Single use: the nonce of a used link is kept (in memory, and in the store until the link
would have expired, so a restart does not make it usable again). With ``--workers`` the nonce
starts with the issuing worker's index, like a call id (:class:`sipdial.sip.Shard`): every
use goes to that worker, the only one that keeps its nonces.

Link scanners: mail gateways (Outlook Safe Links, Proofpoint) open every link in an e-mail.
``GET /c/<token>`` therefore only shows what the link does, with a button; the button's
``POST`` places the call. ``[links] one_click = true`` lets a ``GET`` place it (for CRMs that
open the URL themselves).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from sipdial.api.service import ApiError

__all__ = ["Link", "Links", "UsedLinkStore"]

_VERSION: Final = 1
_CONTEXT: Final = b"sipdial-link."
#: longest token accepted (user 64 + to 256 characters, escaped, and the rest)
MAX_TOKEN_LENGTH: Final = 1024


@dataclass(frozen=True, slots=True)
class Link:
    """What a valid token says."""

    user: str
    to: str
    expires_at: int  #: unix time
    nonce: str  #: the link's identity (single use); leads with its worker's index


class UsedLinkStore(Protocol):
    def add_used_link(self, nonce: str, expires_at: float) -> None: ...


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _invalid() -> ApiError:
    return ApiError(404, "invalid_link", "this link is not valid (mistyped, cut off or "
                                         "changed)")


class Links:
    """Issues and checks tokens and remembers which links were used (this worker's)."""

    def __init__(self, secret: bytes, store: UsedLinkStore, clock: Callable[[], float],
                 new_nonce: Callable[[], str], *, max_ttl: int, default_ttl: int,
                 one_click: bool = False, base_url: str | None = None) -> None:
        self._secret = secret
        self._store = store
        self._clock = clock
        self._new_nonce = new_nonce
        self.max_ttl = max_ttl
        self.default_ttl = default_ttl
        self.one_click = one_click
        self.base_url = base_url
        self._used: dict[str, float] = {}  # nonce -> expires_at

    def load(self, used: Iterable[tuple[str, float]]) -> None:
        """The links used before this start (from the store)."""
        self._used.update(used)

    def issue(self, user: str, to: str, ttl: int) -> tuple[str, Link]:
        """A token for a call from ``user`` to ``to`` (both validated) valid ``ttl`` s."""
        link = Link(user, to, int(self._clock()) + ttl, self._new_nonce())
        payload = _b64(json.dumps([_VERSION, link.user, link.to, link.expires_at, link.nonce],
                                  separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}", link

    def check(self, token: str) -> Link:
        """The link ``token`` names if it is genuine and not expired (not whether used)."""
        payload, dot, mac = token.partition(".")
        if not dot or len(token) > MAX_TOKEN_LENGTH or not hmac.compare_digest(
                mac.encode("ascii", "replace"), self._mac(payload).encode("ascii")):
            raise _invalid()
        try:
            version, user, to, expires_at, nonce = json.loads(_unb64(payload))
        except (ValueError, TypeError, binascii.Error):  # signed by us: cannot happen
            raise _invalid() from None
        if version != _VERSION or not all(isinstance(v, str) for v in (user, to, nonce)) \
                or not isinstance(expires_at, int):
            raise _invalid()
        link = Link(user, to, expires_at, nonce)
        if self._clock() >= link.expires_at:
            raise ApiError(410, "link_expired", "this link has expired: ask for a new one")
        return link

    def used(self, link: Link) -> bool:
        return link.nonce in self._used

    def reserve(self, link: Link) -> None:
        """``link`` is being used: from now on :meth:`used` says so (a second request while
        its call is being placed is refused); :meth:`commit` or :meth:`release` follows."""
        self._used[link.nonce] = float(link.expires_at)

    def commit(self, link: Link) -> None:
        """Its call was placed: used for good, stored until it would have expired."""
        self._store.add_used_link(link.nonce, float(link.expires_at))

    def release(self, link: Link) -> None:
        """Its call was refused (nothing rang): the link may be used again."""
        self._used.pop(link.nonce, None)

    def sweep(self, now: float) -> int:
        """Forget the used links that have expired anyway; how many."""
        gone = [n for n, at in self._used.items() if at <= now]
        for nonce in gone:
            del self._used[nonce]
        return len(gone)

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, _CONTEXT + payload.encode("ascii", "replace"),
                             hashlib.sha256).digest())

