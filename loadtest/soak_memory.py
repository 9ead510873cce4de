"""Memory over a soak (issue 7 §6): click-to-dial calls at a fixed rate, RSS sampled.

    .venv/bin/python -m loadtest.soak_memory --rate 10 --minutes 10          # ~30 s of CPU
    .venv/bin/python -m loadtest.soak_memory --rate 10 --minutes 10 --tracemalloc

Run from the repository root. The calls are ``loadtest.bench_flow``'s whole REFER
click-to-dial flow (17 messages parsed, 16 sent per call) through the real sans-IO stack
(``sipdial.app.build_core`` in ``tests.unit.simnet``), on a fake clock, with the garbage
collector set as ``sipdial serve`` sets it (:func:`sipdial.app.tune_gc`) and a full
collection every ``FULL_GC_INTERVAL`` simulated seconds as ``sipdial.app.start`` runs
(``--no-full-gc``: without). ``--minutes`` of simulated time at ``--rate`` calls/s, then
``--settle`` simulated seconds with no calls (every transaction timer fires). Every
``--every`` simulated seconds it prints RSS, the Python heap (tracemalloc's traced memory,
with ``--tracemalloc``), live calls and transactions; at the end the RSS change over the
second half of the soak, and with ``--tracemalloc`` what grew between the first sample
after ``--warmup`` and the end, by allocation site.

Not covered here: the SQLite store and the event fan-out (a null store is used). For the
whole process over real sockets use ``python -m loadtest.load_bridge --rate 10 --calls 6000
--max-seconds 700`` (it samples sipdial's RSS too). Bounded by ``--max-seconds`` (wall
clock). It measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
import tracemalloc

from loadtest.bench_flow import STEPS, Run, drive, rss, setup
from sipdial.app import FULL_GC_INTERVAL, tune_gc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=10.0, help="calls per simulated second")
    p.add_argument("--minutes", type=float, default=10.0, help="simulated minutes of calls")
    p.add_argument("--settle", type=float, default=60.0, help="simulated seconds after")
    p.add_argument("--every", type=float, default=60.0, help="sample every N simulated s")
    p.add_argument("--tick", type=float, default=0.05, help="simulated seconds per round")
    p.add_argument("--max-seconds", type=float, default=300.0, help="wall-clock guard")
    p.add_argument("--tracemalloc", action="store_true",
                   help="trace allocations; diff the end against the first sample after "
                        "--warmup (steady state: the live calls and transactions are there)")
    p.add_argument("--warmup", type=float, default=120.0, help="simulated s (--tracemalloc)")
    p.add_argument("--default-gc", action="store_true",
                   help="keep Python's GC thresholds instead of sipdial serve's (tune_gc)")
    p.add_argument("--no-full-gc", action="store_true",
                   help="without the full collection sipdial runs every FULL_GC_INTERVAL s")
    args = p.parse_args(argv)

    # K calls in progress, one step a round: K / (STEPS * tick) calls per simulated second
    concurrency = max(1, math.ceil(args.rate * STEPS * args.tick))
    calls = int(args.rate * args.minutes * 60)
    net, phones, targets = setup(concurrency)
    if not args.default_gc:
        tune_gc()
    if args.tracemalloc:
        tracemalloc.start(8)
    gc.collect()
    first: list[tracemalloc.Snapshot] = []
    t0 = net.now
    samples: list[tuple[float, int, int]] = []
    next_sample = [t0]

    def sample(run: Run | None) -> None:
        heap = tracemalloc.get_traced_memory()[0] if args.tracemalloc else 0
        samples.append((net.now - t0, rss(), heap))
        live = len(net.calls.calls)
        txns = len(net.endpoint.txns.server) + len(net.endpoint.txns.client)
        done = f"{run.completed} calls done, {run.failed} failed" if run else "start"
        print(f"t={net.now - t0:7.0f} s  RSS {samples[-1][1] / 2**20:7.1f} MiB  "
              f"heap {heap / 2**20:7.1f} MiB  live calls {live:4d}  txns {txns:6d}  {done}",
              flush=True)

    next_gc = [t0 + FULL_GC_INTERVAL]

    def on_round(run: Run) -> None:
        net.published.clear()  # the harness's own record of the call events
        if not args.no_full_gc and net.now >= next_gc[0]:  # as sipdial.app.start's sweep
            next_gc[0] = net.now + FULL_GC_INTERVAL
            gc.collect()
        if net.now >= next_sample[0]:
            sample(run)
            next_sample[0] += args.every
            if args.tracemalloc and not first and net.now - t0 >= args.warmup:
                gc.collect()
                first.append(tracemalloc.take_snapshot())

    sample(None)
    next_sample[0] += args.every
    deadline = time.monotonic() + args.max_seconds
    run = drive(net, phones, targets, calls, args.tick, deadline, on_round)
    net.advance(args.settle)
    gc.collect()
    sample(run)
    print(f"{run.completed} calls completed, {run.failed} failed, at ~{args.rate:g}/s "
          f"({concurrency} at once){'; CUT SHORT by --max-seconds' if run.timed_out else ''}")
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    if len(half) >= 2:
        (ta, ra, ha), (tb, rb, hb) = half[0], half[-1]
        print(f"second half: RSS {(rb - ra) / 2**20:+.2f} MiB, heap {(hb - ha) / 2**20:+.2f} MiB "
              f"over {tb - ta:.0f} simulated s; end vs start RSS "
              f"{(samples[-1][1] - samples[0][1]) / samples[0][1] * 100:+.1f} %")
    if first:
        from loadtest.fuzz_sip import report_diff

        report_diff(first[0], tracemalloc.take_snapshot(), 12)
    return 1 if run.failed or run.timed_out else 0


if __name__ == "__main__":
    sys.exit(main())
