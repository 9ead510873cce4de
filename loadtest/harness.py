"""The load-test harness: click-to-dial calls through a whole sipdial process (issue 9 §1).

    .venv/bin/python -m loadtest --mode bridge --rate 50 --calls 1000
    .venv/bin/python -m loadtest --mode refer --rate 20 --duration 30 --users 100
    .venv/bin/python -m loadtest --mode bridge --find-knee --start-rate 50

Run it from the repository root (it imports ``tests.sipdial_proc`` and ``tests.peers``). On
127.0.0.1 only it starts:

* sipdial (``python -m sipdial serve``, log level WARNING) with a generated config: users
  ``1``..``N`` (password ``pw-<user>-load``), one ``[[routes]]`` entry that sends every number
  to the destination, UDP;
* the phones: ``loadtest/farm.py`` in its own process, which registers every user's devices
  (digest), answers sipdial's INVITEs (or rejects / lets ring a share of them), and in REFER
  mode places the referred call itself (INVITE, 407, INVITE with digest), as a phone does;
* the destination: a SIPp UAS (``tests/peers/scenarios/uas_answer_then_bye.xml``) that
  answers at once and hangs up ``--hold`` ms after the ACK;
* the driver: ``--http-conns`` threads with one keep-alive connection each, POSTing
  ``/v1/calls {"user": U, "to": "+4930<8 digits>", "mode": M}`` on one global schedule of
  ``--rate`` calls/s (users round-robin, every destination number unique, so every call can
  be followed through the phones' and sipdial's records).

Per call it joins three records by the destination number and sipdial's call id: the
driver's (POST sent, 201 received), the farm's (INVITE at the phone, answered) and sipdial's
SQLite call log (every state with its time, the cause), read after sipdial stopped. The report
(``report.json``, ``calls.csv``, PNG plots, a summary on stdout) has the achieved rates,
calls in progress, latency percentiles (HTTP -> INVITE at the phone, HTTP -> connected),
failures by cause, retransmissions, the CPU of every process and sipdial's RSS over time; it
says when the phones or the destination, not sipdial, were the bottleneck.

Bounded: ``--calls`` (or ``--duration`` x ``--rate``) calls, ``--max-seconds`` for the whole
run; everything it started is stopped at the end, also on Ctrl-C/SIGTERM or an error. It
measures; it asserts nothing.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.load_bridge import (
    Monitor,
    QuietSipdial,
    db_progress,
    log_problems,
    quiet_sipp,
    sipdial_dbs,
    sipdial_pids,
    udp_drops,
)
from loadtest.procs import proc_rss, sigterm_as_interrupt, sipp_stats
from tests.peers.lossy_relay import LossyRelay
from tests.peers.ports import LOOPBACK, free_port_both
from tests.peers.sipp import Sipp
from tests.sipdial_proc import ADMIN

DEST_SCENARIO = "uas_answer_then_bye.xml"
#: the states of sipdial's call log that make a call's timeline (first time each was entered)
STATES = ("user_ringing", "user_answered", "awaiting_confirmation", "calling_target",
          "target_ringing", "connected", "ended")
#: a process using more than this share of one core while offering is called a bottleneck
BUSY = 0.85


def password(user: str) -> str:
    return f"pw-{user}-load"


def number(index: int) -> str:
    """The unique destination number of call ``index`` (E.164, matches any route)."""
    return f"+4930{index:08d}"


# ------------------------------------------------------------------ the plan


@dataclass(frozen=True, slots=True)
class Plan:
    """One load run: what is offered and to what."""

    mode: str = "bridge"  #: "refer" | "bridge"
    prompt: bool = False  #: "press 1 to connect": the phones send RFC 4733 "1" when it plays
    rate: float = 20.0  #: offered calls/s
    calls: int = 200  #: calls in all
    users: int = 50  #: users 1..N, used round-robin
    devices: int = 1  #: devices per user (sipdial forks to all of them)
    hold_ms: int = 1000  #: the destination hangs up this long after it answered
    reject_share: float = 0.0  #: share of INVITEs the phones answer 486
    no_answer_share: float = 0.0  #: share the phones let ring (sipdial gives up and CANCELs)
    ring_timeout: float = 3.0  #: sipdial's user_answer_timeout for this run (s)
    http_conns: int = 16  #: driver threads, one keep-alive HTTP connection each
    workers: int = 1  #: `sipdial serve --workers N` (1: one process)
    #: with ``prompt``: ms after the phone's answer was ACKed until it sends "1" (the prompt
    #: plays that long)
    dtmf_after_ms: int = 300
    #: every phone names loadtest.rtp_probe as its audio address: sipdial's prompt RTP is
    #: timed on arrival (send-interval jitter)
    rtp_probe: bool = False
    #: the phones send the referred INVITE without the Refer-To's parameters (x-c2d)
    drop_refer_params: bool = False
    max_seconds: float = 300.0  #: the whole run, start-up to teardown
    drain_seconds: float = 20.0  #: after the last POST, wait at most this (+ hold) for ends
    #: datagrams dropped in each direction by lossy UDP relays between sipdial and the phones
    #: and between sipdial and the destination (tests/peers/lossy_relay.py; 0: no relays)
    loss: float = 0.0
    seed: int = 1

    def check(self) -> None:
        if self.mode not in ("refer", "bridge"):
            raise ValueError(f"mode must be refer or bridge, not {self.mode!r}")
        if self.rate <= 0 or self.calls <= 0 or self.users <= 0 or self.devices <= 0:
            raise ValueError("rate, calls, users and devices must be positive")
        if not (0 <= self.reject_share + self.no_answer_share <= 1):
            raise ValueError("reject_share + no_answer_share must be within 0..1")
        if not (0 <= self.loss < 1):
            raise ValueError("loss must be within 0..1")


# ------------------------------------------------------------------ the driver


@dataclass(slots=True)
class Post:
    """One POST /v1/calls as the driver saw it (wall-clock times)."""

    index: int
    user: str
    to: str
    sent: float
    done: float
    status: int
    call_id: str | None = None
    error: str | None = None


@dataclass
class Driver:
    """POSTs ``calls`` click-to-dial requests at ``rate``/s over ``conns`` connections."""

    host: str
    port: int
    plan: Plan
    deadline: float  #: monotonic
    stop: threading.Event
    posts: list[Post] = field(default_factory=list)
    t0: float = 0.0
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def body(self, index: int) -> tuple[str, str, bytes]:
        user = str(1 + index % self.plan.users)
        to = number(index)
        payload = {"user": user, "to": to, "mode": self.plan.mode,
                   "confirm": self.plan.prompt}
        return user, to, json.dumps(payload).encode()

    def run(self) -> None:
        self.t0 = time.monotonic() + 0.2
        threads = [threading.Thread(target=self._worker, daemon=True, name=f"http-{n}")
                   for n in range(self.plan.http_conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, self.deadline - time.monotonic()) + 15)

    @property
    def sent(self) -> int:
        return self._next

    def _take(self) -> int | None:
        with self._lock:
            i = self._next
            if i >= self.plan.calls or self.stop.is_set():
                return None
            self._next += 1
            return i

    def _worker(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
        mine: list[Post] = []
        try:
            while (i := self._take()) is not None:
                delay = self.t0 + i / self.plan.rate - time.monotonic()
                if delay > 0 and self.stop.wait(delay):
                    break
                if time.monotonic() > self.deadline:
                    self.stop.set()
                    break
                user, to, body = self.body(i)
                sent = time.time()
                try:
                    conn.request("POST", "/v1/calls", body, headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    done = time.time()
                    if resp.status == 201:
                        mine.append(Post(i, user, to, sent, done, 201, json.loads(data)["id"]))
                    else:
                        mine.append(Post(i, user, to, sent, done, resp.status,
                                         error=_error_code(data)))
                except (OSError, http.client.HTTPException) as exc:
                    mine.append(Post(i, user, to, sent, time.time(), 0,
                                     error=type(exc).__name__))
                    conn.close()
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        finally:
            conn.close()
            with self._lock:
                self.posts.extend(mine)


def _error_code(data: bytes) -> str:
    try:
        return str(json.loads(data)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return data[:60].decode(errors="replace")


# ------------------------------------------------------------------ the phones


class RtpProbe:
    """``python -m loadtest.rtp_probe``: where every phone's audio goes (``--rtp-probe``)."""

    def __init__(self, work: Path, max_seconds: float) -> None:
        self.dir = work / "rtp-probe"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ready = self.dir / "ready.json"
        self.result_path = self.dir / "result.json"
        self.args = [sys.executable, "-m", "loadtest.rtp_probe", "--ready-file",
                     str(self.ready), "--result", str(self.result_path), "--seconds",
                     str(max_seconds + 30), "--idle", str(max_seconds + 30)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        self.ready.unlink(missing_ok=True)
        self.result_path.unlink(missing_ok=True)  # never an earlier run's figures
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     cwd=Path(__file__).resolve().parent.parent)
        deadline = time.monotonic() + 20
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the RTP probe did not start")
            time.sleep(0.05)
        return int(json.loads(self.ready.read_text())["port"])

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def result(self) -> dict[str, Any] | None:
        self.stop()
        try:
            result: dict[str, Any] = json.loads(self.result_path.read_text())
        except (OSError, ValueError):
            return None
        return result


class Farm:
    """``python -m loadtest.farm`` in its own process: the users' phones."""

    def __init__(self, work: Path, plan: Plan, sipdial_port: int,
                 media_to: int | None = None) -> None:
        self.dir = work / "farm"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ready = self.dir / "ready.json"
        self.events = self.dir / "events.jsonl"
        self.log_path = self.dir / "farm.log"
        self.args = [
            sys.executable, "-m", "loadtest.farm",
            "--sipdial", f"{LOOPBACK}:{sipdial_port}",
            "--users", f"1-{plan.users}", "--devices", str(plan.devices),
            "--ready-file", str(self.ready), "--events", str(self.events),
            "--reject-share", str(plan.reject_share),
            "--no-answer-share", str(plan.no_answer_share),
            "--seed", str(plan.seed), "--max-seconds", str(int(plan.max_seconds) + 30)]
        if plan.prompt:  # "1" shortly after the phone's answer is ACKed: the prompt is on
            self.args += ["--dtmf-after", str(plan.dtmf_after_ms)]
        if media_to is not None:
            self.args += ["--media-to", f"{LOOPBACK}:{media_to}"]
        if plan.drop_refer_params:
            self.args += ["--drop-refer-params"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.stats: dict[str, Any] = {}

    def start(self, timeout: float) -> Farm:
        self.ready.unlink(missing_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         cwd=Path(__file__).resolve().parent.parent)
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the phones did not register:\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.05)
        self.info = json.loads(self.ready.read_text())
        return self

    def stop(self) -> None:
        """SIGTERM: the farm writes its events and its last stdout line, then exits."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            self._read_stats()
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        self._read_stats()

    def _read_stats(self) -> None:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return
        for line in reversed(lines):
            if line.startswith("{"):
                try:
                    self.stats = json.loads(line)
                except ValueError:
                    continue
                return

    def read_events(self) -> list[dict[str, Any]]:
        events = []
        try:
            with open(self.events) as fh:
                for line in fh:
                    try:
                        events.append(json.loads(line))
                    except ValueError:
                        continue
        except FileNotFoundError:
            pass
        return events


# ------------------------------------------------------------------ one run


@dataclass
class Run:
    """Everything one run produced, for :mod:`loadtest.report`."""

    plan: Plan
    work: Path
    posts: list[Post]
    t_first: float  #: wall clock of the first POST
    t_last: float  #: wall clock of the last POST's answer
    calls: list[dict[str, Any]]  #: one timeline per POST (see :func:`timelines`)
    samples: list[dict[str, float]]  #: per second: time, CPU % of each process, sipdial RSS
    farm_stats: dict[str, Any]
    dest_stats: dict[str, str]
    sipdial_cpu_s: float  #: sipdial's CPU seconds from the first POST to drained
    rss_hwm: int
    udp_dropped: int
    log_groups: dict[str, int]
    tracebacks: int
    interrupted: str = ""
    relays: list[dict[str, int]] = field(default_factory=list)  #: loss mode: per relay
    rtp: dict[str, Any] | None = None  #: loadtest.rtp_probe's result (``--rtp-probe``)


def run(plan: Plan, work: Path | None = None, *,
        progress: Callable[[str], None] | None = None) -> Run:
    """Start everything, offer the plan's calls, drain, stop everything, collect."""
    plan.check()
    started = time.monotonic()
    deadline = started + plan.max_seconds
    work = work or Path(tempfile.mkdtemp(prefix="sipdial-load-"))
    work.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    dest_port = free_port_both()
    relays: list[LossyRelay] = []
    dest_at = dest_port
    if plan.loss:  # sipdial -> relay -> destination
        relays.append(LossyRelay((LOOPBACK, dest_port), drop_up=plan.loss,
                                 drop_down=plan.loss, seed=plan.seed))
        dest_at = relays[-1].port
    users = [{"id": str(u), "password": password(str(u))} for u in range(1, plan.users + 1)]
    if plan.users < 201:  # tests.sipdial_proc's config has an API token for user 201
        users.append({"id": "201", "password": password("201")})
    sd = QuietSipdial(
        work, workers=plan.workers, users=users, transports=("udp",),
        routes=[{"match": "^\\+?[0-9]+$", "uri": f"sip:{{number}}@{LOOPBACK}:{dest_at}"}],
        calls={"max_concurrent": max(2000, int(plan.rate * (plan.hold_ms / 1000 + 60))),
               "user_answer_timeout": plan.ring_timeout})
    dest: Sipp | None = None
    farm: Farm | None = None
    monitor: Monitor | None = None
    driver: Driver | None = None
    interrupted = ""
    rss_hwm = 0
    drops0 = drops1 = 0
    t_drained = 0.0
    ticker: threading.Thread | None = None
    probe: RtpProbe | None = None
    with ExitStack() as cleanup, sigterm_as_interrupt():
        cleanup.callback(stop.set)
        for relay in relays:
            cleanup.callback(relay.close)
        try:
            sd.start()
            cleanup.callback(sd.stop)
            assert sd.proc is not None
            sip_port = sd.sip_port("udp")
            api = sd.info["http"]
            dest = quiet_sipp(Sipp.uas(work, DEST_SCENARIO, port=dest_port,
                                       duration_ms=plan.hold_ms, calls=plan.calls,
                                       timeout=max(10.0, plan.max_seconds), rtp_echo=False,
                                       name="sipp-dest"),
                              work / "sipp-dest" / "stat.csv", [])
            dest.start()
            cleanup.callback(dest.stop)
            phones_to = sip_port
            if plan.loss:  # phones -> relay -> sipdial (sipdial knows them at the relay)
                relays.append(LossyRelay((LOOPBACK, sip_port), drop_up=plan.loss,
                                         drop_down=plan.loss, seed=plan.seed + 1))
                cleanup.callback(relays[-1].close)
                phones_to = relays[-1].port
            probe_port = None
            if plan.rtp_probe:
                probe = RtpProbe(work, plan.max_seconds)
                cleanup.callback(probe.stop)
                probe_port = probe.start()
            farm = Farm(work, plan, phones_to, media_to=probe_port)
            cleanup.callback(farm.stop)
            farm.start(timeout=min(60.0, max(5.0, deadline - time.monotonic())))
            if farm.info.get("failed"):
                raise RuntimeError(f"{farm.info['failed']} phones could not register: "
                                   f"{farm.log_path}")
            assert farm.proc is not None and dest._proc is not None
            pids: dict[str, int | tuple[int, ...]] = {
                "sipdial": sipdial_pids(sd), "farm": farm.proc.pid, "dest": dest._proc.pid,
                "driver": os.getpid()}
            monitor = Monitor(pids, stop, interval=0.5)
            monitor.sample()
            monitor.start()
            drops0 = udp_drops(sip_port)
            driver = Driver(api["host"], int(api["port"]), plan,
                            deadline - plan.drain_seconds - 5, stop)
            if progress is not None:
                ticker = threading.Thread(target=_tick, daemon=True, name="progress",
                                          args=(progress, driver, monitor, sipdial_dbs(sd), stop))
                ticker.start()
            driver.run()
            accepted = sum(1 for p in driver.posts if p.status == 201)
            drain_end = min(deadline - 5,
                            time.monotonic() + plan.drain_seconds + plan.hold_ms / 1000)
            while time.monotonic() < drain_end:  # every accepted call ended (bounded)
                total, open_ = db_progress(sipdial_dbs(sd))
                if total >= accepted and open_ == 0:
                    break
                time.sleep(0.25)
            t_drained = time.monotonic()
            monitor.sample()
            drops1 = udp_drops(sip_port)
            try:
                pids_now = pids["sipdial"]
                rss_hwm = sum(proc_rss(p)[1] for p in (
                    pids_now if isinstance(pids_now, tuple) else (pids_now,)))
            except OSError:
                pass
        except KeyboardInterrupt as exc:
            interrupted = f"interrupted ({exc or 'Ctrl-C'})"
        finally:
            stop.set()
    if ticker is not None:
        ticker.join(2)
    rtp = probe.result() if probe is not None else None
    posts = sorted(driver.posts if driver else [], key=lambda p: p.index)
    if not posts or monitor is None or farm is None:
        raise RuntimeError(f"no calls were made ({interrupted or 'start-up failed'}); "
                           f"sipdial log: {sd.log_path}")
    t_first = min(p.sent for p in posts)
    t_last = max(p.done for p in posts)
    groups, tracebacks, _examples = log_problems(sd.log_text())
    return Run(
        plan=plan, work=work, posts=posts, t_first=t_first, t_last=t_last,
        calls=timelines(posts, sipdial_dbs(sd), farm.read_events()),
        samples=_per_second(monitor),
        farm_stats=farm.stats,
        dest_stats=sipp_stats(work / "sipp-dest" / "stat.csv"),
        sipdial_cpu_s=_cpu_between(monitor, "sipdial", t_drained),
        rss_hwm=rss_hwm, udp_dropped=max(0, drops1 - drops0),
        log_groups=dict(groups.most_common(12)), tracebacks=tracebacks,
        interrupted=interrupted,
        rtp=rtp,
        relays=[{"sent_up": x.stats.up_sent, "dropped_up": x.stats.up_dropped,
                 "sent_down": x.stats.down_sent, "dropped_down": x.stats.down_dropped}
                for x in relays])


def _tick(progress: Callable[[str], None], driver: Driver, monitor: Monitor, db: list[Path],
          stop: threading.Event) -> None:
    """A progress line every second while the run lasts."""
    started = time.monotonic()
    last_cpu: tuple[float, float] | None = None
    while not stop.wait(1.0):
        total, open_ = db_progress(db)
        cpu = ""
        if monitor.samples:
            when, procs, _main, rss = monitor.samples[-1]
            if last_cpu is not None and when > last_cpu[0]:
                share = 100 * (procs["sipdial"] - last_cpu[1]) / (when - last_cpu[0])
                cpu = f" sipdial CPU {share:3.0f} % RSS {rss / 2**20:5.1f} MiB"
            last_cpu = (when, procs["sipdial"])
        progress(f"\r{time.monotonic() - started:6.1f} s  POSTed {driver.sent:6d}/"
                 f"{driver.plan.calls}  in sipdial {total:6d}  up {open_:5d}{cpu}")


def _per_second(monitor: Monitor) -> list[dict[str, float]]:
    """CPU % of each process and sipdial's RSS, per interval between samples ~1 s apart."""
    out: list[dict[str, float]] = []
    samples = monitor.samples
    if not samples:
        return out
    prev = samples[0]
    for s in samples[1:]:
        wall = s[0] - prev[0]
        if wall < 0.95 and s is not samples[-1]:
            continue
        row = {"t": s[0] - samples[0][0], "rss_mib": s[3] / 2**20}
        for name, cpu in s[1].items():
            row[f"cpu_{name}"] = 100 * (cpu - prev[1][name]) / wall if wall > 0 else 0.0
        out.append(row)
        prev = s
    return out


def _cpu_between(monitor: Monitor, name: str, t_end: float) -> float:
    samples = [s for s in monitor.samples if s[0] <= t_end + 1]
    if len(samples) < 2:
        return float("nan")
    return samples[-1][1][name] - samples[0][1][name]


# ------------------------------------------------------------------ timelines


def timelines(posts: list[Post], dbs: list[Path], farm_events: list[dict[str, Any]]
              ) -> list[dict[str, Any]]:
    """One dict per POST: the driver's times, the phone's first INVITE and answer, sipdial's
    state times and cause. Times are wall clock (s); missing steps are None."""
    calls: dict[str, dict[str, Any]] = {}
    firsts: dict[str, dict[str, float]] = {}
    for db in dbs:
        if not db.exists():
            continue
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            for cid, state, cause, created in conn.execute(
                    "SELECT id, state, cause, created_at FROM calls"):
                calls[cid] = {"state": state, "cause": cause, "created": created}
            for cid, state, when in conn.execute(
                    "SELECT call_id, state, min(time) FROM call_events GROUP BY 1, 2"):
                firsts.setdefault(cid, {})[state] = when
        finally:
            conn.close()
    phone: dict[str, dict[str, float]] = {}
    for ev in farm_events:
        target = ev.get("from_user")
        kind = ev.get("ev")
        if target and kind in ("invite", "answered", "rejected") and not ev.get("retrans"):
            phone.setdefault(str(target), {}).setdefault(str(kind), float(ev["t"]))
    out = []
    for p in posts:
        row: dict[str, Any] = {"index": p.index, "user": p.user, "to": p.to,
                               "http_status": p.status, "http_error": p.error,
                               "call_id": p.call_id, "http_sent": p.sent,
                               "http_answered": p.done}
        at_phone = phone.get(p.to, {})
        row["phone_invite"] = at_phone.get("invite")
        row["phone_answered"] = at_phone.get("answered")
        record = calls.get(p.call_id or "", {})
        row["created"] = record.get("created")
        row["cause"] = record.get("cause") if p.status == 201 else f"http_{p.status}"
        row["final_state"] = record.get("state")
        states = firsts.get(p.call_id or "", {})
        for state in STATES:
            row[state] = states.get(state)
        out.append(row)
    return out


__all__ = ["Farm", "Plan", "Post", "Run", "number", "password", "run", "timelines"]
