"""RTP send-interval jitter of N streams with nothing else running: the media path alone.

    .venv/bin/python -m loadtest.bench_media_jitter [--streams 1000] [--seconds 10]
        [--in-process] [--nice N]

N calls opened on sipdial's media (the media process, :class:`sipdial.media.MediaProcess`, as
``serve`` runs it; ``--in-process``: a :class:`MediaManager` on this process's reactor, as
with ``[media] process = false``), each playing the looped ringback tone (a packet every
20 ms, silence included) to the harness's RTP probe (``loadtest.rtp_probe``: kernel receive
timestamps; see its docstring for what it counts). ``--nice`` renices the media process
(negative values need CAP_SYS_NICE). Prints the probe's |interval - 20 ms| percentiles and the
media process's CPU share. Bounded by ``--seconds``; it measures and asserts nothing. What the
harness's ``--rtp-probe`` adds on top: SIP work on the same cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor

from loadtest.harness import RtpProbe
from loadtest.procs import proc_cpu
from sipdial.media import MediaManager, MediaProcess, PromptLibrary
from sipdial.media.rtp import PCMU

reactor: Any = _reactor
HOST = "127.0.0.1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--in-process", action="store_true")
    ap.add_argument("--nice", type=int, default=0)
    args = ap.parse_args()
    seconds = max(1.0, min(args.seconds, 300.0))
    work = Path(tempfile.mkdtemp(prefix="sipdial-media-jitter-"))
    probe = RtpProbe(work, seconds + 10)
    probe_port = probe.start()
    media: MediaManager | MediaProcess
    if args.in_process:
        media = MediaManager(reactor, HOST, 0, 0, PromptLibrary.load())
        pid = os.getpid()
    else:
        media = MediaProcess(reactor, HOST, 0, 0)
        media.start()
        assert media.pid is not None
        pid = media.pid
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, pid, args.nice)
    for i in range(args.streams):
        key = f"c{i}"
        media.open(key, lambda *_: None)
        media.set_remote(key, HOST, probe_port, PCMU, None)
        media.play_tone(key, "ringback", loop=True)
    marks: dict[str, float] = {}

    def begin() -> None:
        marks["t0"], marks["cpu0"] = time.monotonic(), proc_cpu(pid)

    def end() -> None:
        marks["t1"], marks["cpu1"] = time.monotonic(), proc_cpu(pid)
        media.stop()
        reactor.stop()

    reactor.callLater(2.0, begin)  # the media process has loaded its prompts and runs
    reactor.callLater(2.0 + seconds, end)
    reactor.run()
    result = probe.result() or {}
    share = 100 * (marks["cpu1"] - marks["cpu0"]) / (marks["t1"] - marks["t0"])
    where = "this process" if args.in_process else "media process"
    print(f"{args.streams} streams, {seconds:.0f} s, {where}, nice {args.nice}: "
          f"CPU {share:.1f} % of a core")
    dev = result.get("interval_deviation_ms", {})
    print(f"|interval - 20 ms| p50 {dev.get('p50')} / p99 {dev.get('p99')} / p99.9 "
          f"{dev.get('p999')} / max {dev.get('max')} ms; {result.get('packets')} packets, "
          f"{result.get('sequence_gaps')} gaps, {result.get('kernel_drops')} dropped by the "
          f"kernel (probe: {work / 'rtp-probe'})")


if __name__ == "__main__":
    main()
