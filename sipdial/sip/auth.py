"""HTTP Digest authentication for SIP (RFC 7616, RFC 2617, RFC 2069; RFC 3261 §22; RFC 8760).

Sans-IO: nothing here opens a socket or reads a clock. The caller passes ``now`` (seconds,
any monotonic-enough epoch shared by :meth:`NonceManager.make` and :meth:`NonceManager.check`).

Server side (:class:`DigestServer`)
    * :meth:`DigestServer.challenges` gives one challenge per configured algorithm,
      SHA-256 first (RFC 8760 §2.4), all carrying the same nonce. The challenge does not
      depend on who is asking, so unknown users see exactly what known users see.
    * :meth:`DigestServer.verify` accepts qop=auth responses *and* RFC 2069 responses without
      qop/nc/cnonce even though the challenge offered qop (old phones, pyVoIP).
    * Nonces are stateless (:class:`NonceManager`): timestamp + random, HMAC-signed with a
      per-process secret and, optionally, bound to a string (the client's address: a nonce
      answered from another address is "bad"). A validly signed nonce older than
      ``lifetime`` is "stale".
    * Replay: a bounded LRU remembers, per nonce, the highest ``nc`` accepted (qop=auth) or
      that it was used without qop. A qop=auth answer whose ``nc`` does not increase, and any
      second use of a nonce answered without qop (RFC 2069 has no counter, so such nonces are
      single-use), is answered "stale": the caller re-challenges with ``stale=true``, a
      legitimate client retries with the fresh nonce, a replaying attacker gets a challenge it
      cannot answer. When the LRU is full, evicting a nonce raises a floor: an untracked nonce
      issued at or before the newest evicted one counts as used, so eviction never reopens a
      replay (clients at worst get one extra challenge).
      SIP retransmissions never reach this code: the server transaction absorbs them.
    * Results: "ok"; "stale" (right password, old or used nonce); "wrong" (the nonce is ours
      and valid, the response was computed and did not match: a password guess, also for
      unknown users); "bad" (anything that was not a guess: malformed, foreign nonce, wrong
      realm or uri). Callers count "wrong" for :mod:`sipdial.guard`.

Client side (:func:`answer_challenge`) answers a 401/407 from an upstream trunk or registrar.

Errors: every malformed header or unsupported option raises :class:`AuthError`
(a ``SipError`` with status 400 and a ``ValueError``); :meth:`DigestServer.verify` never
raises for bad input, it returns "bad".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from sipdial.sip.errors import SipError

__all__ = [
    "ALGORITHMS",
    "AuthError",
    "Challenge",
    "Credentials",
    "DigestServer",
    "NonceManager",
    "VerifyResult",
    "answer_challenge",
    "digest_response",
    "parse_challenges",
    "preferred_challenge",
]


class AuthError(SipError, ValueError):
    """Malformed Authorization/WWW-Authenticate value or unsupported digest option.

    Both a :class:`~sipdial.sip.errors.SipError` (``status`` 400) and a ``ValueError``.
    A server answers it with a fresh challenge (or 400); a client cannot authenticate.
    """


VerifyResult = Literal["ok", "stale", "bad", "wrong"]

#: Base algorithms a server offers; each also exists as "<name>-sess" (RFC 7616 §3.4.2).
ALGORITHMS = ("MD5", "SHA-256")

class _Hasher(Protocol):
    def hexdigest(self) -> str: ...


_HASHES: dict[str, Callable[[bytes], _Hasher]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}
_CANONICAL_ALGORITHMS = {
    name.lower(): name for base in ALGORITHMS for name in (base, base + "-sess")
}

_MAX_HEADER_LEN = 8192

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
# widened to RFC 7230 tchar ("#" "$" "&" "^" "|") which some HTTP-derived stacks emit.
_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~#$&^|"
)
_WS = " \t"
# RFC 3261 §25.1: LWS = [*WSP CRLF] 1*WSP -- a folded line counts as one space.
_FOLD_RE = re.compile(r"\r?\n[ \t]+")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_NC_RE = re.compile(r"[0-9a-fA-F]{1,8}")


def _canonical_algorithm(name: str) -> str:
    """"md5" -> "MD5", "sha-256-sess" -> "SHA-256-sess"; unknown names are kept as given."""
    return _CANONICAL_ALGORITHMS.get(name.lower(), name)


def _check_text(field_name: str, value: str) -> None:
    """Reject control characters: they cannot be quoted and would allow header injection."""
    for ch in value:
        if (ord(ch) < 0x20 and ch != "\t") or ch == "\x7f":
            raise AuthError(f"control character in {field_name}")


def _check_token(field_name: str, value: str) -> None:
    if not value or not all(ch in _TOKEN_CHARS for ch in value):
        raise AuthError(f"{field_name} must be a token, got {value!r}")


def _quote(value: str) -> str:
    """RFC 3261 quoted-string: backslash-escape '\\' and '"'."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------------------------
# Header grammar (RFC 7235 §2.1 / RFC 3261 §25.1):
#   challenge   = auth-scheme 1*SP [ auth-param *( OWS "," OWS auth-param ) ]
#   auth-param  = token BWS "=" BWS ( token / quoted-string )
#   quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE ;  quoted-pair = "\" CHAR
# Several challenges may share one header value, separated by commas. Parameter names are
# case-insensitive; empty list elements (",,") are tolerated as RFC 7230 §7 asks.
# Unquoted values are accepted up to the next whitespace or comma (some clients send
# uri=sip:host unquoted).


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _read_token(text: str, pos: int) -> tuple[str, int]:
    end = pos
    while end < len(text) and text[end] in _TOKEN_CHARS:
        end += 1
    if end == pos:
        found = repr(text[pos]) if pos < len(text) else "end of header"
        raise AuthError(f"expected a token at offset {pos}, found {found}")
    return text[pos:end], end


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    out: list[str] = []
    pos += 1  # opening quote
    while pos < len(text):
        ch = text[pos]
        if ch == '"':
            return "".join(out), pos + 1
        if ch == "\\":
            pos += 1
            if pos >= len(text):
                break
            ch = text[pos]
        if (ord(ch) < 0x20 and ch != "\t") or ch == "\x7f":
            raise AuthError("control character in quoted string")
        out.append(ch)
        pos += 1
    raise AuthError("unterminated quoted string")


def _read_value(text: str, pos: int) -> tuple[str, int]:
    if pos < len(text) and text[pos] == '"':
        return _read_quoted(text, pos)
    end = pos
    while end < len(text) and 0x21 <= ord(text[end]) <= 0x7E and text[end] not in ',"\\':
        end += 1
    if end == pos:
        raise AuthError(f"missing parameter value at offset {pos}")
    return text[pos:end], end


# Fast path: one well-formed challenge/credentials value (what every client sends) is matched
# by one compiled regex and its parameters read with finditer. The regex accepts a strict
# subset of what the scanner below accepts (no quoted-pairs, no control characters, no empty
# list elements, no second scheme) and splits it the same way; a duplicate parameter, or any
# other shape, goes to the scanner, which gives the result or the precise error.
_TOKEN_RE_CLASS = r"[A-Za-z0-9\-.!%*_+`'~#$&^|]"
_FAST_QUOTED = r'"[^"\\\x00-\x1f\x7f]*"'  # quoted-string without quoted-pairs or CTLs
_FAST_UNQUOTED = r"[\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]+"  # VCHAR except DQUOTE "," "\"
_FAST_PARAM_RE = re.compile(
    rf"(?P<name>{_TOKEN_RE_CLASS}+)[ \t]*=[ \t]*(?:(?P<q>{_FAST_QUOTED})|(?P<u>{_FAST_UNQUOTED}))"
)
_FAST_P = rf"{_TOKEN_RE_CLASS}+[ \t]*=[ \t]*(?:{_FAST_QUOTED}|{_FAST_UNQUOTED})"
_FAST_HEADER_RE = re.compile(
    rf"[ \t]*(?P<scheme>{_TOKEN_RE_CLASS}+)[ \t]+"
    rf"(?P<params>{_FAST_P}(?:[ \t]*,[ \t]*{_FAST_P})*)[ \t]*"
)


def _parse_auth_fast(text: str) -> list[tuple[str, dict[str, str]]] | None:
    m = _FAST_HEADER_RE.fullmatch(text)
    if m is None:
        return None
    params: dict[str, str] = {}
    for p in _FAST_PARAM_RE.finditer(text, m.start("params"), m.end("params")):
        key = p.group("name").lower()
        if key in params:
            return None  # let the scanner report it
        q = p.group("q")
        params[key] = p.group("u") if q is None else q[1:-1]
    return [(m.group("scheme"), params)]


def _parse_auth_header(text: str) -> list[tuple[str, dict[str, str]]]:
    """Split a header value into ``[(scheme, {lower-cased name: value})]``."""
    if len(text) > _MAX_HEADER_LEN:
        raise AuthError(f"authentication header longer than {_MAX_HEADER_LEN} characters")
    if "\n" in text:
        text = _FOLD_RE.sub(" ", text)
    if "\r" in text or "\n" in text or "\x00" in text:
        raise AuthError("CR, LF or NUL in authentication header")
    fast = _parse_auth_fast(text)
    if fast is not None:
        return fast
    return _scan_auth_header(text)


def _scan_auth_header(text: str) -> list[tuple[str, dict[str, str]]]:
    """The character-by-character scanner: every shape the grammar allows, precise errors."""
    result: list[tuple[str, dict[str, str]]] = []
    params: dict[str, str] | None = None
    need_param = False  # just read a scheme: a parameter must follow
    pos = _skip(text, 0, _WS)
    while True:
        pos = _skip(text, pos, _WS)
        if pos >= len(text):
            break
        if text[pos] == ",":
            if need_param:
                raise AuthError("auth scheme without parameters")
            pos += 1
            continue
        name, pos = _read_token(text, pos)
        after = _skip(text, pos, _WS)
        if after < len(text) and text[after] == "=":
            if params is None:
                raise AuthError("parameter before the auth scheme")
            key = name.lower()
            if key in params:
                raise AuthError(f"duplicate parameter {key!r}")
            pos = _skip(text, after + 1, _WS)
            params[key], pos = _read_value(text, pos)
            need_param = False
            pos = _skip(text, pos, _WS)
            if pos < len(text) and text[pos] != ",":
                raise AuthError(f"expected ',' after parameter {key!r} at offset {pos}")
        else:
            if need_param:
                raise AuthError(f"auth scheme {result[-1][0]!r} without parameters")
            params = {}
            result.append((name, params))
            need_param = True
            pos = after
    if need_param:
        raise AuthError(f"auth scheme {result[-1][0]!r} without parameters")
    if not result:
        raise AuthError("empty authentication header")
    return result


def _single_digest(text: str) -> dict[str, str]:
    parsed = _parse_auth_header(text)
    if len(parsed) != 1:
        raise AuthError(f"expected one Digest value, found {len(parsed)} auth schemes")
    scheme, params = parsed[0]
    if scheme.lower() != "digest":
        raise AuthError(f"unsupported auth scheme {scheme!r}")
    return params


def _require(params: dict[str, str], *names: str) -> None:
    missing = [name for name in names if name not in params]
    if missing:
        raise AuthError("missing digest parameter(s): " + ", ".join(missing))


# --------------------------------------------------------------------------------------------
# Messages


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest value."""

    realm: str
    nonce: str
    #: canonical spelling ("MD5", "SHA-256-sess"); unknown algorithms are kept as received
    algorithm: str = "MD5"
    #: offered qop values, lower-case; () for an RFC 2069 challenge
    qop: tuple[str, ...] = ("auth",)
    opaque: str | None = None
    stale: bool = False

    def __post_init__(self) -> None:
        _check_text("realm", self.realm)
        _check_text("nonce", self.nonce)
        _check_token("algorithm", self.algorithm)
        for value in self.qop:
            _check_token("qop", value)
        if self.opaque is not None:
            _check_text("opaque", self.opaque)

    @classmethod
    def parse(cls, header: str) -> Challenge:
        """Parse one Digest challenge; raises :class:`AuthError`."""
        return cls._from_params(_single_digest(header))

    @classmethod
    def _from_params(cls, params: dict[str, str]) -> Challenge:
        _require(params, "realm", "nonce")
        qop = tuple(
            part.strip().lower() for part in params.get("qop", "").split(",") if part.strip()
        )
        stale = params.get("stale", "false").lower()
        if stale not in ("true", "false"):
            raise AuthError(f"stale must be true or false, got {params['stale']!r}")
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=_canonical_algorithm(params.get("algorithm", "MD5")),
            qop=qop,
            opaque=params.get("opaque"),
            stale=stale == "true",
        )

    def to_header(self) -> str:
        parts = [
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"algorithm={self.algorithm}",
        ]
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        return "Digest " + ", ".join(parts)


def parse_challenges(header: str) -> list[Challenge]:
    """All Digest challenges in one header value (``Digest ..., Digest ...``).

    Challenges of other schemes are skipped; raises :class:`AuthError` if the value is
    malformed or holds no Digest challenge.
    """
    found = [
        Challenge._from_params(params)
        for scheme, params in _parse_auth_header(header)
        if scheme.lower() == "digest"
    ]
    if not found:
        raise AuthError("no Digest challenge in header")
    return found


def preferred_challenge(challenges: Sequence[Challenge]) -> Challenge | None:
    """The strongest challenge this module can answer (SHA-256 over MD5, RFC 8760 §2.4),
    preferring qop=auth over RFC 2069 at equal strength; ``None`` if none is usable."""
    ranked: list[tuple[int, int, int, Challenge]] = []
    for index, challenge in enumerate(challenges):
        base = challenge.algorithm.removesuffix("-sess")
        if base not in _HASHES:
            continue
        if challenge.qop and "auth" not in challenge.qop:
            continue  # only auth-int offered
        if challenge.algorithm.endswith("-sess") and not challenge.qop:
            continue  # -sess needs a cnonce, which only exists with qop
        strength = ALGORITHMS.index(base)
        ranked.append((-strength, 0 if challenge.qop else 1, index, challenge))
    return min(ranked)[3] if ranked else None


@dataclass(frozen=True, slots=True)
class Credentials:
    """One ``Authorization`` / ``Proxy-Authorization`` Digest value."""

    username: str
    realm: str
    nonce: str
    uri: str
    #: hex digest as received
    response: str
    algorithm: str = "MD5"
    #: "auth" (or whatever token the client sent); None for an RFC 2069 response
    qop: str | None = None
    #: nonce count exactly as on the wire (8 hex digits, e.g. "00000001")
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    def __post_init__(self) -> None:
        for name in ("username", "realm", "nonce", "uri"):
            _check_text(name, getattr(self, name))
        if not _HEX_RE.fullmatch(self.response):
            raise AuthError("response must be hexadecimal")
        _check_token("algorithm", self.algorithm)
        if self.qop is not None:
            _check_token("qop", self.qop)
            if self.nc is None or self.cnonce is None:
                raise AuthError("qop requires nc and cnonce")
        if self.nc is not None and not _NC_RE.fullmatch(self.nc):
            raise AuthError(f"nc must be 1-8 hex digits, got {self.nc!r}")
        if self.cnonce is not None:
            _check_text("cnonce", self.cnonce)
        if self.opaque is not None:
            _check_text("opaque", self.opaque)

    @classmethod
    def parse(cls, header: str) -> Credentials:
        """Parse an Authorization / Proxy-Authorization Digest value; raises AuthError."""
        params = _single_digest(header)
        _require(params, "username", "realm", "nonce", "uri", "response")
        qop = params.get("qop")
        return cls(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"],
            algorithm=_canonical_algorithm(params.get("algorithm", "MD5")),
            qop=qop.lower() if qop is not None else None,
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
            opaque=params.get("opaque"),
        )

    def to_header(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
            f"algorithm={self.algorithm}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")  # a token in credentials, unquoted (RFC 7616)
        if self.nc is not None:
            parts.append(f"nc={self.nc}")
        return "Digest " + ", ".join(parts)


# --------------------------------------------------------------------------------------------
# The computation (RFC 7616 §3.4.1-3.4.3; RFC 2069 when qop is None)


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: int | str | None = None,
    cnonce: str | None = None,
) -> str:
    """The lower-case hex ``response`` value.

    ``nc`` may be an int (formatted as 8 hex digits) or the string exactly as on the wire.
    Raises :class:`AuthError` for an unknown algorithm, qop other than "auth" (auth-int is
    not supported), qop without nc/cnonce, or a -sess algorithm without cnonce.
    """
    canonical = _canonical_algorithm(algorithm)
    base = canonical.removesuffix("-sess")
    hash_fn = _HASHES.get(base)
    if hash_fn is None:
        raise AuthError(f"unsupported digest algorithm {algorithm!r}")

    def h(text: str) -> str:
        return hash_fn(text.encode("utf-8")).hexdigest()

    if qop is not None and qop.lower() != "auth":
        raise AuthError(f"unsupported qop {qop!r} (only 'auth' and no qop)")
    ha1 = h(f"{username}:{realm}:{password}")
    if canonical.endswith("-sess"):
        if cnonce is None:
            raise AuthError(f"{canonical} needs a cnonce (and therefore qop)")
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise AuthError("qop=auth needs nc and cnonce")
    nc_text = _format_nc(nc) if isinstance(nc, int) else nc
    return h(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")


def _format_nc(nc: int) -> str:
    if not 1 <= nc <= 0xFFFFFFFF:
        raise AuthError(f"nc out of range: {nc}")
    return f"{nc:08x}"


# --------------------------------------------------------------------------------------------
# Server


class NonceManager:
    """Stateless server nonces: ``base64url(ms_timestamp[8] | random[8] | HMAC-SHA256[16])``.

    The HMAC (keyed with ``secret``) proves the nonce came from this process; the embedded
    timestamp gives it a lifetime without a table. Restarting with a new secret makes every
    outstanding nonce "bad", so clients are simply re-challenged.
    """

    _TS_LEN = 8
    _RAND_LEN = 8
    _MAC_LEN = 16
    #: nonces stamped this far in the future are still accepted (clock adjustments)
    _FUTURE_SKEW = 5.0

    def __init__(
        self,
        secret: bytes,
        lifetime: float = 300.0,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("nonce secret must be at least 16 bytes")
        if lifetime <= 0:
            raise ValueError("nonce lifetime must be positive")
        self._secret = secret
        self.lifetime = lifetime
        self._random_bytes = random_bytes

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()[: self._MAC_LEN]

    def make(self, now: float, bind: str = "") -> str:
        """A fresh nonce, stamped ``now``, valid only with the same ``bind`` (a client
        address: the MAC covers it, the nonce does not carry it)."""
        stamp = max(0, int(now * 1000)).to_bytes(self._TS_LEN, "big")
        body = stamp + self._random_bytes(self._RAND_LEN)
        mac = self._mac(body + bind.encode("utf-8", "surrogatepass"))
        return base64.urlsafe_b64encode(body + mac).decode("ascii").rstrip("=")

    def issued(self, nonce: str) -> float:
        """When a nonce that :meth:`check` accepted was made (seconds)."""
        raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        return int.from_bytes(raw[: self._TS_LEN], "big") / 1000

    def check(self, nonce: str, now: float, bind: str = "") -> VerifyResult:
        """``"ok"``; ``"stale"`` once older than ``lifetime``; ``"bad"`` if forged, made with
        another secret or another ``bind``, malformed or stamped in the future."""
        expected_len = self._TS_LEN + self._RAND_LEN + self._MAC_LEN
        if len(nonce) != (expected_len * 4 + 2) // 3 or not nonce.isascii():
            return "bad"
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return "bad"
        if len(raw) != expected_len:
            return "bad"
        body, mac = raw[: -self._MAC_LEN], raw[-self._MAC_LEN :]
        if not hmac.compare_digest(mac, self._mac(body + bind.encode("utf-8", "surrogatepass"))):
            return "bad"
        issued = int.from_bytes(body[: self._TS_LEN], "big") / 1000
        if issued > now + self._FUTURE_SKEW:
            return "bad"
        if now - issued > self.lifetime:
            return "stale"
        return "ok"


class DigestServer:
    """Challenge and verify for one realm. See the module docstring for the replay policy.

    ``lookup_password(user)`` is the user's password or None for an unknown user (who gets the
    same challenge and the same work as a known one). ``max_tracked_nonces`` bounds the LRU of
    the nonces used (highest ``nc`` per nonce, or used without qop).
    """

    def __init__(
        self,
        realm: str,
        lookup_password: Callable[[str], str | None],
        nonces: NonceManager,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        *,
        opaque: str | None = None,
        max_tracked_nonces: int = 4096,
    ) -> None:
        if not algorithms:
            raise ValueError("at least one algorithm is required")
        canonical = []
        for name in algorithms:
            algorithm = _canonical_algorithm(name)
            if algorithm.removesuffix("-sess") not in _HASHES:
                raise ValueError(f"unsupported digest algorithm {name!r}")
            canonical.append(algorithm)
        _check_text("realm", realm)
        self.realm = realm
        self.algorithms: tuple[str, ...] = tuple(canonical)
        self.opaque = opaque
        self._lookup_password = lookup_password
        self._nonces = nonces
        # Unknown users are verified against this, so both paths do the same work.
        self._dummy_password = base64.b64encode(os.urandom(18)).decode("ascii")
        self._max_tracked = max_tracked_nonces
        #: nonce -> (issued, highest nc accepted; _USED_WITHOUT_QOP after an RFC 2069 answer)
        self._used: OrderedDict[str, tuple[float, int]] = OrderedDict()
        #: untracked nonces issued at or before this may have been evicted: treated as used
        self._floor = float("-inf")

    def challenges(self, now: float, stale: bool = False, *, bind: str = "") -> list[Challenge]:
        """One challenge per algorithm, in configured order (SHA-256 first by default),
        sharing one fresh nonce (bound to ``bind``). Identical for every user."""
        nonce = self._nonces.make(now, bind)
        return [
            Challenge(
                realm=self.realm,
                nonce=nonce,
                algorithm=algorithm,
                qop=("auth",),
                opaque=self.opaque,
                stale=stale,
            )
            for algorithm in self.algorithms
        ]

    def verify(
        self, header_value: str, method: str, now: float, *, uri: str | None = None,
        bind: str = "",
    ) -> tuple[VerifyResult, str | None]:
        """Check an Authorization / Proxy-Authorization value.

        Returns ``("ok", username)``; ``("stale", username)`` when the digest is right but the
        nonce expired or was used up (re-challenge with ``stale=True``); ``("wrong",
        username)`` when the digest was computed and is wrong (a guess; known and unknown
        users alike); or ``("bad", None)`` for anything else, malformed headers included.
        ``uri``, when given, is the Request-URI the digest-uri must equal (RFC 3261 §22.4;
        compared case-insensitively, since SIP clients differ in the case of scheme and
        host). ``bind`` is what the nonce was made with (:meth:`challenges`).
        """
        try:
            creds = Credentials.parse(header_value)
        except AuthError:
            return "bad", None
        return self.verify_credentials(creds, method, now, uri=uri, bind=bind)

    def verify_credentials(
        self, creds: Credentials, method: str, now: float, *, uri: str | None = None,
        bind: str = "",
    ) -> tuple[VerifyResult, str | None]:
        """:meth:`verify` for credentials already parsed."""
        if creds.realm != self.realm or creds.algorithm not in self.algorithms:
            return "bad", None
        if uri is not None and creds.uri != uri and creds.uri.lower() != uri.lower():
            return "bad", None
        if self.opaque is not None and creds.opaque != self.opaque:
            return "bad", None
        if creds.qop not in (None, "auth"):
            return "bad", None  # auth-int or unknown: never offered
        if creds.qop is None and creds.algorithm.endswith("-sess"):
            return "bad", None
        nonce_state = self._nonces.check(creds.nonce, now, bind)
        if nonce_state == "bad":
            return "bad", None

        password = self._lookup_password(creds.username)
        known = password is not None
        expected = digest_response(
            algorithm=creds.algorithm,
            username=creds.username,
            realm=self.realm,
            password=password if password is not None else self._dummy_password,
            method=method,
            uri=creds.uri,
            nonce=creds.nonce,
            qop=creds.qop,
            nc=creds.nc,
            cnonce=creds.cnonce,
        )
        matches = hmac.compare_digest(expected, creds.response.lower())
        if not (matches and known):
            return "wrong", creds.username
        if nonce_state == "stale":
            return "stale", creds.username
        nc = int(creds.nc, 16) if creds.nc is not None else _USED_WITHOUT_QOP
        if not self._use(creds.nonce, nc):
            return "stale", creds.username
        return "ok", creds.username

    def _use(self, nonce: str, nc: int) -> bool:
        """Record a use of ``nonce`` with counter ``nc`` (_USED_WITHOUT_QOP: RFC 2069, no
        counter); False if it is a replay: nc not above the last, or the nonce used up."""
        entry = self._used.get(nonce)
        if entry is None:
            issued = self._nonces.issued(nonce)
            if issued <= self._floor:
                return False  # may have been used and evicted
        else:
            issued, last = entry
            if last == _USED_WITHOUT_QOP or nc <= last:
                return False
        self._used[nonce] = (issued, nc)
        self._used.move_to_end(nonce)
        while len(self._used) > self._max_tracked:
            _, (evicted_issued, _) = self._used.popitem(last=False)
            self._floor = max(self._floor, evicted_issued)
        return True


#: the "nc" recorded for a nonce answered without qop: above every real nc (8 hex digits)
_USED_WITHOUT_QOP = 1 << 32


# --------------------------------------------------------------------------------------------
# Client


def answer_challenge(
    challenge: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
) -> Credentials:
    """Credentials for an upstream 401/407 challenge.

    qop=auth with ``cnonce``/``nc`` when offered; RFC 2069 style when the challenge has no
    qop. Raises :class:`AuthError` if only auth-int is offered, the algorithm is unknown, or a
    -sess algorithm comes without qop. ``nc`` counts requests made with this nonce (from 1).
    """
    if challenge.qop and "auth" not in challenge.qop:
        raise AuthError(f"no supported qop offered ({', '.join(challenge.qop)}); need 'auth'")
    use_qop = "auth" if challenge.qop else None
    nc_text = _format_nc(nc) if use_qop else None
    response = digest_response(
        algorithm=challenge.algorithm,
        username=username,
        realm=challenge.realm,
        password=password,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        qop=use_qop,
        nc=nc_text,
        cnonce=cnonce if use_qop else None,
    )
    return Credentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        qop=use_qop,
        nc=nc_text,
        cnonce=cnonce if use_qop else None,
        opaque=challenge.opaque,
    )
