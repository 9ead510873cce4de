"""CPU cost of the shared media tick: ``Player.tick`` with N concurrent prompt streams.

    .venv/bin/python -m loadtest.bench_player [--streams 1000] [--ticks 500] [--send]

The real :class:`PromptLibrary` (shipped WAVs) gives every stream its own confirmation prompt
(distinct numbers, en/de and PCMU/PCMA alternating; looped so all N play for the whole run).
A fake clock advances exactly 20 ms per tick; each ``tick`` builds one RTP packet per stream.
There are no sockets unless ``--send``, which also writes every packet with ``sendto`` through
one UDP socket to a discard socket on 127.0.0.1 and reports that kernel cost separately.

Bounded by ``--ticks`` and ``--max-seconds`` (wall clock). It measures and prints (µs per
tick, percentiles, % of one core at 50 ticks/s); it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import socket
import statistics
import time

from sipdial.media.player import FRAME, Player
from sipdial.media.prompt import PromptLibrary
from sipdial.media.rtp import PCMA, PCMU, RtpSender

TICKS_PER_SECOND = round(1 / FRAME)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=500, help="20 ms ticks to run (500 = 10 s)")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="wall-clock bound")
    ap.add_argument("--send", action="store_true", help="also sendto() every packet (loopback)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    prompts = PromptLibrary.load()
    print(f"prompt library loaded in {(time.perf_counter() - t0) * 1e3:.0f} ms "
          f"(languages {', '.join(prompts.languages)})")

    player = Player()
    for i in range(args.streams):
        pt = PCMA if i % 2 else PCMU
        frames = prompts.confirm_prompt(f"+49301234{i:04d}", ("en", "de")[i // 2 % 2], pt)
        player.play(i, ("127.0.0.1", 40000 + 2 * (i % 10000)), RtpSender(pt), frames, loop=True)

    sink = out = None
    if args.send:
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out.setblocking(False)
        target = sink.getsockname()

    tick_us: list[float] = []
    send_us: list[float] = []
    packets = 0
    now = 1000.0
    deadline = time.monotonic() + args.max_seconds
    gc.collect()
    for n in range(args.ticks):
        if time.monotonic() > deadline:
            print(f"stopped by --max-seconds after {n} ticks")
            break
        now += FRAME
        c0 = time.process_time()
        datagrams = player.tick(now)
        c1 = time.process_time()
        tick_us.append((c1 - c0) * 1e6)
        packets += len(datagrams)
        if out is not None:
            for _, _, data in datagrams:
                try:
                    out.sendto(data, target)
                except BlockingIOError:
                    pass
            send_us.append((time.process_time() - c1) * 1e6)
    if sink is not None and out is not None:
        sink.close()
        out.close()

    if not tick_us:
        return
    mean = statistics.fmean(tick_us)
    q = statistics.quantiles(tick_us, n=100) if len(tick_us) > 1 else [mean] * 99
    print(f"{args.streams} streams, {len(tick_us)} ticks, {packets} packets "
          f"({packets / len(tick_us):.0f} per tick)")
    print(f"Player.tick: mean {mean:.0f} µs/tick, p50 {q[49]:.0f}, p99 {q[98]:.0f}, "
          f"max {max(tick_us):.0f} µs; {mean / args.streams:.2f} µs per stream")
    print(f"= {mean * TICKS_PER_SECOND / 1e4:.1f} % of one core at {TICKS_PER_SECOND} ticks/s")
    if send_us:
        smean = statistics.fmean(send_us)
        sq = statistics.quantiles(send_us, n=100) if len(send_us) > 1 else [smean] * 99
        print(f"sendto (loopback, one socket): mean {smean:.0f} µs/tick "
              f"(p1 {sq[0]:.0f}, p50 {sq[49]:.0f}, p99 {sq[98]:.0f}, max {max(send_us):.0f}) "
              f"= {smean * TICKS_PER_SECOND / 1e4:.1f} % of one core")


if __name__ == "__main__":
    main()
