"""RFC 3263 §4: the transport, address and port a SIP URI resolves to (sans-IO).

No sockets, no Twisted, no clock. This module decides *what* to look up in the DNS and turns
the answers into an ordered list of :class:`~sipdial.sip.peer.Peer` (most preferred first, the
rest are fail-over targets, RFC 3263 §4.3). :class:`sipdial.transport.dns.DnsResolver` sends
the queries; a test or another adapter can drive it the same way::

    p = plan(uri, default_transport="udp", supported=frozenset({"udp", "tcp"}))
    if isinstance(p, ResolveError):
        ...                                   # bad URI / transport: nothing to look up
    r = Resolution(p, rng)                    # a numeric host is done at once
    while not r.done:
        for query in r.queries():             # handed out once each; send them in parallel
            ...                               # later: r.receive(query, answer)
        # deadline passed: r.give_up()        # unanswered queries count as timed out
    r.result()                                # list[Peer] | ResolveError

An answer is a tuple of :class:`NaptrRecord` / :class:`SrvRecord` / IP address strings (for
A and AAAA), ``()`` for "no such records" (NOERROR, no data), or a :class:`DnsFailure`.

What is looked up (TARGET is ``maddr`` if present, else the host; §4):

=============================  ==========================================  ====================
URI                            lookups                                     transport, port
=============================  ==========================================  ====================
numeric TARGET (IPv4, [IPv6])  none                                        ``;transport`` else
                                                                           default; URI port
                                                                           else 5060 (TLS 5061)
name with port                 A + AAAA                                    as above
name, ``;transport``, no port  SRV ``_sip._udp.`` / ``_sip._tcp.`` /       from the SRV record;
                               ``_sips._tcp.`` (TLS); no SRV record:       A/AAAA: 5060 / 5061
                               A + AAAA
name, neither                  NAPTR (SIP+D2U, SIP+D2T, SIPS+D2T of the    from the NAPTR
                               supported transports) -> their SRV names;   service / SRV name;
                               no usable NAPTR: SRV for each supported     A/AAAA: default
                               transport; no SRV record: A + AAAA          transport, 5060/5061
=============================  ==========================================  ====================

``sips:`` URIs always use TLS (``;transport=tcp`` means TLS over TCP, RFC 3261 §26.2.2) and
only ``SIPS+D2T`` NAPTR records. IPv4 addresses are listed before IPv6 ones for each name.
Every usable NAPTR record, in (order, preference) order, contributes its SRV targets as
fail-over, rather than only the first one. A failed NAPTR query (even NXDOMAIN) still leads
to the SRV queries: some servers, twisted.names' own authority among them, answer NXDOMAIN
for a name that only has ``_sip._udp.`` children (an empty non-terminal, RFC 8020 §2).
An SRV target of "." (service not available, RFC 2782) stops the fall-back to A/AAAA.
"""

from __future__ import annotations

import functools
import ipaddress
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from itertools import accumulate
from typing import Final, TypeAlias, TypeVar

from sipdial.sip.peer import Peer
from sipdial.sip.uri import SipURI

__all__ = [
    "DEFAULT_PORTS",
    "Answer",
    "DnsFailure",
    "LookupPlan",
    "NaptrRecord",
    "Query",
    "RecordType",
    "Resolution",
    "ResolveError",
    "SrvRecord",
    "Step",
    "naptr_transport",
    "order_naptr",
    "order_srv",
    "plan",
    "srv_name",
]

#: Default port per transport (RFC 3261 §19.1.2; 5061 for TLS).
DEFAULT_PORTS: Final[Mapping[str, int]] = {"udp": 5060, "tcp": 5060, "sctp": 5060, "tls": 5061}

# RFC 3263 §4.1, §4.2: "_sips" for TLS (also for sip: URIs), "_sip" otherwise.
_SRV_PREFIX: Final[Mapping[str, str]] = {
    "udp": "_sip._udp.",
    "tcp": "_sip._tcp.",
    "sctp": "_sip._sctp.",
    "tls": "_sips._tcp.",
}
# RFC 3263 §4.1 NAPTR services (case-insensitive) -> transport.  A sips: URI keeps only
# SIPS+D2T; a sip: URI keeps SIPS+D2T too when TLS is supported.
_NAPTR_SERVICES: Final[Mapping[str, str]] = {
    "sip+d2u": "udp",
    "sip+d2t": "tcp",
    "sip+d2s": "sctp",
    "sips+d2t": "tls",
}
# Transports tried by SRV when there is no usable NAPTR record, after the default one.
_SRV_FALLBACK_ORDER: Final = ("udp", "tcp", "sctp")
_T = TypeVar("_T")
_A = TypeVar("_A", bound=tuple[object, ...])  # one table's record tuple type

# Bounds on what one hostile or broken answer can make us look up.
MAX_NAPTR: Final = 8
MAX_SRV: Final = 16


class RecordType(StrEnum):
    NAPTR = "NAPTR"
    SRV = "SRV"
    A = "A"
    AAAA = "AAAA"


@dataclass(frozen=True, slots=True)
class Query:
    """One DNS question."""

    name: str  #: lower case, no trailing dot
    type: RecordType

    def __str__(self) -> str:
        return f"{self.type} {self.name}"


@dataclass(frozen=True, slots=True)
class NaptrRecord:
    """A NAPTR record (RFC 3403 §4.1) as far as SIP uses it."""

    order: int  #: lower first
    preference: int  #: lower first among equal ``order``
    flags: str  #: "s": the replacement is an SRV name (the only flag RFC 3263 uses)
    service: str  #: "SIP+D2U", "SIP+D2T", "SIPS+D2T", ...
    regexp: str  #: must be empty for SIP
    replacement: str  #: the SRV name to query next


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """An SRV record (RFC 2782)."""

    priority: int  #: lower first
    weight: int  #: relative chance among equal priority
    port: int
    target: str  #: a host name; "" or "." means the service is not available there


class DnsFailure(Enum):
    """Why a DNS query gave no answer; the value is the text shown to an operator."""

    NXDOMAIN = "no such host (NXDOMAIN)"
    SERVFAIL = "DNS server failure (SERVFAIL)"
    REFUSED = "DNS query refused (REFUSED)"
    TIMEOUT = "DNS query timed out"
    ERROR = "DNS error"

    @property
    def text(self) -> str:
        return str(self.value)


#: What :meth:`Resolution.receive` takes for a query of the matching type.
Answer: TypeAlias = tuple[NaptrRecord, ...] | tuple[SrvRecord, ...] | tuple[str, ...] | DnsFailure


@dataclass(frozen=True, slots=True)
class ResolveError:
    """A URI that resolves to nothing: ``cannot resolve trunk.example.com: no such host ...``."""

    target: str  #: the name (or URI) that could not be resolved
    reason: str  #: human text, e.g. "no such host (NXDOMAIN)"

    @property
    def message(self) -> str:
        return f"cannot resolve {self.target}: {self.reason}"

    def __str__(self) -> str:
        return self.message


class Step(Enum):
    """The first lookup of a plan."""

    NUMERIC = "numeric"  #: no DNS at all
    ADDRESS = "address"  #: A + AAAA of the target (explicit port)
    SRV = "srv"  #: SRV for the explicit transport, then A + AAAA
    NAPTR = "naptr"  #: NAPTR, then SRV, then A + AAAA


@dataclass(frozen=True, slots=True)
class LookupPlan:
    """What to look up for one URI, decided before any DNS answer (RFC 3263 §4.1)."""

    target: str  #: TARGET: maddr or host; lower case, IPv6 without brackets, no trailing dot
    step: Step
    transport: str  #: used for addresses not found through NAPTR/SRV (§4.1 last paragraph)
    port: int  #: likewise: the URI's port, else the transport's default port
    sips: bool  #: a sips: URI (TLS only)
    srv_transports: tuple[str, ...]  #: SRV names tried (in this order) without usable NAPTR
    supported: frozenset[str]  #: transports the caller can send on

    def address_peers(self, addresses: Iterable[str]) -> list[Peer]:
        """Peers for addresses of TARGET found without NAPTR/SRV (a numeric host, a hosts
        file entry): ``transport`` and ``port`` of the plan, IPv4 before IPv6, no duplicates.
        """
        ordered = sorted(_valid_ips(addresses), key=lambda ip: ":" in ip)
        return [Peer(self.transport, ip, self.port) for ip in ordered]


def plan(
    uri: SipURI, default_transport: str = "udp", supported: Iterable[str] = ("udp", "tcp")
) -> LookupPlan | ResolveError:
    """Decide what to look up for ``uri`` (RFC 3263 §4.1, §4.2).

    ``default_transport`` is used for sip: URIs without ``;transport`` where the RFC says UDP;
    ``supported`` are the transports the caller can send on. Returns a :class:`ResolveError`
    (never raises) for tel: URIs, unknown or unsupported transports, ``sips:;transport=udp``.
    """
    supported_set = frozenset(t.lower() for t in supported)
    if uri.scheme not in ("sip", "sips"):
        return ResolveError(str(uri), "not a sip: or sips: URI")
    maddr = uri.params.get("maddr")
    target = _normalize_name(maddr if maddr else uri.host)
    if not target:
        return ResolveError(str(uri), "no host in URI")
    sips = uri.scheme == "sips"
    param = uri.params.get("transport")
    explicit = param.lower() if param else None
    if explicit is None:
        transport = "tls" if sips else default_transport.lower()
    elif sips and explicit in ("tcp", "tls"):
        transport = "tls"  # RFC 3261 §26.2.2: sips:...;transport=tcp is TLS over TCP
    elif sips:
        return ResolveError(target, f"a sips: URI cannot use transport={explicit}")
    else:
        transport = explicit
    if transport not in DEFAULT_PORTS or transport not in supported_set:
        return ResolveError(target, f"transport {transport} is not supported")
    port = uri.port if uri.port is not None else DEFAULT_PORTS[transport]

    def make(step: Step, srv: tuple[str, ...] = ()) -> LookupPlan:
        return LookupPlan(target, step, transport, port, sips, srv, supported_set)

    if is_ip_literal(target):
        return make(Step.NUMERIC)
    if uri.port is not None:
        return make(Step.ADDRESS)
    if explicit is not None:
        return make(Step.SRV, (transport,))
    if sips:
        return make(Step.NAPTR, ("tls",))
    fallback = (transport, *(t for t in _SRV_FALLBACK_ORDER if t in supported_set))
    return make(Step.NAPTR, tuple(dict.fromkeys(fallback)))


def srv_name(transport: str, domain: str) -> str:
    """``_sip._udp.example.com`` etc.; TLS uses ``_sips._tcp.`` (RFC 3263 §4.2)."""
    return _SRV_PREFIX[transport] + domain


def order_naptr(records: Iterable[NaptrRecord]) -> list[NaptrRecord]:
    """Ascending ``order``, then ascending ``preference`` (RFC 3403 §4.1); ties keep their
    order."""
    return sorted(records, key=lambda r: (r.order, r.preference))


def naptr_transport(record: NaptrRecord, sips: bool, supported: frozenset[str]) -> str | None:
    """The transport a NAPTR record leads to, or None if it is unusable here: not an "s" flag
    with an SRV replacement, not a SIP service, a transport not in ``supported``, or not
    SIPS+D2T for a sips: URI (RFC 3263 §4.1)."""
    if record.flags.lower() != "s" or record.regexp or not _normalize_name(record.replacement):
        return None
    transport = _NAPTR_SERVICES.get(record.service.lower())
    if transport is None or transport not in supported or (sips and transport != "tls"):
        return None
    return transport


def order_srv(records: Iterable[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 "Usage rules": ascending priority; within one priority a weighted random
    order. Weight-0 records go first in the running sum, so each has a chance of
    1/(sum of weights + 1) to be picked, as the RFC specifies."""
    by_priority: dict[int, list[SrvRecord]] = {}
    for record in records:
        by_priority.setdefault(record.priority, []).append(record)
    ordered: list[SrvRecord] = []
    for priority in sorted(by_priority):
        group = sorted(by_priority[priority], key=lambda r: r.weight != 0)
        while group:
            pick = rng.randint(0, sum(r.weight for r in group))
            index = next(i for i, run in enumerate(accumulate(r.weight for r in group))
                         if run >= pick)
            ordered.append(group.pop(index))
    return ordered


class Resolution:
    """One resolution of one :class:`LookupPlan`, driven by DNS answers.

    It is re-evaluated from the answers received so far after every :meth:`receive`: what
    is still missing becomes :meth:`queries`, and when nothing is missing the result is
    known. Independent queries (A and AAAA, the SRV names of several NAPTR records, the
    addresses of several SRV targets) are handed out together.
    """

    def __init__(self, plan: LookupPlan, rng: random.Random | None = None) -> None:
        self.plan = plan
        self._rng = rng if rng is not None else random.Random()
        self._naptr: dict[str, tuple[NaptrRecord, ...] | DnsFailure] = {}
        self._srv: dict[str, tuple[SrvRecord, ...] | DnsFailure] = {}
        self._addr: dict[Query, tuple[str, ...] | DnsFailure] = {}
        self._issued: set[Query] = set()
        self._gave_up = False
        self._walk = self._evaluate()

    @property
    def done(self) -> bool:
        """True once :meth:`result` is known."""
        return self._walk.peers is not None

    def queries(self) -> list[Query]:
        """Queries needed now that were not handed out before."""
        new = [q for q in self._walk.missing if q not in self._issued]
        self._issued.update(new)
        return new

    def receive(self, query: Query, answer: Answer) -> None:
        """The answer to ``query``; later answers to the same query are ignored.

        Raises TypeError when the records do not match the query type (a caller bug)."""
        if query.type is RecordType.NAPTR:
            naptr = answer if isinstance(answer, DnsFailure) else tuple(
                order_naptr(_only(answer, NaptrRecord))
            )
            self._naptr.setdefault(query.name, naptr)
        elif query.type is RecordType.SRV:
            srv = answer if isinstance(answer, DnsFailure) else tuple(
                order_srv(_only(answer, SrvRecord), self._rng)[:MAX_SRV]
            )
            self._srv.setdefault(query.name, srv)
        else:
            version = 4 if query.type is RecordType.A else 6
            addresses = answer if isinstance(answer, DnsFailure) else tuple(
                ip for ip in _valid_ips(_only(answer, str))
                if ipaddress.ip_address(ip).version == version
            )
            self._addr.setdefault(query, addresses)
        self._walk = self._evaluate()

    def give_up(self) -> None:
        """The deadline passed: every query without an answer, now or later, counts as
        :attr:`DnsFailure.TIMEOUT`, so the result is known now (possibly partial: the A
        addresses when only AAAA timed out)."""
        self._gave_up = True
        self._walk = self._evaluate()

    def result(self) -> list[Peer] | ResolveError:
        """Peers, most preferred first, without duplicates; or why there are none.

        Raises RuntimeError before :attr:`done`."""
        peers = self._walk.peers
        if peers is None:
            raise RuntimeError("resolution not finished: answer its queries() first")
        if peers:
            return list(dict.fromkeys(peers))
        return ResolveError(self.plan.target, self._reason())

    # --- evaluation --------------------------------------------------------------------------

    def _evaluate(self) -> _Walk:
        walk = _Walk(self)
        p = self.plan
        if p.step is Step.NUMERIC:
            walk.peers = p.address_peers([p.target])
        elif p.step is Step.ADDRESS:
            walk.peers = walk.addresses(p.target, p.transport, p.port)
        elif p.step is Step.SRV:
            walk.peers = walk.srv_or_addresses(p.srv_transports)
        else:
            walk.peers = walk.naptr()
        return walk

    def _reason(self) -> str:
        failures = self._walk.failures
        target = self.plan.target
        addr_types = (RecordType.A, RecordType.AAAA)
        for q, f in failures:
            if q.name == target and q.type in addr_types and f is DnsFailure.NXDOMAIN:
                return f.text
        for q, f in failures:
            if f is not DnsFailure.NXDOMAIN:
                return f"{q}: {f.text}"
        for q, f in failures:
            if q.type in addr_types:
                return f"SRV target {q.name}: {f.text}"
        if self._walk.srv_found:
            return "the SRV records name no host with an A or AAAA record"
        if self.plan.step is Step.ADDRESS:
            return "no A or AAAA records"
        return "no NAPTR, SRV, A or AAAA records"


class _Walk:
    """One evaluation of a Resolution's answers: peers (None while incomplete), the queries
    still missing, and the failures met on the way (for the error message)."""

    def __init__(self, resolution: Resolution) -> None:
        self._r = resolution
        self.peers: list[Peer] | None = None
        self._missing: dict[Query, None] = {}
        self.failures: list[tuple[Query, DnsFailure]] = []
        self.srv_found = False

    @property
    def missing(self) -> list[Query]:
        return list(self._missing)

    def _seen(self, query: Query, answer: _A | DnsFailure | None) -> _A | DnsFailure | None:
        """``answer`` as found in the tables; None (and ``query`` missing) if not there yet."""
        if answer is None:
            if not self._r._gave_up:
                self._missing[query] = None
                return None
            answer = DnsFailure.TIMEOUT
        if isinstance(answer, DnsFailure):
            self.failures.append((query, answer))
        return answer

    def addresses(self, name: str, transport: str, port: int) -> list[Peer] | None:
        """A + AAAA of ``name`` (both asked at once), IPv4 first."""
        if is_ip_literal(name):  # an SRV target written as an address
            return [Peer(transport, name, port)]
        found: list[Peer] = []
        complete = True
        for rtype in (RecordType.A, RecordType.AAAA):
            query = Query(name, rtype)
            answer = self._seen(query, self._r._addr.get(query))
            if answer is None:
                complete = False
            elif isinstance(answer, tuple):
                found.extend(Peer(transport, ip, port) for ip in answer)
        return found if complete else None

    def srv(self, name: str, transport: str) -> list[Peer] | None:
        """The SRV records of ``name`` in RFC 2782 order, each expanded to its addresses.
        Sets ``srv_found`` when there is at least one record (even a "." one)."""
        answer = self._seen(Query(name, RecordType.SRV), self._r._srv.get(name))
        if answer is None:
            return None
        records: tuple[SrvRecord, ...] = answer if isinstance(answer, tuple) else ()
        if records:
            self.srv_found = True
        found: list[Peer] = []
        complete = True
        for record in records:
            host = _normalize_name(record.target)
            if not host:
                continue  # RFC 2782: "." -- the service is decidedly not available there
            got = self.addresses(host, transport, record.port)
            if got is None:
                complete = False
            else:
                found.extend(got)
        return found if complete else None

    def srv_or_addresses(self, transports: Sequence[str]) -> list[Peer] | None:
        """SRV for each transport (at once); no SRV record at all: A + AAAA of TARGET."""
        p = self._r.plan
        branches = [self.srv(srv_name(t, p.target), t) for t in transports]
        if any(b is None for b in branches):
            return None
        if self.srv_found:
            return [peer for b in branches if b is not None for peer in b]
        return self.addresses(p.target, p.transport, p.port)

    def naptr(self) -> list[Peer] | None:
        p = self._r.plan
        answer = self._seen(Query(p.target, RecordType.NAPTR), self._r._naptr.get(p.target))
        if answer is None:
            return None
        records: tuple[NaptrRecord, ...] = answer if isinstance(answer, tuple) else ()
        usable = [
            (t, r) for r in records if (t := naptr_transport(r, p.sips, p.supported)) is not None
        ][:MAX_NAPTR]
        if not usable:
            return self.srv_or_addresses(p.srv_transports)
        branches = [self.srv(_normalize_name(r.replacement), t) for t, r in usable]
        if any(b is None for b in branches):
            return None
        if self.srv_found:
            return [peer for b in branches if b is not None for peer in b]
        # §4.2: no SRV records -> A/AAAA with the transport chosen (the best NAPTR record's)
        first = usable[0][0]
        return self.addresses(p.target, first, DEFAULT_PORTS[first])


def _normalize_name(host: str) -> str:
    """Lower case, IPv6 brackets and a trailing dot removed."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.rstrip(".")


@functools.lru_cache(maxsize=256)
def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address (no DNS needed for it)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _valid_ips(addresses: Iterable[str]) -> list[str]:
    """The IP literals among ``addresses``, canonical form, duplicates dropped."""
    out: dict[str, None] = {}
    for text in addresses:
        try:
            out[str(ipaddress.ip_address(_normalize_name(text)))] = None
        except ValueError:
            continue
    return list(out)


def _only(answer: tuple[object, ...], kind: type[_T]) -> list[_T]:
    out: list[_T] = []
    for item in answer:
        if not isinstance(item, kind):
            raise TypeError(f"expected {kind.__name__} records, got {type(item).__name__}")
        out.append(item)
    return out
