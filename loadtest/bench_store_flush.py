"""What the prompt flush of a call's start and end costs the store (issue 7 §3).

``--calls`` calls started at ``--rate`` per second on a real epoll reactor with the store's
real worker thread and a real SQLite file. Each call: a new call (save_call + add_event), four
state changes 10 ms apart, an end; every step in its own reactor turn, as in sipdial. Prints
the process CPU (reactor + worker thread) per call and the transactions, for the store as
configured (``--end-flush`` seconds, default the store's 5 ms) and, with ``--batched``, with
the start and end waiting for ``flush_interval`` (50 ms) like every other write.

    .venv/bin/python -m loadtest.bench_store_flush --calls 5000 --rate 1000 --batched
    .venv/bin/python -m loadtest.bench_store_flush --calls 5000 --rate 1000

On this 2-core container (shared with other work), 5000 calls at 1000/s: batched 0.10-0.12 ms
CPU per call, 100 transactions; within 5 ms (the default) 0.18-0.23 ms, ~865 transactions;
``--end-flush 0`` (each in its own turn) ~0.25 ms, ~4800 transactions.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor as _reactor  # noqa: E402

from sipdial.store import CallEvent, CallRecord, SqliteStore  # noqa: E402

reactor: Any = _reactor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=1000.0, help="calls started per second")
    parser.add_argument("--end-flush", type=float, default=0.005)
    parser.add_argument("--batched", action="store_true",
                        help="no prompt flush: starts and ends wait for flush_interval")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()
    path = os.path.join(tempfile.mkdtemp(prefix="sipdial-bench-"), "bench.db")
    store = SqliteStore(path, reactor, end_flush_interval=0.05 if args.batched
                        else args.end_flush)
    transactions = [0]
    submit = store._submit

    def counting(batch: Any) -> Any:
        if batch:
            transactions[0] += 1
        return submit(batch)

    store._submit = counting  # type: ignore[method-assign]
    done = [0]

    def finish() -> None:
        store.stop().addBoth(lambda _: reactor.stop())

    def step(record: CallRecord, k: int) -> None:
        now = reactor.seconds()
        if k == 5:
            record.state, record.cause, record.ended_at = "ended", "completed", now
        else:
            record.state = f"s{k}"
        event = CallEvent(record.state, now)
        record.events.append(event)
        store.save_call(record)
        store.add_event(record.id, event)
        if k < 5:
            reactor.callLater(0.01, step, record, k + 1)
            return
        done[0] += 1
        if done[0] == args.calls:
            finish()

    def start_one(i: int) -> None:
        step(CallRecord(f"c{i}", "201", "+4930123", "refer", "calling_user", None,
                        reactor.seconds(), None), 0)

    def go(_: object) -> None:
        for i in range(args.calls):
            reactor.callLater(i / args.rate, start_one, i)

    cpu, wall = time.process_time(), time.monotonic()
    store.start().addCallback(go)
    guard = reactor.callLater(args.max_seconds, finish)
    reactor.run()
    if guard.active():
        guard.cancel()
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    mode = "batched (50 ms)" if args.batched else f"start/end within {args.end_flush * 1000:g} ms"
    print(f"{mode}: {done[0]} calls at {args.rate:g}/s: {cpu / max(done[0], 1) * 1000:.3f} ms "
          f"CPU per call, {transactions[0]} transactions, {wall:.1f} s")


if __name__ == "__main__":
    main()
