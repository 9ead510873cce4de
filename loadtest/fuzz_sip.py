"""Parser fuzz (issue 7 §6/§7): N mutated SIP datagrams, then what sipdial still holds.

    # a real sipdial process over UDP (started here): RSS before/after/after settling,
    # tracebacks in its log, an OPTIONS answered at the end
    .venv/bin/python -m loadtest.fuzz_sip --count 200000
    # the sans-IO core in this process (SimNet, fake clock): tracemalloc snapshots diffed,
    # the sizes of the tables that hold per-message state
    .venv/bin/python -m loadtest.fuzz_sip --in-process --count 200000 --tracemalloc

Run from the repository root. The datagrams are mutations (seeded: ``--seed``) of valid
REGISTER/INVITE/OPTIONS/BYE/ACK/CANCEL/SUBSCRIBE requests and responses and of the RFC 4475
torture messages in ``tests/data/rfc4475``: byte flips, insertions, deletions, truncation,
header lines dropped/duplicated/swapped, numbers replaced (CSeq, Content-Length, Expires,
Max-Forwards), methods swapped, two messages spliced. Every datagram has a fresh Call-ID,
branch and tags, as a scanner's do, so anything kept per message shows up as growth.

The process mode sends at ``--rate`` datagrams/s (bounded by ``--max-seconds``), reads the
answers, waits ``--settle`` seconds (every transaction timer, 64*T1 = 32 s, has fired by
then) and reports VmRSS at start, after the fuzz and after the settle, and the tracebacks
in sipdial's log. With ``--tracemalloc`` the process is started with
``SIPDIAL_TRACEMALLOC=<dir>``: sipdial then traces allocations and writes a snapshot to that
directory on every SIGUSR2 (see ``sipdial.app``); the snapshots after start-up and after the
settle are diffed here.

It measures and prints; it asserts nothing. The exit status is 1 if sipdial logged a
traceback, died, or did not answer the final OPTIONS.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import socket
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.unit.simnet import SimNet

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "rfc4475"

_TEMPLATES = [
    "REGISTER sip:{host} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:{user}@{host}>;tag={tag}\r\nTo: <sip:{user}@{host}>\r\n"
    "Call-ID: {cid}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{me}>;expires=3600\r\n"
    "Expires: 3600\r\nUser-Agent: fuzz\r\nContent-Length: 0\r\n\r\n",
    "INVITE sip:{user}@{host} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n"
    "Max-Forwards: 70\r\nFrom: \"Fuzz\" <sip:{user}@{host}>;tag={tag}\r\n"
    "To: <sip:{user}@{host}>\r\nCall-ID: {cid}\r\nCSeq: {cseq} INVITE\r\n"
    "Contact: <sip:{user}@{me}>\r\nContent-Type: application/sdp\r\n"
    "Content-Length: {sdp_len}\r\n\r\n{sdp}",
    "OPTIONS sip:{host} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:probe@{host}>;tag={tag}\r\nTo: <sip:{host}>\r\n"
    "Call-ID: {cid}\r\nCSeq: {cseq} OPTIONS\r\nAccept: application/sdp\r\n"
    "Content-Length: 0\r\n\r\n",
    "BYE sip:{user}@{host} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:{user}@{host}>;tag={tag}\r\n"
    "To: <sip:{user}@{host}>;tag={tag2}\r\nCall-ID: {cid}\r\nCSeq: {cseq} BYE\r\n"
    "Content-Length: 0\r\n\r\n",
    "ACK sip:{user}@{host} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:{user}@{host}>;tag={tag}\r\n"
    "To: <sip:{user}@{host}>;tag={tag2}\r\nCall-ID: {cid}\r\nCSeq: {cseq} ACK\r\n"
    "Content-Length: 0\r\n\r\n",
    "CANCEL sip:{user}@{host} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:{user}@{host}>;tag={tag}\r\nTo: <sip:{user}@{host}>\r\n"
    "Call-ID: {cid}\r\nCSeq: {cseq} CANCEL\r\nContent-Length: 0\r\n\r\n",
    "SUBSCRIBE sip:{user}@{host} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:{user}@{host}>;tag={tag}\r\nTo: <sip:{user}@{host}>\r\n"
    "Call-ID: {cid}\r\nCSeq: {cseq} SUBSCRIBE\r\nEvent: presence\r\nExpires: 600\r\n"
    "Contact: <sip:{user}@{me}>\r\nContent-Length: 0\r\n\r\n",
    "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {host};branch={branch}\r\n"
    "From: <sip:{user}@{host}>;tag={tag}\r\nTo: <sip:{user}@{host}>;tag={tag2}\r\n"
    "Call-ID: {cid}\r\nCSeq: {cseq} INVITE\r\nContent-Length: 0\r\n\r\n",
]
_SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n")
_NUMBERS = re.compile(rb"(?<=CSeq: )\d+|(?<=Content-Length: )\d+|(?<=Expires: )\d+|"
                      rb"(?<=Max-Forwards: )\d+|(?<=expires=)\d+")
_METHODS = [b"INVITE", b"ACK", b"BYE", b"CANCEL", b"OPTIONS", b"REGISTER", b"SUBSCRIBE",
            b"NOTIFY", b"REFER", b"INFO", b"PRACK", b"UPDATE", b"MESSAGE", b"FROB"]
_WEIRD = [b"", b"0", b"-1", b"4294967296", b"99999999999999999999", b"\xff\xfe", b"%00",
          b"\x00", b"\r\n", b" ", b"\t", b";", b",", b"<", b">", b"\"", b"sip:", b"@", b":",
          "é".encode(), b"\xed\xa0\x80", b"a" * 300]


def torture_messages() -> list[bytes]:
    return [p.read_bytes() for p in sorted(DATA.glob("*.dat"))]


class Mutator:
    """Seeded mutations of valid messages and of the RFC 4475 set."""

    def __init__(self, seed: int, host: str, me: str) -> None:
        self.rng = random.Random(seed)
        self.host = host
        self.me = me
        self.torture = torture_messages()
        self.n = 0

    def fresh(self) -> bytes:
        self.n += 1
        rng, n = self.rng, self.n
        template = rng.choice(_TEMPLATES)
        return template.format(
            host=self.host, me=self.me, user=rng.choice(["201", "202", "999", "x"]),
            branch=f"z9hG4bK-fz{n}", tag=f"t{n}", tag2=f"u{n}", cid=f"fuzz-{n}@fuzz",
            cseq=rng.randint(1, 5), sdp=_SDP, sdp_len=len(_SDP)).encode()

    def seed_message(self) -> bytes:
        if self.rng.random() < 0.25:
            msg = self.rng.choice(self.torture)
            # fresh identifiers there too, so no two datagrams are retransmissions
            return re.sub(rb"(?im)^(Call-ID|i):.*$", f"Call-ID: tort-{self.n}-{self.rng.random()}"
                          .encode(), msg, count=1)
        return self.fresh()

    def mutate(self, msg: bytes) -> bytes:
        rng = self.rng
        op = rng.randrange(11)
        if op == 0 or not msg:  # unmodified (a valid message in the stream)
            return msg
        if op == 1:  # byte flips
            b = bytearray(msg)
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            return bytes(b)
        if op == 2:  # insert weird bytes
            i = rng.randrange(len(msg))
            return msg[:i] + rng.choice(_WEIRD) + msg[i:]
        if op == 3:  # delete a span
            i = rng.randrange(len(msg))
            return msg[:i] + msg[i + rng.randint(1, 40):]
        if op == 4:  # truncate
            return msg[: rng.randrange(len(msg))]
        lines = msg.split(b"\r\n")
        if op == 5 and len(lines) > 2:  # drop a header line
            del lines[rng.randrange(1, len(lines) - 1)]
        elif op == 6 and len(lines) > 2:  # duplicate a header line, many times
            i = rng.randrange(1, len(lines) - 1)
            lines[i:i] = [lines[i]] * rng.randint(1, 50)
        elif op == 7 and len(lines) > 3:  # swap two lines
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 8:  # numbers
            numbers = [*_WEIRD[:5], str(rng.randint(0, 70000)).encode()]
            return _NUMBERS.sub(lambda _m: rng.choice(numbers), msg)
        elif op == 9:  # method swapped in the start line or the CSeq
            a, b = rng.choice(_METHODS), rng.choice(_METHODS)
            return msg.replace(a, b, 1 + rng.randrange(2))
        else:  # splice with another message
            other = self.seed_message()
            return msg[: rng.randrange(len(msg))] + other[rng.randrange(len(other)):]
        return b"\r\n".join(lines)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            msg = self.seed_message()
            for _ in range(self.rng.choice([1, 1, 1, 2, 3])):
                msg = self.mutate(msg)
            yield msg[:65_000]


# ---------------------------------------------------------------- in-process (SimNet)


def sizes(net: object) -> dict[str, int]:
    """Lengths of the tables that hold per-message or per-peer state in the core."""
    found: dict[str, int] = {}
    seen: set[int] = set()
    core = getattr(net, "core")  # noqa: B009

    def walk(obj: object, path: str, depth: int) -> None:
        if depth > 3 or id(obj) in seen:
            return
        seen.add(id(obj))
        attrs = getattr(obj, "__dict__", None)
        if attrs is None and hasattr(obj, "__slots__"):
            attrs = {k: getattr(obj, k, None) for k in getattr(obj, "__slots__", ())}
        for name, value in (attrs or {}).items():
            if isinstance(value, (dict, list, set)) or type(value).__name__ in (
                    "OrderedDict", "deque", "defaultdict"):
                if id(value) not in seen:
                    seen.add(id(value))
                    found[f"{path}.{name}"] = len(value)
            elif type(value).__module__.startswith("sipdial") and not callable(value):
                walk(value, f"{path}.{name}", depth + 1)

    for field in ("endpoint", "timers", "auth", "registrar", "ua", "router", "calls",
                  "inbound"):
        walk(getattr(core, field), field, 0)
    return found


def forget(net: SimNet) -> None:
    """Drop what the harness itself keeps of sipdial's output (one queue per source)."""
    net.settle()
    net.queues.clear()
    net.log.clear()


def run_in_process(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from sipdial.sip import Peer
    from tests.unit.simnet import SimNet

    if args.tracemalloc:
        tracemalloc.start(args.frames)
    net = SimNet()
    mutator = Mutator(args.seed, "127.0.0.1", "192.0.2.1:5070")
    rng = random.Random(args.seed + 1)
    errors = 0
    gc.collect()
    before = tracemalloc.take_snapshot() if args.tracemalloc else None
    start_sizes = sizes(net)
    started = time.monotonic()
    sent = 0
    for data in mutator:
        if sent >= args.count or time.monotonic() - started > args.max_seconds:
            break
        sent += 1
        source = Peer("udp", f"192.0.2.{rng.randint(1, 254)}", rng.randint(1024, 65535))
        try:
            net.deliver(data, source)
        except Exception as exc:  # counted, as the driver would log it
            errors += 1
            if errors <= 5:
                print(f"exception on datagram {sent}: {type(exc).__name__}: {exc}")
        if sent % 1000 == 0:
            net.advance(1000 / args.rate)  # simulated time at --rate datagrams/s
            forget(net)
    after_sizes = sizes(net)
    net.advance(args.settle)
    forget(net)
    gc.collect()
    settled_sizes = sizes(net)
    elapsed = time.monotonic() - started
    print(f"in-process: {sent} datagrams in {elapsed:.1f} s, {errors} exceptions, "
          f"simulated {sent / args.rate:.0f} s + {args.settle:.0f} s settle")
    names = sorted(set(start_sizes) | set(after_sizes) | set(settled_sizes))
    print(f"{'table':60} {'start':>8} {'after':>8} {'settled':>8}")
    for name in names:
        print(f"{name:60} {start_sizes.get(name, 0):8} {after_sizes.get(name, 0):8} "
              f"{settled_sizes.get(name, 0):8}")
    if before is not None:
        after = tracemalloc.take_snapshot()
        report_diff(before, after, args.top)
    return 1 if errors else 0


def report_diff(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, top: int) -> None:
    keep = [tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
    stats = after.filter_traces(keep).compare_to(before.filter_traces(keep), "traceback")
    stats.sort(key=lambda s: -s.size_diff)  # growth first (compare_to sorts by |diff|)
    total = sum(s.size_diff for s in stats)
    print(f"tracemalloc: {total / 2**20:+.2f} MiB retained since the first snapshot; "
          f"top {top} by size:")
    for stat in stats[:top]:
        if stat.size_diff <= 0:
            break
        print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+8d} blocks")
        for line in stat.traceback.format()[-6:]:
            print(f"      {line}")


# ---------------------------------------------------------------- a real process


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def options_answered(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.bind((host, 0))
        me = f"{host}:{sock.getsockname()[1]}"
        msg = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKend"
               f";rport\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{host}>;tag=end\r\n"
               f"To: <sip:{host}>\r\nCall-ID: fuzz-end\r\nCSeq: 1 OPTIONS\r\n"
               "Content-Length: 0\r\n\r\n").encode()
        for _ in range(3):
            sock.sendto(msg, (host, port))
            try:
                data, _ = sock.recvfrom(65535)
            except TimeoutError:
                continue
            return data.startswith(b"SIP/2.0 200")
    return False


def snapshot(proc_pid: int, directory: Path, count: int, timeout: float = 60.0) -> Path:
    """Ask sipdial (SIGUSR2) for tracemalloc snapshot number ``count``; wait for the file."""
    import signal

    os.kill(proc_pid, signal.SIGUSR2)
    path = directory / f"sipdial-{proc_pid}-{count}.tracemalloc"
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no snapshot {path} within {timeout} s")
        time.sleep(0.2)
    return path


def run_process(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.sipdial_proc import Sipdial

    tmp = Path(tempfile.mkdtemp(prefix="fuzz_sip-"))
    os.environ.setdefault("SIPDIAL_LOG", "INFO")
    os.environ.setdefault("SIPDIAL_TRACE", "0")
    snapdir = tmp / "snapshots"
    if args.tracemalloc:
        snapdir.mkdir()
        os.environ["SIPDIAL_TRACEMALLOC"] = str(snapdir)
        os.environ["SIPDIAL_TRACEMALLOC_FRAMES"] = str(args.frames)
    sd = Sipdial(tmp, users=[{"id": "201", "password": "fuzz-password-201"},
                             {"id": "202", "password": "fuzz-password-202"}],
                 routes=[{"match": "^9", "uri": "sip:{number}@127.0.0.1:9"}],
                 transports=("udp",))
    sd.start()
    assert sd.proc is not None
    pid = sd.proc.pid
    host, port = "127.0.0.1", sd.sip_port("udp")
    try:
        time.sleep(1.0)  # start-up settles (imports, first GC) before the baseline
        rss0 = rss_kib(pid)
        snap0 = snapshot(pid, snapdir, 1) if args.tracemalloc else None
        socks = []
        for _ in range(16):  # 16 source ports
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((host, 0))
            s.setblocking(False)
            socks.append(s)
        mutator = Mutator(args.seed, host, f"{host}:{socks[0].getsockname()[1]}")
        started = time.monotonic()
        sent = answers = 0
        for data in mutator:
            now = time.monotonic()
            if sent >= args.count or now - started > args.max_seconds:
                break
            ahead = sent / args.rate - (now - started)
            if ahead > 0:
                time.sleep(ahead)  # pacing, not synchronisation
            sock = socks[sent % len(socks)]
            try:
                sock.sendto(data, (host, port))
            except OSError:
                pass
            sent += 1
            if sent % 64 == 0:
                for s in socks:
                    while True:
                        try:
                            s.recv(65535)
                            answers += 1
                        except BlockingIOError:
                            break
            if sd.proc.poll() is not None:
                break
        fuzz_time = time.monotonic() - started
        rss1 = rss_kib(pid)
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline and sd.proc.poll() is None:
            time.sleep(1.0)  # the settle period itself is what is measured
        alive = sd.proc.poll() is None
        rss2 = rss_kib(pid) if alive else -1
        snap1 = snapshot(pid, snapdir, 2) if args.tracemalloc and alive else None
        ok = alive and options_answered(host, port)
        for s in socks:
            s.close()
    finally:
        sd.stop()
    log = sd.log_text()
    tracebacks = log.count("Traceback")
    print(f"process: {sent} datagrams in {fuzz_time:.1f} s ({sent / fuzz_time:.0f}/s), "
          f"{answers} answers read; log {sd.log_path}")
    print(f"RSS: start {rss0 / 1024:.1f} MiB, after fuzz {rss1 / 1024:.1f} MiB, after "
          f"{args.settle:.0f} s settle {rss2 / 1024:.1f} MiB "
          f"({(rss2 - rss0) / rss0 * 100:+.1f} % of start)")
    print(f"tracebacks in sipdial's log: {tracebacks}; final OPTIONS answered: {ok}")
    if snap0 is not None and snap1 is not None:
        report_diff(tracemalloc.Snapshot.load(str(snap0)),
                    tracemalloc.Snapshot.load(str(snap1)), args.top)
    return 0 if ok and tracebacks == 0 else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=200_000, help="datagrams to send")
    p.add_argument("--rate", type=float, default=5000.0, help="datagrams per second")
    p.add_argument("--max-seconds", type=float, default=600.0, help="wall-clock guard")
    p.add_argument("--settle", type=float, default=40.0,
                   help="seconds after the fuzz before the last measurement (> 64*T1)")
    p.add_argument("--seed", type=int, default=4475)
    p.add_argument("--in-process", action="store_true",
                   help="drive the sans-IO core here (SimNet, fake clock) instead of a process")
    p.add_argument("--tracemalloc", action="store_true", help="diff tracemalloc snapshots")
    p.add_argument("--frames", type=int, default=8, help="traceback depth for tracemalloc")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    return run_in_process(args) if args.in_process else run_process(args)


if __name__ == "__main__":
    sys.exit(main())
