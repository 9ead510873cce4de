"""New INVITEs from the phones: authenticate, route, relay.

This is where a call a phone places through sipdial comes in — the referred call of a
click-to-dial REFER, or a number dialled by hand. The router authenticates it against the
users' digest passwords (407, RFC 3261 §22), links a referred call back to its click-to-dial
call, finds where it goes (:class:`~sipdial.calls.Router`) and relays it
(:class:`~sipdial.calls.b2bua.RelayedCall`). When a PBX or proxy in front of sipdial takes
over authentication and location, this is the piece that changes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sipdial.authn import Authenticator
from sipdial.calls.b2bua import RelayedCall
from sipdial.calls.clicktodial import C2D_PARAM
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
from sipdial.calls.states import Input
from sipdial.numbers import InvalidNumber
from sipdial.sip import URI, NameAddr, Response, SipURI
from sipdial.ua import IncomingInvite, UserAgent

if TYPE_CHECKING:
    from sipdial.config import Config

__all__ = ["InboundRouter"]

log = logging.getLogger("sipdial.calls")


class InboundRouter:
    def __init__(self, config: Config, ua: UserAgent, auth: Authenticator, router: Router,
                 calls: CallService, resolver: Resolver) -> None:
        self.config = config
        self.ua = ua
        self.auth = auth
        self.router = router
        self.calls = calls
        self.resolver = resolver
        self.users = config.users
        self.domain = config.sip.domain
        self.relayed: set[RelayedCall] = set()

    def reconfigure(self, config: Config) -> None:
        """A configuration reload: the users and ``[calls]`` from now on."""
        self.config = config
        self.users = config.users

    def accept(self, invite: IncomingInvite, now: float) -> None:
        """A new INVITE from a phone: authenticate (407), route, relay."""
        request, txn, source = invite.request, invite.txn, invite.source
        endpoint = self.ua.endpoint
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
            label=label, resolver=self.resolver, on_end=self.relayed.discard)
        self.relayed.add(relayed)
        log.info("relaying %s (%s)", label, f"call {c2d.id}" if c2d is not None else "dialled")
        if c2d is not None:
            c2d.referred_call(relayed, now)
        # a target that cannot be sent to (no address, no listener for its transport) fails
        # like a 503 inside its leg; a bug ends the relay (and its call) as failed
        relayed.start(now)

    @property
    def count(self) -> int:
        """Calls being relayed (the phones' own calls through sipdial)."""
        return len(self.relayed)

    def sweep(self, now: float) -> int:
        """Release relayed calls older than ``calls.max_duration``; returns how many."""
        limit = now - self.config.calls.max_duration
        stale = [r for r in self.relayed if r.started_at < limit]
        for relayed in stale:
            relayed.release(now)
        return len(stale)

    def shut_down(self, now: float) -> None:
        for relayed in list(self.relayed):
            relayed.release(now)


def _c2d_id(uri: URI) -> str | None:
    return uri.params.get(C2D_PARAM) if isinstance(uri, SipURI) else None
