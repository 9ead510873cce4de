"""Wiring: one Twisted process with SIP (UDP/TCP), the HTTP API and the store."""

from __future__ import annotations

import gc
import glob
import hashlib
import hmac
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final, Protocol

from twisted.internet import protocol
from twisted.internet.defer import Deferred, inlineCallbacks

from sipdial.api import ApiParts, ApiSite, CallsApi, Links, OtherWorkers, Sessions, build_site
from sipdial.authn import Authenticator
from sipdial.calls import (
    DEFAULT_RULES,
    AutoAnswerRule,
    CallObserver,
    CallService,
    CallStore,
    EventSink,
    InboundRouter,
    LoadGauge,
    MediaPort,
    NumericResolver,
    OnResolved,
    Pbx,
    PromptSource,
    ReferralWatch,
    Resolver,
    Router,
    local_hosts,
    rules_from_config,
)
from sipdial.config import (
    Config,
    ConfigError,
    ListenAddr,
    MetricsConfig,
    Network,
    UserConfig,
    load_config,
)
from sipdial.contacts import ContactLookup, Contacts, Phonebook, PhonebookError
from sipdial.demo_secrets import check_demo_secrets
from sipdial.events import EventHub, EventName, MergedEvents, decode_event, encode_event
from sipdial.events.http_client import AgentFetcher
from sipdial.guard import (
    FailureGuard,
    GuardPolicy,
    Lockout,
    OnOutcome,
    Outcome,
    check_weak_passwords,
)
from sipdial.media import MediaManager, MediaProcess, PromptLibrary
from sipdial.metrics import CallMetrics, Metrics, MetricSources
from sipdial.registrar import Binding, ExpiryLimits, Registrar
from sipdial.sip import (
    SINGLE,
    Endpoint,
    Event,
    NameAddr,
    Peer,
    Referrals,
    Shard,
    SipError,
    SipURI,
    TimerConfig,
    TimerHeap,
    family,
    parse_name_addr_list,
    parse_uri,
    peer_for_uri,
)
from sipdial.store import (
    CallRecord,
    ContactBook,
    PublishedEvent,
    RegistrationRecord,
    SqliteEventReader,
    SqliteStore,
    contact_book_path,
    used_links_in,
)
from sipdial.transport import (
    DnsResolver,
    Mesh,
    MeshHandlers,
    SipDriver,
    TcpLimits,
    TlsContexts,
    raise_nofile,
    reuse_port_socket,
    tcp_budget,
)
from sipdial.ua import UserAgent
from sipdial.upstream import UpstreamRegistration
from sipdial.worker_role import WorkerHttp, WorkerRole, worker_store_path

__all__ = ["Core", "CoreStore", "FullCollections", "LagMonitor", "Running", "build_core",
           "serve", "start", "tune_gc"]

log = logging.getLogger("sipdial")

SWEEP_INTERVAL = 10.0
#: seconds between full garbage collections (see :func:`tune_gc`), at first: a safety net,
#: since a call leaves no reference cycles; each costs ~0.5-1.9 s at ~1 M live objects
#: (loadtest/RESULTS.md), which is why the interval grows while they find little
FULL_GC_INTERVAL = 600.0
FULL_GC_LONGEST = 3600.0
FULL_GC_FEW = 10_000  #: a full collection that frees fewer objects than this found "little"
REJOIN_HOLD = 3.0  #: seconds a rejoining worker waits at most for the others' registrations


class FullCollections:
    """The safety net's schedule: a full collection every ``interval`` seconds, the interval
    doubling (up to :data:`FULL_GC_LONGEST`: a cycle left behind waits at most that long)
    after each that freed fewer than :data:`FULL_GC_FEW` objects, and back to
    :data:`FULL_GC_INTERVAL` after one that freed more (something leaves cycles: collect
    them often, and it is logged)."""

    def __init__(self, now: float, collect: Callable[[], int] = gc.collect) -> None:
        self.interval = FULL_GC_INTERVAL
        self.next = now + self.interval
        self._collect = collect

    def run_if_due(self, now: float) -> int | None:
        """Collect if it is time; the objects freed, or None."""
        if now < self.next:
            return None
        started = time.perf_counter()
        freed = self._collect()
        took = time.perf_counter() - started
        if freed < FULL_GC_FEW:
            self.interval = min(FULL_GC_LONGEST, self.interval * 2)
        else:
            self.interval = FULL_GC_INTERVAL
            log.warning("full garbage collection freed %d objects in reference cycles "
                        "(%.0f ms): something leaves cycles; next in %g s", freed,
                        took * 1000, self.interval)
        log.info("full garbage collection: %d freed in %.0f ms; next in %g s", freed,
                 took * 1000, self.interval)
        self.next = now + self.interval
        return freed


class LagMonitor:
    """Overload control: how late the reactor runs a 100 ms heartbeat. Past ``limit`` the
    API refuses new calls (503) instead of accepting calls it cannot serve — at ~500 calls/s
    an over-offered process otherwise drops SIP datagrams and every call degrades."""

    def __init__(self, reactor: Any, interval: float = 0.1, limit: float = 0.25) -> None:
        # reactor: IReactorTime
        self.reactor = reactor
        self.interval = interval
        self.limit = limit
        self.lag = 0.0
        self._due = reactor.seconds() + interval
        self._call = reactor.callLater(interval, self._beat)

    def _beat(self) -> None:
        now = self.reactor.seconds()
        late = max(0.0, now - self._due)
        self.lag = late if late > self.lag else 0.8 * self.lag + 0.2 * late
        self._due = now + self.interval
        self._call = self.reactor.callLater(self.interval, self._beat)

    def overloaded(self) -> bool:
        return self.lag > self.limit

    def stop(self) -> None:
        if self._call.active():
            self._call.cancel()


class _RtpSink(protocol.DatagramProtocol):
    """Where REFER-mode offers point the phone's audio: received and dropped."""

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        pass


def _record(b: Binding) -> RegistrationRecord:
    return RegistrationRecord(
        user=b.user, contact=b.contact, instance=b.instance, transport=b.peer.transport,
        source_host=b.peer.host, source_port=b.peer.port, expires_at=b.expires_at, q=b.q,
        user_agent=b.user_agent, call_id=b.call_id, cseq=b.cseq, registered_at=b.registered_at,
        path=", ".join(str(hop) for hop in b.path))


def _binding(r: RegistrationRecord, *, live_connection: bool = False) -> Binding:
    """A stored (or replicated) binding. ``live_connection``: its TCP/TLS connection is
    still open (another worker's replication: worker 0 holds it), so it is kept as is."""
    peer = Peer(r.transport, r.source_host, int(r.source_port))
    if peer.reliable and not live_connection:
        # The connection the REGISTER came on died with the old process: until the device
        # registers again (and opens a new one) reach it at its Contact instead.
        try:
            peer = peer_for_uri(parse_uri(r.contact), r.transport)
        except (ValueError, SipError):
            pass
    return Binding(
        user=r.user, contact=r.contact, instance=r.instance,
        peer=peer, expires_at=r.expires_at, q=r.q,
        user_agent=r.user_agent, call_id=r.call_id, cseq=r.cseq,
        registered_at=r.registered_at, path=_path(r))


def _path(r: RegistrationRecord) -> tuple[NameAddr, ...]:
    """A stored binding's RFC 3327 Path (a stored value that no longer parses: none)."""
    try:
        return tuple(parse_name_addr_list(r.path)) if r.path else ()
    except SipError:
        log.warning("registration of %s at %s: stored Path %r does not parse: ignored",
                    r.user, r.contact, r.path)
        return ()


def _media_ports(low: int, high: int, role: WorkerRole | None) -> tuple[int, int]:
    """This worker's slice of ``[media]`` port_min..port_max (even-aligned, a pair per call):
    workers that all began at port_min would keep trying ports another one holds."""
    if role is None or role.count == 1 or high == 0:
        return low, high
    pairs = (high - low) // 2 + 1
    share = pairs // role.count
    if share < 1:
        return low, high  # fewer pairs than workers: share the whole range
    start = low + 2 * share * role.index
    return start, start + 2 * (share - 1)


def _reporter(role: WorkerRole) -> Callable[[str], bool]:
    """Whether this worker logs and publishes a lockout of a guard key: one worker per key
    (the CRC-32 of its text), whichever worker's failure locked it."""
    return lambda key: zlib.crc32(key.encode("utf-8", "surrogateescape")) % role.count \
        == role.index


def _worker_share(config: Config, role: WorkerRole | None) -> Config:
    """This worker's share of ``[calls] max_concurrent`` (rounded up): the kernel spreads new
    HTTP connections, so N workers together take about the configured number (a worker
    whose share is full refuses while another still has room). ``[[policy]]`` caps are
    split the same way but never rounded up: N workers never allow more than the cap (a
    user may be refused a little early)."""
    if role is None or role.count == 1:
        return config
    share = -(-config.calls.max_concurrent // role.count)

    def part(cap: int | None) -> int | None:
        """A toll-fraud cap split so that the workers' parts add up to it, never more:
        worker i gets cap // N, plus one while i < cap % N (a part may be 0)."""
        if cap is None:
            return None
        return cap // role.count + (1 if role.index < cap % role.count else 0)

    policy = tuple(replace(rule, max_concurrent=part(rule.max_concurrent),
                           max_per_minute=part(rule.max_per_minute),
                           max_per_hour=part(rule.max_per_hour)) for rule in config.policy)
    return replace(config, calls=replace(config.calls, max_concurrent=share), policy=policy)


def _listen_key(addr: ListenAddr) -> str:
    """A [sip] listen entry as written: "udp:127.0.0.1:0" (IPv6 hosts bare)."""
    return f"{addr.transport}:{addr.host}:{addr.port}"


def _binding_entry(binding: Binding, removed: bool) -> dict[str, object]:
    return {"removed": removed, "record": asdict(_record(binding))}


def _binding_document(binding: Binding, removed: bool) -> bytes:
    """A changed binding as the mesh carries it to the other workers: a JSON list."""
    return json.dumps([_binding_entry(binding, removed)]).encode("utf-8")


def _binding_documents(bindings: list[Binding], budget: int = 60_000) -> list[bytes]:
    """Every binding (a restarted worker's "hello"), in JSON lists of at most ``budget``
    bytes each: a large location table in a few messages, not one per binding."""
    documents: list[bytes] = []
    batch: list[str] = []
    size = 0
    for binding in bindings:
        text = json.dumps(_binding_entry(binding, False))
        if batch and size + len(text) + 2 > budget:
            documents.append(("[" + ", ".join(batch) + "]").encode("utf-8"))
            batch, size = [], 0
        batch.append(text)
        size += len(text) + 2
    if batch or not documents:  # an empty table is said too: the rejoining worker waits for it
        documents.append(("[" + ", ".join(batch) + "]").encode("utf-8"))
    return documents


def _replicated_bindings(document: bytes) -> list[tuple[Binding, bool]]:
    """The bindings in a mesh registration message; one that does not parse is logged."""
    out: list[tuple[Binding, bool]] = []
    try:
        entries = json.loads(document)
        if not isinstance(entries, list):
            raise TypeError("not a list")
    except (ValueError, TypeError):
        log.warning("mesh: a registration message that does not parse dropped")
        return out
    for entry in entries:
        try:
            binding = _binding(RegistrationRecord(**entry["record"]), live_connection=True)
            removed = bool(entry["removed"])
        except (ValueError, TypeError, KeyError):
            log.warning("mesh: a registration that does not parse dropped")
            continue
        out.append((binding, removed))
    return out


class _MeshReferrals:
    """:class:`sipdial.calls.ReferralWatch` for a worker: this worker's waiting REFER-mode
    calls go into the routing table its driver consults and to the other workers."""

    def __init__(self, table: Referrals, mesh: Mesh) -> None:
        self.table = table
        self.mesh = mesh

    def waiting(self, call_id: str, user: str, number: str) -> None:
        self.table.add(self.mesh.index, call_id, user, number)
        self.mesh.send_referral(None, _referral_document(self.mesh.index, True, call_id,
                                                          user, number))

    def done(self, call_id: str) -> None:
        self.table.remove(call_id)
        self.mesh.send_referral(None, _referral_document(self.mesh.index, False, call_id))

    def received(self, document: bytes) -> None:
        try:
            worker, op, call_id, *rest = json.loads(document)
            if not isinstance(worker, int) or not 0 <= worker < self.mesh.count \
                    or worker == self.mesh.index or not isinstance(call_id, str):
                raise ValueError(worker)
            if op == "+":
                user, number = rest
                self.table.add(worker, call_id, str(user), str(number))
            elif op == "-":
                self.table.remove(call_id)
            else:
                raise ValueError(op)
        except (ValueError, TypeError):
            log.warning("mesh: a referral message that does not parse dropped")

    def restarted(self, worker: int) -> None:
        """``worker`` said hello: its calls are gone; it learns what waits here."""
        self.table.forget_worker(worker)
        for call_id, user, number in self.table.of_worker(self.mesh.index):
            self.mesh.send_referral(worker, _referral_document(self.mesh.index, True,
                                                               call_id, user, number))


def _referral_document(worker: int, waiting: bool, call_id: str, user: str = "",
                       number: str = "") -> bytes:
    entry: list[object] = [worker, "+" if waiting else "-", call_id]
    if waiting:
        entry += [user, number]
    return json.dumps(entry, separators=(",", ":")).encode()


def _mesh_handlers(reactor: Any, core: Core, store: CoreStore, driver: SipDriver,
                   mesh: Mesh, events: EventHub, merged: MergedEvents,
                   referrals: _MeshReferrals) -> MeshHandlers:
    """What this worker does with the others' messages (sipdial.workers)."""
    guard_of_core = core.auth.guard

    def guard(document: bytes) -> None:
        try:
            outcome, src, account, at = json.loads(document)
            if not math.isfinite(float(at)):
                raise ValueError(at)
            guard_of_core.apply(Outcome(outcome), str(src), str(account), float(at))
        except (ValueError, TypeError):
            log.warning("mesh: a guard message that does not parse dropped")
    #: the workers with SSE clients, and the id last forwarded (or acked) to each
    forward_to: dict[int, int] = {}

    def on_release(published: PublishedEvent) -> None:
        for worker, previous in list(forward_to.items()):
            mesh.send_event(worker, encode_event(mesh.index, published, previous))
            forward_to[worker] = published.id

    events.on_release = on_release

    def interest(worker: int, on: bool) -> None:
        if on:
            last = events.last_event_id
            forward_to[worker] = last
            mesh.send_ack(worker, last)  # forwarded from after this one
        else:
            forward_to.pop(worker, None)

    def event(document: bytes) -> None:
        decoded = decode_event(document)
        if decoded is None:
            log.warning("mesh: an event that does not parse dropped")
            return
        origin, published, previous = decoded
        merged.remote(origin, published, previous)

    def registration(document: bytes) -> None:
        now = reactor.seconds()
        core.registrar.hold_until = 0.0  # rejoining: the others' table is here
        for binding, removed in _replicated_bindings(document):
            if not core.registrar.replicate(binding, removed, now):
                continue
            if removed:  # kept in this worker's file too: a restart starts with them
                store.delete_registration(binding.user, binding.contact)
            else:
                store.save_registration(_record(binding))

    def hello(worker: int) -> None:
        for document in _binding_documents(core.registrar.all(reactor.seconds())):
            mesh.send_registration(worker, document)
        forward_to.pop(worker, None)  # it has no SSE clients yet, and asks again if it has
        merged.restarted(worker)
        referrals.restarted(worker)

    def out(data: bytes, peer: Peer) -> None:
        driver.send_here(peer, data)

    return MeshHandlers(sip=driver.receive_here, out=out,
                        failed=driver.transport_failed_here, registration=registration,
                        hello=hello, interest=interest, ack=merged.acked, event=event,
                        referral=referrals.received, guard=guard)


class CoreStore(CallStore, Protocol):
    """What the sans-IO stack writes to: the call log and the registrations."""

    def save_registration(self, reg: RegistrationRecord) -> None: ...

    def delete_registration(self, user: str, contact: str) -> None: ...


#: what a reload cannot change while running (sockets, the store, the media process, the
#: webhook deliverer, the password-guessing limits, sipdial's own registration): named in
#: the reload's log line as needing a restart, and kept as they were
RESTART_ONLY: Final = ("sip", "http.listen", "http.secure_cookies", "store", "media",
                       "webhooks", "auth", "upstream", "links", "contacts")


@dataclass
class Core:
    """sipdial's sans-IO stack, wired: no sockets, no reactor, the time passed in.

    :func:`build_core` makes it for the app (:func:`start` adds the Twisted adapters around
    it), for the unit tests' simulated network and for the benchmarks alike.
    """

    config: Config
    timers: TimerHeap
    endpoint: Endpoint
    auth: Authenticator
    registrar: Registrar
    ua: UserAgent
    router: Router
    calls: CallService
    inbound: InboundRouter
    #: sipdial's own registration at ``[upstream]`` (None: standalone); started by the app
    #: once it listens (a test: ``core.upstream.start(now)``)
    upstream: UpstreamRegistration | None = None
    #: the users now (the passwords' lookup and the router read it: a reload changes it)
    users: dict[str, UserConfig] = field(default_factory=dict)

    def reconfigure(self, config: Config) -> tuple[str, ...]:
        """A configuration reload (SIGHUP): users, tokens' users, routes, ``[calls]``,
        ``[numbers]``, ``[[policy]]`` and auto-answer rules from now on; calls in progress
        keep what they started with. A removed user's registrations go. Returns what
        changed in :data:`RESTART_ONLY` (not applied)."""
        restart = _restart_needed(self.config, config)
        # everything that can fail, before anything changes ([contacts] is restart-only)
        rules = check_config(config, phonebook=False)
        kept = replace(config, sip=self.config.sip, store=self.config.store,
                       media=self.config.media, webhooks=self.config.webhooks,
                       auth=self.config.auth, upstream=self.config.upstream,
                       links=self.config.links, contacts=self.config.contacts,
                       http=replace(config.http, host=self.config.http.host,
                                    port=self.config.http.port,
                                    secure_cookies=self.config.http.secure_cookies))
        self.users.clear()
        self.users.update(kept.users)
        self.registrar.set_users(kept.users)
        self.router.reconfigure(kept.routes, kept.numbers)
        self.calls.reconfigure(kept, rules)
        self.inbound.reconfigure(kept)
        self.config = kept
        return restart

    def handle(self, event: Event, now: float) -> None:
        """The transaction user: every event of the endpoint, in order."""
        incoming = self.ua.handle(event, now)
        if incoming is not None:
            try:
                self.inbound.accept(incoming, now)
            except Exception:  # a bug must not leave the caller's INVITE unanswered forever
                log.exception("error accepting %s", incoming.request.uri)
                if not incoming.txn.answered:
                    self.ua.endpoint.reply(incoming.txn, 500, now)

    def sweep(self, now: float) -> int:
        """Expire registrations, hang up calls past ``calls.max_duration``."""
        self.registrar.sweep(now)
        return self.calls.sweep(now) + self.inbound.sweep(now)

    def shut_down(self, now: float) -> None:
        """Release every call (sipdial is stopping)."""
        txns = self.endpoint.txns
        log.info("stopping: %d calls, %d relayed calls, %d server and %d client transactions",
                 self.calls.count, self.inbound.count, len(txns.server), len(txns.client))
        for txn in [*txns.server.values(), *txns.client.values()][:20]:
            log.debug("stopping: left %r", txn)
        self.calls.shut_down()
        self.inbound.shut_down(now)
        if self.upstream is not None:
            self.upstream.stop(now)  # un-REGISTER


def check_config(config: Config, *, phonebook: bool = True) -> tuple[AutoAnswerRule, ...]:
    """What a start checks beyond the file's own validation (:func:`load_config`): no demo
    secret on a public address, no weak SIP password, auto-answer rules that compile, a
    phonebook file that reads (not with ``phonebook=False``: a running server's reload,
    which does not apply ``[contacts]`` and must not read 16 MiB on the reactor thread).
    Raises :class:`ConfigError`; returns the auto-answer rules. ``serve``, ``check-config``,
    ``reload`` and the workers' supervisor all run it: a file one of them accepts, all do."""
    check_demo_secrets(config)
    check_weak_passwords(config)
    if phonebook and config.contacts.phonebook is not None:
        try:
            Phonebook.from_file(config.contacts.phonebook, config.numbers)
        except PhonebookError as exc:
            raise ConfigError(f"contacts.phonebook: {exc}") from None
    try:
        return rules_from_config([dict(e) for e in config.auto_answer]) + DEFAULT_RULES
    except ValueError as exc:
        raise ConfigError(f"auto_answer: {exc}") from None


def _restart_needed(old: Config, new: Config) -> tuple[str, ...]:
    changed: list[str] = []
    for name in RESTART_ONLY:
        section, _, key = name.partition(".")
        before, after = getattr(old, section), getattr(new, section)
        if key == "listen":
            before, after = (before.host, before.port), (after.host, after.port)
        elif key:
            before, after = getattr(before, key), getattr(after, key)
        if before != after:
            changed.append(name)
    return tuple(changed)


def build_core(config: Config, *, clock: Callable[[], float], store: CoreStore,
               events: EventSink, secret: bytes, rtp_sinks: dict[int, tuple[str, int]],
               media: MediaPort | None = None, prompts: PromptSource | None = None,
               load: LoadGauge | None = None, resolver: Resolver | None = None,
               on_lockout: Callable[[Lockout], None] | None = None,
               shard: Shard = SINGLE,
               on_binding: Callable[[Binding, bool], None] | None = None,
               referrals: ReferralWatch | None = None,
               on_guard: OnOutcome | None = None,
               guard_reports: Callable[[str], bool] | None = None,
               observer: CallObserver | None = None,
               contacts: ContactLookup | None = None) -> Core:
    """The whole SIP and call stack for ``config``; nothing listens yet (the transport adds
    its local addresses to ``core.endpoint`` as it binds)."""
    timers = TimerHeap()
    endpoint = Endpoint(timers, TimerConfig(config.sip.t1, config.sip.t2, config.sip.t4),
                        user_agent=config.sip.user_agent, shard=shard)
    users = dict(config.users)  # Core.users: a reload changes it in place
    # one guard for every password check: REGISTER, the phones' calls, the HTTP auth=
    guard = FailureGuard(GuardPolicy.from_config(config.auth), on_lockout, on_guard,
                         guard_reports)
    auth = Authenticator(config.sip.realm,
                         lambda u: users[u].password if u in users else None,
                         secret=secret, algorithms=config.sip.digest_algorithms, guard=guard)

    def on_change(binding: Binding, removed: bool) -> None:
        if removed:
            store.delete_registration(binding.user, binding.contact)
        else:
            store.save_registration(_record(binding))
        if on_binding is not None:  # the other workers (sipdial.workers)
            on_binding(binding, removed)

    registrar = Registrar(auth, users.keys(),
                          ExpiryLimits(config.sip.min_registration_expires,
                                       config.sip.max_registration_expires,
                                       config.sip.default_registration_expires),
                          on_change=on_change)
    ua = UserAgent(endpoint, registrar, config.sip.domain)
    router = Router(users.keys(), config.routes, registrar.contacts,
                    local_hosts(config.sip.domain, [a.host for a in config.sip.listen]),
                    outbound_proxy=config.sip.outbound_proxy,
                    pbx=Pbx.from_config(config.upstream) if config.upstream else None,
                    numbers=config.numbers)
    rules = rules_from_config([dict(e) for e in config.auto_answer]) + DEFAULT_RULES
    resolver = resolver or NumericResolver(clock)
    calls = CallService(config, ua, registrar, router, store, events, clock,
                        auto_answer_rules=rules, rtp_sinks=rtp_sinks, resolver=resolver,
                        media=media, prompts=prompts, load=load, referrals=referrals,
                        observer=observer)
    upstream = None
    if config.upstream is not None:
        upstream = UpstreamRegistration(config.upstream, endpoint, timers, resolver)
    inbound = InboundRouter(config, ua, auth, router, calls, resolver, contacts=contacts)
    return Core(config, timers, endpoint, auth, registrar, ua, router, calls, inbound,
                upstream, users)


class _ClockedResolver:
    """The DNS resolver as the calls layer sees it: the answer comes with the time."""

    def __init__(self, dns: DnsResolver, clock: Callable[[], float]) -> None:
        self._dns = dns
        self._clock = clock

    def resolve(self, uri: SipURI, default_transport: str, on_done: OnResolved) -> None:
        self._dns.resolve(uri, default_transport,
                          lambda result: on_done(result, self._clock()))


@dataclass
class Running:
    """A started sipdial: what tests and ``serve`` need to reach it."""

    config: Config
    core: Core
    driver: SipDriver
    store: SqliteStore
    events: EventHub
    media: MediaManager | MediaProcess
    sip_ports: list[tuple[str, str, int]]
    http_port: int
    listeners: list[Any]
    sweeper: Any
    lag: LagMonitor
    #: with ``--workers``: this worker's role, mesh and loopback HTTP port
    role: WorkerRole | None = None
    mesh: Mesh | None = None
    private_http_port: int | None = None
    #: the port each [sip] listen entry got ("udp:127.0.0.1:0" -> 40123)
    bound: dict[str, int] | None = None
    merged: MergedEvents | None = None  #: with ``--workers``: the SSE source
    site: ApiSite | None = None  #: the API
    private_site: ApiSite | None = None  #: with ``--workers``: what the others ask

    def reload(self, config: Config) -> tuple[str, ...]:
        """Apply a configuration reloaded from the file (SIGHUP): see
        :meth:`Core.reconfigure`; also the API's tokens, ``allow_from`` and ``[metrics]``.
        Returns the sections that changed but need a restart (kept as they were)."""
        restart = self.core.reconfigure(_worker_share(config, self.role))
        if self.site is not None:
            self.site.reconfigure(config.api.tokens, _allow_from(config), config.metrics,
                                  config.camara_sinks)
        if self.private_site is not None:  # no allow_from; the other workers' token
            self.private_site.reconfigure(config.api.tokens, {},
                                          MetricsConfig(token=config.metrics.token),
                                          config.camara_sinks)
        self.config = self.core.config
        return restart

    @property
    def calls(self) -> CallService:
        return self.core.calls

    def ready_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "sip": [{"transport": t, "host": h, "port": p} for t, h, p in self.sip_ports],
            "http": {"host": self.config.http.host, "port": self.http_port},
            "pid": os.getpid(),
            "config": os.path.abspath(self.config.source),  # what `sipdial reload` checks
        }
        if self.role is not None:
            info["worker"] = self.role.index
            info["private_http"] = self.private_http_port
            info["bound"] = self.bound or {}
        return info

    @inlineCallbacks
    def stop(self) -> Any:
        self.core.shut_down(self.driver.reactor.seconds())
        self.driver.pump()  # the CANCELs and BYEs go out now
        self.lag.stop()
        if self.sweeper.active():
            self.sweeper.cancel()
        for listener in self.listeners:
            yield listener.stopListening()
        self.driver.stop()
        if self.mesh is not None:
            self.mesh.stop()
        self.media.stop()
        if self.merged is not None:
            self.merged.stop()
        yield self.events.stop()
        yield self.store.stop()


@inlineCallbacks
def start(config: Config, reactor: Any, role: WorkerRole | None = None) -> Any:
    """Start everything on ``reactor``; returns (via Deferred) a :class:`Running`. ``role``:
    this process is one of several workers (:mod:`sipdial.workers`)."""
    path = config.store.sqlite_path
    store = SqliteStore(path if role is None else worker_store_path(path, role.index), reactor)
    yield store.start()
    listeners: list[Any] = []
    try:
        # read before anything can start a call: these are the calls a crash cut off
        unfinished = yield store.unfinished_calls()
        running = yield _start_on(config, reactor, store, listeners, unfinished, role)
    except BaseException:
        for listener in listeners:
            try:
                yield listener.stopListening()
            except Exception:
                pass
        yield store.stop()  # its worker thread must not keep the process alive
        raise
    return running


def _contacts(config: Config, reactor: Any, book: ContactBook) -> Contacts:
    """Who calls: ``[contacts]`` phonebook (loaded now), the users' own phonebooks (the
    web page's), the CRM's lookup URL."""
    settings = config.contacts
    phonebook = None
    if settings.phonebook is not None:
        phonebook = Phonebook.from_file(settings.phonebook, config.numbers)
        log.info("phonebook %s: %d numbers", settings.phonebook, len(phonebook))
    fetch = AgentFetcher(reactor).get if settings.lookup_url is not None else None
    return Contacts(phonebook, lookup_url=settings.lookup_url, fetch=fetch,
                    cache_ttl=settings.cache_ttl, clock=reactor.seconds, book=book)


def _used_links_of_others(path: str, role: WorkerRole, now: float) -> list[tuple[str, float]]:
    """The used links in the other workers' store files (``calls.wN.db``, also of indexes a
    previous run had): read once at start, read-only."""
    root, ext = os.path.splitext(path)
    files = {path, *glob.glob(f"{glob.escape(root)}.w*{ext or '.db'}")}
    files.discard(worker_store_path(path, role.index))
    return [entry for name in sorted(files) for entry in used_links_in(name, now)]


def _allow_from(config: Config) -> dict[str, Sequence[Network] | None]:
    http = config.http
    return {"api": http.allow_from, "call_init": http.call_init_allow_from,
            "remote_call": http.remote_call_allow_from}


def _metrics(core: Core, events: EventHub, lag: LagMonitor, calls: CallMetrics,
             reactor: Any) -> Metrics:
    """``GET /metrics`` of this process (:mod:`sipdial.metrics`): each source a cheap read
    of what the engine keeps anyway."""
    endpoint, txns, deliverer = core.endpoint, core.endpoint.txns, events.deliverer

    def messages() -> tuple[int, int, int, int]:
        st = endpoint.stats
        return st.received, st.sent, st.malformed, st.dropped

    def webhooks() -> tuple[int, int, int, int]:
        return (deliverer.delivered, deliverer.failed_attempts, deliverer.given_up,
                len(deliverer.queue))

    sources = MetricSources(
        calls_by_state=lambda: (c.record.state for c in core.calls.calls.values()),
        relayed_calls=lambda: core.inbound.count,
        # every worker holds the whole table (replicated): worker 0 reports it
        registrations=((lambda: len(core.registrar.all(reactor.seconds())))
                       if core.endpoint.shard.index == 0 else (lambda: None)),
        transactions=lambda: (len(txns.server), len(txns.client)),
        retransmissions=lambda: txns.retransmissions,
        messages=messages,
        webhooks=webhooks,
        lag=lambda: lag.lag,
    )
    return Metrics(sources, calls)


@inlineCallbacks
def _start_on(config: Config, reactor: Any, store: SqliteStore,
              listeners: list[Any], unfinished: list[CallRecord],
              role: WorkerRole | None) -> Any:
    # where REFER-mode offers point the phones' audio, one sink per address family
    sinks: dict[int, tuple[str, int]] = {}
    for addr in config.sip.listen:
        if family(addr.host) not in sinks:
            sink = reactor.listenUDP(0, _RtpSink(), interface=addr.host)
            listeners.append(sink)
            sinks[family(addr.host)] = (addr.host, sink.getHost().port)

    # sipdial's own RTP: prompts decoded and G.711-encoded once, here
    prompts = PromptLibrary.load(custom_file=config.media.prompt_file)
    media_host = config.media.host or config.sip.listen[0].host
    port_min, port_max = _media_ports(config.media.port_min, config.media.port_max, role)
    media: MediaManager | MediaProcess
    if config.media.process:
        media = MediaProcess(reactor, media_host, port_min, port_max, config.media.prompt_file,
                             name="media" if role is None else f"w{role.index} media")
        media.start()
    else:
        media = MediaManager(reactor, media_host, port_min, port_max, prompts)
    lag = LagMonitor(reactor)
    events = EventHub(store, reactor, config.webhooks,
                      ids=(role.index, role.count) if role is not None else (0, 1),
                      id_floor=role.id_floor if role is not None else (0, 0))
    def on_lockout(lockout: Lockout) -> None:
        events.publish_notice(EventName.AUTH_LOCKED_OUT, lockout.to_json(), lockout.at)

    # SIP over TLS (RFC 5630) where a tls: listener is configured: sips: and ;transport=tls
    # destinations resolve to TLS peers, whose certificates are checked ([sip.tls])
    tls = (TlsContexts.from_config(config.sip.tls)
           if any(a.transport == "tls" for a in config.sip.listen) else None)
    transports = ("udp", "tcp", "tls") if tls is not None else ("udp", "tcp")
    dns = DnsResolver(reactor, supported=transports)
    # with workers: the way to the others (it starts listening once the driver exists)
    mesh = Mesh(reactor, role.mesh_dir, role.index, role.count) if role is not None else None
    referrals = _MeshReferrals(Referrals(), mesh) if mesh is not None else None

    def replicate(binding: Binding, removed: bool) -> None:
        assert mesh is not None
        mesh.broadcast_registration(_binding_document(binding, removed))

    def guard_outcome(outcome: Outcome, src: str, account: str, at: float) -> None:
        assert mesh is not None
        mesh.broadcast_guard(json.dumps([outcome.value, src, account, at]).encode())

    call_metrics = CallMetrics()
    book = ContactBook(contact_book_path(config.store.sqlite_path), reactor, reactor.seconds)
    contacts = _contacts(config, reactor, book)
    core = build_core(_worker_share(config, role), clock=reactor.seconds, store=store,
                      events=events,
                      secret=role.secret if role is not None else os.urandom(32),
                      rtp_sinks=sinks, media=media, prompts=prompts,
                      load=lag, resolver=_ClockedResolver(dns, reactor.seconds),
                      on_lockout=on_lockout,
                      shard=role.shard if role is not None else SINGLE,
                      on_binding=replicate if role is not None else None,
                      referrals=referrals,
                      on_guard=guard_outcome if mesh is not None else None,
                      guard_reports=_reporter(role) if role is not None else None,
                      observer=call_metrics, contacts=contacts)
    saved = yield store.load_registrations()
    if role is not None and role.rejoin:
        # the others answer our hello with their whole table; what this file holds may
        # have been removed meanwhile: it goes, and comes back only if they still have it.
        # Until their table is here (at most REJOIN_HOLD s), REGISTERs get 503: one taken
        # meanwhile (an un-REGISTER above all) would be undone by it
        for r in saved:
            store.delete_registration(r.user, r.contact)
        core.registrar.hold_until = reactor.seconds() + REJOIN_HOLD
    else:
        core.registrar.restore((_binding(r) for r in saved), reactor.seconds())

    sip = config.sip
    tcp = TcpLimits(message_timeout=sip.tcp_message_timeout,
                    idle_timeout=sip.tcp_idle_timeout or sip.max_registration_expires + 60.0,
                    max_per_source=sip.tcp_max_per_source,
                    # the HTTP listener must always find a descriptor (issue 7 §6)
                    max_connections=tcp_budget(sip.tcp_max_connections, sip.tcp_fd_reserve))
    if any(addr.transport == "tcp" for addr in sip.listen):
        log.info("SIP-TCP: at most %d connections, %d per source; a message within %g s",
                 tcp.max_connections, tcp.max_per_source, tcp.message_timeout)
    merged: MergedEvents | None = None
    if role is not None and mesh is not None:
        # GET /v1/events: every worker's events (sipdial.events.merged)
        readers = {k: SqliteEventReader(worker_store_path(config.store.sqlite_path, k),
                                        reactor)
                   for k in range(role.count) if k != role.index}
        merged = MergedEvents(role.index, role.count, events, readers, mesh.want_events,
                              reactor)
    driver = SipDriver(reactor, core.endpoint, core.timers, core.handle, tcp=tcp, tls=tls,
                       forwarder=mesh,
                       referrals=referrals.table if referrals is not None else None)
    sip_ports: list[tuple[str, str, int]] = []
    bound: dict[str, int] = {}
    try:
        if mesh is not None and merged is not None and referrals is not None:
            mesh.start(_mesh_handlers(reactor, core, store, driver, mesh, events, merged,
                                      referrals))
        for addr in config.sip.listen:
            wildcard = addr.host in ("0.0.0.0", "::")
            advertise = config.sip.domain if wildcard else None
            if role is None:
                port = driver.listen(addr.transport, addr.host, addr.port, advertise=advertise)
            else:
                port = role.sip_ports.get(_listen_key(addr), addr.port)
                if addr.transport == "udp":
                    port = driver.listen("udp", addr.host, port, advertise=advertise,
                                         reuse_port=True)
                elif role.index == 0:
                    port = driver.listen(addr.transport, addr.host, port, advertise=advertise)
                else:  # worker 0 holds every TCP/TLS connection (sipdial.workers)
                    driver.listen_elsewhere(addr.transport, addr.host, port, advertise)
            bound[_listen_key(addr)] = port
            sip_ports.append((addr.transport, addr.host, port))
    except BaseException:
        driver.stop()
        if mesh is not None:
            mesh.stop()
        lag.stop()
        raise

    if core.upstream is not None and (role is None or role.index == 0):
        core.upstream.start(reactor.seconds())  # [upstream]: register there (sipdial.upstream)
        driver.pump()
    yield events.start()  # resumes webhook deliveries a previous run left pending
    if mesh is not None:
        # the others send their registrations, and those with SSE clients ask for our
        # events: only now, when the hub knows the last id it released (the ack)
        mesh.hello()
    # CRMs hear about calls a crash cut off, too: ended and published in one transaction
    if core.calls.end_interrupted(unfinished):
        log.warning("%d call(s) were in progress at the last stop: ended as interrupted",
                    len(unfinished))

    def check_password(user: str, password: str, client: str) -> bool:
        return core.auth.check_password(user, password, client, reactor.seconds())

    txns = core.endpoint.txns
    api = CallsApi(core.calls, core.inbound, store, core.registrar, reactor.seconds,
                   transactions=lambda: len(txns.server) + len(txns.client),
                   # worker 0 alone registers upstream: the others' /healthz leave it out
                   # and their GET /v1/upstream asks worker 0
                   upstream=core.upstream if role is None or role.index == 0 else None,
                   webhooks=events.deliverer.status)
    workers: OtherWorkers | None = WorkerHttp(reactor, role) if role is not None else None
    metrics = _metrics(core, events, lag, call_metrics, reactor)
    internal_token = (hmac.new(role.secret, b"metrics", hashlib.sha256).hexdigest()
                      if role is not None else None)
    # the web page's sessions: signed cookies, the key shared by the workers
    sessions = Sessions(hmac.new(role.secret, b"sessions", hashlib.sha256).digest()
                        if role is not None else os.urandom(32), reactor.seconds,
                        secure=config.http.secure_cookies)
    links = None
    if config.links is not None:  # call links (sipdial.api.links)
        shard = core.endpoint.shard
        links = Links(config.links.secret.encode(), store, reactor.seconds,
                      lambda: shard.prefix(24), max_ttl=config.links.max_ttl,
                      default_ttl=config.links.default_ttl, one_click=config.links.one_click,
                      base_url=config.links.base_url)
        links.load((yield store.used_links(reactor.seconds())))
        if role is not None:  # links another worker (of this or an earlier run) saw used
            links.load(_used_links_of_others(config.store.sqlite_path, role, reactor.seconds()))
    # the same for the public site and the private one the other workers ask
    parts = ApiParts(check_password=check_password, links=links, sessions=sessions,
                     contact_book=book, number_plan=lambda: core.config.numbers,
                     password_of=lambda u: core.users[u].password if u in core.users
                     else None,
                     is_admin=lambda u: u in core.users and core.users[u].admin)
    site = build_site(api, config.api.tokens, reactor=reactor, parts=parts,
                      events=merged if merged is not None else events, workers=workers,
                      allow_from=_allow_from(config),
                      metrics=metrics, metrics_config=config.metrics,
                      internal_token=internal_token, camara_sinks=config.camara_sinks)
    private_port = None
    own_site = None
    if role is None:
        http = reactor.listenTCP(config.http.port, site, interface=config.http.host)
    else:
        # the shared API port (SO_REUSEPORT), and this worker's own loopback port where the
        # others ask it about its calls (answering from here only: no workers to ask)
        port = role.http_port if role.http_port is not None else config.http.port
        sock = reuse_port_socket(socket.SOCK_STREAM, config.http.host, port)
        try:
            http = reactor.adoptStreamPort(sock.fileno(), sock.family, site)
        finally:
            sock.close()
        # its /metrics answers the other workers (internal token) and the [metrics] token
        own_site = build_site(api, config.api.tokens, reactor=reactor, parts=parts,
                              events=events, metrics=metrics,
                              metrics_config=MetricsConfig(token=config.metrics.token),
                              internal_token=internal_token,
                              camara_sinks=config.camara_sinks)
        private = reactor.listenTCP(0, own_site, interface="127.0.0.1")
        listeners.append(private)
        private_port = private.getHost().port
    listeners.append(http)

    running = Running(config, core, driver, store, events, media, sip_ports,
                      http.getHost().port, listeners, None, lag, role=role, mesh=mesh,
                      private_http_port=private_port, bound=bound, merged=merged,
                      site=site, private_site=own_site)

    full_collections = FullCollections(reactor.seconds())

    def sweep() -> None:
        now = reactor.seconds()
        core.sweep(now)
        if links is not None:
            links.sweep(now)
        full_collections.run_if_due(now)  # the safety net for cycles (tune_gc)
        running.sweeper = reactor.callLater(SWEEP_INTERVAL, sweep)

    running.sweeper = reactor.callLater(SWEEP_INTERVAL, sweep)
    return running


def _route_twisted_logs() -> None:
    """sipdial logs through Python logging; Twisted itself still uses ``twisted.logger``.
    Send its warnings and errors (an unhandled error in a Deferred, ...) there too and drop
    its INFO chatter ("Starting factory ..."). The API's access log is sipdial's own."""
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        STDLibLogObserver,
        globalLogBeginner,
    )

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    # zope interfaces do not type-check (no mypy plugin here): hence the Any
    stdlib: Any = STDLibLogObserver()
    filters: Any = [predicate]
    observer: Any = FilteringLogObserver(stdlib, filters)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def tune_gc() -> None:
    """Freeze what start-up built and let the collector look at young objects only.

    A call leaves no reference cycles (legs hold their owner weakly, the RTP port is let go:
    tests/unit/test_no_cycles.py), so its objects go by reference counting; what the
    collector frees are small, short-lived cycles (closures of Deferred callbacks), which
    it finds while they are young. So only the youngest generation is collected
    automatically (every 50,000 allocations: ~20-80 ms), and the middle and oldest never
    (thresholds of 1,000,000): their collections traverse every object that survived one —
    with 20,000 calls held that was a 1.7 s pause of the middle generation and 921 calls
    refused 503 by the lag monitor at 350 calls/s, none with these thresholds
    (loadtest/RESULTS.md). :class:`FullCollections` is the safety net. Before the cycles
    were broken, ~200 objects per call piled up for the collector: a 2.4 s pause per 36 s at
    216 calls/s. ``SIPDIAL_GC_THRESHOLDS`` overrides the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_gc_thresholds(os.environ.get("SIPDIAL_GC_THRESHOLDS", "")))
    if os.environ.get("SIPDIAL_GC_LOG"):
        _log_gc_pauses()


GC_THRESHOLDS = (50_000, 1_000_000, 1_000_000)


def _gc_thresholds(text: str) -> tuple[int, int, int]:
    """``SIPDIAL_GC_THRESHOLDS="10000,10,1000"`` (a tuning knob, loadtest/RESULTS.md): the
    collector's three thresholds; empty or malformed: :data:`GC_THRESHOLDS`."""
    try:
        first, second, third = (int(x) for x in text.split(","))
    except ValueError:
        if text:
            log.warning("SIPDIAL_GC_THRESHOLDS=%r: not three integers, ignored", text)
        return GC_THRESHOLDS
    return max(1, first), max(1, second), max(1, third)


def _log_gc_pauses() -> None:
    """``SIPDIAL_GC_LOG=1`` (a diagnostic): one WARNING per collection pause over 5 ms
    (generation, ms, objects freed); ``SIPDIAL_GC_LOG=types``: also what each collection
    freed, by type — reference cycles that reference counting could not free (how the
    per-call cycles of 2026-12-02 were found). Costs time: not for production."""
    started: list[float] = [0.0]

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = 1000 * (time.perf_counter() - started[0])
        if ms > 5:
            log.warning("gc: generation %d took %.1f ms (%d collected)", info["generation"],
                        ms, info["collected"])
        if types and gc.garbage:
            counts = Counter(f"{type(o).__module__}.{type(o).__qualname__}"
                             for o in gc.garbage)
            gc.garbage.clear()
            log.warning("gc: garbage by type: %s", counts.most_common(25))

    types = os.environ.get("SIPDIAL_GC_LOG") == "types"
    if types:  # what the collector frees (it keeps it in gc.garbage until counted here)
        gc.set_debug(gc.DEBUG_SAVEALL)
    gc.callbacks.append(note)


def serve(config_path: str, ready_file: str | None = None,
          role: WorkerRole | None = None) -> int:
    """``sipdial serve``: run until SIGINT/SIGTERM. Returns the exit code. ``role``: as one
    worker of ``sipdial serve --workers`` (sipdial.workers)."""
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    # a reload asked while starting is done once started (SIGHUP's default would kill)
    reload_pending: list[bool] = []
    signal.signal(signal.SIGHUP, lambda _signum, _frame: reload_pending.append(True))
    who = "" if role is None else f"[w{role.index}] "  # workers share the supervisor's output
    logging.basicConfig(level=os.environ.get("SIPDIAL_LOG", "INFO"),
                        format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s")
    _route_twisted_logs()
    try:
        config = load_config(config_path)
        check_config(config)
    except (ConfigError, OSError) as exc:
        print(f"sipdial: {config_path}: {exc}", file=sys.stderr)
        return 2
    tune_gc()
    _tracemalloc_on_signal(os.environ.get("SIPDIAL_TRACEMALLOC", ""))
    nofile = raise_nofile()
    if nofile is not None:
        log.info("open-file limit: %d (hard %d)", *nofile)
    exit_code = [0]
    holder: list[Running] = []

    def started(running: Running) -> None:
        holder.append(running)
        info = running.ready_info()
        log.info("%s ready: %s", "sipdial" if role is None else f"worker {role.index}",
                 json.dumps(info))
        if ready_file:
            tmp = f"{ready_file}.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(info, fh)
            os.replace(tmp, ready_file)
        if role is not None:  # wake the supervisor
            os.kill(os.getppid(), signal.SIGUSR1)
        if reload_pending:
            reload(running, config_path)

    def failed(failure: Any) -> None:
        log.error("sipdial failed to start: %s", failure.getErrorMessage())
        exit_code[0] = 1
        if reactor.running:
            reactor.stop()
        else:  # failed before the reactor ran: stop it as soon as it does
            reactor.callWhenRunning(reactor.stop)

    def shutdown() -> Deferred[Any] | None:
        if holder:
            return holder[0].stop()
        return None

    d: Deferred[Running] = start(config, reactor, role)
    d.addCallbacks(started, failed)
    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    def stop_once() -> None:
        if reactor.running:  # a second signal during shutdown is not an error
            reactor.stop()

    def on_signal(signum: int, _frame: object) -> None:
        _exit_if_stuck(STOP_GRACE)
        reactor.callFromThread(stop_once)

    def reload_config() -> None:
        if not holder:
            reload_pending.append(True)  # done in started()
            return
        reload(holder[0], config_path)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: reactor.callFromThread(reload_config))
    reactor.run(installSignalHandlers=False)
    log.info("sipdial stopped")
    sys.stdout.flush()
    return exit_code[0]


def reload(running: Running, config_path: str) -> bool:
    """SIGHUP: load ``config_path`` again, with the checks of a start; a file that does not
    pass is refused with the same message, and sipdial runs on as it was. True: applied."""
    try:
        config = load_config(config_path)
        check_config(config, phonebook=False)  # [contacts] is restart-only: not read here
    except (ConfigError, OSError) as exc:
        log.error("reload refused: %s: %s (still running on the previous configuration)",
                  config_path, exc)
        return False
    restart = running.reload(config)
    log.info("configuration reloaded from %s: %d users, %d API tokens, %d routes, "
             "%d policy entries", config_path, len(config.users), len(config.api.tokens),
             len(config.routes), len(config.policy))
    if restart:
        log.warning("reload: %s changed: kept as they were until a restart",
                    ", ".join(restart))
    return True


def _tracemalloc_on_signal(directory: str) -> None:
    """``SIPDIAL_TRACEMALLOC=<dir>`` (a debugging aid, loadtest/fuzz_sip.py): trace
    allocations (``SIPDIAL_TRACEMALLOC_FRAMES`` deep, 8 by default) and write a snapshot,
    ``sipdial-<pid>-<n>.tracemalloc``, to ``dir`` on every SIGUSR2, after a full collection."""
    if not directory:
        return
    import itertools
    import tracemalloc

    tracemalloc.start(int(os.environ.get("SIPDIAL_TRACEMALLOC_FRAMES", "8")))
    numbers = itertools.count(1)

    def dump(_signum: int, _frame: object) -> None:
        path = os.path.join(directory, f"sipdial-{os.getpid()}-{next(numbers)}.tracemalloc")
        gc.collect()
        tracemalloc.take_snapshot().dump(path + ".tmp")
        os.replace(path + ".tmp", path)
        log.info("tracemalloc snapshot written to %s", path)

    signal.signal(signal.SIGUSR2, dump)
    log.warning("tracing allocations (SIPDIAL_TRACEMALLOC): slower; SIGUSR2 writes a snapshot")


STOP_GRACE = 5.0  # seconds a clean stop may take after SIGTERM before the process exits anyway


def _exit_if_stuck(grace: float) -> None:
    """SIGTERM stops sipdial within ``grace`` seconds in every state: if the clean stop
    (calls released, store flushed) has not finished by then, exit anyway."""
    def watchdog() -> None:
        log.error("sipdial did not stop within %g s of the signal: exiting now", grace)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(grace, watchdog)
    timer.daemon = True
    timer.start()
