"""Complete REFER click-to-dial calls through the real sans-IO stack, K at a time: CPU and memory.

    .venv/bin/python -m loadtest.bench_flow [--calls 5000] [--concurrency 1000] [--profile]

Run from the repository root (it imports ``tests.unit.simnet``). The real ``Endpoint``,
``TransactionLayer``, ``UserAgent``, ``Registrar``, ``Authenticator`` and the calls are
wired by :func:`sipdial.app.build_core`, as in the app, and fed bytes by scripted phones,
with a fake clock. There are
NO sockets and NO reactor: what is measured is sipdial's own work per call (parse, transactions,
dialogs, digest auth, call logic, serialise, timers), not the kernel or Twisted.

Every call is the whole happy path of ``tests/unit/test_clicktodial_flow.py``:
create_call -> INVITE phone -> 100/180/200 -> ACK + REFER -> 202 -> NOTIFY 100 -> referred INVITE
-> 407 -> ACK -> INVITE with Proxy-Authorization -> INVITE target -> 100/180 (relayed) ->
NOTIFY 180 -> 200 (ACKed, relayed) -> ACK -> NOTIFY 200 -> BYE first dialog -> phone BYE ->
BYE target -> 200. Each user has its own phone; targets are distinct numbers routed to one
address. ``--concurrency`` calls are live at once: new calls are started a few per round (so
the live calls are spread over all phases) and each live call takes one step per round; the
fake clock advances ``--tick`` seconds per round and fires due timers. After the last call the
clock runs on 40 s so every transaction's final timer (J, H, D, ...) fires: that CPU counts.

Up to three passes, each on a fresh stack, bounded by ``--calls`` and ``--max-seconds`` (wall
clock) and stopping by itself: memory (sys.getsizeof over the object graph reachable from
sipdial's roots, plus the RSS delta; at most 2*K calls; ``--no-memory`` skips it), CPU (one
process_time() pair per entry into sipdial: deliver, create_call, timers) and, with
``--profile``, cProfile switched on only inside those entries. It measures and prints; it
asserts nothing (the exit status is 1 if a call failed or a pass was cut short).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import math
import os
import pstats
import sys
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from types import BuiltinFunctionType, CodeType, FunctionType, MethodType, ModuleType

from sipdial.app import tune_gc
from sipdial.calls import CallRefused, CallRequest
from sipdial.config import Config
from sipdial.sip import (
    Message,
    NameAddr,
    Peer,
    Request,
    Response,
    call_id,
    parse_message,
    parse_name_addr_list,
)
from sipdial.store import CallEvent, CallRecord, RegistrationRecord
from tests.unit.simnet import (
    FakeStore,
    Phone,
    PhoneDialog,
    SimNet,
    ack_for,
    first_via,
    make_config,
    sdp_answer,
)

clock = time.process_time

TARGET_PEER = Peer("udp", "127.0.0.1", 5080)
FIRST_USER = 10000
FIRST_PORT = 20000
SIPFRAG = "message/sipfrag;version=2.0"
SDP_PHONE = sdp_answer()
SDP_REFERRED = sdp_answer(port=31000)
SDP_TARGET = sdp_answer("10.7.7.7")
STEPS = 13  # steps (rounds) one call takes: the yields in click_to_dial + 1
DRAIN = 40.0  # simulated seconds after the last call: > 64*T1, every transaction timer fires

def bench_config(users: int) -> Config:
    """The unit tests' configuration (tests.unit.simnet.make_config) with ``users`` more users."""
    return make_config(extra_users=range(FIRST_USER, FIRST_USER + users),
                       max_concurrent=users + 10)


class NullStore(FakeStore):
    """Counts what the calls persist and keeps nothing (SqliteStore is bench_store.py's)."""

    def __init__(self) -> None:
        super().__init__()
        self.saves = 0
        self.event_count = 0

    def save_call(self, call: CallRecord) -> None:
        self.saves += 1

    def add_event(self, call_id: str, event: CallEvent) -> None:
        self.event_count += 1

    def save_registration(self, reg: RegistrationRecord) -> None:
        pass


class FlowError(AssertionError):
    pass


class BenchNet(SimNet):
    """SimNet that keeps no log, times sipdial's side, and routes output to per-call inboxes."""

    def __init__(self, config: Config) -> None:
        self.null_store = NullStore()
        super().__init__(config, store=self.null_store)
        self.sip_cpu = 0.0
        self.profiler: cProfile.Profile | None = None
        self.outgoing: list[tuple[Peer, bytes]] = []
        self.inboxes: dict[Peer, deque[bytes]] = {}
        self.target_by_number: dict[bytes, deque[bytes]] = {}
        self.target_by_call_id: dict[bytes, deque[bytes]] = {}
        self.stray = 0

    # ---- sipdial's side: everything below the three entry points is timed (and profiled)

    def pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            endpoint, handle, outgoing = self.endpoint, self.core.handle, self.outgoing
            while True:
                events = endpoint.drain_events()
                for event in events:
                    handle(event, self.now)
                out = endpoint.drain_outbox()
                outgoing += out
                if not events and not out:
                    break
        finally:
            self._pumping = False

    def deliver(self, data: bytes, source: Peer) -> None:
        prof = self.profiler
        start = clock()
        if prof is not None:
            prof.enable()
        self.endpoint.receive(data, source, self.now)
        self.pump()
        if prof is not None:
            prof.disable()
        self.sip_cpu += clock() - start

    def advance(self, seconds: float) -> None:
        prof = self.profiler
        start = clock()
        if prof is not None:
            prof.enable()
        super().advance(seconds)
        if prof is not None:
            prof.disable()
        self.sip_cpu += clock() - start
        self.route()

    def create_call(self, user: str, to: str) -> CallRecord:
        prof = self.profiler
        start = clock()
        if prof is not None:
            prof.enable()
        try:
            call = self.calls.create(CallRequest(user=user, to=to))
        except CallRefused as exc:
            raise FlowError(f"create_call: {exc}") from None
        finally:
            self.settle()
            if prof is not None:
                prof.disable()
            self.sip_cpu += clock() - start
        self.route()
        return call.record

    # ---- the simulated network (harness cost)

    def route(self) -> None:
        out = self.outgoing
        for peer, data in out:
            box = self._target_box(data) if peer == TARGET_PEER else self.inboxes.get(peer)
            if box is None:
                self.stray += 1
            else:
                box.append(data)
        out.clear()

    def _target_box(self, data: bytes) -> deque[bytes] | None:
        i = data.find(b"\r\nCall-ID: ") + 11
        cid = data[i:data.find(b"\r\n", i)]
        box = self.target_by_call_id.get(cid)
        if box is None and data.startswith(b"INVITE sip:"):
            box = self.target_by_number.get(data[11:data.find(b"@")])
            if box is not None:
                self.target_by_call_id[cid] = box
        return box

    def live_state(self) -> str:
        txns = self.endpoint.txns
        return (f"{len(self.calls.calls)} calls, {len(self.inbound.relayed)} relayed, "
                f"{len(self.ua.dialogs)} dialogs, {len(txns.client)}+{len(txns.server)} "
                f"transactions, {len(self.timers._heap)} timer entries")


class BenchPhone(Phone):
    """A simnet Phone reading its own inbox (many calls share the target's address)."""

    def __init__(self, net: BenchNet, *args: object, **kwargs: object) -> None:
        super().__init__(net, *args, **kwargs)  # type: ignore[arg-type]
        self.bench = net
        self.inbox: deque[bytes] = deque()

    def send(self, data: bytes | Message) -> None:
        if not isinstance(data, bytes):
            data = data.to_bytes()
        self.bench.deliver(data, self.peer)
        self.bench.route()

    def take(self, method_or_status: str | int | None = None) -> Message:
        if not self.inbox:
            raise FlowError(f"{self.user}: nothing received, expected {method_or_status}")
        message = parse_message(self.inbox.popleft())
        if isinstance(method_or_status, str) and not (
                isinstance(message, Request) and message.method == method_or_status):
            raise FlowError(f"{self.user}: expected {method_or_status}, got {_what(message)}")
        if isinstance(method_or_status, int) and not (
                isinstance(message, Response) and message.status == method_or_status):
            raise FlowError(f"{self.user}: expected {method_or_status}, got {_what(message)}")
        return message

    def nothing(self) -> bool:
        return not self.inbox


def _what(message: Message) -> str:
    if isinstance(message, Request):
        return message.method
    return f"{message.status} {message.reason}"


# ------------------------------------------------------------------ one call


def notify(phone: BenchPhone, dialog: PhoneDialog, frag: str, terminated: bool = False) -> None:
    state = "terminated;reason=noresource" if terminated else "active;expires=60"
    phone.send(dialog.request("NOTIFY", extra=[("Event", "refer"), ("Subscription-State", state)],
                              body=f"{frag}\r\n".encode(), content_type=SIPFRAG))


def click_to_dial(net: BenchNet, phone: BenchPhone, target: BenchPhone,
                  n: int) -> Generator[None, None, str]:
    """One whole call; each ``yield`` ends a step (a side answering what it just received).
    Returns the call's end cause."""
    number = target.user
    record = net.create_call(phone.user, number)
    yield
    invite = phone.take_request("INVITE")
    tag = f"c{n}"
    phone.reply(invite, 100)
    phone.reply(invite, 180, to_tag=tag)
    yield
    phone.reply(invite, 200, to_tag=tag, body=SDP_PHONE)
    yield
    phone.take_request("ACK")
    refer = phone.take_request("REFER")
    phone.reply(refer, 202, contact=False)
    dialog = PhoneDialog(phone, invite, tag)
    notify(phone, dialog, "SIP/2.0 100 Trying")
    yield
    phone.take_response(200)
    uri = str(NameAddr.parse(refer.headers.get("Refer-To") or "").uri)
    extra = [("Referred-By", refer.headers.get("Referred-By") or "")]
    cid = phone.new_id("referred")
    from_tag = f"r{n}"
    to_value = f"<sip:{number}@127.0.0.1>"
    first = phone.request("INVITE", uri, call_id_value=cid, from_tag=from_tag, to_value=to_value,
                          cseq_number=1, extra=extra, body=SDP_REFERRED,
                          content_type="application/sdp")
    phone.send(first)
    yield
    challenge = phone.take_response(407)  # no 100 before a challenge (RFC 3261 §17.2.1)
    phone.send(ack_for(first, challenge, first_via(first)))
    auth = phone.authorization(challenge, "INVITE", uri, proxy=True)
    phone.send(phone.request("INVITE", uri, call_id_value=cid, from_tag=from_tag,
                             to_value=to_value, cseq_number=2,
                             extra=[*extra, ("Proxy-Authorization", auth)], body=SDP_REFERRED,
                             content_type="application/sdp"))
    yield
    phone.take_response(100)
    target_invite = target.take_request("INVITE")
    target.reply(target_invite, 100)
    target.reply(target_invite, 180, to_tag=f"t{n}")
    yield
    phone.take_response(180)
    notify(phone, dialog, "SIP/2.0 180 Ringing")
    yield
    phone.take_response(200)
    target.reply(target_invite, 200, to_tag=f"t{n}", body=SDP_TARGET)
    yield
    target.take_request("ACK")
    ok = phone.take_response(200)
    bridge_uri = str(parse_name_addr_list(ok.headers.get("Contact") or "")[0].uri)
    ok_to = ok.headers.get("To") or ""
    phone.send(phone.request("ACK", bridge_uri, call_id_value=cid, from_tag=from_tag,
                             to_value=ok_to, cseq_number=2))
    notify(phone, dialog, "SIP/2.0 200 OK", terminated=True)
    yield
    phone.take_response(200)
    phone.reply(phone.take_request("BYE"), 200, contact=False)
    yield
    phone.send(phone.request("BYE", bridge_uri, call_id_value=cid, from_tag=from_tag,
                             to_value=ok_to, cseq_number=3))
    yield
    phone.take_response(200)
    target.reply(target.take_request("BYE"), 200, contact=False)
    net.target_by_call_id.pop(call_id(target_invite).encode(), None)
    if record.state != "ended":
        raise FlowError(f"call {record.id} is {record.state} after the last BYE")
    return record.cause or "?"


# ------------------------------------------------------------------ the driver


@dataclass
class Run:
    calls: int
    concurrency: int
    started: int = 0
    completed: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    rounds: int = 0
    in_progress: int = 0  # calls whose flow has not finished (the network's view)
    peak_in_progress: int = 0
    peak_engine: int = 0  # sipdial's live click-to-dial calls (ended at the phone's BYE)
    timed_out: bool = False
    cpu_total: float = 0.0
    cpu_sip: float = 0.0
    cpu_gc: float = 0.0
    gc_runs: list[int] = field(default_factory=lambda: [0, 0, 0])
    received: int = 0
    sent: int = 0
    after_calls: str = ""
    after_drain: str = ""


def setup(concurrency: int) -> tuple[BenchNet, list[BenchPhone], list[BenchPhone]]:
    """K users, each with a registered phone, and K target numbers at 127.0.0.1:5080."""
    net = BenchNet(bench_config(concurrency))
    phones, targets = [], []
    for slot in range(concurrency):
        uid = str(FIRST_USER + slot)
        phone = BenchPhone(net, uid, f"pw{uid}", port=FIRST_PORT + slot,
                           contact_host=f"10.{slot >> 8 & 255}.{slot & 255}.1",
                           user_agent="Yealink SIP-T46S 66.86.0.15")
        net.inboxes[phone.peer] = phone.inbox
        if phone.register().status != 200:
            raise SystemExit(f"REGISTER of {uid} failed")
        target = BenchPhone(net, f"+4930{slot:06d}", None, port=TARGET_PEER.port,
                            contact_host="127.0.0.1", user_agent=None)
        net.target_by_number[target.user.encode()] = target.inbox
        phones.append(phone)
        targets.append(target)
    net.clear()
    net.advance(DRAIN)  # the REGISTER transactions end: the baseline holds only bindings
    return net, phones, targets


def drive(net: BenchNet, phones: list[BenchPhone], targets: list[BenchPhone], calls: int,
          tick: float, deadline: float,
          on_round: Callable[[Run], None] | None = None) -> Run:
    """Run ``calls`` calls, ``len(phones)`` at a time, then let every timer fire.

    Each round every live call takes one step, then free slots get new calls (at most
    K/12 a round, so that the K live calls are spread over all the steps of a call), then
    the clock moves on ``tick``. Every call's flow is finite, so this ends by itself;
    ``deadline`` (time.monotonic) stops it early."""
    concurrency = len(phones)
    run = Run(calls, concurrency)
    ramp = max(1, math.ceil(concurrency / (STEPS - 1)))
    free = list(range(concurrency - 1, -1, -1))
    live: list[tuple[int, Generator[None, None, str]]] = []
    stats = net.endpoint.stats
    received, sent, sip0 = stats.received, stats.sent, net.sip_cpu
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = clock()
        else:
            run.cpu_gc += clock() - gc_started[0]
            run.gc_runs[info["generation"]] += 1

    gc.callbacks.append(on_gc)
    start = clock()
    try:
        while run.started < calls or live:
            if time.monotonic() > deadline:
                run.timed_out = True
                break
            still = []
            for slot, flow in live:
                if _step(run, flow):
                    still.append((slot, flow))
                else:
                    free.append(slot)
            live = still
            for _ in range(min(ramp, len(free), calls - run.started)):
                slot = free.pop()
                phone, target = phones[slot], targets[slot]
                if phone.inbox or target.inbox:  # left over from a failed call in this slot
                    phone.inbox.clear()
                    target.inbox.clear()
                flow = click_to_dial(net, phone, target, run.started)
                run.started += 1
                if _step(run, flow):
                    live.append((slot, flow))
                else:
                    free.append(slot)
            run.rounds += 1
            run.in_progress = len(live)
            run.peak_in_progress = max(run.peak_in_progress, len(live))
            run.peak_engine = max(run.peak_engine, len(net.calls.calls))
            if on_round is not None:
                on_round(run)
            net.advance(tick)
        run.after_calls = net.live_state()
        if not run.timed_out:
            net.advance(DRAIN)
        run.after_drain = net.live_state()
        run.cpu_total = clock() - start
    finally:
        gc.callbacks.remove(on_gc)
    run.cpu_sip = net.sip_cpu - sip0
    run.received = stats.received - received
    run.sent = stats.sent - sent
    return run


def _step(run: Run, flow: Generator[None, None, str]) -> bool:
    """One step of one call; False once it is over."""
    try:
        next(flow)
    except StopIteration as stop:
        if stop.value == "completed":
            run.completed += 1
        else:
            run.failed += 1
            run.errors.append(f"ended with cause {stop.value}")
        return False
    except Exception as exc:
        run.failed += 1
        run.errors.append(f"{type(exc).__name__}: {exc}")
        return False
    return True


# ------------------------------------------------------------------ memory


def retained(roots: list[object], stop: list[object]) -> int:
    """Bytes (sys.getsizeof) of every object reachable from ``roots``: sipdial's own state.

    Modules, classes and code are not followed; a function is followed only through its
    closure and a bound method through its object, so module globals are not counted.
    ``stop`` objects (the harness) are neither counted nor followed."""
    seen = {id(o) for o in stop}
    todo = list(roots)
    total = 0
    skip = (type, ModuleType, CodeType, BuiltinFunctionType)
    getsizeof, referents = sys.getsizeof, gc.get_referents
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        total += getsizeof(obj)
        if isinstance(obj, FunctionType):
            todo.extend(obj.__closure__ or ())
        elif isinstance(obj, MethodType):
            todo.append(obj.__self__)
        else:
            todo.extend(referents(obj))
    return total


def sipdial_bytes(net: BenchNet) -> int:
    gc.collect()
    roots: list[object] = [net.core, net.ua, net.endpoint, net.timers, net.registrar,
                           net.auth]
    return retained(roots, [net, net.store])


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Memory:
    calls: int = 0
    in_progress: int = 0
    engine_calls: int = 0
    owned: int = 0
    rss: int = 0
    state: str = ""
    ended_calls: int = 0
    kept: int = 0
    kept_state: str = ""
    residual: int = 0
    timed_out: bool = False


def memory_pass(args: argparse.Namespace) -> Memory:
    """sipdial's object graph (and the process RSS) at the first round with K calls in
    progress, after the last call ended (what timers still hold), and after the drain."""
    net, phones, targets = setup(args.concurrency)
    calls = min(args.calls, 2 * args.concurrency)
    mem = Memory(calls=calls)
    base = sipdial_bytes(net)
    base_rss = rss()

    def on_round(run: Run) -> None:
        if not mem.in_progress and run.in_progress >= min(calls, args.concurrency):
            mem.in_progress = run.in_progress
            mem.engine_calls = len(net.calls.calls)
            mem.rss = rss() - base_rss
            mem.owned = sipdial_bytes(net) - base
            mem.state = net.live_state()
        if run.started == calls and not run.in_progress and not mem.ended_calls:
            mem.ended_calls = run.completed + run.failed
            mem.kept = sipdial_bytes(net) - base
            mem.kept_state = net.live_state()

    run = drive(net, phones, targets, calls, args.tick, time.monotonic() + args.max_seconds,
                on_round)
    mem.timed_out = run.timed_out
    mem.residual = sipdial_bytes(net) - base
    return mem


def cpu_pass(args: argparse.Namespace) -> Run:
    net, phones, targets = setup(args.concurrency)
    gc.collect()
    return drive(net, phones, targets, args.calls, args.tick, time.monotonic() + args.max_seconds)


def profile_pass(args: argparse.Namespace) -> None:
    net, phones, targets = setup(args.concurrency)
    gc.collect()
    prof = cProfile.Profile()
    net.profiler = prof
    run = drive(net, phones, targets, args.calls, args.tick,
                time.monotonic() + args.max_seconds)
    stats = pstats.Stats(prof)
    table = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for _cc, _nc, tt, _ct, _callers in table.values()) or 1e-9
    calls = max(1, run.completed + run.failed)

    def show(title: str, index: int) -> None:
        print(f"\n{title} ({run.completed} calls; % of sipdial's profiled time "
              f"{total:.2f} s; µs per click-to-dial call)")
        print(f"{'%':>6} {'µs/call':>8} {'ncalls':>9}  function")
        rows = sorted(table.items(), key=lambda kv: kv[1][index], reverse=True)[:20]
        for (path, line, func), values in rows:
            where = _short_path(path)
            name = f"{where}:{line}({func})" if line else func
            print(f"{100 * values[index] / total:6.1f} {1e6 * values[index] / calls:8.1f} "
                  f"{values[1]:9d}  {name}")

    show("cProfile top 20 by cumulative time, sipdial's side only", 3)
    show("cProfile top 20 by own time (tottime)", 2)
    print(f"\nThe cyclic GC ran {run.cpu_gc:.2f} s during this pass (all gens: "
          f"{run.gc_runs}); cProfile charges that to whichever function was allocating when "
          "a collection started (e.g. dict.values inside dataclasses.replace).")


def _short_path(path: str) -> str:
    marker = f"{os.sep}sipdial{os.sep}"
    if marker in path:
        return "sipdial/" + path.split(marker, 1)[1]
    return os.path.basename(path)


# ------------------------------------------------------------------ report


def report(args: argparse.Namespace, run: Run, mem: Memory | None) -> None:
    done = max(1, run.completed + run.failed)
    print(f"bench_flow {time.strftime('%Y-%m-%d')}: Python {sys.version.split()[0]}, "
          f"nproc {os.cpu_count()}, {run.calls} REFER click-to-dial calls, "
          f"{run.concurrency} at once, tick {1000 * args.tick:g} ms simulated")
    print("  sans-IO: no sockets, no reactor; the phones are simulated in this process")
    print(f"calls completed         {run.completed}  failed {run.failed}"
          f"{'  STOPPED BY --max-seconds' if run.timed_out else ''}  ({run.rounds} rounds)")
    for error in list(dict.fromkeys(run.errors))[:10]:
        print(f"  error: {error}")
    print(f"peak calls in progress  {run.peak_in_progress} (sipdial's live click-to-dial calls: "
          f"{run.peak_engine}; a call's record ends at the phone's BYE, 2 steps before the "
          "flow)")
    print(f"sipdial CPU             {run.cpu_sip:.3f} s = {done / run.cpu_sip:,.0f} calls/s "
          f"of CPU, {1e6 * run.cpu_sip / done:,.0f} µs per call")
    print(f"  of which GC           {run.cpu_gc:.3f} s whole process "
          f"({run.gc_runs[0]}/{run.gc_runs[1]}/{run.gc_runs[2]} collections gen 0/1/2)")
    print(f"all CPU (+ phones)      {run.cpu_total:.3f} s = {done / run.cpu_total:,.0f} calls/s, "
          f"{1e6 * run.cpu_total / done:,.0f} µs per call")
    print(f"messages per call       {run.received / done:.1f} parsed, {run.sent / done:.1f} sent "
          "by sipdial")
    print(f"after the calls         {run.after_calls}")
    print(f"after {DRAIN:g} s more       {run.after_drain}")
    if mem is None:
        return
    if mem.timed_out:
        print("memory pass             STOPPED BY --max-seconds: figures below are partial")
    if mem.in_progress:
        n = mem.in_progress
        print(f"memory per call         {mem.owned / n / 1024:.1f} KiB of sipdial objects "
              f"(sys.getsizeof over its object graph) with {n} calls in progress; "
              f"RSS +{mem.rss / n / 1024:.1f} KiB per call (whole process, incl. phones)")
        print(f"  at that moment        {mem.state}")
    if mem.ended_calls:
        print(f"kept after calls end    {mem.kept / mem.ended_calls / 1024:.1f} KiB per ended call "
              f"until timers J/H/D/K fire (32 s on UDP): {mem.kept_state}")
    print(f"left after the drain    {mem.residual / mem.calls:.0f} bytes per call over "
          f"{mem.calls} calls (emptied dicts keep their size; the digest nc cache is bounded)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls to run (default 5000)")
    parser.add_argument("--concurrency", type=int, default=1000,
                        help="calls in progress at once (default 1000)")
    parser.add_argument("--tick", type=float, default=0.05,
                        help="simulated seconds per round (default 0.05; < T1, so no "
                             "retransmissions)")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="wall-clock guard per pass (default 120)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory pass")
    parser.add_argument("--profile", action="store_true",
                        help="also run a cProfile pass and print the top 20")
    parser.add_argument("--serve-gc", action="store_true",
                        help="the garbage-collector settings `sipdial serve` uses "
                             "(sipdial.app.tune_gc) instead of Python's defaults")
    args = parser.parse_args(argv)
    if args.serve_gc:
        tune_gc()
    if args.calls < 1 or args.concurrency < 1 or not 0 < args.tick < 0.5:
        parser.error("--calls and --concurrency must be >= 1, 0 < --tick < 0.5")
    mem = None if args.no_memory else memory_pass(args)  # first: RSS of a fresh heap
    run = cpu_pass(args)
    report(args, run, mem)
    if args.profile:
        profile_pass(args)
    if run.failed or run.timed_out or (mem is not None and mem.timed_out):
        sys.exit(1)


if __name__ == "__main__":
    main()
