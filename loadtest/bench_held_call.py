"""Memory a held bridged call keeps in sipdial (issue 9 §2: ≤ 20 KB per held call).

    .venv/bin/python -m loadtest.bench_held_call [--calls 200]

Run from the repository root. Each call is the bridge-mode flow of
``tests/unit/test_bridge_flow.py`` through the real sans-IO stack (``tests.unit.simnet``; a
fake media port, no sockets): the phone answers, the target answers, the phone is
re-INVITEd to the target, ACKs — connected — and then 40 simulated seconds pass, so every
transaction has ended and what is left is what an hour-long call holds. ``--calls`` such
flows are set up first (one simulated network each, phones registered), then tracemalloc
(1 frame) compares the heap before and after the calls; the difference, allocated by code
under ``sipdial/`` and divided by the calls, is printed, with the ten biggest lines. It
counts Python allocations (not RSS: pymalloc keeps freed arenas), including messages the
simulated phones parsed with sipdial's parser and still hold (an upper bound for sipdial's
own). It prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc

from tests.unit.simnet import sdp_answer
from tests.unit.test_bridge_flow import Flow, media_flow


def hold(flow: Flow) -> None:
    flow.ring()
    flow.answer()
    flow.net.advance(0)
    invite = flow.target_gets_invite()
    flow.target.reply(invite, 180, to_tag="tgt")
    flow.target.reply(invite, 200, to_tag="tgt", body=sdp_answer("10.7.7.7", 50000))
    flow.target.take_request("ACK")
    assert flow.answered is not None
    flow.answered.reply(flow.answered.take_request("INVITE"), 200, body=sdp_answer())
    flow.answered.take_request("ACK")
    flow.net.advance(40)
    flow.net.endpoint.drain_events()  # ended transactions let go of their requests
    flow.net.endpoint.drain_events()
    flow.net.clear()
    if flow.state != "connected":
        raise SystemExit(f"call not connected: {flow.state}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args(argv)
    flows = [media_flow(mode="bridge")[0] for _ in range(args.calls)]
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    for flow in flows:
        hold(flow)
    gc.collect()
    after = tracemalloc.take_snapshot()
    stats = [s for s in after.compare_to(before, "lineno") if "/sipdial/" in str(s.traceback)]
    total = sum(s.size_diff for s in stats)
    print(f"{args.calls} held bridged calls: {total / args.calls / 1024:.1f} KiB each "
          f"allocated by sipdial/ and still held ({total / 2**20:.2f} MiB in all)")
    for s in sorted(stats, key=lambda s: -s.size_diff)[:10]:
        where = str(s.traceback).split("/sipdial/", 1)[1]
        print(f"  {s.size_diff / args.calls:8.0f} B/call  {s.count_diff / args.calls:5.1f} "
              f"objects/call  sipdial/{where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
