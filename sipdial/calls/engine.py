"""The call engine: owns the live calls and implements the HTTP API's :class:`CallApi`.

It starts click-to-dial calls, accepts (authenticates, routes and bridges) the INVITEs that
registered users send, links a referred INVITE back to the click-to-dial call that caused it,
and writes every state change to the store. Everything runs on the reactor thread; the store
batches its writes onto its own thread.
"""

from __future__ import annotations

import itertools
import logging
import os
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed

from sipdial.api.service import ApiError
from sipdial.authn import Authenticator
from sipdial.calls.autoanswer import AutoAnswerRule, auto_answer_headers
from sipdial.calls.b2bua import BridgedCall, Target
from sipdial.calls.clicktodial import ClickToDial
from sipdial.calls.legs import UasLeg
from sipdial.calls.states import CallState, Input, target_failure_input
from sipdial.config import Config, UserConfig
from sipdial.media.transport import MediaPortsExhausted
from sipdial.registrar import Binding, Registrar
from sipdial.sip.endpoint import peer_for_uri
from sipdial.sip.message import Request, Response
from sipdial.sip.peer import Peer
from sipdial.sip.timers import TimerHeap
from sipdial.sip.transaction import ServerTransaction
from sipdial.sip.uri import URI, NameAddr, SipURI, parse_uri
from sipdial.store.models import CallEvent, CallRecord
from sipdial.ua import UserAgent

if TYPE_CHECKING:
    from sipdial.events.hub import EventHub
    from sipdial.media.prompt import PromptLibrary
    from sipdial.media.transport import MediaManager

log = logging.getLogger("sipdial.calls")

_C2D_PARAM = "x-c2d"
_AWAITING_REFERRED = (CallState.USER_ANSWERED, CallState.CALLING_TARGET,
                      CallState.TARGET_RINGING)


class CallEngine:
    def __init__(self, config: Config, ua: UserAgent, registrar: Registrar,
                 auth: Authenticator, timers: TimerHeap, store: Any,
                 clock: Callable[[], float], kick: Callable[[], None],
                 auto_answer_rules: tuple[AutoAnswerRule, ...],
                 media_ports: dict[int, tuple[str, int]],
                 media: MediaManager | None = None,
                 prompts: PromptLibrary | None = None) -> None:
        self.config = config
        self.ua = ua
        self.registrar = registrar
        self.auth = auth
        self.timers = timers
        self.store = store
        self.clock = clock
        self.kick = kick
        self.rules = auto_answer_rules
        self.media_ports = media_ports  # address family -> (host, port) of the RTP sink
        self.media = media  # sipdial's own RTP (prompts, tones, DTMF); None: REFER only
        self.prompts = prompts
        self.events: EventHub | None = None  # webhooks and SSE, set by the app
        self.overloaded: Callable[[], bool] = lambda: False  # reactor lag check, by the app
        self.domain = config.sip.domain
        self.users: dict[str, UserConfig] = dict(config.users)
        self.calls: dict[str, ClickToDial] = {}
        self.bridges: set[BridgedCall] = set()
        self._sessions = itertools.count(int.from_bytes(os.urandom(3), "big"))
        ua.inbound = self.inbound

    # ------------------------------------------------------------ helpers for flows

    def session_id(self) -> int:
        return next(self._sessions)

    def media_address(self, peer: Peer) -> tuple[str, int]:
        family = 6 if ":" in peer.host else 4
        return self.media_ports.get(family) or next(iter(self.media_ports.values()))

    def auto_answer_headers(self, user_agent: str | None) -> list[tuple[str, str]]:
        return auto_answer_headers(user_agent, local_uri=f"sip:sipdial@{self.domain}",
                                   rules=self.rules)

    def refer_target(self, to: str, phone: Peer, call_id: str) -> str:
        """Refer-To: the target at sipdial, reachable over the transport the phone uses."""
        _host, port = self.ua.endpoint.local_for(phone)
        domain = self.domain
        hostport = domain if port == 5060 and phone.transport == "udp" else f"{domain}:{port}"
        if ":" in domain and not domain.startswith("["):
            hostport = f"[{domain}]:{port}"
        user = to.removeprefix("sip:").split("@", 1)[0]
        transport = "" if phone.transport == "udp" else f";transport={phone.transport}"
        return f"sip:{user}@{hostport}{transport};{_C2D_PARAM}={call_id}"

    def persist(self, record: CallRecord, event: CallEvent) -> None:
        self.store.save_call(record)
        self.store.add_event(record.id, event)
        if self.events is not None:
            self.events.publish(record, event)

    def call_ended(self, call: ClickToDial) -> None:
        self.calls.pop(call.id, None)

    def bridge_ended(self, bridge: BridgedCall) -> None:
        self.bridges.discard(bridge)

    def sweep(self, now: float) -> int:
        """Hang up what has been up longer than ``calls.max_duration`` (a BYE that never
        arrived must not keep a call in memory forever). Returns how many."""
        limit = now - self.config.calls.max_duration
        old = [c for c in self.calls.values() if c.record.created_at < limit]
        for call in old:
            call.fire(Input.CANCEL, now, detail="maximum call duration reached")
        stale = [b for b in self.bridges if b.started_at < limit]
        for bridge in stale:
            bridge.release(now)
        if old or stale:
            self.kick()
        return len(old) + len(stale)

    def shut_down(self) -> None:
        """Release every call before the process stops (CANCEL/BYE go out now)."""
        now = self.clock()
        for call in list(self.calls.values()):
            call.shut_down(now)
        for bridge in list(self.bridges):
            bridge.release(now)
        self.kick()

    # ------------------------------------------------------------ CallApi

    def create_call(self, *, user: str, to: str, device: str | None,
                    auto_answer: bool | None, mode: str | None, confirm: bool | None = None,
                    caller_id: str | None = None,
                    clir: bool | None = None) -> Deferred[dict[str, Any]]:
        try:
            call = self._create(user, to, device, auto_answer, mode, confirm, caller_id, clir)
        except ApiError as exc:
            return fail(exc)
        return succeed(call.record.to_json())

    def _create(self, user: str, to: str, device: str | None, auto_answer: bool | None,
                mode: str | None, confirm: bool | None, caller_id: str | None,
                clir: bool | None) -> ClickToDial:
        mode = mode or self.config.calls.default_mode
        profile = self.users.get(user)
        if profile is None:
            raise ApiError(404, "unknown_user", f"no user {user!r}")
        if confirm is None:
            confirm = profile.confirm if profile.confirm is not None \
                else self.config.calls.confirm
        if (mode == "bridge" or confirm) and (self.media is None or self.prompts is None):
            raise ApiError(422, "media_unavailable",
                           "bridge mode and the confirmation prompt need sipdial's media "
                           "(RTP) support, which is not running")
        if len(self.calls) >= self.config.calls.max_concurrent:
            raise ApiError(503, "overloaded", "too many calls in progress")
        if self.overloaded():
            raise ApiError(503, "overloaded", "sipdial is running behind; retry shortly")
        now = self.clock()
        bindings = self.registrar.contacts(user, now)
        if not bindings:
            raise ApiError(409, "user_not_registered",
                           f"user {user} has no registered device")
        if device is not None:
            bindings = [b for b in bindings if device in (b.device, b.contact, b.instance)
                        or (b.user_agent is not None and device.lower() in b.user_agent.lower())]
            if not bindings:
                raise ApiError(409, "device_not_registered",
                               f"user {user} has no registered device {device!r}")
            bindings = bindings[:1]
        wants_auto = profile.auto_answer if auto_answer is None else auto_answer
        record = CallRecord(id=uuid.uuid4().hex, user=user, to=to, mode=mode,
                            state=CallState.CALLING_USER.value, cause=None, created_at=now,
                            ended_at=None, auto_answer=wants_auto and len(bindings) == 1)
        event = CallEvent(CallState.CALLING_USER.value, now, None,
                          f"{len(bindings)} device(s)")
        record.events.append(event)
        call = ClickToDial(self, record, bindings, wants_auto, confirm=confirm,
                           language=profile.language or self.config.calls.language,
                           caller_id=caller_id, clir=profile.clir if clir is None else clir)
        try:
            call.open_media()
        except MediaPortsExhausted:
            raise ApiError(503, "media_ports_exhausted",
                           "no free RTP port for the call; retry shortly") from None
        self.persist(record, event)
        self.calls[record.id] = call
        try:
            call.start(now)
        except Exception:  # a bug or an unroutable device: the call fails, visibly
            log.exception("call %s could not start", record.id)
            call.fire(Input.FAILED, now, detail="could not start the call")
        self.kick()
        return call

    def get_call(self, call_id: str) -> Deferred[dict[str, Any] | None]:
        live = self.calls.get(call_id)
        if live is not None:
            return succeed(live.record.to_json())
        d: Deferred[CallRecord | None] = self.store.get_call(call_id)
        return d.addCallback(lambda rec: rec.to_json() if rec is not None else None)

    def list_calls(self, *, user: str | None, state: str | None,
                   limit: int) -> Deferred[list[dict[str, Any]]]:
        d: Deferred[list[CallRecord]] = self.store.list_calls(user=user, state=state,
                                                              limit=limit)
        return d.addCallback(lambda recs: [self._fresh(r).to_json() for r in recs])

    def _fresh(self, record: CallRecord) -> CallRecord:
        live = self.calls.get(record.id)
        return live.record if live is not None else record

    def hangup_call(self, call_id: str) -> Deferred[dict[str, Any]]:
        live = self.calls.get(call_id)
        if live is not None:
            live.hang_up(self.clock())
            self.kick()
            return succeed(live.record.to_json())

        def ended(rec: CallRecord | None) -> dict[str, Any]:
            if rec is None:
                raise ApiError(404, "not_found", f"no call {call_id}")
            return rec.to_json()

        d: Deferred[CallRecord | None] = self.store.get_call(call_id)
        return d.addCallback(ended)

    def list_registrations(self, user: str | None) -> list[dict[str, Any]]:
        now = self.clock()
        bindings = self.registrar.contacts(user, now) if user else self.registrar.all(now)
        return [b.to_json(now) for b in bindings]

    def known_user(self, user: str) -> bool:
        return user in self.users

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "calls": len(self.calls), "bridges": len(self.bridges),
                "registrations": len(self.registrar.all(self.clock()))}

    # ------------------------------------------------------------ inbound INVITE

    def inbound(self, request: Request, txn: ServerTransaction, source: Peer,
                now: float) -> None:
        """A new INVITE from a phone: authenticate (407), route, bridge."""
        endpoint = self.ua.endpoint
        outcome = self.auth.check(request, now, proxy=True)
        if isinstance(outcome, Response):
            endpoint.respond(txn, outcome, now)
            return
        user = self.users.get(outcome)
        if user is None:
            endpoint.reply(txn, 403, now)
            return
        uri = request.uri
        number = uri.user if isinstance(uri, SipURI) else None
        if not number:
            endpoint.reply(txn, 404, now, reason="No number in Request-URI")
            return
        c2d = self._correlate(uri, user.id, number, now)
        if c2d is None and isinstance(uri, SipURI) and uri.params.get(_C2D_PARAM):
            # the referred call of a click-to-dial call that has ended meanwhile
            endpoint.reply(txn, 487, now, reason="Click-to-dial call is over")
            return
        target = self.route(number, now)
        if target is None:
            endpoint.reply(txn, 404, now, reason="No route")
            return
        if isinstance(target, int):
            endpoint.reply(txn, target, now)
            if c2d is not None:
                c2d.target_event(target_failure_input(target), now, target, "no device")
            return
        caller_uri = SipURI("sip", user.number or user.id, None, self.domain, None, {}, {})
        caller = NameAddr(caller_uri, user.name or None)
        callee = NameAddr(_public_uri(target[0].uri, number, self.domain))
        a = UasLeg(self.ua, _Pending(), txn, source, label=f"{user.id}->{number}")
        bridge = BridgedCall(self, a, targets=target, caller=caller, callee=callee, c2d=c2d)
        self.bridges.add(bridge)
        if c2d is not None:
            c2d.attach(bridge)
        try:
            bridge.start(now)
        except Exception:  # e.g. a route over a transport sipdial does not listen on
            log.exception("could not call %s for %s", number, user.id)
            bridge.release(now)
            if not txn.answered:
                endpoint.reply(txn, 503, now)
            if c2d is not None:
                c2d.target_event(Input.TARGET_FAILED, now, 503, "could not call the target")

    def _correlate(self, uri: URI, user: str, number: str, now: float) -> ClickToDial | None:
        """Which click-to-dial call (if any) this INVITE is the referred call of."""
        if isinstance(uri, SipURI):
            call_id = uri.params.get(_C2D_PARAM)
            if call_id:
                call = self.calls.get(call_id)
                if call is not None and call.record.user == user and call.bridge is None:
                    return call
        for call in self.calls.values():
            # fallback: a phone that dropped the URI parameter
            if (call.record.user == user and call.bridge is None
                    and call.state in _AWAITING_REFERRED
                    and call.record.to.removeprefix("sip:").split("@", 1)[0] == number):
                return call
        return None

    def route(self, number: str, now: float) -> list[Target] | int | None:
        """Where a number goes: every device of a local user (forked), else the first
        matching route; 480 for a local user with no device, None for no route."""
        if number in self.users:
            bindings: list[Binding] = self.registrar.contacts(number, now)
            if not bindings:
                return 480
            return [Target(parse_uri(b.contact), b.peer, None, b.device) for b in bindings]
        for route in self.config.routes:
            if route.match.search(number):
                uri = parse_uri(route.target_uri(number))
                creds = (route.username, route.password) \
                    if route.username and route.password is not None else None
                return [Target(uri, peer_for_uri(uri), creds, "route")]
        return None


def _public_uri(uri: URI, number: str, domain: str) -> URI:
    """The To of the B leg: the number at our domain for a device (its Contact is private),
    the route's URI as it is otherwise."""
    if isinstance(uri, SipURI) and uri.user == number:
        return uri
    return SipURI("sip", number, None, domain, None, {}, {})


class _Pending:
    """Placeholder owner until the BridgedCall takes the leg over in its constructor."""

    def leg_event(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("leg event before the bridge was set up")

