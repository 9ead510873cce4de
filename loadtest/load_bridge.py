"""Real-socket load test of the whole sipdial process: bridge-mode click-to-dial calls.

    .venv/bin/python -m loadtest.load_bridge [--rate 100] [--calls 2000] [--hold 1000]
                                             [--http-conns 16] [--max-seconds 120]

Run it from the repository root (it imports ``tests.sipdial_proc`` and ``tests.peers``). On
127.0.0.1 only, it starts:

* sipdial (``python -m sipdial serve``, ``SIPDIAL_LOG=WARNING``, ``SIPDIAL_TRACE=0``) with
  one user ``201`` and one ``[[routes]]`` entry sending every number to the destination;
* the user's "phone", made of SIPp: one run REGISTERs with digest
  (``tests/peers/scenarios/phone_register.xml``), then a long-running SIPp UAS on the same
  local port (``loadtest/scenarios/phone_bridge.xml``) answers every INVITE (180, 200 with
  SDP), the bridge re-INVITE (200 with SDP) and sipdial's BYE;
* the destination, a SIPp UAS (``tests/peers/scenarios/uas_answer_then_bye.xml``) that
  answers 100/180/200 with SDP at once and sends BYE ``--hold`` ms after the ACK;
* the driver: ``--http-conns`` threads, each with one keep-alive ``http.client`` connection,
  POSTing ``/v1/calls {"user": "201", "to": "+49301234<n>", "mode": "bridge",
  "confirm": false}`` on a global schedule of ``--rate`` calls/s, ``--calls`` in all.

One bridge call is, at sipdial: POST -> INVITE phone (180, 200, ACK) -> INVITE destination
(100, 180, 200, ACK) -> re-INVITE phone (200, ACK) -> destination's BYE (200) -> BYE phone
(200): 8 SIP messages received and 7 sent (plus 100 Trying to nobody, no retransmissions on a
quiet loopback), one RTP socket opened and closed, ~8 SQLite rows.

It prints the offered and achieved rates (driver and accepted call starts), calls ended by
cause (read from sipdial's SQLite file after sipdial has stopped, so every batched write is
in), sipdial's CPU (``/proc/<pid>/stat`` utime+stime, also the reactor thread alone) and RSS,
each SIPp's own successful/failed counts (``-trace_stat``), latency from POST to
``connected`` (server side for every call from the call events; client side for a polled
sample), and the WARNING/ERROR lines in sipdial's log grouped by text.

Bounded: ``--calls`` calls, ``--max-seconds`` for the whole run (SIPp's own ``-timeout`` as
well); everything it started is stopped at the end, also on Ctrl-C/SIGTERM or an error. The
working directory (logs, DB, SIPp stats) is kept and printed. It measures; it asserts nothing.

REFER mode is not load-tested here: the phone would have to place the referred call itself
(INVITE, 407, INVITE with digest), which a SIPp UAS answering sipdial's INVITE cannot do in
the same SIPp call; ``loadtest/bench_flow.py`` measures the REFER flow's CPU without sockets.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.procs import interrupt, proc_cpu, proc_rss, sipp_stats
from tests.integration.c2d_helpers import ROUTE_MATCH, user
from tests.peers.ports import LOOPBACK, free_port_both
from tests.peers.sipp import Sipp, scenario_path
from tests.sipdial_proc import ADMIN, Sipdial

HERE = Path(__file__).resolve().parent
PHONE_SCENARIO = HERE / "scenarios" / "phone_bridge.xml"
DEST_SCENARIO = "uas_answer_then_bye.xml"
PAGE = os.sysconf("SC_PAGE_SIZE")
SIPP_BUFF = "4194304"


# ------------------------------------------------------------------ sipdial


class QuietSipdial(Sipdial):
    """:class:`Sipdial` at ``SIPDIAL_LOG=WARNING``: the "sipdial ready" line is INFO, so the
    ports are read from ``serve --ready-file`` instead (polled, bounded)."""

    def start(self, timeout: float = 20.0) -> QuietSipdial:
        ready = self.dir / "ready.json"
        ready.unlink(missing_ok=True)
        env = dict(os.environ, SIPDIAL_LOG="WARNING", SIPDIAL_TRACE="0")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sipdial", "serve", "--config", str(self.config_path),
             "--ready-file", str(ready),
             *(["--workers", str(self.workers)] if self.workers > 1 else [])],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, cwd=self.dir)
        self._drain_in_background()
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                time.sleep(0.2)
                raise RuntimeError("sipdial did not start:\n" + self.log_text()[-4000:])
            time.sleep(0.05)
        self.info = json.loads(ready.read_text())
        return self


# ------------------------------------------------------------------ /proc


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped on the UDP socket bound to 127.0.0.1:``port`` (its
    receive buffer was full: the process did not read fast enough), from /proc/net/udp."""
    want = f"0100007F:{port:04X}"
    found = [0]  # several sockets with `serve --workers` (SO_REUSEPORT): their sum
    with open("/proc/net/udp") as fh:
        for line in fh.readlines()[1:]:
            cols = line.split()
            if cols[1] == want:
                found.append(int(cols[-1]))
    return sum(found) if len(found) > 1 else -1


def udp_rcvbuf_errors() -> int:
    """System-wide UDP RcvbufErrors (/proc/net/snmp)."""
    with open("/proc/net/snmp") as fh:
        rows = [line.split() for line in fh if line.startswith("Udp:")]
    return int(dict(zip(rows[0], rows[1], strict=False)).get("RcvbufErrors", -1))


def _pids(pid: int | tuple[int, ...]) -> tuple[int, ...]:
    return pid if isinstance(pid, tuple) else (pid,)


def sipdial_pids(sd: Sipdial) -> int | tuple[int, ...]:
    """The process(es) doing sipdial's work: the workers under `serve --workers`, and the
    media process of each (``[media] process``; their CPU and RSS count as sipdial's)."""
    assert sd.proc is not None
    workers = sd.info.get("workers")
    sip = tuple(int(w["pid"]) for w in workers) if workers else (sd.proc.pid,)
    media = media_pids(sip)
    return sip + media if workers or media else sd.proc.pid


def media_pids(parents: tuple[int, ...]) -> tuple[int, ...]:
    """The media processes (``python -m sipdial.media.process``) started by ``parents``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            if ppid not in parents:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"sipdial.media.process" in f.read():
                    found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return tuple(sorted(found))


def sipdial_dbs(sd: Sipdial) -> list[Path]:
    """sipdial's SQLite file(s): one per worker under `serve --workers` (sipdial.workers:
    worker 0 the configured one, worker k ``<name>.w<k>.db``)."""
    return [sd.db] + [sd.db.with_name(f"{sd.db.stem}.w{k}{sd.db.suffix}")
                      for k in range(1, sd.workers)]


class Monitor(threading.Thread):
    """Samples a process's CPU (all threads and the main thread) and RSS every ``interval``.
    A name may stand for several processes (sipdial's workers): their sums."""

    def __init__(self, pids: dict[str, int | tuple[int, ...]], stop: threading.Event,
                 interval: float = 0.5):
        super().__init__(daemon=True, name="monitor")
        self.pids = pids
        self.stop_event = stop
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float], float, int]] = []

    def sample(self) -> tuple[float, dict[str, float], float, int]:
        now = time.monotonic()
        cpu: dict[str, float] = {}
        for name, pid in self.pids.items():
            try:
                cpu[name] = sum(proc_cpu(p) for p in _pids(pid))
            except OSError:
                cpu[name] = float("nan")
        try:
            main = sum(proc_cpu(p, p) for p in _pids(self.pids["sipdial"]))
            rss = sum(proc_rss(p)[0] for p in _pids(self.pids["sipdial"]))
        except OSError:
            main, rss = float("nan"), 0
        s = (now, cpu, main, rss)
        self.samples.append(s)
        return s

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """CPU % per process over [t0, t1] (nearest samples), the busiest 1 s, max RSS."""
        inside = [s for s in self.samples if t0 - self.interval <= s[0] <= t1 + self.interval]
        if len(inside) < 2:
            return {}
        a, b = inside[0], inside[-1]
        wall = b[0] - a[0]
        out: dict[str, Any] = {"wall": wall}
        for name in a[1]:
            out[name] = 100.0 * (b[1][name] - a[1][name]) / wall
        out["sipdial_main"] = 100.0 * (b[2] - a[2]) / wall
        peak = 0.0
        step = max(1, round(1.0 / self.interval))
        for x, y in zip(inside, inside[step:], strict=False):
            peak = max(peak, 100.0 * (y[1]["sipdial"] - x[1]["sipdial"]) / (y[0] - x[0]))
        out["sipdial_peak_1s"] = peak
        out["rss_max"] = max(s[3] for s in inside)
        return out


# ------------------------------------------------------------------ HTTP driver


@dataclass
class Result:
    index: int
    sent: float
    done: float
    status: int
    call_id: str | None = None
    error: str | None = None


@dataclass
class Driver:
    host: str
    port: int
    rate: float
    calls: int
    conns: int
    deadline: float
    stop: threading.Event
    sample_every: int
    samples: queue.Queue[tuple[str, float]] = field(default_factory=queue.Queue)
    results: list[Result] = field(default_factory=list)
    t0: float = 0.0
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        self.t0 = time.monotonic() + 0.2
        threads = [threading.Thread(target=self._worker, daemon=True, name=f"http-{n}")
                   for n in range(self.conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, self.deadline - time.monotonic()) + 15)

    def _take(self) -> int | None:
        with self._lock:
            i = self._next
            if i >= self.calls or self.stop.is_set():
                return None
            self._next += 1
            return i

    def _worker(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
        mine: list[Result] = []
        try:
            while (i := self._take()) is not None:
                due = self.t0 + i / self.rate
                delay = due - time.monotonic()
                if delay > 0 and self.stop.wait(delay):
                    break
                if time.monotonic() > self.deadline:
                    self.stop.set()
                    break
                body = json.dumps({"user": "201", "to": f"+49301234{i}", "mode": "bridge",
                                   "confirm": False})
                sent = time.monotonic()
                try:
                    conn.request("POST", "/v1/calls", body, headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    done = time.monotonic()
                    if resp.status == 201:
                        cid = json.loads(data)["id"]
                        mine.append(Result(i, sent, done, 201, cid))
                        if self.sample_every and i % self.sample_every == 0:
                            self.samples.put((cid, sent))
                    else:
                        code = ""
                        try:
                            code = json.loads(data)["error"]["code"]
                        except (ValueError, KeyError, TypeError):
                            code = data[:60].decode(errors="replace")
                        mine.append(Result(i, sent, done, resp.status, error=code))
                except (OSError, http.client.HTTPException) as exc:
                    mine.append(Result(i, sent, time.monotonic(), 0, error=type(exc).__name__))
                    conn.close()
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        finally:
            conn.close()
            with self._lock:
                self.results.extend(mine)


class Sampler(threading.Thread):
    """Polls sampled calls (GET /v1/calls/{id}, every ``interval``) until connected or ended."""

    def __init__(self, host: str, port: int, samples: queue.Queue[tuple[str, float]],
                 stop: threading.Event, interval: float = 0.01, limit: float = 10.0):
        super().__init__(daemon=True, name="sampler")
        self.host, self.port = host, port
        self.samples = samples
        self.stop_event = stop
        self.interval = interval
        self.limit = limit
        self.latencies: list[float] = []
        self.not_connected: Counter[str] = Counter()
        self.lagged = 0  # samples first polled > 50 ms after the POST (then an upper bound)

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        headers = {"Authorization": f"Bearer {ADMIN}"}
        try:
            while not self.stop_event.is_set():
                try:
                    cid, sent = self.samples.get(timeout=0.2)
                except queue.Empty:
                    continue
                if time.monotonic() - sent > 0.05:
                    self.lagged += 1
                end = sent + self.limit
                while not self.stop_event.is_set() and time.monotonic() < end:
                    conn.request("GET", f"/v1/calls/{cid}", headers=headers)
                    resp = conn.getresponse()
                    call = json.loads(resp.read())
                    now = time.monotonic()
                    if call.get("state") == "connected" or any(
                            e["state"] == "connected" for e in call.get("events", ())):
                        self.latencies.append(now - sent)
                        break
                    if call.get("state") == "ended":
                        self.not_connected[str(call.get("cause"))] += 1
                        break
                    time.sleep(self.interval)
                else:
                    self.not_connected["(timeout)"] += 1
        except (OSError, http.client.HTTPException, ValueError) as exc:
            print(f"sampler stopped: {exc!r}", file=sys.stderr)
        finally:
            conn.close()


# ------------------------------------------------------------------ SIPp


def quiet_sipp(sipp: Sipp, stat_file: Path, extra: list[str]) -> Sipp:
    """Drop the per-message trace (-trace_msg) of tests.peers.sipp; add -trace_stat."""
    args = list(sipp.args)
    i = args.index("-trace_msg")
    del args[i:i + 3]  # -trace_msg -message_file PATH
    sipp.args = [*args, "-trace_stat", "-stf", str(stat_file), "-fd", "1",
                 "-buff_size", SIPP_BUFF, *extra]
    return sipp


def sipp_summary(stats: dict[str, str]) -> str:
    if not stats:
        return "no stats"
    keys = ["TotalCallCreated", "SuccessfulCall(C)", "FailedCall(C)",
            "FailedCallRejected(C)", "FailedMaxUDPRetrans(C)", "FailedUnexpectedMessage(C)",
            "FailedCallTimeout(C)", "Retransmissions(C)", "OutOfCallMsgs(C)",
            "DeadCallMsgs(C)", "FailedOutboundCongestion(C)", "FailedTcpConnect(C)"]
    parts = []
    for k in keys:
        v = stats.get(k)
        if v not in (None, "", "0") or k in ("SuccessfulCall(C)", "FailedCall(C)"):
            parts.append(f"{k.replace('(C)', '')}={v}")
    return " ".join(parts)


# ------------------------------------------------------------------ DB and log


def db_progress(db: Path | list[Path]) -> tuple[int, int]:
    """(calls in the DB(s), calls not ended) while sipdial runs (WAL: readers do not block)."""
    total = open_ = 0
    for one in db if isinstance(db, list) else [db]:
        try:
            conn = sqlite3.connect(f"file:{one}?mode=ro", uri=True, timeout=1)
            try:
                t, o = conn.execute(
                    "SELECT count(*), coalesce(sum(state != 'ended'), 0) FROM calls").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            return -1, -1
        total, open_ = total + int(t), open_ + int(o)
    return total, open_


def db_report(db: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        by = Counter({(s, c): n for s, c, n in conn.execute(
            "SELECT state, coalesce(cause, '-'), count(*) FROM calls GROUP BY 1, 2")})
        codes = Counter({(c, code, d): n for c, code, d, n in conn.execute(
            "SELECT c.cause, e.sip_code, e.detail, count(*) FROM calls c JOIN call_events e"
            " ON e.call_id = c.id AND e.state = 'ended'"
            " WHERE c.cause != 'completed' GROUP BY 1, 2, 3")})
        lat = [r[0] for r in conn.execute(
            "SELECT min(e.time) - c.created_at FROM calls c JOIN call_events e"
            " ON e.call_id = c.id AND e.state = 'connected' GROUP BY c.id")]
        dur = [r[0] for r in conn.execute(
            "SELECT ended_at - created_at FROM calls WHERE cause = 'completed'")]
        edges = sorted([(r[0], 1) for r in conn.execute("SELECT created_at FROM calls")]
                       + [(r[0], -1) for r in conn.execute(
                           "SELECT ended_at FROM calls WHERE ended_at IS NOT NULL")])
    finally:
        conn.close()
    peak = live = 0
    for _, step in edges:
        live += step
        peak = max(peak, live)
    return {"by": by, "codes": codes, "lat": sorted(lat), "dur": sorted(dur), "peak": peak}


_TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")
_HEX = re.compile(r"\b[0-9a-f]{8,}\b|\d+")


def log_problems(text: str) -> tuple[Counter[str], int, list[str]]:
    """WARNING/ERROR/CRITICAL lines grouped by text (numbers and ids masked), tracebacks."""
    groups: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for line in text.splitlines():
        if not _TS.match(line):
            continue
        parts = line.split(" ", 3)
        if len(parts) < 4 or parts[2] not in ("WARNING", "ERROR", "CRITICAL"):
            continue
        key = _HEX.sub("#", parts[2] + " " + parts[3])[:160]
        groups[key] += 1
        examples.setdefault(key, line)
    tracebacks = text.count("Traceback (most recent call last)")
    return groups, tracebacks, [examples[k] for k, _ in groups.most_common(8)]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    v = sorted(values)
    return (f"p50 {1000 * pct(v, 50):.1f} / p90 {1000 * pct(v, 90):.1f} / "
            f"p99 {1000 * pct(v, 99):.1f} / max {1000 * v[-1]:.1f} ms (n={len(v)})")


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=100.0, help="offered calls/s (100)")
    ap.add_argument("--calls", type=int, default=2000, help="calls in all (2000)")
    ap.add_argument("--hold", type=int, default=1000,
                    help="ms the destination talks before its BYE (1000)")
    ap.add_argument("--http-conns", type=int, default=16,
                    help="driver threads, one keep-alive connection each (16)")
    ap.add_argument("--sample", type=int, default=20,
                    help="calls polled for client-side POST->connected latency (20, 0=off)")
    ap.add_argument("--max-seconds", type=float, default=180.0,
                    help="guard for the whole run, start-up to teardown (180)")
    ap.add_argument("--drain-seconds", type=float, default=20.0,
                    help="after the last POST, wait at most this for calls to end (20)")
    ap.add_argument("--max-concurrent", type=int, default=None,
                    help="sipdial [calls] max_concurrent (default: sipdial's, 2000)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where logs, DB and SIPp stats go (default: a new /tmp dir)")
    args = ap.parse_args(argv)
    if args.rate <= 0 or args.calls <= 0 or args.hold <= 0:
        ap.error("--rate, --calls and --hold must be positive")

    started = time.monotonic()
    deadline = started + args.max_seconds
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sipdial-load-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["SIPDIAL_LOG"] = "WARNING"
    os.environ["SIPDIAL_TRACE"] = "0"
    old_term = signal.signal(signal.SIGTERM, interrupt)  # restored at the end

    stop = threading.Event()
    sipp_timeout = max(10.0, args.max_seconds)
    dest_port = free_port_both()
    calls_cfg: dict[str, Any] = {}
    if args.max_concurrent:
        calls_cfg["max_concurrent"] = args.max_concurrent
    sd = QuietSipdial(work, users=[user("201")],
                 routes=[{"match": ROUTE_MATCH, "uri": f"sip:{{number}}@{LOOPBACK}:{dest_port}"}],
                 calls=calls_cfg or None, transports=("udp",))
    dest: Sipp | None = None
    phone: Sipp | None = None
    registrar: Sipp | None = None
    monitor: Monitor | None = None
    sampler: Sampler | None = None
    driver: Driver | None = None
    t_first = t_last = t_drained = 0.0
    udp0 = udp1 = (0, 0)
    interrupted = ""
    try:
        sd.start()
        assert sd.proc is not None
        sip_port = sd.sip_port("udp")
        http = sd.info["http"]
        dest = quiet_sipp(Sipp.uas(work, DEST_SCENARIO, port=dest_port, duration_ms=args.hold,
                                   calls=args.calls, timeout=sipp_timeout, rtp_echo=False,
                                   name="sipp-dest"),
                          work / "sipp-dest" / "stat.csv", [])
        dest.start()
        phone_port = free_port_both()
        # registered for the whole run (the scenario's 300 s would expire in a soak)
        register = work / "phone_register_3600.xml"
        register.write_text(scenario_path("phone_register.xml").read_text().replace(
            "Expires: 300", "Expires: 3600"))
        registrar = Sipp(work, register, remote=f"{LOOPBACK}:{sip_port}",
                         port=phone_port, service="201", timeout=10, name="sipp-register",
                         extra_args=["-au", "201", "-ap", "secret201"])
        rc = registrar.run(15)
        if rc != 0:
            raise RuntimeError(f"phone registration failed:\n{registrar.report()}")
        sd.wait_registered("201")
        phone = quiet_sipp(Sipp(work, PHONE_SCENARIO, port=phone_port, service="201",
                                calls=args.calls, timeout=sipp_timeout, rtp_echo=False,
                                name="sipp-phone"),
                           work / "sipp-phone" / "stat.csv", [])
        phone.start()
        assert dest._proc is not None and phone._proc is not None
        pids = {"sipdial": sd.proc.pid, "phone": phone._proc.pid, "dest": dest._proc.pid,
                "driver": os.getpid()}
        udp0 = (udp_drops(sip_port), udp_rcvbuf_errors())
        monitor = Monitor(pids, stop)
        monitor.sample()
        monitor.start()

        print(f"workdir {work}\nsipdial pid {sd.proc.pid} sip udp:{LOOPBACK}:{sip_port} "
              f"http {http['host']}:{http['port']}; phone :{phone_port}, dest :{dest_port}; "
              f"offering {args.calls} calls at {args.rate:g}/s, hold {args.hold} ms, "
              f"{args.http_conns} HTTP connections", flush=True)
        sample_every = max(1, args.calls // args.sample) if args.sample else 0
        driver = Driver(http["host"], int(http["port"]), args.rate, args.calls,
                        args.http_conns, deadline - args.drain_seconds - 5, stop, sample_every)
        if args.sample:
            sampler = Sampler(http["host"], int(http["port"]), driver.samples, stop)
            sampler.start()
        driver.run()
        ok = [r for r in driver.results if r.status == 201]
        if driver.results:
            t_first = min(r.sent for r in driver.results)
            t_last = max(r.done for r in driver.results)
        # drain: every accepted call ended in the DB (batched writes lag a little)
        drain_end = min(deadline - 5, time.monotonic() + args.drain_seconds + args.hold / 1000)
        while time.monotonic() < drain_end:
            total, open_ = db_progress(sd.db)
            if total >= len(ok) and open_ == 0:
                break
            time.sleep(0.25)
        t_drained = time.monotonic()
        monitor.sample()
        udp1 = (udp_drops(sip_port), udp_rcvbuf_errors())
        # the SIPps end by themselves after their last call's timewait (-m calls)
        for sipp in (phone, dest):
            if sipp.returncode is None and len(ok) == args.calls:
                try:
                    sipp.wait(min(5.0, max(0.1, deadline - time.monotonic())))
                except TimeoutError:
                    pass
    except KeyboardInterrupt as exc:
        interrupted = f"interrupted ({exc or 'Ctrl-C'})"
    finally:
        stop.set()
        rss_hwm = 0
        if sd.proc is not None and sd.proc.poll() is None:
            try:
                rss_hwm = proc_rss(sd.proc.pid)[1]
            except OSError:
                pass
        for peer in (phone, dest, registrar):
            if peer is not None:
                peer.stop()
        sd.stop()
        if sampler is not None:
            sampler.join(2)
        signal.signal(signal.SIGTERM, old_term)

    if interrupted:
        print(interrupted)
    if driver is None or not driver.results or monitor is None:
        print(f"no calls were made; sipdial log: {sd.log_path}")
        print("\n".join(sd.log_text().splitlines()[-30:]))
        return 1
    report(args, work, sd, driver, monitor, sampler, phone, dest, t_first, t_last, t_drained,
           rss_hwm)
    if udp1 != (0, 0):
        print(f"UDP datagrams dropped (receive buffer full) on sipdial's SIP socket: "
              f"{udp1[0] - udp0[0]}; system-wide UDP RcvbufErrors: {udp1[1] - udp0[1]}")
    return 0


def report(args: argparse.Namespace, work: Path, sd: Sipdial, driver: Driver, monitor: Monitor,
           sampler: Sampler | None, phone: Sipp | None, dest: Sipp | None, t_first: float,
           t_last: float, t_drained: float, rss_hwm: int) -> None:
    res = driver.results
    ok = [r for r in res if r.status == 201]
    t_first = min(r.sent for r in res)
    t_last = max(r.done for r in res)
    t_drained = t_drained or time.monotonic()
    span = max(t_last - t_first, 1e-9)
    starts = sorted(r.sent for r in res)
    send_span = max(starts[-1] - starts[0], 1e-9)
    late = [r.sent - (driver.t0 + r.index / args.rate) for r in res]
    post_lat = [r.done - r.sent for r in res]
    print(f"\n== offered {args.rate:g} calls/s, {args.calls} calls, {len(res)} POSTed")
    print(f"driver: {len(res) / send_span:.1f} POST/s sent ({len(res)} in {send_span:.2f} s), "
          f"{len(res) / span:.1f}/s incl. the last response; behind schedule "
          f"p50 {1000 * pct(sorted(late), 50):.1f} / max {1000 * max(late):.1f} ms; "
          f"POST latency {ms(post_lat)}")
    failed_posts = Counter(f"{r.status} {r.error}" for r in res if r.status != 201)
    print(f"call starts accepted (201): {len(ok)} = {len(ok) / span:.1f}/s"
          + (f"; refused: {dict(failed_posts)}" if failed_posts else ""))

    w_offer = monitor.window(t_first, t_last)
    w_all = monitor.window(t_first, t_drained)
    if w_offer:
        print(f"CPU % while offering ({w_offer['wall']:.1f} s): sipdial {w_offer['sipdial']:.0f} "
              f"(reactor thread {w_offer['sipdial_main']:.0f}, busiest 1 s "
              f"{w_offer['sipdial_peak_1s']:.0f}), SIPp phone {w_offer['phone']:.0f}, "
              f"SIPp dest {w_offer['dest']:.0f}, driver {w_offer['driver']:.0f}")
    if w_all:
        print(f"CPU % until drained ({w_all['wall']:.1f} s): sipdial {w_all['sipdial']:.0f} "
              f"(reactor {w_all['sipdial_main']:.0f}), phone {w_all['phone']:.0f}, "
              f"dest {w_all['dest']:.0f}, driver {w_all['driver']:.0f}")
        start_cpu = monitor.samples[0][1]["sipdial"]
        end_cpu = max((s for s in monitor.samples if s[0] <= t_drained + 1),
                      key=lambda s: s[0])[1]["sipdial"]
        if ok:
            print(f"sipdial CPU per call (offer start -> drained): "
                  f"{1e6 * (end_cpu - start_cpu) / len(ok):.0f} us")
    print(f"sipdial RSS: max sampled {w_all.get('rss_max', 0) / 2**20:.1f} MiB, "
          f"VmHWM {rss_hwm / 2**20:.1f} MiB")
    if monitor.samples and monitor.samples[-1][0] - monitor.samples[0][0] >= 120:
        # a soak: is RSS flat? one figure per minute of the run (the first sample of each)
        t0 = monitor.samples[0][0]
        minutes: dict[int, int] = {}
        for when, _cpu, _main, rss in monitor.samples:
            if rss:
                minutes.setdefault(int((when - t0) // 60), rss)
        print("sipdial RSS by minute (MiB): " + " ".join(
            f"{rss / 2**20:.1f}" for _minute, rss in sorted(minutes.items())))

    if sd.db.exists():
        db = db_report(sd.db)
        by = db["by"]
        completed = sum(n for (s, c), n in by.items() if c == "completed")
        other = {f"{s}/{c}": n for (s, c), n in sorted(by.items()) if c != "completed"}
        print(f"calls in DB: {sum(by.values())}; completed {completed}; "
              f"not completed: {other or 0}")
        for (cause, code, detail), n in db["codes"].most_common(8):
            print(f"   {n:6d} x {cause}: {code} {detail}")
        print(f"server POST->connected (created_at -> connected event): {ms(db['lat'])}")
        print(f"server call duration of completed calls: {ms(db['dur'])}; "
              f"peak calls in progress {db['peak']}")
    if sampler is not None:
        extra = f"; not connected {dict(sampler.not_connected)}" if sampler.not_connected else ""
        print(f"client POST->connected, polled every 10 ms: {ms(sampler.latencies)}"
              f"{extra}{'; ' + str(sampler.lagged) + ' polled late' if sampler.lagged else ''}")
    for name, sipp in (("phone", phone), ("dest", dest)):
        if sipp is not None:
            stats = sipp_stats(sipp.dir / "stat.csv")
            print(f"SIPp {name}: exit {sipp.returncode}; {sipp_summary(stats)}")
    groups, tracebacks, examples = log_problems(sd.log_text())
    print(f"sipdial log: {sum(groups.values())} WARNING/ERROR lines, {tracebacks} tracebacks "
          f"({sd.log_path})")
    for key, n in groups.most_common(8):
        print(f"   {n:6d} x {key}")
    for line in examples[:3]:
        print(f"   e.g. {line[:300]}")


if __name__ == "__main__":
    sys.exit(main())
