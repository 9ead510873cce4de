"""The call registry: starts click-to-dial calls, keeps the live ones, writes every state
change to the store and publishes it.

Everything runs on one thread (the reactor's); nothing here does I/O. The store and the event
publisher are passed in as protocols (:class:`CallStore`, :class:`EventSink`); so is the
reactor-lag check that refuses new calls when sipdial runs behind (:class:`LoadGauge`).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sipdial.calls.autoanswer import AutoAnswerRule
from sipdial.calls.bridging import Bridge
from sipdial.calls.clicktodial import C2D_PARAM, CallEnv, ClickToDial, Options
from sipdial.calls.media import CallMedia, MediaPort, PromptSource
from sipdial.calls.policy import Policy
from sipdial.calls.routing import (
    Destination,
    Resolver,
    Router,
    Target,
    Unavailable,
    escape_user,
)
from sipdial.calls.states import CallState, Cause, Input, Mode
from sipdial.media import MediaPortsExhausted
from sipdial.numbers import InvalidNumber, NumberPlan, complete
from sipdial.registrar import Binding, Registrar
from sipdial.sip import URI, SipURI
from sipdial.store import CallEvent, CallRecord, Metadata
from sipdial.ua import UserAgent

if TYPE_CHECKING:
    from sipdial.config import Config, UserConfig

__all__ = [
    "CallRefused",
    "CallRequest",
    "CallService",
    "CallStore",
    "EventSink",
    "LoadGauge",
    "ReferralWatch",
    "Refusal",
]

log = logging.getLogger("sipdial.calls")

_SEPARATORS = re.compile(r"[\s\-./()]")
_DIGITS = re.compile(r"\+?[0-9]+")
MAX_EXTRA_HEADERS = 10  #: a request's own headers at most
MAX_HEADER_VALUE = 256  #: characters in each value

#: seconds a REFER-mode call stays in the workers' referral table after it connected or
#: ended (RFC 3261 Timer B/F: 64*T1 with the default T1)
REFERRAL_LINGER = 32.0


class CallStore(Protocol):
    """Where calls are written (:class:`sipdial.store.SqliteStore`): queued, never blocking."""

    def save_call(self, call: CallRecord) -> None: ...

    def add_event(self, call_id: str, event: CallEvent) -> None: ...


class EventSink(Protocol):
    """Who hears of every state change (:class:`sipdial.events.EventHub`: SSE, webhooks)."""

    def publish(self, record: CallRecord, event: CallEvent) -> None: ...


class ReferralWatch(Protocol):
    """With workers: who is told which REFER-mode call waits for its phone's referred INVITE
    (the user and the Refer-To's number, escaped as on the wire), so that an INVITE whose
    phone dropped the Refer-To's ``x-c2d`` still reaches this worker (sipdial.sip.Referrals,
    kept over the mesh by sipdial.app)."""

    def waiting(self, call_id: str, user: str, number: str) -> None: ...

    def done(self, call_id: str) -> None: ...


class LoadGauge(Protocol):
    """Whether sipdial is too far behind to take a new call (the reactor-lag monitor)."""

    def overloaded(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class CallRequest:
    """A click-to-dial request, validated by the HTTP layer (or the CLI)."""

    user: str
    to: str  #: a number, an extension or a sip:/sips: URI
    device: str | None = None  #: ring only this device (contact, instance or User-Agent part)
    auto_answer: bool | None = None  #: None: the user's setting
    mode: Mode | None = None  #: None: [calls] default_mode
    confirm: bool | None = None  #: play "press 1" first; None: the user's / config default
    caller_id: str | None = None  #: what the target sees (bridge mode)
    clir: bool | None = None  #: hide the caller from the target (bridge mode)
    #: the CRM's correlation data, kept on the call and in its events (validated: a JSON
    #: object of at most MAX_METADATA_BYTES)
    metadata: Metadata | None = None
    #: refuse (409 user_busy) while the user has a click-to-dial call in progress; None: the
    #: user's ``refuse_if_busy``
    refuse_if_busy: bool | None = None
    #: headers for the call's INVITEs (name, value): only names in [calls] extra_headers
    headers: tuple[tuple[str, str], ...] = ()
    #: an external number rung first instead of the user's devices (through [[routes]],
    #: bridge mode; ``"device": "tel:+49..."``, CAMARA's external caller); the user's
    #: policy applies to it as to the target
    first_leg: str | None = None
    #: CAMARA: where the call's CloudEvents go, and the bearer token they carry
    sink: tuple[str, str | None] | None = None
    #: CAMARA: the caller's number as the request named it (a user's own number), kept as
    #: the call's ``caller`` for its CloudEvents
    caller_number: str | None = None


class Refusal(enum.Enum):
    """Why a call was not started."""

    UNKNOWN_USER = "unknown_user"
    USER_NOT_REGISTERED = "user_not_registered"
    DEVICE_NOT_REGISTERED = "device_not_registered"
    INVALID_DESTINATION = "invalid_destination"
    INVALID_NUMBER = "invalid_number"
    DESTINATION_FORBIDDEN = "destination_forbidden"
    RATE_LIMITED = "rate_limited"
    USER_BUSY = "user_busy"
    INVALID_HEADER = "invalid_header"
    NO_ROUTE = "no_route"
    MEDIA_UNAVAILABLE = "media_unavailable"
    MEDIA_PORTS_EXHAUSTED = "media_ports_exhausted"
    OVERLOADED = "overloaded"
    #: the external number rung first: not allowed ([calls] first_leg_allow), no route
    FIRST_LEG_FORBIDDEN = "first_leg_forbidden"
    FIRST_LEG_NO_ROUTE = "first_leg_no_route"


class CallRefused(Exception):
    def __init__(self, refusal: Refusal, message: str, *,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{refusal.value}: {message}")
        self.refusal = refusal
        self.message = message
        self.retry_after = retry_after  #: seconds (a cap of the policy)


class CallObserver(Protocol):
    """Told about every call (``/metrics``: :class:`sipdial.metrics.CallMetrics`)."""

    def started_call(self, record: CallRecord) -> None:
        """A call was created (its first state is recorded next)."""

    def changed(self, record: CallRecord, event: CallEvent) -> None:
        """The call entered ``event.state`` (after it was stored)."""


class _NeverOverloaded:
    def overloaded(self) -> bool:
        return False


class CallService:
    def __init__(self, config: Config, ua: UserAgent, registrar: Registrar, router: Router,
                 store: CallStore, events: EventSink, clock: Callable[[], float], *,
                 auto_answer_rules: tuple[AutoAnswerRule, ...],
                 rtp_sinks: dict[int, tuple[str, int]], resolver: Resolver,
                 media: MediaPort | None = None, prompts: PromptSource | None = None,
                 load: LoadGauge | None = None,
                 referrals: ReferralWatch | None = None,
                 observer: CallObserver | None = None) -> None:
        self.config = config
        self.observer = observer
        self.referrals = referrals
        self._watched: set[str] = set()  # call ids told to ``referrals`` as waiting
        self.policy = Policy(config.policy)  # [[policy]]: destinations and caps
        self._per_user: dict[str, int] = {}  # calls in progress by user
        #: the calls the users' phones place through sipdial (relayed), by user: a REFER
        #: call's referred call goes on after the click-to-dial call ended at the NOTIFY, and
        #: the user is still on the phone (busy, and counted by [[policy]] max_concurrent)
        self._relays: dict[str, set[Bridge]] = {}
        #: every user's relayed calls together, and those of them whose click-to-dial call
        #: is still in progress (counted there) by that call: _in_progress(None) in O(1)
        self._relay_total = 0
        self._referred: dict[str, int] = {}
        self._referred_total = 0
        self.ua = ua
        self.registrar = registrar
        self.router = router
        self.store = store
        self.events = events
        self.clock = clock
        self.media = media  # sipdial's own RTP (prompts, tones, DTMF); None: REFER only
        self.prompts = prompts
        self.load: LoadGauge = load or _NeverOverloaded()
        self.users = dict(config.users)
        self.calls: dict[str, ClickToDial] = {}
        self._sessions = itertools.count(int.from_bytes(os.urandom(3), "big"))
        self.env = CallEnv(ua=ua, timers=ua.timers, config=config.calls,
                           domain=config.sip.domain, router=router, resolver=resolver,
                           auto_answer_rules=auto_answer_rules, rtp_sinks=rtp_sinks,
                           on_change=self._changed, on_end=self._ended, bridges=set())

    def reconfigure(self, config: Config,
                    auto_answer_rules: tuple[AutoAnswerRule, ...]) -> None:
        """A configuration reload: calls started from now on use ``config`` (users, their
        settings, ``[calls]``, ``[[policy]]``, auto-answer rules); calls in progress keep
        what they started with. ``[[policy]]`` entries that are still there keep counting
        their caps' windows (a new or changed entry starts afresh)."""
        self.policy.reconfigure(config.policy)
        self.config = config
        self.users = dict(config.users)
        self.env = dataclasses.replace(self.env, config=config.calls,
                                       auto_answer_rules=auto_answer_rules)

    # ------------------------------------------------------------ starting a call

    def create(self, request: CallRequest) -> ClickToDial:
        """Start a call; raises :class:`CallRefused`."""
        config = self.config
        profile = self.users.get(request.user)
        if profile is None:
            raise CallRefused(Refusal.UNKNOWN_USER, f"no user {request.user!r}")
        mode = request.mode or config.calls.default_mode
        confirm = request.confirm
        if confirm is None:
            confirm = profile.confirm if profile.confirm is not None else config.calls.confirm
        needs_media = mode is Mode.BRIDGE or confirm  # sipdial's own RTP: tones, prompt
        if needs_media and (self.media is None or self.prompts is None):
            raise CallRefused(Refusal.MEDIA_UNAVAILABLE,
                              "bridge mode and the confirmation prompt need sipdial's media "
                              "(RTP) support, which is not running")
        try:
            destination = self.router.destination(request.to, profile.numbers)
        except InvalidNumber as exc:
            raise CallRefused(Refusal.INVALID_NUMBER, f"to: {exc}") from None
        except ValueError as exc:
            raise CallRefused(Refusal.INVALID_DESTINATION, f"to: {exc}") from None
        if not self.router.routable(destination):
            raise CallRefused(Refusal.NO_ROUTE,
                              f"no route to {destination.number!r}: it is no local user and "
                              "no [[routes]] entry matches it")
        # the number, also of a sip: URI destination (its user part, separators gone and
        # completed like a number): "+44" must not be dodged by "sip:+4-4...@gateway"
        refusal = self.policy.check(request.user,
                                    self.policy_number(destination, profile.numbers),
                                    self.clock(), self._in_progress)
        if refusal is not None:
            raise CallRefused(Refusal.DESTINATION_FORBIDDEN if refusal.forbidden
                              else Refusal.RATE_LIMITED, refusal.message,
                              retry_after=refusal.retry_after)
        self._check_headers(request.headers)
        refuse_if_busy = request.refuse_if_busy
        if refuse_if_busy is None:
            refuse_if_busy = profile.refuse_if_busy
        if refuse_if_busy and self._in_progress(request.user):
            raise CallRefused(Refusal.USER_BUSY, f"user {request.user} has a click-to-dial "
                              "call in progress (refuse_if_busy)")
        if len(self.calls) >= config.calls.max_concurrent:
            raise CallRefused(Refusal.OVERLOADED, "too many calls in progress")
        if self.load.overloaded():
            raise CallRefused(Refusal.OVERLOADED, "sipdial is running behind; retry shortly")
        now = self.clock()
        pbx = self.router.pbx
        device = request.device
        first_leg = self._first_leg(request, profile, mode, now)
        bindings: list[Binding]
        if first_leg is not None:
            bindings = []
        elif pbx is not None:
            # PBX mode: the user's phones are registered at the PBX, which forks to them
            if device is not None:
                raise CallRefused(Refusal.DEVICE_NOT_REGISTERED,
                                  "the user's devices are registered at the PBX (sipdial is "
                                  "in PBX mode): no device can be chosen")
            bindings = []
        else:
            bindings = self.registrar.contacts(request.user, now)
            if not bindings:
                raise CallRefused(Refusal.USER_NOT_REGISTERED,
                                  f"user {request.user} has no registered device")
        if device is not None:
            bindings = [b for b in bindings if device in (b.device, b.contact, b.instance)
                        or (b.user_agent is not None and device.lower() in b.user_agent.lower())]
            if not bindings:
                raise CallRefused(Refusal.DEVICE_NOT_REGISTERED,
                                  f"user {request.user} has no registered device {device!r}")
            bindings = bindings[:1]
        wants_auto = profile.auto_answer if request.auto_answer is None else request.auto_answer
        # auto-answer only when exactly one device rings: never answer a forked call for it
        auto_answer = wants_auto and first_leg is None and (pbx is not None or
                                                             len(bindings) == 1)
        options = Options(mode=mode, auto_answer=auto_answer, confirm=confirm,
                          language=profile.language or config.calls.language,
                          caller_id=request.caller_id,
                          clir=profile.clir if request.clir is None else request.clir,
                          headers=tuple((self.config.calls.extra_headers[name.lower()], value)
                                        for name, value in request.headers))
        # the call resource shows the number as dialled: E.164 with [numbers]
        number = destination.number
        to = number if destination.uri is None and number.lstrip("+").isdigit() else request.to
        record = CallRecord(id=self.ua.endpoint.shard.prefix(32), user=request.user, to=to,
                            mode=mode.value, state=CallState.CALLING_USER.value, cause=None,
                            created_at=now, ended_at=None,
                            auto_answer=auto_answer, metadata=request.metadata,
                            caller=first_leg[0] if first_leg is not None
                            else request.caller_number,
                            sink_url=request.sink[0] if request.sink else None,
                            sink_token=request.sink[1] if request.sink else None)
        media = None
        if needs_media and self.media is not None and self.prompts is not None:
            media = CallMedia(self.media, self.prompts, record.id)
            try:
                media.open(self._digit)
            except MediaPortsExhausted:
                raise CallRefused(Refusal.MEDIA_PORTS_EXHAUSTED,
                                  "no free RTP port for the call; retry shortly") from None
        call = ClickToDial(self.env, record, profile, destination, bindings, options, media,
                           next(self._sessions),
                           first_leg=first_leg[1] if first_leg is not None else None)
        rung = (f"{first_leg[0]} first" if first_leg is not None
                else "through the PBX" if pbx is not None else f"{len(bindings)} device(s)")
        event = CallEvent(CallState.CALLING_USER.value, now, None, rung)
        record.events.append(event)
        log.info("call %s user %s: calling_user to=%s mode=%s (%s)", record.id,
                 record.user, record.to, mode.value, rung)
        self.calls[record.id] = call
        self._per_user[record.user] = self._per_user.get(record.user, 0) + 1
        self.policy.started(record.user, now)
        if first_leg is not None:  # two external legs: both count against the caps
            self.policy.started(record.user, now)
        if self.observer is not None:
            self.observer.started_call(record)
        self._changed(record, event)
        unavailable = self._unavailable(destination, now)
        if unavailable is not None:
            # a local extension with no device: nobody is rung for a call that cannot connect
            call.fire(Input.TARGET_UNAVAILABLE, now, 480,
                      f"{unavailable.user} has no registered device")
            return call
        try:
            call.start(now)
        except Exception:  # a bug or an unroutable device: the call fails, visibly
            log.exception("call %s could not start", record.id)
            call.fire(Input.FAILED, now, detail="could not start the call")
        return call

    def _first_leg(self, request: CallRequest, profile: UserConfig, mode: Mode,
                   now: float) -> tuple[str, list[Target]] | None:
        """An external number rung first: (its E.164, where it goes) — through a route,
        never a local user (their devices are rung as usual), bridge mode only, and held
        to the user's [[policy]] patterns like any number the user calls."""
        if request.first_leg is None:
            return None
        if mode is not Mode.BRIDGE:
            raise CallRefused(Refusal.INVALID_DESTINATION, "an external number rung first "
                              "needs bridge mode (a carrier does not act on REFER)")
        try:
            leg = self.router.destination(request.first_leg, profile.numbers)
        except ValueError as exc:  # InvalidNumber too
            raise CallRefused(Refusal.INVALID_NUMBER, f"device: {exc}") from None
        if self.router.is_local_user(leg) or leg.uri is not None:
            raise CallRefused(Refusal.INVALID_DESTINATION,
                              "device: tel: names an external number, not a user")
        # two external legs on one request, and "press 1" answered by whoever picks up the
        # first: only numbers [calls] first_leg_allow names may be rung first
        if not any(p.search(leg.number) for p in self.config.calls.first_leg_allow):
            raise CallRefused(Refusal.FIRST_LEG_FORBIDDEN,
                              f"{leg.number} may not be rung first (not in [calls] "
                              "first_leg_allow)")
        refusal = self.policy.destination_refused(request.user, leg.number)
        if refusal is not None:
            raise CallRefused(Refusal.DESTINATION_FORBIDDEN, refusal)
        routed = self.router.route(leg, now)
        if not isinstance(routed, list):
            raise CallRefused(Refusal.FIRST_LEG_NO_ROUTE, f"no route to {leg.number!r} (the "
                              "number rung first): no [[routes]] entry matches it")
        return leg.number, routed

    def _unavailable(self, destination: Destination, now: float) -> Unavailable | None:
        if not self.router.is_local_user(destination):
            return None
        routed = self.router.route(destination, now)
        return routed if isinstance(routed, Unavailable) else None

    # ------------------------------------------------------------ live calls

    @property
    def count(self) -> int:
        """Click-to-dial calls in progress."""
        return len(self.calls)

    def knows_user(self, user: str) -> bool:
        return user in self.users

    def live(self, call_id: str) -> ClickToDial | None:
        return self.calls.get(call_id)

    def hang_up(self, call_id: str) -> CallRecord | None:
        """Cancel or hang up a live call; None if it is not live (ended or unknown)."""
        call = self.calls.get(call_id)
        if call is None:
            return None
        call.hang_up(self.clock())
        return call.record

    def referred_call_of(self, uri: URI, user: str, number: str) -> ClickToDial | None:
        """The click-to-dial call (if any) whose REFER an INVITE to ``uri`` from ``user``
        follows: by the Refer-To's call id, or for a phone that dropped that parameter, the
        only call of the user waiting for its referred call to ``number``."""
        if isinstance(uri, SipURI):
            call_id = uri.params.get(C2D_PARAM)
            if call_id:
                call = self.calls.get(call_id)
                if call is not None and call.record.user == user \
                        and call.awaiting_referred_call:
                    return call
                return None
        for call in self.calls.values():
            if (call.record.user == user and call.awaiting_referred_call
                    and call.destination.number == number):
                return call
        return None

    def sweep(self, now: float) -> int:
        """Hang up what has been up longer than ``calls.max_duration`` (a BYE that never
        arrived must not keep a call in memory forever). Each call by the limit it started
        with (a reload does not cut calls short). Returns how many."""
        old = [c for c in self.calls.values()
               if c.record.created_at < now - c.env.config.max_duration]
        for call in old:
            call.fire(Input.CANCEL, now, detail="maximum call duration reached")
        return len(old)

    def shut_down(self) -> None:
        """Release every call before the process stops (CANCEL/BYE go out now)."""
        now = self.clock()
        for call in list(self.calls.values()):
            call.shut_down(now)
        for bridge in list(self.env.bridges):  # a failure tone playing: BYE now, not later
            bridge.release(now)

    def end_interrupted(self, records: Iterable[CallRecord]) -> int:
        """End, as ``interrupted``, the calls a crash left in progress (the store's
        ``unfinished_calls()`` at start). Each end is written and published like any other:
        the call's row, its ``ended`` event and its ``call.ended`` commit in one transaction,
        so a crash during recovery makes the next start do it again, never twice. A call
        whose end was committed before the crash is not among them and keeps its cause.
        Returns how many."""
        now = self.clock()
        count = 0
        for record in records:
            record.state = CallState.ENDED.value
            record.cause = Cause.INTERRUPTED.value
            record.ended_at = now
            event = CallEvent(CallState.ENDED.value, now, None, "sipdial restarted")
            record.events.append(event)
            log.info("call %s user %s: ended cause=interrupted (in progress when sipdial "
                     "stopped)", record.id, record.user)
            self._changed(record, event)
            count += 1
        return count

    # ------------------------------------------------------------ what calls tell us

    # the inbound calls' log (sipdial.calls.incoming.CallLog): stored, then published
    def record_change(self, record: CallRecord, event: CallEvent) -> None:
        self.store.save_call(record)
        self.store.add_event(record.id, event)

    def save_record(self, record: CallRecord) -> None:
        self.store.save_call(record)

    def publish_change(self, record: CallRecord, event: CallEvent) -> None:
        self.events.publish(record, event)
        if self.observer is not None:
            if record.events and record.events[0] is event:
                self.observer.started_call(record)
            self.observer.changed(record, event)

    def _changed(self, record: CallRecord, event: CallEvent) -> None:
        self.store.save_call(record)
        self.store.add_event(record.id, event)
        self.events.publish(record, event)
        if self.observer is not None:
            self.observer.changed(record, event)
        if self.referrals is not None:
            self._watch(record, event.state)

    def _watch(self, record: CallRecord, state: str) -> None:
        """REFER mode: told as waiting for the referred INVITE from the call's first state
        on (not only once the REFER is out: the phone's INVITE may reach another worker
        before a message sent then would), no longer once it is connected or over (the
        INVITE has come by then, or will not)."""
        assert self.referrals is not None
        if state in (CallState.CONNECTED.value, CallState.ENDED.value):
            if record.id in self._watched:
                self._watched.discard(record.id)
                # withdrawn once the INVITEs routed by it are over (64*T1): a CANCEL or a
                # retransmission must still find the worker that got their INVITE
                referrals = self.referrals
                call_id = record.id
                self.ua.timers.schedule(self.clock() + REFERRAL_LINGER,
                                        lambda now: referrals.done(call_id))
        elif record.id not in self._watched and record.mode == Mode.REFER.value \
                and self.router.pbx is None:
            call = self.calls.get(record.id)
            if call is not None:
                self._watched.add(record.id)
                self.referrals.waiting(record.id, escape_user(record.user),
                                       escape_user(call.destination.number))

    def _ended(self, call: ClickToDial) -> None:
        # its referred calls that go on count as the user's own calls from now on
        self._referred_total -= self._referred.pop(call.id, 0)
        if self.calls.pop(call.id, None) is not None:
            user = call.record.user
            left = self._per_user.get(user, 0) - 1
            if left > 0:
                self._per_user[user] = left
            else:
                self._per_user.pop(user, None)

    def user_number(self, user: str) -> str | None:
        """``[[users]] number`` of ``user`` in E.164 (as ``[numbers]`` completes it)."""
        profile = self.users.get(user)
        if profile is None or profile.number is None:
            return None
        plain = _SEPARATORS.sub("", profile.number)
        try:
            return complete(plain, profile.numbers or self.router.numbers, lambda _u: False)
        except InvalidNumber:
            return plain

    def policy_number(self, destination: Destination, numbers: NumberPlan | None = None) -> str:
        """What ``[[policy]]`` patterns are matched against: the number, for a sip: URI its
        user part without separators and completed to E.164 where it is a number."""
        number = destination.number
        if destination.uri is None:
            return number
        plain = _SEPARATORS.sub("", number)
        if not _DIGITS.fullmatch(plain):
            return number
        try:
            return complete(plain, numbers or self.router.numbers, lambda _user: False)
        except InvalidNumber:
            return plain

    def _check_headers(self, headers: tuple[tuple[str, str], ...]) -> None:
        """Only names ``[calls] extra_headers`` allows, values of printable text without
        line breaks (a header must not smuggle another), at most 10 of 256 characters."""
        allowed = self.config.calls.extra_headers
        if len(headers) > MAX_EXTRA_HEADERS:
            raise CallRefused(Refusal.INVALID_HEADER,
                              f"headers: at most {MAX_EXTRA_HEADERS}")
        if len({name.lower() for name, _ in headers}) < len(headers):
            raise CallRefused(Refusal.INVALID_HEADER, "headers: a name given twice")
        for name, value in headers:
            if not name.isascii() or name.lower() not in allowed:
                raise CallRefused(Refusal.INVALID_HEADER, f"headers: {name[:40]!r} is not in "
                                  "[calls] extra_headers")
            if len(value) > MAX_HEADER_VALUE or not value.isprintable():
                raise CallRefused(Refusal.INVALID_HEADER, f"headers: {name}: printable text "
                                  f"of at most {MAX_HEADER_VALUE} characters, no line breaks")

    def relay_started(self, user: str, relay: Bridge) -> None:
        """A call of ``user``'s phone is relayed (:class:`~sipdial.calls.InboundRouter`)."""
        relays = self._relays.setdefault(user, set())
        if relay in relays:
            return
        relays.add(relay)
        self._relay_total += 1
        owner = self._owner(relay)
        if owner is not None:
            self._referred[owner] = self._referred.get(owner, 0) + 1
            self._referred_total += 1

    def relay_ended(self, user: str, relay: Bridge) -> None:
        relays = self._relays.get(user)
        if relays is None or relay not in relays:
            return
        relays.discard(relay)
        if not relays:
            del self._relays[user]
        self._relay_total -= 1
        owner = self._owner(relay)
        if owner is not None and owner in self._referred:
            self._referred_total -= 1
            if self._referred[owner] > 1:
                self._referred[owner] -= 1
            else:
                del self._referred[owner]

    def _owner(self, relay: Bridge) -> str | None:
        """The click-to-dial call in progress that a relayed call is the referred call of."""
        owner = relay.listener
        return owner.id if isinstance(owner, ClickToDial) and owner.id in self.calls else None

    def _in_progress(self, user: str | None) -> int:
        """Calls in progress (of ``user``): click-to-dial calls, and the calls the phones
        place through sipdial that no click-to-dial call in progress already counts."""
        if user is None:
            return len(self.calls) + self._relay_total - self._referred_total
        return self._per_user.get(user, 0) + self._own_relays(user)

    def _own_relays(self, user: str) -> int:
        """``user``'s relayed calls that are not the referred call of a click-to-dial call
        still in progress (that call counts itself until it ends)."""
        count = 0
        for relay in self._relays.get(user, ()):
            owner = relay.listener
            if not isinstance(owner, ClickToDial) or owner.id not in self.calls:
                count += 1
        return count

    def _digit(self, key: str, digit: str, how: str) -> None:
        """A key press on sipdial's RTP (RFC 4733 or in-band)."""
        call = self.calls.get(key)
        if call is not None:
            call.digit(digit, self.clock(), how)
