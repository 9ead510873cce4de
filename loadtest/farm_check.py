"""By-hand integration check of loadtest/farm.py against a real sipdial (not a suite test).

    .venv/bin/python -m loadtest.farm_check [--users 20] [--devices 1] [--calls 6]
        [--hold 1000] [--rate 0] [--farm-args "--reject-share 0.1"] [--max-seconds 60]

Run from the repository root. On 127.0.0.1 it starts a quiet sipdial (UDP only, users
"1".."N" with passwords ``pw-{user}-load``, weak-password check off, every number routed to
a SIPp UAS ``uas_answer_then_bye.xml`` that sends BYE ``--hold`` ms after answering), then
``python -m loadtest.farm`` (waits for its ready file), then POSTs ``--calls`` calls
alternating ``refer`` and ``bridge`` (user ``(i % N) + 1``, unique numbers
``+49301234<5 digits>``), at ``--rate`` calls/s (0: all at once), waits (bounded) for
every call to end and prints each call's cause (GET /v1/calls/{id}), the farm's event
counts and its exit statistics (CPU seconds, messages, retransmissions). Exit status 0 only
if every call ended ``completed``. Everything it started is stopped; the work directory is
printed and kept.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from loadtest.load_bridge import QuietSipdial, proc_cpu
from tests.integration.c2d_helpers import ROUTE_MATCH
from tests.peers.lossy_relay import LossyRelay
from tests.peers.ports import LOOPBACK, free_port_both
from tests.peers.sipp import Sipp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--calls", type=int, default=6)
    ap.add_argument("--hold", type=int, default=1000, help="ms before the destination's BYE")
    ap.add_argument("--rate", type=float, default=0.0, help="calls/s (0: all at once)")
    ap.add_argument("--modes", default="refer,bridge", help="modes, used in turn")
    ap.add_argument("--confirm", action="store_true",
                    help='"press 1" prompt calls (use with --farm-args "--dtmf-after 500")')
    ap.add_argument("--farm-args", default="", help="extra arguments for the farm")
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--loss", type=float, default=0.0,
                    help="drop this share of datagrams each way between the farm and sipdial "
                         "(tests.peers.lossy_relay; seeded)")
    ap.add_argument("--profile", action="store_true",
                    help="run the farm under cProfile (WORKDIR/farm.prof)")
    args = ap.parse_args(argv)
    deadline = time.monotonic() + args.max_seconds
    work = args.workdir or Path(tempfile.mkdtemp(prefix="farm-check-"))
    work.mkdir(parents=True, exist_ok=True)
    dest_port = free_port_both()
    users = [{"id": str(n), "password": f"pw-{n}-load", "name": f"User {n}"}
             for n in range(1, args.users + 1)]
    if args.users < 201:  # tests.sipdial_proc's config has an API token for user 201
        users.append({"id": "201", "password": "not-used-201", "name": "Token owner"})
    sd = QuietSipdial(work, users=users, transports=("udp",),
                      routes=[{"match": ROUTE_MATCH,
                               "uri": f"sip:{{number}}@{LOOPBACK}:{dest_port}"}],
                      extra="[auth]\nallow_weak_passwords = true\n")
    dest = Sipp.uas(work, "uas_answer_then_bye.xml", port=dest_port, duration_ms=args.hold,
                    calls=args.calls, timeout=args.max_seconds, rtp_echo=False,
                    name="sipp-dest")
    farm: subprocess.Popen[bytes] | None = None
    relay: LossyRelay | None = None
    ready = work / "farm-ready.json"
    events = work / "farm-events.jsonl"
    ok = False
    try:
        sd.start()
        dest.start()
        sip = (LOOPBACK, sd.sip_port("udp"))
        if args.loss > 0:
            relay = LossyRelay(sip, drop_up=args.loss, drop_down=args.loss)
            sip = relay.address
        profile = ["-m", "cProfile", "-o", str(work / "farm.prof")] if args.profile else []
        cmd = [sys.executable, *profile, "-m", "loadtest.farm",
               "--sipdial", f"{sip[0]}:{sip[1]}",
               "--users", f"1-{args.users}", "--devices", str(args.devices),
               "--ready-file", str(ready), "--events", str(events),
               "--max-seconds", str(int(args.max_seconds)), *shlex.split(args.farm_args)]
        print("farm:", shlex.join(cmd), flush=True)
        farm = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        while not ready.exists():
            if farm.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the farm did not get ready")
            time.sleep(0.05)
        print("farm ready:", ready.read_text(), flush=True)
        modes = args.modes.split(",")
        ids: list[str] = []
        for i in range(args.calls):
            body = {"user": str(i % args.users + 1), "to": f"+49301234{i:05d}",
                    "mode": modes[i % len(modes)], "confirm": args.confirm}
            status, call = sd.api("POST", "/v1/calls", body)
            if status != 201:
                print(f"POST {body} -> {status} {call}")
                continue
            ids.append(call["id"])
            if args.rate > 0:
                time.sleep(1.0 / args.rate)
        causes: dict[str, str] = {}
        while len(causes) < len(ids) and time.monotonic() < deadline:
            for cid in ids:
                if cid not in causes:
                    _status, call = sd.api("GET", f"/v1/calls/{cid}")
                    if call.get("state") == "ended":
                        causes[cid] = f"{call.get('mode')}:{call.get('cause')}"
            time.sleep(0.2)
        print("calls:", dict(Counter(causes.values())),
              f"({len(ids) - len(causes)} not ended)" if len(causes) < len(ids) else "")
        ok = len(ids) == args.calls and all(c.endswith(":completed") for c in causes.values()) \
            and len(causes) == len(ids)
    finally:
        if sd.proc is not None and sd.proc.poll() is None:
            print(f"sipdial CPU {proc_cpu(sd.proc.pid):.2f} s (start-up included)")
        if farm is not None:
            if farm.poll() is None:
                farm.terminate()
            try:
                out, _ = farm.communicate(timeout=15)
                print("farm exit", farm.returncode, out.decode(errors="replace").strip())
            except subprocess.TimeoutExpired:
                farm.kill()
                farm.wait(5)
        dest.stop()
        sd.stop()
        if relay is not None:
            print("relay:", relay.stats)
            relay.close()
    if events.exists():
        counts = Counter(json.loads(line)["ev"] for line in events.read_text().splitlines())
        print("farm events:", dict(counts))
    print("workdir", work, "->", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
