"""The load harness's report and command line (``python -m loadtest``).

:func:`summarise` turns a :class:`~loadtest.harness.Run` into one JSON-able dict (what
``report.json`` holds); :func:`write` adds ``calls.csv`` (one row per call, its whole
timeline) and PNG plots (matplotlib, if installed: rate and latency over time, the latency
histogram, sipdial's RSS and CPU); :func:`text` is the summary printed at the end.

Definitions (so that two runs compare):

* *offered*: the plan's rate; *sent*: POSTs per second between the first and the last POST;
* *completed*: calls that ended with cause ``completed``; *achieved calls/s*: completed calls
  divided by the time from the first POST to the last POST's answer;
* *sustained*: fewer than 1 % of the calls failed for a reason the plan did not ask for
  (rejections and no-answers the plan asked for are expected), and at least 95 % of the
  offered calls completed or ended as the plan asked;
* latencies are wall-clock differences on this one machine: *HTTP -> phone INVITE* from the
  driver's POST to the phone's first sight of the INVITE, *HTTP -> connected* from the POST
  to sipdial's ``connected`` record;
* CPU is ``/proc`` utime + stime of each process, sampled every 0.5 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from loadtest.harness import BUSY, STATES, Plan, Run, run

#: causes the plan asks for when it rejects or lets ring a share of the calls
EXPECTED = {"reject_share": ("user_busy", "user_rejected"),
            "no_answer_share": ("user_no_answer",)}


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/max in ms (nearest rank), and n."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    v = sorted(values)

    def at(p: float) -> float:
        return round(1000 * v[min(len(v) - 1, max(0, int(p / 100 * len(v) + 0.5) - 1))], 2)

    return {"n": len(v), "p50": at(50), "p95": at(95), "p99": at(99),
            "max": round(1000 * v[-1], 2)}


def _diff(row: dict[str, Any], a: str, b: str) -> float | None:
    x, y = row.get(a), row.get(b)
    return None if x is None or y is None else float(y) - float(x)


def summarise(r: Run) -> dict[str, Any]:
    plan = r.plan
    calls = r.calls
    span = max(r.t_last - r.t_first, 1e-9)
    sends = sorted(p.sent for p in r.posts)
    send_span = max(sends[-1] - sends[0], 1e-9) if len(sends) > 1 else span
    causes = Counter(str(c["cause"]) for c in calls)
    completed = causes.get("completed", 0)
    expected = {c for key, names in EXPECTED.items() if getattr(plan, key) > 0 for c in names}
    unexpected = {c: n for c, n in causes.items() if c != "completed" and c not in expected}
    failed = sum(unexpected.values())
    ended_as_planned = completed + sum(n for c, n in causes.items() if c in expected)
    to_phone = [d for c in calls if (d := _diff(c, "http_sent", "phone_invite")) is not None]
    to_connected = [d for c in calls if (d := _diff(c, "http_sent", "connected")) is not None]
    http = [p.done - p.sent for p in r.posts]
    edges = sorted([(c["created"], 1) for c in calls if c.get("created")]
                   + [(c["ended"], -1) for c in calls if c.get("created") and c.get("ended")])
    up = peak = 0
    for _t, step in edges:
        up += step
        peak = max(peak, up)
    samples = [s for s in r.samples if s.get("cpu_sipdial") is not None]
    offering = [s for s in samples if s["t"] <= (r.t_last - r.t_first) + 2]

    def mean(name: str) -> float | None:
        xs = [s[name] for s in offering if name in s]
        return round(sum(xs) / len(xs), 1) if xs else None

    cpu = {name: mean(f"cpu_{name}") for name in ("sipdial", "farm", "dest", "driver")}
    bottlenecks = [name for name in ("farm", "dest", "driver")
                   if (cpu.get(name) or 0) > 100 * BUSY]
    sustained = (failed <= 0.01 * len(calls)
                 and ended_as_planned >= 0.95 * plan.calls and not r.interrupted)
    return {
        "plan": {k: getattr(plan, k) for k in plan.__dataclass_fields__},
        "workdir": str(r.work),
        "interrupted": r.interrupted,
        "posts": len(r.posts),
        "accepted": sum(1 for p in r.posts if p.status == 201),
        "refused": dict(Counter(f"{p.status} {p.error}" for p in r.posts if p.status != 201)),
        "sent_per_s": round(len(r.posts) / send_span, 2),
        "completed": completed,
        "achieved_per_s": round(completed / span, 2),
        "causes": dict(causes.most_common()),
        "unexpected_failures": unexpected,
        "failed_share": round(failed / max(1, len(calls)), 4),
        "sustained": sustained,
        "peak_calls_up": peak,
        "latency_ms": {"http_post": percentiles(http),
                       "http_to_phone_invite": percentiles(to_phone),
                       "http_to_connected": percentiles(to_connected)},
        "cpu_percent_while_offering": cpu,
        "sipdial_cpu_ms_per_call": (round(1000 * r.sipdial_cpu_s / len(calls), 3)
                                    if calls else None),
        "sipdial_rss_mib": {"max": round(max((s["rss_mib"] for s in samples), default=0), 1),
                            "hwm": round(r.rss_hwm / 2**20, 1)},
        "bottlenecks": bottlenecks,
        "retransmissions": {"phones": r.farm_stats.get("retransmissions"),
                            "destination": r.dest_stats.get("Retransmissions(C)")},
        "phones": r.farm_stats,
        "destination": {k: v for k, v in r.dest_stats.items()
                        if k.endswith("(C)") and v not in ("", "0")},
        "udp_dropped_at_sipdial": r.udp_dropped,
        "loss_relays": r.relays,
        "rtp_probe": r.rtp,
        "sipdial_log": {"warnings_errors": r.log_groups, "tracebacks": r.tracebacks},
    }


CSV_COLUMNS = ("index", "user", "to", "call_id", "http_status", "http_error", "cause",
               "final_state", "http_sent", "http_answered", "phone_invite", "phone_answered",
               *STATES)


def write(r: Run, summary: dict[str, Any], out: Path) -> list[Path]:
    """report.json, calls.csv and the plots into ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "calls.csv"]
    (out / "report.json").write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    with open(out / "calls.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in r.calls:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    written += _plots(r, out)
    return written


def _plots(r: Run, out: Path) -> list[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    t0 = r.t_first
    paths = []
    # rate over time: POSTs, completed calls (by end time), per second
    fig, ax = plt.subplots(figsize=(8, 4))
    horizon = int(max([c.get("ended") or 0 for c in r.calls] + [r.t_last]) - t0) + 2
    sent = Counter(int(p.sent - t0) for p in r.posts)
    done = Counter(int(c["ended"] - t0) for c in r.calls
                   if c.get("ended") and c.get("cause") == "completed")
    xs = list(range(horizon))
    ax.plot(xs, [sent.get(x, 0) for x in xs], label="POSTed /s")
    ax.plot(xs, [done.get(x, 0) for x in xs], label="completed /s (by end)")
    ax.set_xlabel("s since the first POST")
    ax.set_ylabel("calls/s")
    ax.legend()
    ax.set_title(f"{r.plan.mode}, offered {r.plan.rate:g}/s")
    paths.append(_save(fig, out / "rate.png", plt))
    # latency over time and histogram
    pts = [(c["http_sent"] - t0, 1000 * (c["phone_invite"] - c["http_sent"]))
           for c in r.calls if c.get("phone_invite")]
    conn = [(c["http_sent"] - t0, 1000 * (c["connected"] - c["http_sent"]))
            for c in r.calls if c.get("connected")]
    fig, ax = plt.subplots(figsize=(8, 4))
    for series, label in ((pts, "HTTP -> phone INVITE"), (conn, "HTTP -> connected")):
        if series:
            ax.scatter([x for x, _y in series], [y for _x, y in series], s=3, label=label)
    ax.set_xlabel("s since the first POST")
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.legend()
    paths.append(_save(fig, out / "latency.png", plt))
    fig, ax = plt.subplots(figsize=(8, 4))
    if pts:
        ax.hist([y for _x, y in pts], bins=50, alpha=0.7, label="HTTP -> phone INVITE")
    if conn:
        ax.hist([y for _x, y in conn], bins=50, alpha=0.7, label="HTTP -> connected")
    ax.set_xlabel("ms")
    ax.set_ylabel("calls")
    ax.legend()
    paths.append(_save(fig, out / "latency_hist.png", plt))
    # sipdial RSS and the CPU of each process
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ts = [s["t"] for s in r.samples]
    a1.plot(ts, [s["rss_mib"] for s in r.samples])
    a1.set_ylabel("sipdial RSS (MiB)")
    for name in ("sipdial", "farm", "dest", "driver"):
        a2.plot(ts, [s.get(f"cpu_{name}", 0) for s in r.samples], label=name)
    a2.set_ylabel("CPU % of one core")
    a2.set_xlabel("s since monitoring started")
    a2.legend()
    paths.append(_save(fig, out / "resources.png", plt))
    return paths


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def text(summary: dict[str, Any]) -> str:
    lat = summary["latency_ms"]
    cpu = summary["cpu_percent_while_offering"]

    def ms(d: dict[str, Any]) -> str:
        if not d["n"]:
            return "n/a"
        return f"p50 {d['p50']} / p95 {d['p95']} / p99 {d['p99']} / max {d['max']} ms (n={d['n']})"

    plan = summary["plan"]
    extras = (" + prompt" if plan["prompt"] else "") \
        + (f", loss {plan['loss']:g} each way" if plan["loss"] else "")
    lines = [
        f"== {plan['mode']}{extras}: offered {plan['rate']:g} calls/s, {plan['calls']} calls, "
        f"{plan['users']} users x {plan['devices']} devices, hold {plan['hold_ms']} ms",
        f"POSTed {summary['posts']} ({summary['sent_per_s']}/s), accepted {summary['accepted']}"
        + (f", refused {summary['refused']}" if summary["refused"] else ""),
        f"completed {summary['completed']} = {summary['achieved_per_s']} calls/s; causes "
        f"{summary['causes']}; peak calls up {summary['peak_calls_up']}",
        f"sustained: {'yes' if summary['sustained'] else 'NO'} (unexpected failures "
        f"{summary['unexpected_failures'] or 0}, {100 * summary['failed_share']:.2f} %)",
        f"HTTP POST:            {ms(lat['http_post'])}",
        f"HTTP -> phone INVITE: {ms(lat['http_to_phone_invite'])}",
        f"HTTP -> connected:    {ms(lat['http_to_connected'])}",
        f"CPU % while offering: sipdial {cpu['sipdial']}, phones {cpu['farm']}, destination "
        f"{cpu['dest']}, driver {cpu['driver']}; sipdial CPU per call "
        f"{summary['sipdial_cpu_ms_per_call']} ms; RSS max {summary['sipdial_rss_mib']['max']}"
        f" MiB",
        f"retransmissions: phones {summary['retransmissions']['phones']}, destination "
        f"{summary['retransmissions']['destination']}; UDP dropped at sipdial "
        f"{summary['udp_dropped_at_sipdial']}",
        f"sipdial log: {sum(summary['sipdial_log']['warnings_errors'].values())} "
        f"WARNING/ERROR lines, {summary['sipdial_log']['tracebacks']} tracebacks",
    ]
    rtp = summary.get("rtp_probe")
    if rtp:
        dev = rtp["interval_deviation_ms"]
        lines.append(
            f"prompt RTP at the phones: {rtp['streams']} streams (peak "
            f"{rtp['peak_streams_per_second']} sending in one second), {rtp['packets']} "
            f"packets, {rtp['sequence_gaps']} sequence gaps, {rtp.get('kernel_drops', 0)} "
            f"dropped by the kernel; |interval - 20 ms| "
            f"p50 {dev['p50']} / p99 {dev['p99']} / p99.9 {dev['p999']} / max {dev['max']} ms")
    if summary["bottlenecks"]:
        lines.append(f"BOTTLENECK: {', '.join(summary['bottlenecks'])} used more than "
                     f"{100 * BUSY:.0f} % of a core: these figures measure them, not sipdial")
    if summary["interrupted"]:
        lines.append(summary["interrupted"])
    lines.append(f"files: {summary['workdir']}")
    return "\n".join(lines)


# ------------------------------------------------------------------ find the knee


def find_knee(base: Plan, *, start: float, factor: float, seconds: float, max_steps: int,
              p99_limit_ms: float, out: Path) -> dict[str, Any]:
    """Offer ``start``, ``start*factor``, ... calls/s (each a fresh run of ``seconds``)
    until a step is not sustained or its HTTP -> phone INVITE p99 passes the limit; the
    highest step that passed is the knee. Bounded by ``max_steps``."""
    steps = []
    best = None
    rate = start
    for step in range(max_steps):
        plan = Plan(**{**{k: getattr(base, k) for k in base.__dataclass_fields__},
                       "rate": rate, "calls": max(1, int(rate * seconds))})
        r = run(plan, out / f"step{step + 1}-{rate:g}", progress=_progress)
        s = summarise(r)
        write(r, s, r.work / "report")
        p99 = s["latency_ms"]["http_to_phone_invite"]["p99"]
        # keeps up: the POSTs went out at the offered rate (each waits for sipdial's 201, so
        # a sipdial that falls behind slows them) — as Sippy's knee asks of its SIPp uac
        keeps_up = s["sent_per_s"] >= 0.95 * rate
        ok = s["sustained"] and keeps_up and p99 is not None and p99 <= p99_limit_ms
        steps.append({"rate": rate, "sustained": s["sustained"], "keeps_up": keeps_up,
                      "achieved": s["achieved_per_s"], "p99_http_to_phone_ms": p99, "ok": ok,
                      "sipdial_cpu_ms_per_call": s["sipdial_cpu_ms_per_call"],
                      "cpu_sipdial": s["cpu_percent_while_offering"]["sipdial"],
                      "bottlenecks": s["bottlenecks"]})
        print(f"\nstep {step + 1}: offered {rate:g}/s -> {'ok' if ok else 'NOT sustained'} "
              f"(achieved {s['achieved_per_s']}/s, p99 {p99} ms)", flush=True)
        if not ok:
            break
        best = rate
        rate = round(rate * factor, 1)
    return {"knee_calls_per_s": best, "steps": steps, "p99_limit_ms": p99_limit_ms}


def _progress(line: str) -> None:
    sys.stderr.write(line)
    sys.stderr.flush()


# ------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Click-to-dial load against a real sipdial with simulated phones and a "
                    "SIPp destination, on 127.0.0.1 (see loadtest/README.md).")
    ap.add_argument("--mode", choices=("refer", "bridge"), default="bridge")
    ap.add_argument("--prompt", action="store_true",
                    help='"press 1 to connect": the phones answer the prompt with RFC 4733')
    ap.add_argument("--loss", type=float, default=0.0,
                    help="drop this share of datagrams each way through lossy relays (0)")
    ap.add_argument("--rate", type=float, default=20.0, help="offered calls/s (20)")
    count = ap.add_mutually_exclusive_group()
    count.add_argument("--calls", type=int, help="calls in all (default 10 s worth)")
    count.add_argument("--duration", type=float, help="seconds of offering (calls = rate x s)")
    ap.add_argument("--users", type=int, default=50, help="users 1..N, round-robin (50)")
    ap.add_argument("--devices", type=int, default=1, help="devices per user (1)")
    ap.add_argument("--hold", type=int, default=1000, help="ms until the destination's BYE")
    ap.add_argument("--reject-share", type=float, default=0.0,
                    help="share of calls the phones reject with 486 (0)")
    ap.add_argument("--no-answer-share", type=float, default=0.0,
                    help="share of calls the phones let ring until sipdial gives up (0)")
    ap.add_argument("--ring-timeout", type=float, default=3.0,
                    help="sipdial's user_answer_timeout in this run, s (3)")
    ap.add_argument("--http-conns", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1,
                    help="sipdial serve --workers N (1: one process)")
    ap.add_argument("--dtmf-after", type=int, default=300, metavar="MS",
                    help="with --prompt: the phones send '1' this long after their answer "
                    "was ACKed (300)")
    ap.add_argument("--rtp-probe", action="store_true",
                    help="time sipdial's prompt RTP on arrival (send-interval jitter; "
                    "loadtest/rtp_probe.py)")
    ap.add_argument("--drop-refer-params", action="store_true",
                    help="refer mode: the phones send the referred INVITE without the "
                    "Refer-To's parameters (x-c2d), as some phones do")
    ap.add_argument("--max-seconds", type=float, default=300.0,
                    help="hard limit for a run, start-up to teardown (300)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None,
                    help="where everything goes (default: a new /tmp/sipdial-load-* dir)")
    ap.add_argument("--find-knee", action="store_true",
                    help="ramp the rate until a step is not sustained; report the highest")
    ap.add_argument("--start-rate", type=float, default=20.0, help="--find-knee: first rate")
    ap.add_argument("--factor", type=float, default=1.5, help="--find-knee: rate multiplier")
    ap.add_argument("--step-seconds", type=float, default=10.0,
                    help="--find-knee: seconds of offering per step (10)")
    ap.add_argument("--max-steps", type=int, default=8)
    ap.add_argument("--p99-limit", type=float, default=50.0,
                    help="--find-knee: HTTP -> phone INVITE p99 limit in ms (50)")
    ap.add_argument("--sippy-start-rate", type=float,
                    help="with --find-knee --compare-sippy: where Sippy's ramp starts (default: "
                    "--start-rate; lower when Sippy fails the first step)")
    ap.add_argument("--compare-sippy", action="store_true",
                    help="also run Sippy's b2bua_simple (SIPp uac -> sippy -> SIPp uas, its own "
                         "venv) under the same rates and print sipdial / Sippy")
    ap.add_argument("--quiet", action="store_true", help="no progress line")
    args = ap.parse_args(argv)
    calls = args.calls if args.calls else int(args.rate * (args.duration or 10.0))
    plan = Plan(mode=args.mode, prompt=args.prompt, loss=args.loss, rate=args.rate,
                calls=calls, users=args.users, devices=args.devices, hold_ms=args.hold,
                reject_share=args.reject_share,
                no_answer_share=args.no_answer_share, ring_timeout=args.ring_timeout,
                http_conns=args.http_conns, max_seconds=args.max_seconds, seed=args.seed,
                workers=args.workers, dtmf_after_ms=args.dtmf_after,
                rtp_probe=args.rtp_probe, drop_refer_params=args.drop_refer_params)
    try:
        plan.check()
    except ValueError as exc:
        ap.error(str(exc))
    out = args.out or Path(f"/tmp/sipdial-load-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.find_knee:
        result = find_knee(plan, start=args.start_rate, factor=args.factor,
                           seconds=args.step_seconds, max_steps=args.max_steps,
                           p99_limit_ms=args.p99_limit, out=out)
        out.mkdir(parents=True, exist_ok=True)
        print(f"\nknee: {result['knee_calls_per_s']} calls/s sustained "
              f"({plan.mode}; p99 limit {args.p99_limit} ms)")
        if args.compare_sippy:
            result["sippy"] = _sippy_knee(args, out)
            result["ratio"] = _ratio(result["knee_calls_per_s"],
                                     result["sippy"]["knee_calls_per_s"])
            print(f"Sippy b2bua_simple knee: {result['sippy']['knee_calls_per_s']} calls/s; "
                  f"sipdial / Sippy = {result['ratio']}\n{PER_CALL}")
        (out / "knee.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"{out / 'knee.json'}")
        return 0
    r = run(plan, out, progress=None if args.quiet else _progress)
    summary = summarise(r)
    if args.compare_sippy:
        summary["sippy"] = _sippy_same_rate(plan, out)
        mine, theirs = summary["sipdial_cpu_ms_per_call"], summary["sippy"].get(
            "sippy_cpu_ms_per_call")
        summary["sippy_cpu_per_call_ratio"] = _ratio(theirs, mine)
    files = write(r, summary, out / "report")
    print("\n" + text(summary))
    if args.compare_sippy:
        sippy = summary["sippy"]
        print(f"Sippy b2bua_simple at {plan.rate:g}/s: {sippy.get('succeeded')} of "
              f"{sippy.get('calls')} calls, {sippy.get('achieved_per_s')}/s, CPU "
              f"{sippy.get('sippy_cpu_ms_per_call')} ms per call; Sippy CPU / sipdial CPU per "
              f"call = {summary['sippy_cpu_per_call_ratio']}\n{PER_CALL}")
    print("report: " + ", ".join(str(p) for p in files))
    return 0


#: what each side does per call, printed beside every ratio
PER_CALL = ("per call: sipdial = HTTP POST + digest-authenticated phone leg + destination leg "
            "+ bridge re-INVITE (bridge) or REFER + NOTIFYs + the phone's referred INVITE with "
            "407 (refer) + SQLite call log + events; Sippy b2bua_simple = one bare two-leg "
            "B2BUA call (INVITE/200/ACK/BYE each side), no auth, no HTTP, no database")


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _sippy_knee(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from loadtest.sippy_compare import find_knee_sippy
    return find_knee_sippy(args.sippy_start_rate or args.start_rate, args.factor,
                           args.step_seconds, args.max_steps, out / "sippy", hold_ms=args.hold)


def _sippy_same_rate(plan: Plan, out: Path) -> dict[str, Any]:
    from loadtest.sippy_compare import run_sippy
    return run_sippy(plan.rate, plan.calls, plan.hold_ms, out / "sippy",
                     max_seconds=min(plan.max_seconds, plan.calls / plan.rate
                                     + plan.hold_ms / 1000 + 30))


if __name__ == "__main__":
    raise SystemExit(main())
