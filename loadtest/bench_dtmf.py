"""Cost of in-band DTMF detection: microseconds of CPU per 20 ms frame (160 samples).

    .venv/bin/python loadtest/bench_dtmf.py [--frames 2000] [--repeat 5]

Feeds ``--frames`` decoded frames of each kind of audio through one ``InbandDetector``,
``--repeat`` times, and prints the best and the median run per frame. Silence skips the
filters; noise, speech and tones run them all (the worst case). A call listens to one stream,
so "frames per second per core" / 50 is how many listening calls one core can carry.
Bounded: runs frames x repeat x 4 kinds and exits by itself; it measures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import array
import math
import random
import statistics
import time

from sipdial.media.dtmf import InbandDetector

FRAME = 160
RATE = 8000


def _frames(kind: str, count: int, rng: random.Random) -> list[array.array[int]]:
    if kind == "silence":
        samples = [0] * FRAME * count
    elif kind == "noise":
        samples = [round(rng.gauss(0, 3000)) for _ in range(FRAME * count)]
    elif kind == "dtmf":  # key presses of 100 ms with 100 ms pauses
        samples = [
            round(6000 * (math.sin(2 * math.pi * 770 * i / RATE)
                          + math.sin(2 * math.pi * 1336 * i / RATE)))
            if (i // 800) % 2 == 0 else 0
            for i in range(FRAME * count)
        ]
    else:  # "voice": 7 harmonics of a pitch drifting 90-150 Hz, a crude stand-in for speech
        samples, phase = [], 0.0
        for i in range(FRAME * count):
            phase += (120 + 30 * math.sin(2 * math.pi * i / (3 * RATE))) / RATE
            samples.append(round(sum(2500 / h * math.sin(2 * math.pi * h * phase)
                                     for h in range(1, 8))))
    clipped = [max(-32768, min(32767, s)) for s in samples]
    return [array.array("h", clipped[i : i + FRAME]) for i in range(0, len(clipped), FRAME)]


def _run(frames: list[array.array[int]]) -> tuple[float, int]:
    detector = InbandDetector()
    digits = 0
    started = time.perf_counter()
    for frame in frames:
        if detector.feed(frame):
            digits += 1
    return (time.perf_counter() - started) / len(frames) * 1e6, digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames per run (20 ms each)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per kind of audio")
    args = parser.parse_args()
    frames, repeat = max(1, min(args.frames, 100_000)), max(1, min(args.repeat, 50))
    rng = random.Random(4733)
    print(f"InbandDetector.feed, {frames} frames x {repeat} runs, 160 samples (20 ms) each")
    for kind in ("silence", "noise", "voice", "dtmf"):
        audio = _frames(kind, frames, rng)
        runs = [_run(audio) for _ in range(repeat)]
        costs = [cost for cost, _ in runs]
        best, median = min(costs), statistics.median(costs)
        print(f"  {kind:8} best {best:6.1f} us/frame  median {median:6.1f} us/frame  "
              f"({20_000 / median:5.0f} streams/core)  digits per run: {runs[0][1]}")


if __name__ == "__main__":
    main()
