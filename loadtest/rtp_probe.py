"""How evenly sipdial sends its prompts' RTP: send-interval jitter at the receiver.

    .venv/bin/python -m loadtest.rtp_probe --ready-file F --result R [--seconds 60]

One UDP socket on 127.0.0.1 that every simulated phone names as its audio address (the
harness's ``--rtp-probe``: ``loadtest.farm --media-to``), so sipdial sends every call's
prompt here, each call from its own RTP port. The kernel stamps each datagram on arrival
(``SO_TIMESTAMPNS``): what this process's own scheduling does to the figures is nothing as
long as its receive buffer does not overflow (reported: the kernel's drops on the socket,
``SO_RXQ_OVFL``, and the buffer it got, which ``net.core.rmem_max`` caps).

Per stream (source address and SSRC) and for consecutive RTP sequence numbers only (not
across a marker bit: a new talkspurt after silence), the interval
between two arrivals is compared with the 20 ms packet time: the result has the deviation
``|interval - 20 ms|`` at p50/p99/p99.9/max over every pair, the streams, the packets, the
sequence gaps (lost or reordered) and the peak number of streams sending in one second. It
stops after ``--seconds``, or ``--idle`` seconds without a packet once one came, or SIGTERM,
and writes ``--result`` (JSON). It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any

PTIME_NS = 20_000_000
#: Linux's SO_TIMESTAMPNS (asm-generic/socket.h; Python's socket module does not name it);
#: the control message it adds has the same number (SCM_TIMESTAMPNS)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
#: Linux's SO_RXQ_OVFL: each datagram carries the socket's count of datagrams dropped so far
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
_DROPS = struct.Struct("@I")
_TIMESPEC = struct.Struct("@qq")
#: deviation histogram: 10 µs buckets up to 1 s
_BUCKET_NS = 10_000
_BUCKETS = 100_000


def _percentile(histogram: list[int], total: int, q: float) -> float | None:
    if not total:
        return None
    rank = max(1, round(q * total))
    seen = 0
    for bucket, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return round(bucket * _BUCKET_NS / 1e6, 3)  # ms, bucket's lower edge
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ready-file", type=Path, required=True, help="written with the port")
    ap.add_argument("--result", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--idle", type=float, default=5.0)
    args = ap.parse_args(argv)

    stop = [False]

    def on_term(_signum: int, _frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_term)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # capped by rmem_max
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    tmp = args.ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"port": sock.getsockname()[1], "pid": os.getpid()}))
    os.replace(tmp, args.ready_file)

    histogram = [0] * _BUCKETS
    pairs = packets = gaps = 0
    worst_ns = 0
    last: dict[Any, tuple[int, int]] = {}  # (source, SSRC) -> (kernel time ns, sequence)
    dropped = 0
    talkspurts = 0
    per_second: dict[int, set[Any]] = {}
    started = time.monotonic()
    last_packet = 0.0
    cmsg_space = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_DROPS.size)
    while not stop[0] and time.monotonic() - started < args.seconds:
        try:
            data, ancillary, _flags, source = sock.recvmsg(2048, cmsg_space)
        except TimeoutError:
            if last_packet and time.monotonic() - last_packet > args.idle:
                break
            continue
        now = time.monotonic()
        last_packet = now
        if len(data) < 12:
            continue
        stamp = None
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack(value[:_TIMESPEC.size])
                stamp = sec * 1_000_000_000 + nsec
            elif level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL:
                dropped = _DROPS.unpack(value[:_DROPS.size])[0]
        if stamp is None:
            continue
        packets += 1
        stream = (source, data[8:12])  # a port may be reused by a later call: with its SSRC
        per_second.setdefault(int(now - started), set()).add(stream)
        seq = (data[2] << 8) | data[3]
        previous = last.get(stream)
        last[stream] = (stamp, seq)
        if previous is None:
            continue
        if data[1] & 0x80:  # marker: a new talkspurt after silence, not a 20 ms step
            talkspurts += 1
            continue
        if seq != (previous[1] + 1) & 0xFFFF:
            gaps += 1
            continue
        deviation = abs(stamp - previous[0] - PTIME_NS)
        worst_ns = max(worst_ns, deviation)
        histogram[min(_BUCKETS - 1, deviation // _BUCKET_NS)] += 1
        pairs += 1
    result = {
        "streams": len(last), "packets": packets, "intervals": pairs, "sequence_gaps": gaps,
        "kernel_drops": dropped, "receive_buffer": rcvbuf, "talkspurts_skipped": talkspurts,
        "peak_streams_per_second": max((len(s) for s in per_second.values()), default=0),
        "interval_deviation_ms": {
            "p50": _percentile(histogram, pairs, 0.50),
            "p99": _percentile(histogram, pairs, 0.99),
            "p999": _percentile(histogram, pairs, 0.999),
            "max": round(worst_ns / 1e6, 3),
        },
    }
    tmp = args.result.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, args.result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
