"""``python -m lab`` (what ``scripts/lab`` runs); ``--help`` tells the options.

Exit status: 0 stopped by Ctrl-C/SIGTERM or after --run-for, or --self-test passed;
1 --self-test failed or a program of the lab exited on its own; 2 the lab could not start
(a program missing, a namespace not made). Every path stops what was started.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from lab.ctrl import CtrlError, command
from lab.net import (
    LoopbackNetwork,
    NetnsNetwork,
    NetworkError,
    NetworkNodes,
    netns_available,
    remove_stale,
)
from lab.nodes import REPO, ProgramError
from lab.runner import Lab


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: stop the lab as Ctrl-C does."""


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/lab",
        description="Kamailio + sipdial + two baresip phones + a SIPp destination, each in "
                    "its own network namespace (as root) or on loopback ports. "
                    "Also: scripts/lab ctrl HOST:PORT COMMAND [PARAMS] (baresip ctrl_tcp); "
                    "python -m lab node ROLE (one node per container: docker/lab).")
    parser.add_argument("--loopback", action="store_true",
                        help="all on 127.0.0.1 even where namespaces are available")
    parser.add_argument("--workdir", type=Path,
                        help="configs and logs (default: var/lab/run-<time>-<pid>)")
    parser.add_argument("--self-test", action="store_true",
                        help="place one REFER and one bridge call, then stop; "
                             "exit 0 only if both completed")
    parser.add_argument("--run-for", type=float, metavar="SECONDS",
                        help="stop by itself after SECONDS (default: run until Ctrl-C)")
    return parser.parse_args(argv)


def _ctrl(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: scripts/lab ctrl HOST:PORT COMMAND [PARAMS]", file=sys.stderr)
        return 2
    try:
        print(command(argv[0], argv[1], " ".join(argv[2:])))
    except (CtrlError, OSError, ValueError) as exc:
        print(f"lab ctrl: {exc}", file=sys.stderr)
        return 1
    return 0


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ctrl"]:
        return _ctrl(argv[1:])
    if argv[:1] == ["node"]:
        from lab.container import node_main

        return node_main(argv[1:])
    args = _parse(argv)
    workdir = args.workdir or REPO / "var" / "lab" / time.strftime(
        f"run-%Y%m%d-%H%M%S-{__import__('os').getpid()}")
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # started in the background by a script, SIGINT would be ignored: Ctrl-C must always work
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    network: NetworkNodes | None = None
    lab: Lab | None = None
    status = 0
    try:
        if not args.loopback and netns_available():
            for name in remove_stale():
                print(f"lab: removed {name} (left by a lab run that is gone)")
            network = NetnsNetwork()
        else:
            network = LoopbackNetwork()
        lab = Lab(workdir, network)
        print(f"lab: starting in {workdir}", flush=True)
        lab.start()
        if args.self_test:
            status = 0 if lab.self_test() else 1
        else:
            print(lab.hints(), flush=True)
            deadline = None if args.run_for is None else time.monotonic() + args.run_for
            while deadline is None or time.monotonic() < deadline:
                dead = lab.dead()
                if dead:
                    for program in dead:
                        code = program.proc.poll() if program.proc else None
                        print(f"lab: {program.name} exited ({code}): see {program.log_path}",
                              file=sys.stderr)
                    status = 1
                    break
                time.sleep(0.2)
    except (KeyboardInterrupt, Stopped) as exc:
        print(f"\nlab: {type(exc).__name__ if isinstance(exc, KeyboardInterrupt) else exc}, "
              "stopping", flush=True)
    except (ProgramError, NetworkError) as exc:
        print(f"lab: {exc}", file=sys.stderr)
        status = 2 if lab is None or not lab.programs else 1
    finally:
        # a second Ctrl-C must not cut the clean-up short (it is bounded: ~20 s at most)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if lab is not None:
            lab.stop()
        elif network is not None:
            network.close()
        print(f"lab: stopped; logs in {workdir}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
