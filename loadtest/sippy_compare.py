"""The same load through Sippy's ``b2bua_simple``, for "sipdial / Sippy" ratios (issue 9 §1).

    .venv/bin/python -m loadtest.sippy_compare --rate 50 --calls 500 [--hold 1000]
    .venv/bin/python -m loadtest.sippy_compare --find-knee --start-rate 50 --factor 1.5 \\
                                               --seconds 8 --max-steps 6
    .venv/bin/python -m loadtest.sippy_compare --check-b2bua

Run it from the repository root (it imports ``tests.peers``).
On 127.0.0.1 only: SIPp uac -> Sippy ``b2bua_simple`` -> SIPp uas. Each call: INVITE (PCMU
SDP), 100/180/200 (the uas answers at once), ACK, hold ``--hold`` ms, the caller's BYE, 200,
and b2bua_simple's own BYE to the far leg, 200. That is one B2BUA'd call with two dialogs,
what sipdial does per bridge-mode click-to-dial call; sipdial does more per call (HTTP API,
digest auth of the phone's REGISTER/INVITE, SQLite call log, the bridge re-INVITE, events),
so a ratio is sipdial's whole call against Sippy's bare two-leg B2BUA.

Sippy (PyPI ``sippy==2.5.0``) runs from its own venv (:func:`ensure_sippy`, default
``/tmp/sipdial-sippy-venv``, created on first use): it is not installed into the project's
``.venv``; nothing is installed at import. b2bua_simple runs with ``SIPLOG_LVL=WARN`` (no
per-message log, like sipdial's ``SIPDIAL_LOG=WARNING SIPDIAL_TRACE=0``); ``--trace`` logs
every message (``SIPLOG_LVL=INFO``) and keeps the SIPp message logs.

What b2bua_simple is and is not (seen in ``--check-b2bua``): it terminates the caller's
dialog and opens a second one toward the next hop (its own From tag, CSeq, Via branch and
Contact; its own ACK after the far 200; it answers the caller's BYE itself and sends its own
BYE to the far end), but it keeps the caller's Call-ID on the far leg (Sippy's full
``b2bua.py`` appends ``-b2b_N`` or hides it; ``b2bua_simple`` passes it through). It does
not touch the SDP (no RTP proxy).

Two things the scenarios work around (``loadtest/scenarios/sippy_*.xml``): b2bua_simple's
Contact is ``Anonymous <sip:...>``, which SIPp's ``[next_url]`` copies whole into the
Request-URI (Sippy then drops the ACK and BYE), so the uac takes the URI out of the Contact
with a regexp; and Sippy 2.5.0 raises ``RuntimeError: BUG: newTransaction() to unsupported
transport: UDP`` when it sends a request to a Contact with ``;transport=UDP`` (upper case),
so the SIPp Contacts carry no transport parameter.

Figures (all from the same run): SIPp's ``-trace_stat`` CSV (uac and uas: successful,
failed, retransmissions), the uac's ``-trace_rtt`` (INVITE -> 200 time per call; its first
INVITE and last 200 give the offering span), b2bua_simple's CPU (``/proc/<pid>/stat``
utime+stime, every 0.5 s, all its threads) and RSS. A call *succeeded* when both legs
completed (the smaller of the uac's and the uas's successful counts). A run is
*sustained* when at most 1 % of the calls failed and at least 95 % of them succeeded (the
harness's rule); it *keeps up* when the achieved rate (succeeded / first INVITE to last
200) is at least 95 % of the offered one. Near its limit b2bua_simple completes every call,
late (queued, retransmitted): sustained, not keeping up; the knee search asks for both.
SIPp itself using more than 85 % of a core is flagged: then SIPp, not Sippy, may be the
limit. b2bua_simple's CPU may pass 100 %: it reads and writes UDP in worker threads.

Bounded: ``--calls`` calls, ``--max-seconds`` per run (SIPp's ``-timeout`` too), the knee
search ``--max-steps`` steps; everything started is stopped at the end, also on
Ctrl-C/SIGTERM or an error. The working directory is kept and printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from loadtest.procs import proc_cpu, proc_rss, sigterm_as_interrupt, sipp_stats, stop_group
from tests.peers.ports import LOOPBACK, free_port_both, is_free
from tests.peers.sipp import Sipp

HERE = Path(__file__).resolve().parent
UAC_SCENARIO = HERE / "scenarios" / "sippy_uac.xml"
UAS_SCENARIO = HERE / "scenarios" / "sippy_uas.xml"
SIPPY_VERSION = "2.5.0"
DEFAULT_VENV = Path("/tmp/sipdial-sippy-venv")
BUSY = 0.85  #: a SIPp above this share of one core may be the bottleneck
INTERVAL = 0.5
SIPP_BUFF = "4194304"


class SippyUnavailable(RuntimeError):
    """Sippy could not be installed or started."""


# ------------------------------------------------------------------ the Sippy venv


def _sippy_ok(python: Path) -> bool:
    if not python.exists():
        return False
    probe = ("import importlib.metadata as m, sippy.b2bua_simple; "
             f"raise SystemExit(m.version('sippy') != {SIPPY_VERSION!r})")
    try:
        return subprocess.run([str(python), "-c", probe], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_sippy(venv_dir: Path = DEFAULT_VENV) -> Path:
    """The python of a venv at ``venv_dir`` holding ``sippy==2.5.0`` (created and installed
    once with ``python3 -m venv`` and pip; never the project's own venv). Raises
    :class:`SippyUnavailable` with pip's output when that fails."""
    venv_dir = Path(venv_dir).resolve()
    python = venv_dir / "bin" / "python"
    if _sippy_ok(python):
        return python
    if venv_dir in (Path(sys.prefix).resolve(), (HERE.parent / ".venv").resolve()):
        raise SippyUnavailable(f"{venv_dir} is the project's or the running interpreter's "
                               "venv: Sippy gets a venv of its own")
    base = shutil.which("python3") or sys.executable
    steps = [
        [base, "-m", "venv", str(venv_dir)],
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
         f"sippy=={SIPPY_VERSION}"],
    ]
    for cmd in steps:
        try:
            out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                 text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SippyUnavailable(f"{' '.join(cmd)}: {exc}") from exc
        if out.returncode != 0:
            raise SippyUnavailable(
                f"{' '.join(cmd)} exited {out.returncode}:\n"
                f"{(out.stdout + out.stderr)[-4000:]}")
    if not _sippy_ok(python):
        raise SippyUnavailable(f"sippy {SIPPY_VERSION} installed in {venv_dir} but "
                               "'import sippy.b2bua_simple' fails there")
    return python


# ------------------------------------------------------------------ b2bua_simple


class SippyB2bua:
    """``python -m sippy.b2bua_simple -f -l 127.0.0.1 -p PORT -n 127.0.0.1:NEXT_HOP``."""

    def __init__(self, python: Path, workdir: Path, port: int, next_hop: int,
                 trace: bool = False) -> None:
        self.python = python
        self.port = port
        self.next_hop = next_hop
        self.trace = trace
        self.log_file = workdir / "sippy.log"
        self.args = [str(python), "-m", "sippy.b2bua_simple", "-f", "-l", LOOPBACK,
                     "-p", str(port), "-n", f"{LOOPBACK}:{next_hop}"]
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 20.0) -> SippyB2bua:
        env = dict(os.environ, SIPLOG_BEND="stderr", SIPLOG_LVL="INFO" if self.trace else "WARN")
        env.pop("PYTHONPATH", None)
        self._log = open(self.log_file, "wb")  # closed in stop()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, cwd=self.dir,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while is_free(self.port, "udp"):  # bound with SO_REUSEPORT: a plain bind fails
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SippyUnavailable(
                    f"b2bua_simple did not bind {LOOPBACK}:{self.port} "
                    f"(exit {self.proc.returncode}): {' '.join(self.args)}\n"
                    f"{self.log_text()[-4000:]}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is not None:
            stop_group(self.proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


# ------------------------------------------------------------------ sampling


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  #: time.monotonic()
    cpu: dict[str, float]  #: utime+stime seconds per process name
    rss: int  #: b2bua_simple's VmRSS, bytes


class Sampler(threading.Thread):
    """CPU of each process and b2bua_simple's RSS every ``interval`` seconds."""

    def __init__(self, pids: dict[str, int], interval: float = INTERVAL) -> None:
        super().__init__(daemon=True, name="sippy-sampler")
        self.pids = pids
        self.interval = interval
        self.stop_event = threading.Event()
        self.samples: list[Sample] = []

    def sample(self) -> Sample:
        cpu: dict[str, float] = {}
        for name, pid in self.pids.items():
            try:
                cpu[name] = proc_cpu(pid)
            except (OSError, IndexError, ValueError):
                cpu[name] = float("nan")
        try:
            rss = proc_rss(self.pids["sippy"])[0]
        except OSError:
            rss = 0
        s = Sample(time.monotonic(), cpu, rss)
        self.samples.append(s)
        return s

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()

    def add(self, name: str, pid: int) -> None:
        self.pids = {**self.pids, name: pid}

    def cpu_percent(self, t0: float, t1: float) -> dict[str, float | None]:
        """Mean CPU % per process between the samples nearest to [t0, t1] (at least one
        interval apart) in which the process was there."""
        out: dict[str, float | None] = {}
        names = {name for s in self.samples for name in s.cpu}
        for name in sorted(names):
            have = [s for s in self.samples if s.cpu.get(name, float("nan")) == s.cpu.get(name)]
            if not have:
                out[name] = None
                continue
            a = min(have, key=lambda s: abs(s.t - t0))
            later = [s for s in have if s.t >= a.t + self.interval * 0.9]
            if not later:
                out[name] = None
                continue
            b = min(later, key=lambda s: abs(s.t - t1))
            out[name] = round(100.0 * (b.cpu[name] - a.cpu[name]) / (b.t - a.t), 1)
        return out


# ------------------------------------------------------------------ SIPp


def _sipp(workdir: Path, scenario: Path, name: str, *, remote: str | None, port: int | None,
          calls: int, hold_ms: int, timeout: float, trace: bool, extra: list[str]) -> Sipp:
    sipp = Sipp(workdir, scenario, remote=remote, port=port, service="100" if remote else "dest",
                duration_ms=hold_ms, calls=calls, timeout=timeout, rtp_echo=False, name=name)
    args = list(sipp.args)
    if not trace:
        i = args.index("-trace_msg")
        del args[i:i + 3]  # -trace_msg -message_file PATH
    # "-abortunexp": a message the scenario does not expect at that point (a 180 that
    # b2bua_simple's sender threads put on the wire after the 200) is logged and ignored,
    # not a failed call; a call whose expected messages do not come still fails
    sipp.args = [*args, "-trace_stat", "-stf", str(sipp.dir / "stat.csv"), "-fd", "1",
                 "-buff_size", SIPP_BUFF, "-default_behaviors", "all,-abortunexp", *extra]
    if "-trace_err" not in sipp.args:
        sipp.args += ["-trace_err", "-error_file", str(sipp.error_file)]
    return sipp


_UNEXPECTED = re.compile(r"Continuing call on unexpected message[^\n]*?received '([^\r\n]*)")


def _unexpected(sipp: Sipp) -> dict[str, int]:
    """Messages SIPp ignored as unexpected, by first line (from its -trace_err log)."""
    seen: dict[str, int] = {}
    for first_line in _UNEXPECTED.findall(sipp.errors()):
        seen[first_line] = seen.get(first_line, 0) + 1
    return seen


def _int(stats: dict[str, str], key: str) -> int:
    try:
        return int(stats.get(key, "0") or 0)
    except ValueError:
        return 0


def _rtt_rows(uac: Sipp) -> list[tuple[float, float]]:
    """(answer time ms since SIPp started, INVITE -> 200 ms) per call, from -trace_rtt."""
    rows: list[tuple[float, float]] = []
    for path in sorted(uac.dir.glob("sippy_uac_*_rtt.csv")):
        for line in path.read_text(errors="replace").splitlines()[1:]:
            parts = line.split(";")
            try:
                rows.append((float(parts[0]), float(parts[1])))
            except (IndexError, ValueError):
                continue
    return rows


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    v = sorted(values)
    if not v:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}

    def at(p: float) -> float:
        return round(v[min(len(v) - 1, max(0, int(-(-p * len(v) // 100)) - 1))], 2)

    return {"n": len(v), "p50": at(50), "p95": at(95), "p99": at(99), "max": round(v[-1], 2)}


def _side(stats: dict[str, str]) -> dict[str, int]:
    created = _int(stats, "TotalCallCreated")
    ok = _int(stats, "SuccessfulCall(C)")
    failed = _int(stats, "FailedCall(C)")
    return {"created": created, "successful": ok, "failed": failed,
            "unfinished": max(0, created - ok - failed),
            "retransmissions": _int(stats, "Retransmissions(C)"),
            "failed_unexpected_msg": _int(stats, "FailedUnexpectedMessage(C)"),
            "failed_max_udp_retrans": _int(stats, "FailedMaxUDPRetrans(C)"),
            "failed_regexp": _int(stats, "FailedRegexpDoesntMatch(C)"),
            "failed_timeout": _int(stats, "FailedCallTimeout(C)"),
            "dead_call_msgs": _int(stats, "DeadCallMsgs(C)"),
            "out_of_call_msgs": _int(stats, "OutOfCallMsgs(C)")}


# ------------------------------------------------------------------ one run


def run_sippy(rate: float, calls: int, hold_ms: int, workdir: Path, max_seconds: float,
              *, python: Path | None = None, trace: bool = False) -> dict[str, Any]:
    """One run: SIPp uac at ``rate`` calls/s, ``calls`` calls, each held ``hold_ms`` ms ->
    b2bua_simple -> SIPp uas. Returns the figures (see the module docstring)."""
    if rate <= 0 or calls <= 0 or hold_ms < 0 or max_seconds <= 0:
        raise ValueError("rate, calls and max_seconds must be positive, hold_ms >= 0")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    python = python or ensure_sippy()
    uas_port = free_port_both()
    sippy_port = free_port_both()
    for _ in range(20):
        if sippy_port != uas_port:
            break
        sippy_port = free_port_both()
    uas = _sipp(workdir, UAS_SCENARIO, "sipp-uas", remote=None, port=uas_port, calls=calls,
                hold_ms=0, timeout=max_seconds, trace=trace, extra=[])
    uac = _sipp(workdir, UAC_SCENARIO, "sipp-uac", remote=f"{LOOPBACK}:{sippy_port}",
                port=None, calls=calls, hold_ms=hold_ms, timeout=max_seconds, trace=trace,
                extra=["-r", f"{rate:g}", "-rp", "1000", "-trace_rtt", "-rtt_freq", "1"])
    sippy = SippyB2bua(python, workdir, sippy_port, uas_port, trace=trace)
    sampler: Sampler | None = None
    uac_rc: int | None = None
    uas_rc: int | None = None
    timed_out = False
    t_uac = t_end = 0.0
    try:
        uas.start()
        sippy.start()
        assert uas._proc is not None
        sampler = Sampler({"sippy": sippy.pid, "uas": uas._proc.pid})
        idle0 = sampler.sample()
        time.sleep(1.0)  # b2bua_simple's own idle CPU (its timers and threads), for reference
        idle1 = sampler.sample()
        sampler.start()
        t_uac = time.monotonic()
        uac.start()
        assert uac._proc is not None
        sampler.add("uac", uac._proc.pid)
        try:
            uac_rc = uac.wait(max_seconds + 5)
        except TimeoutError:
            timed_out = True
        t_end = time.monotonic()
        # the uas ends by itself once it has seen ``calls`` calls (+ its 500 ms timewait)
        try:
            uas_rc = uas.wait(min(5.0, max(1.0, hold_ms / 1000 + 2)))
        except TimeoutError:
            uas_rc = None
        end = sampler.sample()
    finally:
        if sampler is not None:
            sampler.stop_event.set()
            sampler.join(2)
        uac.stop()
        uas.stop()
        sippy.stop()
    assert sampler is not None

    a, b = _side(sipp_stats(uac.dir / "stat.csv")), _side(sipp_stats(uas.dir / "stat.csv"))
    ignored = {"uac": _unexpected(uac), "uas": _unexpected(uas)}
    succeeded = min(a["successful"], b["successful"])
    failed = a["failed"] + a["unfinished"] + b["failed"]
    rtt = _rtt_rows(uac)
    if len(rtt) >= 2:
        first = min(t - d for t, d in rtt)
        last = max(t for t, _d in rtt)
        span = max((last - first) / 1000.0, 1e-3)
        w0, w1 = t_uac + first / 1000.0, t_uac + last / 1000.0
    else:
        span = calls / rate
        w0, w1 = t_uac, min(t_end, t_uac + span)
    offering = sampler.cpu_percent(w0, w1)
    start = idle1
    idle = 100.0 * (idle1.cpu["sippy"] - idle0.cpu["sippy"]) / (idle1.t - idle0.t)
    sippy_cpu_s = end.cpu["sippy"] - start.cpu["sippy"]
    created = max(a["created"], 1)
    log = sippy.log_text()
    sipp_busy = [n for n in ("uac", "uas") if (offering.get(n) or 0.0) > 100 * BUSY]
    sustained = (failed <= 0.01 * calls and succeeded >= 0.95 * calls and not timed_out)
    achieved = succeeded / span
    result: dict[str, Any] = {
        "b2bua": f"sippy {SIPPY_VERSION} b2bua_simple",
        "offered_rate": rate,
        "calls": calls,
        "hold_ms": hold_ms,
        "workdir": str(workdir),
        "succeeded": succeeded,
        "failed": failed,
        "uac": a,
        "uas": b,
        "uac_exit": uac_rc,
        "uas_exit": uas_rc,
        "timed_out": timed_out,
        "offering_seconds": round(span, 3),
        "achieved_per_s": round(achieved, 2),
        # SIPp's own clock (ms, advanced once per scheduler loop): coarse at low load
        "invite_to_200_ms": _percentiles([d for _t, d in rtt]),
        "cpu_percent_while_offering": offering,
        "sippy_cpu_percent": offering.get("sippy"),
        "sippy_idle_cpu_percent": round(idle, 1),
        "sippy_cpu_s": round(sippy_cpu_s, 3),
        "sippy_cpu_ms_per_call": round(1000.0 * sippy_cpu_s / created, 3),
        "sippy_rss_max_bytes": max(s.rss for s in sampler.samples),
        "retransmissions": a["retransmissions"] + b["retransmissions"],
        "unexpected_ignored": ignored,
        "sipp_cpu_bound": sipp_busy,
        "sippy_tracebacks": log.count("Traceback (most recent call last)"),
        "sustained": sustained,
        # the calls came through at the rate they were offered (a queueing B2BUA completes
        # every call, late: sustained by the rule above, yet not keeping up)
        "keeps_up": achieved >= 0.95 * rate,
        "note": ("development figure: other processes may load the machine; Sippy does the "
                 "bare two-leg B2BUA call, sipdial's call also has HTTP, digest auth, SQLite, "
                 "the bridge re-INVITE and events"),
    }
    (workdir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# ------------------------------------------------------------------ the knee


def find_knee_sippy(start: float, factor: float, seconds: float, max_steps: int, workdir: Path,
                    *, hold_ms: int = 1000, python: Path | None = None,
                    p99_limit_ms: float | None = None,
                    max_seconds: float | None = None) -> dict[str, Any]:
    """Offer ``start``, ``start*factor``, ... calls/s, ``seconds`` of calls each (a fresh
    b2bua_simple per step) until a step is not sustained (> 1 % of calls failed or < 95 % of
    the offered calls succeeded) or does not keep up (achieved < 95 % of the offered rate:
    every call may still complete, queued and retransmitted); with ``p99_limit_ms`` also an
    INVITE -> 200 p99 above it fails a step;
    the highest sustained rate is the knee. At most ``max_steps`` steps, each bounded by
    ``max_seconds`` (default: ``seconds`` + the hold + 10 s; calls not done by then fail)."""
    if start <= 0 or factor <= 1 or seconds <= 0 or max_steps <= 0:
        raise ValueError("start, seconds, max_steps must be positive and factor > 1")
    python = python or ensure_sippy()
    steps: list[dict[str, Any]] = []
    best: float | None = None
    rate = start
    for step in range(max_steps):
        calls = max(1, int(rate * seconds))
        r = run_sippy(rate, calls, hold_ms, Path(workdir) / f"step{step + 1}-{rate:g}",
                      max_seconds=max_seconds or seconds + hold_ms / 1000 + 10, python=python)
        p99 = r["invite_to_200_ms"]["p99"]
        ok = bool(r["sustained"]) and bool(r["keeps_up"]) and (p99_limit_ms is None
                                      or (p99 is not None and p99 <= p99_limit_ms))
        steps.append({"rate": rate, "calls": calls, "ok": ok, "sustained": r["sustained"],
                      "keeps_up": r["keeps_up"],
                      "succeeded": r["succeeded"], "failed": r["failed"],
                      "achieved": r["achieved_per_s"], "p99_invite_to_200_ms": p99,
                      "sippy_cpu_percent": r["sippy_cpu_percent"],
                      "sippy_cpu_ms_per_call": r["sippy_cpu_ms_per_call"],
                      "sippy_rss_max_bytes": r["sippy_rss_max_bytes"],
                      "cpu_percent_while_offering": r["cpu_percent_while_offering"],
                      "retransmissions": r["retransmissions"],
                      "sipp_cpu_bound": r["sipp_cpu_bound"], "workdir": r["workdir"]})
        verdict = "ok" if ok else (f"NOT ok (sustained {r['sustained']}, keeps up "
                                   f"{r['keeps_up']})")
        print(f"step {step + 1}: offered {rate:g}/s -> {verdict} "
              f"(succeeded {r['succeeded']}/{calls}, failed {r['failed']}, achieved "
              f"{r['achieved_per_s']}/s, sippy CPU {r['sippy_cpu_percent']} %)",
              file=sys.stderr, flush=True)
        if not ok:
            break
        best = rate
        rate = round(rate * factor, 1)
    return {"b2bua": f"sippy {SIPPY_VERSION} b2bua_simple", "knee_calls_per_s": best,
            "steps": steps, "hold_ms": hold_ms, "p99_limit_ms": p99_limit_ms}


# ------------------------------------------------------------------ B2BUA check


_BLOCK = re.compile(r"^-{20,} .*$", re.M)


def _messages(path: Path) -> list[tuple[str, dict[str, str]]]:
    """(direction + first line, {lower-case header: value}) per message of a SIPp
    -trace_msg log."""
    out: list[tuple[str, dict[str, str]]] = []
    text = path.read_text(errors="replace") if path.exists() else ""
    for block in _BLOCK.split(text):
        lines = [ln.rstrip("\r") for ln in block.strip("\n").splitlines()]
        if len(lines) < 3:
            continue
        direction = "sent" if "sent" in lines[0] else "received"
        start = next((i for i, ln in enumerate(lines[1:], 1) if ln.strip()), None)
        if start is None:
            continue
        headers: dict[str, str] = {}
        for ln in lines[start + 1:]:
            if not ln.strip():
                break
            name, _, value = ln.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        out.append((f"{direction} {lines[start].strip()}", headers))
    return out


def _tag(value: str) -> str | None:
    m = re.search(r";\s*tag=([^;>\s]+)", value)
    return m.group(1) if m else None


def check_b2bua(workdir: Path, *, python: Path | None = None) -> dict[str, Any]:
    """Three calls with every message traced; compares what the uac sent with what the uas
    received (Call-ID, From tag, CSeq, Via, Contact) and who sent the far leg's ACK/BYE."""
    r = run_sippy(2.0, 3, 200, Path(workdir), max_seconds=20, python=python, trace=True)
    uac = _messages(Path(workdir) / "sipp-uac" / "messages.log")
    uas = _messages(Path(workdir) / "sipp-uas" / "messages.log")

    def first(msgs: list[tuple[str, dict[str, str]]], prefix: str) -> dict[str, str]:
        return next((h for line, h in msgs if line.startswith(prefix)), {})

    a_inv = first(uac, "sent INVITE")
    b_inv = first(uas, "received INVITE")
    b_bye = first(uas, "received BYE")
    a_bye = first(uac, "sent BYE")
    a_call_ids = {h.get("call-id") for line, h in uac if line.startswith("sent INVITE")}
    b_call_ids = {h.get("call-id") for line, h in uas if line.startswith("received INVITE")}
    return {
        "run": {k: r[k] for k in ("succeeded", "failed", "uac", "uas", "sippy_tracebacks")},
        "caller_leg_invite": {k: a_inv.get(k) for k in ("call-id", "from", "cseq", "via",
                                                         "contact")},
        "far_leg_invite": {k: b_inv.get(k) for k in ("call-id", "from", "cseq", "via",
                                                      "contact", "user-agent")},
        "far_leg_bye": {k: b_bye.get(k) for k in ("call-id", "cseq", "via")},
        "caller_bye": {k: a_bye.get(k) for k in ("call-id", "cseq", "via")},
        "same_call_id_on_both_legs": bool(a_call_ids) and a_call_ids == b_call_ids,
        "own_from_tag": _tag(a_inv.get("from", "")) != _tag(b_inv.get("from", "")),
        "own_cseq": a_inv.get("cseq") != b_inv.get("cseq"),
        "own_via_only": LOOPBACK in b_inv.get("via", "") and "," not in b_inv.get("via", "")
        and (a_inv.get("via", "").split(";")[0] != b_inv.get("via", "").split(";")[0]),
        "own_bye": bool(b_bye) and b_bye.get("cseq") != a_bye.get("cseq"),
        "first_messages": {"uac": [line for line, _h in uac][:9],
                           "uas": [line for line, _h in uas][:9]},
        "workdir": str(workdir),
    }


# ------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.sippy_compare",
                                 description="SIPp uac -> Sippy b2bua_simple -> SIPp uas")
    ap.add_argument("--rate", type=float, default=50.0, help="offered calls/s (50)")
    ap.add_argument("--calls", type=int, default=500, help="calls in all (500)")
    ap.add_argument("--hold", type=int, default=1000, help="ms between ACK and BYE (1000)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="bound of one run or knee step (SIPp's -timeout too; default 120 s, "
                         "a knee step --seconds + hold + 10 s)")
    ap.add_argument("--workdir", type=Path, help="kept; a new temporary one if not given")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV,
                    help=f"Sippy's own venv, created if needed ({DEFAULT_VENV})")
    ap.add_argument("--trace", action="store_true",
                    help="log every SIP message (b2bua_simple SIPLOG_LVL=INFO, SIPp -trace_msg)")
    ap.add_argument("--check-b2bua", action="store_true",
                    help="3 traced calls; compare the caller's leg with the far leg")
    ap.add_argument("--find-knee", action="store_true",
                    help="ramp the rate until a step is not sustained; report the highest")
    ap.add_argument("--start-rate", type=float, default=20.0, help="--find-knee: first rate")
    ap.add_argument("--factor", type=float, default=1.5, help="--find-knee: rate multiplier")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="--find-knee: seconds of offering per step (10)")
    ap.add_argument("--max-steps", type=int, default=8, help="--find-knee: at most (8)")
    ap.add_argument("--p99-limit", type=float, default=None,
                    help="--find-knee: also fail a step whose INVITE -> 200 p99 passes this (ms)")
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sippy-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        with sigterm_as_interrupt():
            python = ensure_sippy(args.venv)
            result: dict[str, Any]
            if args.check_b2bua:
                result = check_b2bua(work, python=python)
            elif args.find_knee:
                result = find_knee_sippy(args.start_rate, args.factor, args.seconds,
                                         args.max_steps, work, hold_ms=args.hold,
                                         python=python, p99_limit_ms=args.p99_limit,
                                         max_seconds=args.max_seconds)
            else:
                result = run_sippy(args.rate, args.calls, args.hold, work,
                                   args.max_seconds or 120.0,
                                   python=python, trace=args.trace)
    except SippyUnavailable as exc:
        print(f"Sippy unavailable: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; working directory {work}", file=sys.stderr)
        return 130
    (work / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"working directory: {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
