"""Throughput of the store's batched writer: N call events through SqliteStore on a real reactor.

    .venv/bin/python loadtest/bench_store.py [--events 100000] [--db PATH] [--chunk 1000]

Events are added ``--chunk`` at a time, one chunk per reactor turn (as calls would produce
them), then the store is flushed and stopped. Prints events, transactions and writes/second.
Runs a bounded number of events and exits by itself; it measures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred

from sipdial.store import CallEvent, CallRecord, SqliteStore


class _CountingConnection(sqlite3.Connection):
    transactions = 0

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        if sql == "BEGIN":
            _CountingConnection.transactions += 1
        return super().execute(sql, parameters)


def _connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, factory=_CountingConnection)


async def _bench(
    reactor: Any, events: int, chunk: int, path: str, interval: float, keep: bool
) -> None:
    store = SqliteStore(path, reactor, flush_interval=interval, connect=_connect)
    await store.start()
    calls = max(1, events // 10)  # ~10 events per call, like a real call's life
    started = time.perf_counter()
    now = time.time()
    for first in range(0, events, chunk):
        for i in range(first, min(first + chunk, events)):
            call_id = f"bench-{i % calls}"
            if i < calls:
                store.save_call(
                    CallRecord(call_id, "201", "+4930123", "refer", "calling_user", None, now, None)
                )
            store.add_event(call_id, CallEvent("user_ringing", now + i * 1e-6, 180, "Ringing"))
        await task.deferLater(reactor, 0, lambda: None)  # let the reactor turn
    await store.flush()
    elapsed = time.perf_counter() - started
    await store.stop()
    writes = events + calls
    print(f"database:      {path}{'' if keep else ' (temporary, removed)'}")
    print(f"events:        {events} (+ {calls} call rows)")
    print(f"transactions:  {_CountingConnection.transactions - 1} (1 more at start)")
    print(f"elapsed:       {elapsed:.3f} s")
    print(f"writes/second: {writes / elapsed:,.0f}")


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; exits the process when done (``task.react``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events to write")
    parser.add_argument("--chunk", type=int, default=1000, help="events per reactor turn")
    parser.add_argument("--db", help="database file (default: a temporary one, removed)")
    parser.add_argument("--flush-interval", type=float, default=0.05, help="seconds")
    args = parser.parse_args(argv)
    if args.events < 1 or args.chunk < 1:
        parser.error("--events and --chunk must be >= 1")

    with tempfile.TemporaryDirectory(prefix="sipdial-bench-") as tmp:
        path = args.db or os.path.join(tmp, "bench.db")

        def run(reactor: Any) -> Deferred[None]:
            return Deferred.fromCoroutine(
                _bench(reactor, args.events, args.chunk, path, args.flush_interval, bool(args.db))
            )

        task.react(run)  # exits: the temporary directory is removed on the way out


if __name__ == "__main__":
    main()
