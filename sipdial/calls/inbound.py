"""New INVITEs from the phones: authenticate, route, relay.

This is where a call a phone places through sipdial comes in — the referred call of a
click-to-dial REFER, or a number dialled by hand. The router authenticates it against the
users' digest passwords (407, RFC 3261 §22), links a referred call back to its click-to-dial
call, finds where it goes (:class:`~sipdial.calls.Router`) and relays it
(:class:`~sipdial.calls.b2bua.RelayedCall`). When a PBX or proxy in front of sipdial takes
over authentication and location, this is the piece that changes.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from sipdial.authn import Authenticator
from sipdial.calls.b2bua import RelayedCall
from sipdial.calls.clicktodial import C2D_PARAM
from sipdial.calls.incoming import IncomingCall
from sipdial.calls.routing import (
    Destination,
    NoRoute,
    Resolver,
    Router,
    Unavailable,
    callee_uri,
    user_uri,
)
from sipdial.calls.service import CallService
from sipdial.calls.states import CallState, Cause, Input
from sipdial.numbers import InvalidNumber, NumberPlan, complete
from sipdial.sip import (
    URI,
    NameAddr,
    Peer,
    Request,
    Response,
    SipError,
    SipURI,
    parse_name_addr_list,
)
from sipdial.store import CallRecord
from sipdial.ua import IncomingInvite, UserAgent
from sipdial.vocabulary import INBOUND_MODE, Direction

if TYPE_CHECKING:
    from sipdial.config import Config, TrunkConfig
    from sipdial.contacts import ContactLookup

__all__ = ["InboundRouter"]

log = logging.getLogger("sipdial.calls")


class InboundRouter:
    def __init__(self, config: Config, ua: UserAgent, auth: Authenticator, router: Router,
                 calls: CallService, resolver: Resolver, *,
                 contacts: ContactLookup | None = None) -> None:
        """``contacts``: who calls from a trunk."""
        self.config = config
        self.contacts = contacts
        #: inbound calls from trunks in progress, by call id
        self.incoming: dict[str, IncomingCall] = {}
        self._trunk_calls: dict[str, int] = {}  # calls in progress by trunk name
        self._trunks = _Trunks(config)
        self.ua = ua
        self.auth = auth
        self.router = router
        self.calls = calls
        self.resolver = resolver
        self.users = config.users
        self.domain = config.sip.domain
        self.relayed: set[RelayedCall] = set()

    def reconfigure(self, config: Config, contacts: ContactLookup | None = None) -> None:
        """A configuration reload: the users, ``[calls]``, ``[[trunks]]`` (and the
        phonebook) from now on."""
        self.config = config
        self.users = config.users
        self._trunks = _Trunks(config)
        if contacts is not None:
            self.contacts = contacts

    def accept(self, invite: IncomingInvite, now: float) -> None:
        """A new INVITE from a phone: authenticate (407), route, relay."""
        request, txn, source = invite.request, invite.txn, invite.source
        endpoint = self.ua.endpoint
        trunk = self._trunks.trusted(source)
        if trunk is not None and not self.calls.registrar.knows_peer(source) \
                and _c2d_id(request.uri) is None:
            # a carrier's or PBX's call to a user: no digest (a registered phone in the
            # trunk's network, and a referred click-to-dial call, take the phones' path)
            self._from_trunk(trunk, invite, now)
            return
        outcome = self.auth.check(request, now, proxy=True, source=source.host)
        if isinstance(outcome, Response):
            # a registered phone's INVITE (e.g. the referred call) gets a challenge that is
            # retransmitted until ACKed: under loss the stateless one costs the call when
            # the phone's few INVITE retransmissions are lost too
            endpoint.respond(txn, outcome, now,
                             known_source=self.calls.registrar.knows_peer(source))
            return
        user = self.users.get(outcome)
        if user is None:
            endpoint.reply(txn, 403, now)
            return
        uri = request.uri
        number = uri.unquote_user() if isinstance(uri, SipURI) else None
        if not number:
            endpoint.reply(txn, 404, now, reason="No number in Request-URI")
            return
        c2d = self.calls.referred_call_of(uri, user.id, number)
        if c2d is None and _c2d_id(uri):
            # the referred call of a click-to-dial call that has ended meanwhile
            endpoint.reply(txn, 487, now, reason="Click-to-dial call is over")
            return
        if c2d is not None:
            destination = c2d.destination  # checked when the click-to-dial call began
        else:
            # a number the phone dials: completed like the API's ([numbers]) and held to
            # the same [[policy]] patterns; a SIP password is all toll fraud needs
            try:
                destination = self.router.destination(number, user.numbers)
            except InvalidNumber as exc:
                endpoint.reply(txn, 484, now, reason="Address Incomplete")
                log.info("call from %s to %r refused: %s", user.id, number, exc)
                return
            except ValueError:
                destination = Destination(number)
            refused = self.calls.policy.destination_refused(
                user.id, self.calls.policy_number(destination, user.numbers))
            if refused is not None:
                endpoint.reply(txn, 403, now, reason="Forbidden by policy")
                log.info("call refused: %s", refused)
                return
        routed = self.router.route(destination, now)
        if isinstance(routed, NoRoute):
            endpoint.reply(txn, 404, now, reason="No route")
            if c2d is not None:
                c2d.target_event(Input.TARGET_FAILED, now, 404, "no route to the target")
            return
        if isinstance(routed, Unavailable):
            endpoint.reply(txn, 480, now)
            if c2d is not None:
                c2d.target_event(Input.TARGET_UNAVAILABLE, now, 480,
                                 f"{routed.user} has no registered device")
            return
        caller_uri = user_uri(user.number or user.id, self.domain)
        label = f"{user.id}->{destination.number}"
        relayed = RelayedCall(
            self.ua, self.ua.timers, txn, source, targets=routed,
            caller=NameAddr(caller_uri, user.name or None),
            callee=NameAddr(callee_uri(routed[0], destination.number, self.domain)),
            answer_timeout=self.config.calls.target_answer_timeout, listener=c2d,
            label=label, resolver=self.resolver, on_end=self._phone_relay_ended(user.id))
        self.relayed.add(relayed)
        self.calls.relay_started(user.id, relayed)  # the user is on the phone
        log.info("relaying %s (%s)", label, f"call {c2d.id}" if c2d is not None else "dialled")
        if c2d is not None:
            c2d.referred_call(relayed, now)
        # a target that cannot be sent to (no address, no listener for its transport) fails
        # like a 503 inside its leg; a bug ends the relay (and its call) as failed
        relayed.start(now)

    # ------------------------------------------------------------ trunks

    def _from_trunk(self, trunk: TrunkConfig, invite: IncomingInvite, now: float) -> None:
        request, txn = invite.request, invite.txn
        endpoint = self.ua.endpoint
        uri = request.uri
        called = uri.unquote_user() if isinstance(uri, SipURI) else None
        user_id = self._trunks.user_for(trunk, called or "", self.router.numbers)
        if user_id is None or user_id not in self.users:
            endpoint.reply(txn, 404, now, reason="No such number")
            log.info("call from trunk %s to %r refused: no user has that number", trunk.name,
                     called)
            return
        if self._trunk_calls.get(trunk.name, 0) >= trunk.max_concurrent:
            endpoint.reply(txn, 503, now, reason="Too many calls from this trunk")
            log.warning("trunk %s: %d calls in progress: refused one more", trunk.name,
                        trunk.max_concurrent)
            return
        caller, display = _caller_of(request, self.router.numbers)
        record = CallRecord(id=endpoint.shard.prefix(32), user=user_id,
                            to=_e164(called or user_id, self.router.numbers),
                            mode=INBOUND_MODE, state=CallState.CALLING_USER.value, cause=None,
                            created_at=now, ended_at=None, direction=Direction.INBOUND.value,
                            caller=caller)
        incoming = IncomingCall(record, timers=self.ua.timers, log_to=self.calls,
                                on_end=self._incoming_ended, contacts=self.contacts,
                                lookup_timeout=self.config.contacts.lookup_timeout, now=now,
                                trunk=trunk.name)
        self.incoming[record.id] = incoming
        self._trunk_calls[trunk.name] = self._trunk_calls.get(trunk.name, 0) + 1
        try:
            self._ring_user(trunk, incoming, invite, display, now)
        except Exception:  # a bug: the call ends visibly, the caller is answered
            log.exception("inbound call %s could not start", record.id)
            if not txn.answered:
                endpoint.reply(txn, 500, now)
            incoming.end(Input.FAILED, now, "could not start the call")

    def _ring_user(self, trunk: TrunkConfig, incoming: IncomingCall, invite: IncomingInvite,
                   display: str | None, now: float) -> None:
        txn, source = invite.txn, invite.source
        endpoint = self.ua.endpoint
        user_id, caller = incoming.record.user, incoming.record.caller
        routed = self.router.route(Destination(user_id), now)
        if not isinstance(routed, list):
            endpoint.reply(txn, 480, now)
            incoming.ended_without_relay(now, 480, Cause.TARGET_UNAVAILABLE,
                                         f"{user_id} has no registered device")
            return
        user = self.users[user_id]
        label = f"{trunk.name}:{caller or 'anonymous'}->{user_id}"
        relayed = RelayedCall(
            self.ua, self.ua.timers, txn, source, targets=routed,
            caller=NameAddr(user_uri(caller or "anonymous", self.domain), display),
            callee=NameAddr(user_uri(user.number or user.id, self.domain), user.name or None),
            answer_timeout=self.config.calls.user_answer_timeout, listener=incoming,
            label=label, resolver=self.resolver, on_end=self.relayed.discard)
        incoming.relay = relayed
        self.relayed.add(relayed)
        relayed.start(now)

    def _phone_relay_ended(self, user: str) -> Callable[[RelayedCall], None]:
        def ended(relayed: RelayedCall) -> None:
            self.relayed.discard(relayed)
            self.calls.relay_ended(user, relayed)

        return ended

    def _incoming_ended(self, incoming: IncomingCall) -> None:
        if self.incoming.pop(incoming.id, None) is not None:
            left = self._trunk_calls.get(incoming.trunk, 0) - 1
            if left > 0:
                self._trunk_calls[incoming.trunk] = left
            else:
                self._trunk_calls.pop(incoming.trunk, None)

    def hang_up(self, call_id: str, now: float) -> CallRecord | None:
        """``DELETE /v1/calls/{id}`` of an inbound call: released (the caller gets 487 or
        a BYE). None: no such inbound call in progress."""
        incoming = self.incoming.get(call_id)
        if incoming is None:
            return None
        incoming.end(Input.CANCEL, now, "cancelled by API")
        return incoming.record

    def live(self, call_id: str) -> CallRecord | None:
        """An inbound call in progress, by id."""
        incoming = self.incoming.get(call_id)
        return incoming.record if incoming is not None else None

    @property
    def count(self) -> int:
        """Calls being relayed (the phones' own calls through sipdial, and inbound calls)."""
        return len(self.relayed)

    def sweep(self, now: float) -> int:
        """Release relayed calls older than ``calls.max_duration``; returns how many."""
        limit = now - self.config.calls.max_duration
        for incoming in [c for c in self.incoming.values() if c.record.created_at < limit]:
            incoming.end(Input.CANCEL, now, "maximum call duration reached")
        stale = [r for r in self.relayed if r.started_at < limit]
        for relayed in stale:
            relayed.release(now)
        return len(stale)

    def shut_down(self, now: float) -> None:
        for incoming in list(self.incoming.values()):
            incoming.end(Input.SHUTDOWN, now, "sipdial stopped")
        for relayed in list(self.relayed):
            relayed.release(now)


class _Trunks:
    """``[[trunks]]``: which one a source is, and the user a called number reaches."""

    def __init__(self, config: Config) -> None:
        self.trunks = config.trunks
        self.users = config.users
        self.numbers = config.numbers

    def trusted(self, source: Peer) -> TrunkConfig | None:
        if not self.trunks:
            return None
        try:
            address = ipaddress.ip_address(source.host.strip("[]").partition("%")[0])
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for trunk in self.trunks:
            if source.transport in trunk.transports and any(
                    address in network for network in trunk.allow_from):
                return trunk
        return None

    def user_for(self, trunk: TrunkConfig, called: str, numbers: NumberPlan) -> str | None:
        """The DID's user: as the trunk sent it or in E.164, then the users' ``number``."""
        wanted = {called, _e164(called, numbers)}
        for did, uid in trunk.dids.items():
            if did in wanted or _e164(did, numbers) in wanted:
                return uid
        for profile in self.users.values():
            if profile.number is not None and _e164(profile.number, numbers) in wanted:
                return profile.id
        return None


_NUMBER_TEXT: Final = re.compile(r"\+?[0-9]{2,32}")


def _e164(number: str, plan: NumberPlan) -> str:
    """``number`` in E.164 where it completes, else as it is."""
    plain = re.sub(r"[\s\-./()]", "", number)
    if _NUMBER_TEXT.fullmatch(plain) is None:
        return number
    try:
        return complete(plain, plan, lambda _user: False)
    except InvalidNumber:
        return plain


def _caller_of(request: Request, plan: NumberPlan) -> tuple[str | None, str | None]:
    """The caller's number (E.164 where it parses; None: anonymous or no number) and display
    name, from P-Asserted-Identity (a trunk asserts it) else From."""
    for header in ("P-Asserted-Identity", "From"):
        value = request.headers.get(header)
        if not value:
            continue
        try:
            addr = parse_name_addr_list(value)[0]
        except (SipError, IndexError):
            continue
        uri = addr.uri
        user = uri.unquote_user() if isinstance(uri, SipURI) else None
        display = addr.display_name
        if display is not None:
            display = display.strip()[:100] or None
        if user and user.lower() != "anonymous" and _NUMBER_TEXT.fullmatch(
                re.sub(r"[\s\-./()]", "", user)):
            return _e164(user, plan), display
        if header == "From":
            return None, display
    return None, None


def _c2d_id(uri: URI) -> str | None:
    return uri.params.get(C2D_PARAM) if isinstance(uri, SipURI) else None
