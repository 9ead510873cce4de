"""RFC 3263 §4.3 fail-over with a fake DNS: a name with several SRV targets, a 503 or a
timeout (Timer B/F) or a transport error at one of them, and the request goes to the next.

The fake DNS answers the queries of the real sans-IO :class:`sipdial.sip.Resolution` from a
table, so SRV ordering and the address lookups are sipdial's own code; only the network is
fake. The INVITE legs (a route named by SRV) and the upstream REGISTER are both checked.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from sipdial.calls import OnResolved
from sipdial.config import parse_config
from sipdial.sip import (
    Answer,
    DnsFailure,
    NaptrRecord,
    Peer,
    Query,
    RecordType,
    Request,
    Resolution,
    ResolveError,
    SipURI,
    SrvRecord,
    make_response,
    plan,
)
from tests.unit.simnet import BASE_CONFIG, SimNet, parse_request
from tests.unit.test_clicktodial_flow import Flow

PBX_A = Peer("udp", "127.0.0.11", 5060)
PBX_B = Peer("udp", "127.0.0.12", 5070)
PBX_C = Peer("udp", "127.0.0.13", 5060)


class FakeDns:
    """An RFC 3263 resolver over a table of DNS records: ``{Query: Answer}``; a query not in
    the table is NXDOMAIN. Answers synchronously (like a cached name); ``asked`` records the
    URIs resolved. ``rng`` orders equal-priority SRV records (RFC 2782 weights)."""

    def __init__(self, records: Mapping[Query, Answer], clock: Any,
                 rng: random.Random | None = None) -> None:
        self.records = dict(records)
        self.clock = clock
        self.rng = rng or random.Random(1)
        self.asked: list[str] = []

    def resolve(self, uri: SipURI, default_transport: str, on_done: OnResolved) -> None:
        self.asked.append(str(uri))
        found = plan(uri, default_transport)
        if isinstance(found, ResolveError):
            on_done(found, self.clock())
            return
        resolution = Resolution(found, self.rng)
        for _ in range(20):  # bounded: NAPTR -> SRV -> A/AAAA is three rounds
            if resolution.done:
                break
            for query in resolution.queries():
                resolution.receive(query, self.records.get(query, DnsFailure.NXDOMAIN))
        on_done(resolution.result(), self.clock())


def srv_records(name: str, *targets: tuple[int, int, int, str, str]) -> dict[Query, Answer]:
    """``_sip._udp.NAME`` SRV records (priority, weight, port, host, address) and the hosts'
    A records."""
    records: dict[Query, Answer] = {
        Query(f"_sip._udp.{name}", RecordType.SRV): tuple(
            SrvRecord(prio, weight, port, host) for prio, weight, port, host, _ in targets),
    }
    for *_, host, address in targets:
        records[Query(host, RecordType.A)] = (address,)
        records[Query(host, RecordType.AAAA)] = ()
    return records


PBX_SRV = srv_records("pbx.example.com",
                      (10, 0, 5060, "a.pbx.example.com", "127.0.0.11"),
                      (20, 0, 5070, "b.pbx.example.com", "127.0.0.12"),
                      (30, 0, 5060, "c.pbx.example.com", "127.0.0.13"))


def invites(net: SimNet, peer: Peer) -> list[Request]:
    return [parse_request(m) for m in net.sent_to(peer) if m.startswith(b"INVITE ")]


def reply(net: SimNet, peer: Peer, request: Request, status: int,
          headers: list[tuple[str, str]] | None = None) -> None:
    response = make_response(request, status, to_tag="t1" if status > 100 else None)
    for name, value in headers or ():
        response.headers.add(name, value)
    net.deliver(response.to_bytes(), peer)


# ----------------------------------------------------------------- the fake DNS itself


def test_fake_dns_gives_the_srv_targets_in_priority_order() -> None:
    dns = FakeDns(PBX_SRV, lambda: 0.0)
    got: list[Any] = []
    dns.resolve(SipURI.parse("sip:pbx.example.com"), "udp", lambda r, now: got.append(r))
    assert got == [[PBX_A, PBX_B, PBX_C]]


# ----------------------------------------------------------------- INVITE legs (routes)


def _route_flow(dns_records: Mapping[Query, Answer], *, credentials: bool = False,
                no_tcp: bool = False) -> SimNet:
    """A REFER-mode call whose phone sends its referred INVITE: sipdial then INVITEs the
    route's target, ``sip:+4930123@pbx.example.com`` (SRV names)."""
    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    route = 'uri = "sip:{number}@pbx.example.com"'
    if credentials:
        route += '\nusername = "sipdial"\npassword = "trunk-secret"'
    text = text.replace('uri = "sip:{number}@127.0.0.1:5080"', route)
    dns = FakeDns(dns_records, lambda: 0.0)
    flow = Flow(config=parse_config(text), resolver=dns)
    dns.clock = lambda: flow.net.now
    if no_tcp:  # sipdial listening on UDP only
        del flow.net.endpoint.local[("tcp", 4)]
    flow.to_refer()
    flow.accept_refer()
    flow.referred_invite()
    assert dns.asked == ["sip:+4930123@pbx.example.com"]
    return flow.net


def test_invite_to_an_srv_route_fails_over_on_503_then_on_timeout() -> None:
    net = _route_flow(PBX_SRV)
    (first,) = invites(net, PBX_A)
    reply(net, PBX_A, first, 503)
    second = invites(net, PBX_B)
    assert second, "no fail-over to the second SRV target on 503"
    assert second[0].headers.get("Call-ID") == first.headers.get("Call-ID")
    net.advance(33)  # Timer B at the second target
    third = invites(net, PBX_C)
    assert third, "no fail-over to the third SRV target on a timeout"


def test_invite_fails_over_when_the_first_target_has_no_transport() -> None:
    """An SRV target sipdial cannot send to (here: TCP, and sipdial listens on UDP only)
    is a transport error: the next target gets the INVITE (RFC 3263 §4.3)."""
    records: dict[Query, Answer] = {
        Query("pbx.example.com", RecordType.NAPTR): (
            NaptrRecord(10, 10, "s", "SIP+D2T", "", "_sip._tcp.pbx.example.com"),
            NaptrRecord(20, 10, "s", "SIP+D2U", "", "_sip._udp.pbx.example.com")),
        Query("_sip._udp.pbx.example.com", RecordType.SRV): (
            SrvRecord(20, 0, 5070, "b.pbx.example.com"),),
        Query("_sip._tcp.pbx.example.com", RecordType.SRV): (
            SrvRecord(10, 0, 5060, "a.pbx.example.com"),),
        Query("a.pbx.example.com", RecordType.A): ("127.0.0.11",),
        Query("a.pbx.example.com", RecordType.AAAA): (),
        Query("b.pbx.example.com", RecordType.A): ("127.0.0.12",),
        Query("b.pbx.example.com", RecordType.AAAA): (),
    }
    net = _route_flow(records, no_tcp=True)
    assert invites(net, PBX_B), "no fail-over past a target without a transport"


def test_after_a_challenge_at_one_target_the_next_target_is_challenged_afresh() -> None:
    """Credentials made for the first target's nonce mean nothing to the second: its own
    401 must be answered (was: the leg had 'already answered' and failed with 401)."""
    net = _route_flow(PBX_SRV, credentials=True)
    challenge = ('Digest realm="pbx", nonce="n1", qop="auth", algorithm=MD5')
    (first,) = invites(net, PBX_A)
    reply(net, PBX_A, first, 401, [("WWW-Authenticate", challenge)])
    (authorized,) = invites(net, PBX_A)
    assert "Authorization" in authorized.headers
    reply(net, PBX_A, authorized, 503)
    (second,) = invites(net, PBX_B)
    reply(net, PBX_B, second, 401, [("WWW-Authenticate", challenge.replace("n1", "n2"))])
    again = invites(net, PBX_B)
    assert again, "the second target's challenge was not answered"
    assert 'nonce="n2"' in (again[0].headers.get("Authorization") or "")
