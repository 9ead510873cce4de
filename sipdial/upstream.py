"""sipdial as a SIP account of an office registrar/PBX: the UAC side of REGISTER (sans-IO).

With an ``[upstream]`` section sipdial registers ``sip:USERNAME@DOMAIN`` at ``registrar``
(RFC 3261 §10.2) and keeps it registered; without one nothing here runs (standalone mode).
No sockets and no clock: requests go out through the :class:`~sipdial.sip.Endpoint`'s client
transactions, the time comes in as ``now``, timers are :class:`~sipdial.sip.TimerHeap`
entries::

    reg = UpstreamRegistration(config.upstream, endpoint, timers, resolver)
    reg.start(now)                 # once the transport has its local addresses
    reg.status(now).to_json(now)   # /healthz, GET /v1/upstream
    reg.stop(now)                  # un-REGISTER (Expires: 0) when registered

What it does:

* with an outbound proxy (``[upstream] outbound_proxy``, else ``[sip] outbound_proxy``) the
  REGISTER goes to it with ``Route: <proxy>, <registrar;lr>`` (RFC 3261 §8.1.2; a strict
  proxy per §16.12.1), so the proxy hands it to the registrar;
* the registrar URI (or the proxy's) is resolved by RFC 3263 (the calls'
  :class:`~sipdial.calls.Resolver`);
  on a 503, a timeout (Timer F) or a transport error the next resolved address is tried
  (RFC 3263 §4.3), and every retry resolves again;
* 401/407 are answered with the account's credentials (:func:`~sipdial.sip.answer_challenge`),
  once per challenge; a second challenge for the same request (not ``stale=true``) means
  wrong credentials. Later REGISTERs reuse the nonce (``nc`` counted up) until it is refused;
* 423 Interval Too Brief: asked again with the Min-Expires (RFC 3261 §10.2.8);
* the registration is refreshed at half the lifetime the registrar granted;
* after a failure (403, 404, wrong credentials, no answer from any address, DNS) the next
  attempt waits ``retry_base`` seconds, doubled after each further failure up to
  ``retry_max`` (RFC 5626 §4.5 without the random part: one account, no herd); a 503's
  Retry-After is honoured within ``retry_max``.

The machine is the table :data:`UPSTREAM_TABLE` (STYLE.md §2); an input a state does not
list raises :class:`IllegalUpstreamInput`. One INFO line per change an operator cares about
(registered, failed and when the next attempt is), on the ``sipdial.upstream`` logger.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from sipdial.calls import Resolver, registrar_route
from sipdial.config import UpstreamConfig
from sipdial.sip import (
    AuthError,
    Challenge,
    ClientTransaction,
    Endpoint,
    Headers,
    NameAddr,
    OwnerEvent,
    Peer,
    Request,
    ResolveError,
    Response,
    ResponseReceived,
    SipError,
    SipURI,
    Symbol,
    TimerHandle,
    TimerHeap,
    TransactionTimeout,
    TransportError,
    answer_challenge,
    parse_challenges,
    parse_name_addr_list,
    parse_uri,
    preferred_challenge,
    route_request,
)

__all__ = [
    "UPSTREAM_TABLE",
    "IllegalUpstreamInput",
    "UpstreamAction",
    "UpstreamInput",
    "UpstreamRegistration",
    "UpstreamState",
    "UpstreamStatus",
]

log = logging.getLogger("sipdial.upstream")

#: A registrar that keeps challenging with ``stale=true`` gets this many answers per REGISTER.
MAX_CHALLENGES = 3
#: Shortest refresh interval (s), whatever lifetime the registrar grants.
MIN_REFRESH = 1.0


class UpstreamState(Symbol):
    IDLE = "idle"  # not started
    RESOLVING = "resolving"  # looking up the registrar's addresses (RFC 3263)
    REGISTERING = "registering"  # a REGISTER is out, not registered yet
    REGISTERED = "registered"  # the registrar accepted the binding; a refresh is scheduled
    REFRESHING = "refreshing"  # registered, and the refreshing REGISTER is out
    FAILING = "failing"  # the last attempt failed; the next one is scheduled (back-off)
    STOPPED = "stopped"  # sipdial is stopping (un-REGISTER sent if it was registered)


class UpstreamInput(Symbol):
    START = "start registering"
    RESOLVED = "the registrar's addresses"
    UNRESOLVABLE = "the registrar's name does not resolve"
    ACCEPTED = "2xx to our REGISTER"
    CHALLENGE = "401/407 we can answer (first for this REGISTER, or stale=true)"
    TOO_BRIEF = "423 with a larger Min-Expires"
    NEXT_TARGET = "503, timeout or transport error, and another address to try (RFC 3263 §4.3)"
    NO_ANSWER = "503, timeout or transport error at the last address"
    REJECTED = "any other final response (403, wrong credentials, 404, ...)"
    REFRESH_DUE = "half the granted lifetime has passed"
    RETRY_DUE = "the back-off after a failure has passed"
    STOP = "sipdial is stopping"


class UpstreamAction(Symbol):
    RESOLVE = "look up the registrar's addresses"
    USE_PEERS = "keep the resolved addresses, the first one to try"
    NEXT_PEER = "take the next resolved address, forget its predecessor's nonce"
    SEND_REGISTER = "send a REGISTER (a new transaction, CSeq + 1)"
    SEND_AUTHORIZED = "send the REGISTER again with the challenge answered (RFC 3261 §22.2)"
    USE_MIN_EXPIRES = "ask for the registrar's Min-Expires from now on"
    NOTE_REGISTERED = "record the granted lifetime, reset the back-off, schedule the refresh"
    NOTE_FAILURE = "record the status, count the failure, schedule the next attempt"
    CANCEL_TIMERS = "cancel the refresh / retry timer"
    SEND_UNREGISTER = "send REGISTER with Expires: 0 (best effort, nobody waits for it)"


Us, Ui, Ua = UpstreamState, UpstreamInput, UpstreamAction
UpstreamRow: TypeAlias = tuple[UpstreamState, tuple[UpstreamAction, ...]]
_SENDING = (Us.REGISTERING, Us.REFRESHING)

UPSTREAM_TABLE: dict[tuple[UpstreamState, UpstreamInput], UpstreamRow] = {
    (Us.IDLE, Ui.START): (Us.RESOLVING, (Ua.RESOLVE,)),
    (Us.RESOLVING, Ui.RESOLVED): (Us.REGISTERING, (Ua.USE_PEERS, Ua.SEND_REGISTER)),
    (Us.RESOLVING, Ui.UNRESOLVABLE): (Us.FAILING, (Ua.NOTE_FAILURE,)),
    **{(s, Ui.ACCEPTED): (Us.REGISTERED, (Ua.NOTE_REGISTERED,)) for s in _SENDING},
    **{(s, Ui.CHALLENGE): (s, (Ua.SEND_AUTHORIZED,)) for s in _SENDING},
    **{(s, Ui.TOO_BRIEF): (s, (Ua.USE_MIN_EXPIRES, Ua.SEND_REGISTER)) for s in _SENDING},
    **{(s, Ui.NEXT_TARGET): (s, (Ua.NEXT_PEER, Ua.SEND_REGISTER)) for s in _SENDING},
    **{(s, Ui.NO_ANSWER): (Us.FAILING, (Ua.NOTE_FAILURE,)) for s in _SENDING},
    **{(s, Ui.REJECTED): (Us.FAILING, (Ua.NOTE_FAILURE,)) for s in _SENDING},
    (Us.REGISTERED, Ui.REFRESH_DUE): (Us.REFRESHING, (Ua.SEND_REGISTER,)),
    (Us.FAILING, Ui.RETRY_DUE): (Us.RESOLVING, (Ua.RESOLVE,)),
    # stopping: un-REGISTER only what is registered
    **{(s, Ui.STOP): (Us.STOPPED, (Ua.CANCEL_TIMERS, Ua.SEND_UNREGISTER))
       for s in (Us.REGISTERED, Us.REFRESHING)},
    **{(s, Ui.STOP): (Us.STOPPED, (Ua.CANCEL_TIMERS,))
       for s in (Us.IDLE, Us.RESOLVING, Us.REGISTERING, Us.FAILING, Us.STOPPED)},
    # late: a resolution or a timer that outlived the state it was for
    **{(Us.STOPPED, i): (Us.STOPPED, ()) for i in (Ui.RESOLVED, Ui.UNRESOLVABLE,
                                                    Ui.REFRESH_DUE, Ui.RETRY_DUE)},
}


class IllegalUpstreamInput(RuntimeError):
    """An input the table has no row for: a bug, never the registrar's fault."""


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    """What ``/healthz`` and ``GET /v1/upstream`` show about the registration."""

    state: UpstreamState  #: the machine's state
    registrar: str  #: the configured registrar URI
    aor: str  #: the account registered: ``sip:USERNAME@DOMAIN``
    peer: Peer | None  #: the address the last REGISTER went to
    last_status: int | None  #: the last final status (408 timeout, 503 no transport/DNS)
    last_reason: str | None  #: its reason phrase, or why there was none
    failures: int  #: attempts failed in a row (0 once registered)
    expires_at: float | None  #: when the registration runs out, while registered
    next_attempt_at: float | None  #: when the next REGISTER goes out (refresh or retry)

    @property
    def summary(self) -> str:
        """``registered``, ``registering``, ``failing``, ``idle`` or ``stopped``: a refresh
        under way is still registered; an attempt after failures is still failing."""
        if self.state in (Us.REGISTERED, Us.REFRESHING):
            return "registered"
        if self.state in (Us.RESOLVING, Us.REGISTERING):
            return "failing" if self.failures else "registering"
        return str(self.state.value)

    def to_json(self, now: float) -> dict[str, Any]:
        def left(at: float | None) -> float | None:
            return None if at is None else round(max(0.0, at - now), 1)

        return {
            "state": self.summary,
            "phase": self.state.value,
            "registrar": self.registrar,
            "aor": self.aor,
            "peer": None if self.peer is None else str(self.peer),
            "last_status": self.last_status,
            "last_reason": self.last_reason,
            "failures": self.failures,
            "expires_in": left(self.expires_at),
            "next_attempt_in": left(self.next_attempt_at),
        }


class UpstreamRegistration:
    """One account at one registrar; the transaction owner of its REGISTERs."""

    def __init__(self, config: UpstreamConfig, endpoint: Endpoint, timers: TimerHeap,
                 resolver: Resolver, *, new_id: Callable[[], str] | None = None) -> None:
        self.config = config
        self.endpoint = endpoint
        self.timers = timers
        self.resolver = resolver
        self.state = UpstreamState.IDLE
        self.aor = f"sip:{config.username}@{_host(config.domain)}"
        uri = parse_uri(config.registrar)
        if not isinstance(uri, SipURI):
            raise ValueError(f"upstream registrar is not a SIP URI: {config.registrar}")
        self.registrar_uri = uri
        self.request_uri = SipURI("sips" if uri.scheme == "sips" else "sip", None, None,
                                  config.domain.strip("[]").lower(), None)
        # the preloaded route set: the outbound proxy, then the registrar (RFC 3261 §8.1.2)
        proxy = parse_uri(config.outbound_proxy) if config.outbound_proxy else None
        self.routes: tuple[NameAddr, ...] = () if proxy is None \
            else (NameAddr(proxy), registrar_route(uri))
        routed = route_request(self.request_uri, self.routes)
        first_hop = routed.next_hop if self.routes else uri
        if not isinstance(first_hop, SipURI):
            raise ValueError(f"upstream outbound proxy is not a SIP URI: {first_hop}")
        #: what is resolved (RFC 3263): the registrar, or the outbound proxy
        self.first_hop = first_hop
        self._routed = routed
        #: the Request-URI sent (and digested): a strict outbound proxy's own URI
        self._sent_uri = routed.request_uri
        make_id = new_id or (lambda: os.urandom(8).hex())
        self.call_id = f"{make_id()}@sipdial"  # one Call-ID for every REGISTER (§10.2.4)
        self.from_tag = make_id()
        self.expires = config.expires  # asked for; raised by a 423's Min-Expires
        self.peer: Peer | None = None
        self._alternates: list[Peer] = []
        self._cseq = 0
        self._txn: ClientTransaction | None = None
        self._timer: TimerHandle | None = None
        self._next_at: float | None = None
        self._resolving = 0  # generation of the resolution in flight
        # digest: the last challenge answered (reused with nc + 1), and this REGISTER's count
        self._challenge: tuple[Challenge, str] | None = None
        self._nc = 0
        self._challenges = 0
        self.last_status: int | None = None
        self.last_reason: str | None = None
        self.failures = 0
        self.expires_at: float | None = None
        self._retry_after: float | None = None

    def __repr__(self) -> str:
        return f"<UpstreamRegistration {self.aor} at {self.config.registrar} {self.state.value}>"

    # ------------------------------------------------------------ commands

    def start(self, now: float) -> None:
        """Register (the transport must have added its local addresses to the endpoint)."""
        self._fire(Ui.START, now, None)

    def stop(self, now: float) -> None:
        """sipdial is stopping: cancel the timers, un-REGISTER if registered."""
        self._fire(Ui.STOP, now, None)

    def status(self, now: float) -> UpstreamStatus:
        registered = self.state in (Us.REGISTERED, Us.REFRESHING)
        return UpstreamStatus(
            state=self.state, registrar=self.config.registrar, aor=self.aor, peer=self.peer,
            last_status=self.last_status, last_reason=self.last_reason,
            failures=self.failures,
            expires_at=self.expires_at if registered else None,
            next_attempt_at=self._next_at if self.state in (Us.REGISTERED, Us.FAILING)
            else None)

    # ------------------------------------------------------------ the machine

    def _fire(self, event: UpstreamInput, now: float, arg: object) -> None:
        row = UPSTREAM_TABLE.get((self.state, event))
        if row is None:
            raise IllegalUpstreamInput(f"{self!r}: {event.name} in {self.state.name}")
        self.state, actions = row
        for action in actions:
            self._do(action, now, arg)

    def _do(self, action: UpstreamAction, now: float, arg: object) -> None:
        match action:
            case Ua.RESOLVE:
                self._resolve(now)
            case Ua.USE_PEERS if isinstance(arg, list):
                self.peer, *self._alternates = arg
                self._challenge = None
            case Ua.NEXT_PEER:
                log.info("upstream: no answer (%s %s) from %s; trying %s (RFC 3263 §4.3)",
                         self.last_status, self.last_reason, self.peer, self._alternates[0])
                self.peer = self._alternates.pop(0)
                self._challenge = None  # another server: its own nonces
            case Ua.SEND_REGISTER:
                self._challenges = 0
                self._send_or_fail(now)
            case Ua.SEND_AUTHORIZED if isinstance(arg, Response):
                self._answer(arg)
                self._send_or_fail(now)
            case Ua.USE_MIN_EXPIRES if isinstance(arg, int):
                self.expires = arg
            case Ua.NOTE_REGISTERED if isinstance(arg, Response):
                self._registered(arg, now)
            case Ua.NOTE_FAILURE:
                self._failed(now)
            case Ua.CANCEL_TIMERS:
                self._cancel_timer()
            case Ua.SEND_UNREGISTER:
                try:
                    self._send(now, 0)
                except (LookupError, ValueError):
                    pass
                self._txn = None  # its answer is of no interest any more
                log.info("upstream: un-REGISTER of %s sent to %s", self.aor, self.peer)
            case _:
                raise IllegalUpstreamInput(f"{self!r}: {action.name} with {arg!r}")

    # ------------------------------------------------------------ resolving

    def _resolve(self, now: float) -> None:
        self._resolving += 1
        generation = self._resolving

        def done(result: list[Peer] | ResolveError, when: float) -> None:
            if generation != self._resolving:
                return
            if isinstance(result, ResolveError):
                self._note(503, result.message)
                self._fire(Ui.UNRESOLVABLE, when, result)
            else:
                self._fire(Ui.RESOLVED, when, result)

        self.resolver.resolve(self.first_hop, "udp", done)

    # ------------------------------------------------------------ sending

    def _send_or_fail(self, now: float) -> None:
        """Send the REGISTER; an address sipdial cannot send to (no listener for its
        transport) is a transport error: the next address, else a failure."""
        try:
            self._send(now, self.expires)
        except (LookupError, ValueError) as exc:
            self._txn = None
            self._note(503, f"cannot send to {self.peer}: {exc}")
            self._fire(Ui.NEXT_TARGET if self._alternates else Ui.NO_ANSWER, now, None)

    def _send(self, now: float, expires: int) -> None:
        if self.peer is None:
            raise IllegalUpstreamInput(f"{self!r}: no address to send to")
        self._cseq += 1
        contact = self.endpoint.contact(self.peer, user=self.config.username)
        headers = Headers()
        for route in self._routed.routes:
            headers.add("Route", str(route))
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{self.aor}>;tag={self.from_tag}")
        headers.add("To", f"<{self.aor}>")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self._cseq} REGISTER")
        headers.add("Contact", contact)
        headers.add("Expires", str(expires))
        if self._challenge is not None:
            challenge, header = self._challenge
            self._nc += 1
            try:
                credentials = answer_challenge(
                    challenge, username=self.config.username, password=self.config.password,
                    method="REGISTER", uri=str(self._sent_uri), cnonce=os.urandom(8).hex(),
                    nc=self._nc)
            except AuthError as exc:  # preferred_challenge filters these; never a traceback
                raise ValueError(f"cannot answer the challenge: {exc}") from None
            headers.add(header, credentials.to_header())
        request = Request("REGISTER", self._sent_uri, headers, b"")
        self._txn = self.endpoint.send_request(request, self.peer, now, owner=self)

    def _answer(self, response: Response) -> None:
        """Keep the challenge of a 401/407 (already checked by :meth:`_classify`)."""
        self._challenges += 1
        found = _challenge_of(response)
        if found is None:
            raise IllegalUpstreamInput(f"{self!r}: a challenge without a usable challenge")
        self._challenge = found
        self._nc = 0

    # ------------------------------------------------------------ responses

    def transaction_event(self, event: OwnerEvent, now: float) -> None:
        """The TU hands over every event of our REGISTER transactions."""
        if not isinstance(event, ResponseReceived | TransactionTimeout | TransportError):
            return
        if event.txn is not self._txn or self.state not in _SENDING:
            return  # a late answer of an earlier REGISTER, or the un-REGISTER's
        if isinstance(event, ResponseReceived):
            response = event.response
            if response.status < 200:
                return
            self._txn = None
            self._note(response.status, response.reason)
            self._classify(response, now)
            return
        self._txn = None
        if isinstance(event, TransactionTimeout):
            self._note(408, "no answer (timeout)")
        else:
            self._note(503, "no transport to the registrar")
        self._fire(Ui.NEXT_TARGET if self._alternates else Ui.NO_ANSWER, now, None)

    def _classify(self, response: Response, now: float) -> None:
        status = response.status
        if 200 <= status < 300:
            if self._granted(response) == 0:  # our binding is gone: no refresh every second
                self.last_reason = f"{response.reason} (the registrar granted no lifetime)"
                self._fire(Ui.REJECTED, now, response)
                return
            self._fire(Ui.ACCEPTED, now, response)
        elif status in (401, 407):
            found = _challenge_of(response)
            if found is None:
                self.last_reason = f"{response.reason} (no challenge sipdial can answer)"
                self._fire(Ui.REJECTED, now, response)
            elif self._challenges == 0 or (found[0].stale and self._challenges < MAX_CHALLENGES):
                self._fire(Ui.CHALLENGE, now, response)
            else:
                self.last_reason = f"{response.reason} (credentials refused)"
                self._challenge = None
                self._fire(Ui.REJECTED, now, response)
        elif status == 423:
            minimum = _int_header(response, "Min-Expires")
            if minimum is not None and minimum > self.expires:
                self._fire(Ui.TOO_BRIEF, now, minimum)
            else:
                self._fire(Ui.REJECTED, now, response)
        elif status == 503:
            self._retry_after = _int_header(response, "Retry-After")
            self._fire(Ui.NEXT_TARGET if self._alternates else Ui.NO_ANSWER, now, response)
        else:
            self._fire(Ui.REJECTED, now, response)

    def _note(self, status: int, reason: str) -> None:
        self.last_status = status
        self.last_reason = reason

    def _registered(self, response: Response, now: float) -> None:
        granted = self._granted(response)
        was_registered = self.expires_at is not None
        self.failures = 0
        self._retry_after = None
        self.expires_at = now + granted
        refresh = max(MIN_REFRESH, granted / 2)
        self._schedule(now + refresh, Ui.REFRESH_DUE)
        if not was_registered:
            log.info("upstream: %s registered at %s (%s) for %d s; refresh in %g s",
                     self.aor, self.config.registrar, self.peer, granted, refresh)
        else:
            log.debug("upstream: %s refreshed for %d s", self.aor, granted)

    def _granted(self, response: Response) -> int:
        """The lifetime of our binding: its Contact's expires, else Expires, else asked."""
        mine = self.endpoint.contact(self.peer, user=self.config.username) if self.peer else ""
        try:
            our_uri = str(parse_name_addr_list(mine)[0].uri) if mine else ""
            for value in response.headers.get_all("Contact"):
                for name_addr in parse_name_addr_list(value):
                    if _same_contact(str(name_addr.uri), our_uri):
                        expires = _seconds(name_addr.params.get("expires") or "")
                        if expires is not None:
                            return expires
        except (SipError, ValueError):
            pass
        header = _int_header(response, "Expires")
        return header if header is not None else self.expires

    def _failed(self, now: float) -> None:
        self.failures += 1
        self.expires_at = None
        # the exponent capped: a PBX down for days must not overflow the float (and stop
        # the retries for good)
        delay = min(self.config.retry_max,
                    self.config.retry_base * 2.0 ** min(self.failures - 1, 64))
        if self._retry_after is not None:
            delay = min(self.config.retry_max, max(delay, float(self._retry_after)))
            self._retry_after = None
        self._schedule(now + delay, Ui.RETRY_DUE)
        log.info("upstream: REGISTER of %s at %s failed: %s %s (failure %d); next attempt in "
                 "%g s", self.aor, self.config.registrar, self.last_status, self.last_reason,
                 self.failures, delay)

    # ------------------------------------------------------------ timers

    def _schedule(self, at: float, event: UpstreamInput) -> None:
        self._cancel_timer()
        self._next_at = at

        def due(now: float) -> None:
            self._timer = None
            self._next_at = None
            self._fire(event, now, None)

        self._timer = self.timers.schedule(at, due)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._next_at = None


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _challenge_of(response: Response) -> tuple[Challenge, str] | None:
    """The preferred challenge of a 401/407 and the header that answers it."""
    proxy = response.status == 407
    challenges: list[Challenge] = []
    for value in response.headers.get_all("Proxy-Authenticate" if proxy else "WWW-Authenticate"):
        try:
            challenges.extend(parse_challenges(value))
        except AuthError:
            continue
    challenge = preferred_challenge(challenges)
    if challenge is None:
        return None
    return challenge, "Proxy-Authorization" if proxy else "Authorization"


def _int_header(response: Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None:
        return None
    text = value.split(";", 1)[0].strip()  # Retry-After: 120 (comment);duration=...
    text = text.split("(", 1)[0].strip()
    return _seconds(text)


#: RFC 3261 §25.1 delta-seconds beyond this are taken as this (§20.19: "2**32-1"); kept
#: within a 32-bit signed range so that ``now + seconds`` stays an ordinary float
MAX_SECONDS = 2**31 - 1


def _seconds(text: str) -> int | None:
    """A delta-seconds value from the network: ASCII digits only (``"²".isdigit()`` is true
    and ``int("²")`` raises), at most 10 of them (no 4,300-digit conversion), clamped to
    :data:`MAX_SECONDS`; anything else None."""
    text = text.strip()
    if not text or len(text) > 10 or not (text.isascii() and text.isdigit()):
        return None
    return min(int(text), MAX_SECONDS)


def _same_contact(a: str, b: str) -> bool:
    """RFC 3261 §10.2.4: is the registrar's Contact ours (scheme, user, host, port)?"""
    try:
        ua, ub = parse_uri(a), parse_uri(b)
    except (SipError, ValueError):
        return False
    if not isinstance(ua, SipURI) or not isinstance(ub, SipURI):
        return False
    return (ua.user, ua.host.lower(), ua.port or 5060) == (ub.user, ub.host.lower(),
                                                           ub.port or 5060)
