"""RFC 3263 target selection (sipdial.sip.rfc3263): plans, NAPTR/SRV ordering, the fall-back
chain and error messages, driven with plain function calls: no sockets, no clock."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from sipdial.sip.peer import Peer
from sipdial.sip.rfc3263 import (
    Answer,
    DnsFailure,
    LookupPlan,
    NaptrRecord,
    Query,
    RecordType,
    Resolution,
    ResolveError,
    SrvRecord,
    Step,
    naptr_transport,
    order_naptr,
    order_srv,
    plan,
    srv_name,
)
from sipdial.sip.uri import SipURI

A, AAAA, SRV, NAPTR = RecordType.A, RecordType.AAAA, RecordType.SRV, RecordType.NAPTR
UDP_TCP = frozenset({"udp", "tcp"})
ALL = frozenset({"udp", "tcp", "tls"})
NX = DnsFailure.NXDOMAIN


def make_plan(uri: str, default: str = "udp", supported: frozenset[str] = UDP_TCP) -> LookupPlan:
    p = plan(SipURI.parse(uri), default, supported)
    assert isinstance(p, LookupPlan), p
    return p


def q(name: str, rtype: RecordType) -> Query:
    return Query(name, rtype)


def naptr(order: int, pref: int, service: str, replacement: str, flags: str = "s") -> NaptrRecord:
    return NaptrRecord(order, pref, flags, service, "", replacement)


def drive(
    resolution: Resolution, zone: dict[Query, Answer]
) -> tuple[list[Peer] | ResolveError, list[list[Query]]]:
    """Answer every query from ``zone`` (a query not in it gets NXDOMAIN), round by round.

    Returns the result and the queries of each round (a round = what was asked at once)."""
    rounds: list[list[Query]] = []
    while not resolution.done:
        asked = resolution.queries()
        assert asked, "not done, but nothing to ask"
        rounds.append(asked)
        for query in asked:
            resolution.receive(query, zone.get(query, NX))
    assert resolution.queries() == []
    return resolution.result(), rounds


# --- numeric hosts: no DNS at all ------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:+4930123@192.0.2.10", Peer("udp", "192.0.2.10", 5060)),
        ("sip:+4930123@192.0.2.10:5070;transport=TCP", Peer("tcp", "192.0.2.10", 5070)),
        ("sip:bob@[2001:db8::1]", Peer("udp", "2001:db8::1", 5060)),
        ("sip:bob@[2001:DB8::1]:5080;transport=tcp", Peer("tcp", "2001:db8::1", 5080)),
        ("sips:bob@192.0.2.10", Peer("tls", "192.0.2.10", 5061)),
        ("sips:bob@192.0.2.10;transport=tcp", Peer("tls", "192.0.2.10", 5061)),
    ],
)
def test_numeric_host_needs_no_lookup(uri: str, expected: Peer) -> None:
    p = make_plan(uri, supported=ALL)
    assert p.step is Step.NUMERIC
    r = Resolution(p)
    assert r.done and r.queries() == []
    assert r.result() == [expected]


def test_default_transport_applies_to_sip_but_not_sips() -> None:
    assert Resolution(make_plan("sip:a@192.0.2.1", "tcp")).result() == [
        Peer("tcp", "192.0.2.1", 5060)
    ]
    assert Resolution(make_plan("sips:a@192.0.2.1", "udp", ALL)).result() == [
        Peer("tls", "192.0.2.1", 5061)
    ]


def test_numeric_maddr_overrides_a_host_name() -> None:
    p = make_plan("sip:alice@trunk.example.com;maddr=192.0.2.9")
    assert p.step is Step.NUMERIC and p.target == "192.0.2.9"
    assert Resolution(p).result() == [Peer("udp", "192.0.2.9", 5060)]


def test_ipv6_maddr_brackets_are_stripped() -> None:
    p = make_plan("sip:alice@trunk.example.com:5070;maddr=[2001:db8::7]")
    assert Resolution(p).result() == [Peer("udp", "2001:db8::7", 5070)]


def test_maddr_name_is_what_gets_resolved() -> None:
    p = make_plan("sip:alice@192.0.2.1;maddr=Proxy.Example.COM.")
    assert p.step is Step.NAPTR and p.target == "proxy.example.com"
    assert Resolution(p).queries() == [q("proxy.example.com", NAPTR)]


# --- explicit port: A and AAAA only ----------------------------------------------------------


def test_explicit_port_looks_up_a_and_aaaa_only() -> None:
    p = make_plan("sip:+4930123@Trunk.Example.com:5080")
    assert p.step is Step.ADDRESS
    zone: dict[Query, Answer] = {
        q("trunk.example.com", AAAA): ("2001:db8::5",),
        q("trunk.example.com", A): ("192.0.2.5", "192.0.2.6"),
    }
    result, rounds = drive(Resolution(p), zone)
    assert rounds == [[q("trunk.example.com", A), q("trunk.example.com", AAAA)]]
    assert result == [
        Peer("udp", "192.0.2.5", 5080),
        Peer("udp", "192.0.2.6", 5080),
        Peer("udp", "2001:db8::5", 5080),
    ]


def test_explicit_port_with_transport_uses_that_transport() -> None:
    p = make_plan("sip:x@trunk.example.com:5080;transport=tcp")
    result, _ = drive(Resolution(p), {q("trunk.example.com", A): ("192.0.2.5",)})
    assert result == [Peer("tcp", "192.0.2.5", 5080)]


def test_wrong_family_and_garbage_addresses_are_dropped() -> None:
    p = make_plan("sip:x@trunk.example.com:5080")
    zone: dict[Query, Answer] = {
        q("trunk.example.com", A): ("192.0.2.5", "2001:db8::1", "not-an-ip", "192.0.2.5"),
        q("trunk.example.com", AAAA): ("192.0.2.6",),
    }
    result, _ = drive(Resolution(p), zone)
    assert result == [Peer("udp", "192.0.2.5", 5080)]


# --- explicit transport: SRV for it, then A/AAAA ---------------------------------------------


def test_explicit_transport_queries_its_srv_name_then_the_targets() -> None:
    p = make_plan("sip:x@trunk.example.com;transport=tcp")
    assert p.step is Step.SRV
    zone: dict[Query, Answer] = {
        q("_sip._tcp.trunk.example.com", SRV): (
            SrvRecord(20, 0, 5090, "backup.example.com."),
            SrvRecord(10, 0, 5070, "main.example.com."),
        ),
        q("main.example.com", A): ("192.0.2.1",),
        q("backup.example.com", AAAA): ("2001:db8::2",),
    }
    result, rounds = drive(Resolution(p), zone)
    assert rounds[0] == [q("_sip._tcp.trunk.example.com", SRV)]
    assert set(rounds[1]) == {
        q("main.example.com", A),
        q("main.example.com", AAAA),
        q("backup.example.com", A),
        q("backup.example.com", AAAA),
    }
    assert len(rounds) == 2  # both targets looked up at once
    assert result == [Peer("tcp", "192.0.2.1", 5070), Peer("tcp", "2001:db8::2", 5090)]


@pytest.mark.parametrize(
    ("uri", "srv"),
    [
        ("sip:x@example.com;transport=udp", "_sip._udp.example.com"),
        ("sip:x@example.com;transport=tls", "_sips._tcp.example.com"),
        ("sips:x@example.com;transport=tcp", "_sips._tcp.example.com"),
        ("sips:x@example.com;transport=tls", "_sips._tcp.example.com"),
    ],
)
def test_srv_names(uri: str, srv: str) -> None:
    r = Resolution(make_plan(uri, supported=ALL))
    assert r.queries() == [q(srv, SRV)]


def test_explicit_transport_without_srv_falls_back_to_a_on_the_default_port() -> None:
    p = make_plan("sip:x@example.com;transport=tls", supported=ALL)
    result, rounds = drive(Resolution(p), {q("example.com", A): ("192.0.2.3",)})
    assert rounds[1] == [q("example.com", A), q("example.com", AAAA)]
    assert result == [Peer("tls", "192.0.2.3", 5061)]


def test_srv_target_dot_means_unavailable_and_stops_the_fallback() -> None:
    p = make_plan("sip:x@example.com;transport=tcp")
    zone: dict[Query, Answer] = {
        q("_sip._tcp.example.com", SRV): (SrvRecord(0, 0, 0, "."),),
        q("example.com", A): ("192.0.2.3",),
    }
    result, rounds = drive(Resolution(p), zone)
    assert rounds == [[q("_sip._tcp.example.com", SRV)]]
    assert isinstance(result, ResolveError)
    assert "SRV records name no host" in result.message


def test_srv_target_written_as_an_address_is_used_without_lookup() -> None:
    p = make_plan("sip:x@example.com;transport=udp")
    zone: dict[Query, Answer] = {
        q("_sip._udp.example.com", SRV): (SrvRecord(0, 0, 5062, "192.0.2.44"),)
    }
    result, rounds = drive(Resolution(p), zone)
    assert result == [Peer("udp", "192.0.2.44", 5062)] and len(rounds) == 1


# --- neither: NAPTR, then SRV, then A/AAAA ---------------------------------------------------


def test_naptr_order_and_preference_choose_the_srv_names() -> None:
    p = make_plan("sip:+4930123@example.com")
    assert p.step is Step.NAPTR
    zone: dict[Query, Answer] = {
        q("example.com", NAPTR): (
            naptr(20, 10, "SIP+D2U", "_sip._udp.example.com."),
            naptr(10, 20, "SIP+D2U", "_sip._udp.example.com."),
            naptr(10, 10, "SIP+D2T", "_sip._tcp.example.com."),
            naptr(5, 10, "SIPS+D2T", "_sips._tcp.example.com."),  # TLS not supported
            naptr(1, 1, "E2U+sip", "!^.*$!sip:x@y!", flags="u"),  # not for transport
        ),
        q("_sip._tcp.example.com", SRV): (SrvRecord(0, 0, 5060, "tcp.example.com"),),
        q("_sip._udp.example.com", SRV): (SrvRecord(0, 0, 5060, "udp.example.com"),),
        q("tcp.example.com", A): ("192.0.2.1",),
        q("udp.example.com", A): ("192.0.2.2",),
    }
    result, rounds = drive(Resolution(p), zone)
    assert rounds[0] == [q("example.com", NAPTR)]
    assert rounds[1] == [q("_sip._tcp.example.com", SRV), q("_sip._udp.example.com", SRV)]
    assert q("_sips._tcp.example.com", SRV) not in [x for r in rounds for x in r]
    assert result == [Peer("tcp", "192.0.2.1", 5060), Peer("udp", "192.0.2.2", 5060)]


def test_naptr_sips_record_is_used_for_sip_uri_when_tls_is_supported() -> None:
    p = make_plan("sip:x@example.com", supported=ALL)
    zone: dict[Query, Answer] = {
        q("example.com", NAPTR): (
            naptr(10, 10, "SIP+D2U", "_sip._udp.example.com"),
            naptr(5, 10, "SIPS+D2T", "_sips._tcp.example.com"),
        ),
        q("_sips._tcp.example.com", SRV): (SrvRecord(0, 0, 5061, "tls.example.com"),),
        q("_sip._udp.example.com", SRV): (SrvRecord(0, 0, 5060, "udp.example.com"),),
        q("tls.example.com", A): ("192.0.2.1",),
        q("udp.example.com", A): ("192.0.2.2",),
    }
    result, _ = drive(Resolution(p), zone)
    assert result == [Peer("tls", "192.0.2.1", 5061), Peer("udp", "192.0.2.2", 5060)]


def test_sips_uri_keeps_only_sips_naptr_records() -> None:
    p = make_plan("sips:x@example.com", supported=ALL)
    zone: dict[Query, Answer] = {
        q("example.com", NAPTR): (
            naptr(1, 1, "SIP+D2T", "_sip._tcp.example.com"),
            naptr(9, 9, "SIPS+D2T", "_sips._tcp.example.com"),
        ),
        q("_sips._tcp.example.com", SRV): (SrvRecord(0, 0, 5061, "tls.example.com"),),
        q("tls.example.com", A): ("192.0.2.1",),
    }
    result, rounds = drive(Resolution(p), zone)
    assert rounds[1] == [q("_sips._tcp.example.com", SRV)]
    assert result == [Peer("tls", "192.0.2.1", 5061)]


def test_without_usable_naptr_srv_is_tried_for_each_transport_default_first() -> None:
    p = make_plan("sip:x@example.com", default="tcp")
    zone: dict[Query, Answer] = {
        q("example.com", NAPTR): (naptr(1, 1, "SIP+D2S", "_sip._sctp.example.com"),),
        q("_sip._udp.example.com", SRV): (SrvRecord(0, 0, 5062, "udp.example.com"),),
        q("_sip._tcp.example.com", SRV): (SrvRecord(0, 0, 5063, "tcp.example.com"),),
        q("udp.example.com", A): ("192.0.2.2",),
        q("tcp.example.com", A): ("192.0.2.3",),
    }
    result, rounds = drive(Resolution(p), zone)
    assert rounds[1] == [q("_sip._tcp.example.com", SRV), q("_sip._udp.example.com", SRV)]
    assert result == [Peer("tcp", "192.0.2.3", 5063), Peer("udp", "192.0.2.2", 5062)]


def test_fallback_chain_when_naptr_and_srv_are_empty() -> None:
    p = make_plan("sip:x@example.com")
    zone: dict[Query, Answer] = {
        q("example.com", NAPTR): (),
        q("_sip._udp.example.com", SRV): (),
        q("example.com", A): ("192.0.2.7",),
        q("example.com", AAAA): ("2001:db8::7",),
    }
    result, rounds = drive(Resolution(p), zone)
    assert rounds == [
        [q("example.com", NAPTR)],
        [q("_sip._udp.example.com", SRV), q("_sip._tcp.example.com", SRV)],  # tcp: NXDOMAIN
        [q("example.com", A), q("example.com", AAAA)],
    ]
    assert result == [Peer("udp", "192.0.2.7", 5060), Peer("udp", "2001:db8::7", 5060)]


def test_naptr_pointing_at_empty_srv_falls_back_to_a_with_the_naptr_transport() -> None:
    p = make_plan("sip:x@example.com")
    zone: dict[Query, Answer] = {
        q("example.com", NAPTR): (naptr(1, 1, "SIP+D2T", "_sip._tcp.example.com"),),
        q("_sip._tcp.example.com", SRV): (),
        q("example.com", A): ("192.0.2.7",),
    }
    result, _ = drive(Resolution(p), zone)
    assert result == [Peer("tcp", "192.0.2.7", 5060)]


def test_naptr_nxdomain_still_tries_srv() -> None:
    # an empty non-terminal (only _sip._udp.sip.example.com exists) answered as NXDOMAIN
    p = make_plan("sip:x@sip.example.com")
    zone: dict[Query, Answer] = {
        q("_sip._udp.sip.example.com", SRV): (SrvRecord(0, 0, 5070, "pbx.example.com"),),
        q("pbx.example.com", A): ("192.0.2.8",),
    }
    result, rounds = drive(Resolution(p), zone)
    assert rounds[0] == [q("sip.example.com", NAPTR)]
    assert rounds[1] == [q("_sip._udp.sip.example.com", SRV), q("_sip._tcp.sip.example.com", SRV)]
    assert result == [Peer("udp", "192.0.2.8", 5070)]


def test_naptr_failure_other_than_nxdomain_still_tries_srv() -> None:
    p = make_plan("sip:x@example.com")
    zone: dict[Query, Answer] = {
        q("example.com", NAPTR): DnsFailure.SERVFAIL,
        q("_sip._udp.example.com", SRV): (SrvRecord(0, 0, 5060, "udp.example.com"),),
        q("udp.example.com", A): ("192.0.2.2",),
    }
    result, _ = drive(Resolution(p), zone)
    assert result == [Peer("udp", "192.0.2.2", 5060)]


def test_duplicate_targets_are_listed_once() -> None:
    p = make_plan("sip:x@example.com;transport=udp")
    zone: dict[Query, Answer] = {
        q("_sip._udp.example.com", SRV): (
            SrvRecord(1, 0, 5060, "a.example.com"),
            SrvRecord(2, 0, 5060, "b.example.com"),
        ),
        q("a.example.com", A): ("192.0.2.1",),
        q("b.example.com", A): ("192.0.2.1", "192.0.2.2"),
    }
    result, _ = drive(Resolution(p), zone)
    assert result == [Peer("udp", "192.0.2.1", 5060), Peer("udp", "192.0.2.2", 5060)]


# --- ordering functions ----------------------------------------------------------------------


def test_order_naptr_sorts_by_order_then_preference_and_is_stable() -> None:
    records = [
        naptr(20, 1, "a", "x"),
        naptr(10, 50, "b", "x"),
        naptr(10, 5, "c", "x"),
        naptr(10, 5, "d", "x"),
    ]
    assert [r.service for r in order_naptr(records)] == ["c", "d", "b", "a"]


@pytest.mark.parametrize(
    ("record", "sips", "supported", "expected"),
    [
        (naptr(1, 1, "SIP+D2U", "_sip._udp.x"), False, UDP_TCP, "udp"),
        (naptr(1, 1, "sip+d2t", "_sip._tcp.x"), False, UDP_TCP, "tcp"),
        (naptr(1, 1, "SIPS+D2T", "_sips._tcp.x"), False, UDP_TCP, None),  # no TLS here
        (naptr(1, 1, "SIPS+D2T", "_sips._tcp.x"), True, ALL, "tls"),
        (naptr(1, 1, "SIP+D2T", "_sip._tcp.x"), True, ALL, None),  # sips: only SIPS
        (naptr(1, 1, "SIP+D2U", "_sip._udp.x", flags="a"), False, UDP_TCP, None),
        (naptr(1, 1, "SIP+D2U", "."), False, UDP_TCP, None),
        (NaptrRecord(1, 1, "s", "SIP+D2U", "!x!y!", "_sip._udp.x"), False, UDP_TCP, None),
    ],
)
def test_naptr_transport(
    record: NaptrRecord, sips: bool, supported: frozenset[str], expected: str | None
) -> None:
    assert naptr_transport(record, sips, supported) == expected


def test_order_srv_priority_is_strict() -> None:
    records = [SrvRecord(30, 100, 1, "c"), SrvRecord(10, 0, 1, "a"), SrvRecord(20, 1000, 1, "b")]
    for seed in range(20):
        assert [r.target for r in order_srv(records, random.Random(seed))] == ["a", "b", "c"]


def test_order_srv_weights_share_the_first_place() -> None:
    records = [SrvRecord(10, 10, 1, "light"), SrvRecord(10, 90, 1, "heavy")]
    rng = random.Random(3263)
    first = Counter(order_srv(records, rng)[0].target for _ in range(4000))
    assert 0.86 < first["heavy"] / 4000 < 0.94
    assert 0.06 < first["light"] / 4000 < 0.14


def test_order_srv_weight_zero_is_rarely_first_but_always_listed() -> None:
    records = [SrvRecord(10, 0, 1, "zero"), SrvRecord(10, 99, 1, "busy")]
    rng = random.Random(7)
    orders = [[r.target for r in order_srv(records, rng)] for _ in range(3000)]
    assert all(sorted(o) == ["busy", "zero"] for o in orders)
    zero_first = sum(o[0] == "zero" for o in orders)
    assert 5 <= zero_first <= 70  # expected 1/(99+1): ~30 in 3000


def test_order_srv_is_reproducible_with_a_seeded_random() -> None:
    records = [SrvRecord(0, w, 1, f"t{w}") for w in (1, 2, 3, 4, 5)]
    a = order_srv(records, random.Random(42))
    assert a == order_srv(records, random.Random(42))
    assert sorted(a, key=lambda r: r.weight) == records


def test_resolution_uses_the_injected_random_for_srv() -> None:
    p = make_plan("sip:x@example.com;transport=udp")
    zone: dict[Query, Answer] = {
        q("_sip._udp.example.com", SRV): (
            SrvRecord(0, 50, 5060, "a.example.com"),
            SrvRecord(0, 50, 5060, "b.example.com"),
        ),
        q("a.example.com", A): ("192.0.2.1",),
        q("b.example.com", A): ("192.0.2.2",),
    }
    firsts = set()
    for seed in range(30):
        result, _ = drive(Resolution(p, random.Random(seed)), zone)
        assert isinstance(result, list)
        firsts.add(result[0].host)
        again, _ = drive(Resolution(p, random.Random(seed)), zone)
        assert again == result
    assert firsts == {"192.0.2.1", "192.0.2.2"}


def test_srv_name() -> None:
    assert srv_name("udp", "example.com") == "_sip._udp.example.com"
    assert srv_name("tls", "example.com") == "_sips._tcp.example.com"


# --- errors and deadlines --------------------------------------------------------------------


def test_nxdomain_message() -> None:
    p = make_plan("sip:+4930123@trunk.example.com")
    result, _ = drive(Resolution(p), {})
    assert isinstance(result, ResolveError)
    assert result.message == "cannot resolve trunk.example.com: no such host (NXDOMAIN)"
    assert str(result) == result.message


def test_servfail_names_the_failing_query() -> None:
    p = make_plan("sip:x@trunk.example.com:5060")
    zone: dict[Query, Answer] = {
        q("trunk.example.com", A): DnsFailure.SERVFAIL,
        q("trunk.example.com", AAAA): (),
    }
    result, _ = drive(Resolution(p), zone)
    assert isinstance(result, ResolveError)
    assert result.message == (
        "cannot resolve trunk.example.com: A trunk.example.com: DNS server failure (SERVFAIL)"
    )


def test_no_records_at_all() -> None:
    p = make_plan("sip:x@example.com")
    zone: dict[Query, Answer] = {
        q("example.com", NAPTR): (),
        q("_sip._udp.example.com", SRV): (),
        q("_sip._tcp.example.com", SRV): (),
        q("example.com", A): (),
        q("example.com", AAAA): (),
    }
    result, _ = drive(Resolution(p), zone)
    assert isinstance(result, ResolveError)
    assert result.reason == "no NAPTR, SRV, A or AAAA records"


def test_srv_target_without_address_is_reported() -> None:
    p = make_plan("sip:x@example.com;transport=udp")
    zone: dict[Query, Answer] = {
        q("_sip._udp.example.com", SRV): (SrvRecord(0, 0, 5060, "gone.example.com"),),
    }
    result, _ = drive(Resolution(p), zone)
    assert isinstance(result, ResolveError)
    assert result.reason == "SRV target gone.example.com: no such host (NXDOMAIN)"


def test_give_up_keeps_what_was_answered() -> None:
    r = Resolution(make_plan("sip:x@trunk.example.com:5080"))
    asked = r.queries()
    assert asked == [q("trunk.example.com", A), q("trunk.example.com", AAAA)]
    r.receive(asked[0], ("192.0.2.5",))
    assert not r.done
    r.give_up()
    assert r.done and r.queries() == []
    assert r.result() == [Peer("udp", "192.0.2.5", 5080)]


def test_give_up_with_nothing_answered_reports_a_timeout() -> None:
    r = Resolution(make_plan("sip:x@trunk.example.com"))
    assert r.queries() == [q("trunk.example.com", NAPTR)]
    r.give_up()
    result = r.result()
    assert isinstance(result, ResolveError)
    assert result.message == (
        "cannot resolve trunk.example.com: NAPTR trunk.example.com: DNS query timed out"
    )


def test_result_before_done_raises() -> None:
    r = Resolution(make_plan("sip:x@trunk.example.com"))
    with pytest.raises(RuntimeError):
        r.result()


def test_queries_are_handed_out_once_and_late_answers_are_ignored() -> None:
    r = Resolution(make_plan("sip:x@trunk.example.com:5080"))
    first = r.queries()
    assert len(first) == 2 and r.queries() == []
    r.receive(first[0], ("192.0.2.1",))
    r.receive(first[0], ("192.0.2.99",))  # a second answer to the same query
    r.receive(first[1], ())
    assert r.result() == [Peer("udp", "192.0.2.1", 5080)]


def test_records_of_the_wrong_type_are_a_caller_bug() -> None:
    r = Resolution(make_plan("sip:x@trunk.example.com"))
    (query,) = r.queries()
    with pytest.raises(TypeError):
        r.receive(query, (SrvRecord(0, 0, 5060, "x"),))


@pytest.mark.parametrize(
    ("uri", "supported", "reason"),
    [
        ("tel:+4930123", UDP_TCP, "not a sip: or sips: URI"),
        ("sip:x@example.com;transport=tls", UDP_TCP, "transport tls is not supported"),
        ("sip:x@example.com;transport=ws", ALL, "transport ws is not supported"),
        ("sips:x@example.com", UDP_TCP, "transport tls is not supported"),
        ("sips:x@example.com;transport=udp", ALL, "a sips: URI cannot use transport=udp"),
    ],
)
def test_plan_errors(uri: str, supported: frozenset[str], reason: str) -> None:
    p = plan(SipURI.parse(uri), "udp", supported)
    assert isinstance(p, ResolveError)
    assert p.reason == reason
    assert p.message.startswith("cannot resolve ")


def test_unsupported_default_transport_is_an_error() -> None:
    p = plan(SipURI.parse("sip:x@192.0.2.1"), "sctp", UDP_TCP)
    assert isinstance(p, ResolveError) and p.reason == "transport sctp is not supported"


def test_address_peers_for_a_hosts_file_entry() -> None:
    p = make_plan("sip:x@pbx.lan;transport=tcp")
    assert p.address_peers(["2001:db8::1", "192.0.2.1", "192.0.2.1", "junk"]) == [
        Peer("tcp", "192.0.2.1", 5060),
        Peer("tcp", "2001:db8::1", 5060),
    ]
