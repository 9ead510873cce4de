"""SIP scanners against a real sipdial: sipvicious svwar (user enumeration) and svcrack
(online password guessing), bounded in time, with a report (issue 7 §2, §7).

    .venv/bin/python -m loadtest.scanners                    # svwar x3, svcrack 10 minutes
    .venv/bin/python -m loadtest.scanners --crack-minutes 1  # a shorter attack

Starts its own sipdial (generated config, ports picked by the kernel, ``[auth]`` defaults)
with users 201, 202 and 250. 201's password is the 4-digit ``4321`` (weak passwords allowed
for this run only, so there is something to find). Then:

* ``svwar`` with REGISTER, INVITE and OPTIONS over extensions 100-999: target 0 users found;
* ``svcrack -u 201 -r 0-9999 -z 4`` again and again for ``--crack-minutes`` (default 10, the
  issue's figure; one pass over the range takes about a minute): target: the password not
  found. sipdial's DEBUG log tells how many guesses were evaluated
  ("wrong password") and how many were answered without being checked (the source was
  backing off or locked out).

Needs the test extras (``pip install -e '.[test]'``: sipvicious). Prints one line per result
and exits non-zero if a target is missed. Loopback only.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.sipdial_proc import Sipdial

PASSWORD = "4321"
USERS = [{"id": "201", "password": PASSWORD, "name": "Alice"},
         {"id": "202", "password": "Secret-202x", "name": "Bob"},
         {"id": "250", "password": "Secret-250x", "name": "Carol"}]


def _tool(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: pip install -e '.[test]' (sipvicious)")
    return found


def _found_extensions(output: str) -> set[str]:
    found = set()
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            found.add(cells[0])
    return found


def run_svwar(port: int, method: str) -> set[str]:
    result = subprocess.run(
        [_tool("sipvicious_svwar"), "-e", "100-999", "-m", method, "--force",
         "--maximumtime", "60", "-b", "127.0.0.1", "-p", str(port), "127.0.0.1"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    return _found_extensions(result.stdout + result.stderr)


def run_svcrack(port: int, minutes: float) -> tuple[bool, float, int]:
    """(password found, seconds attacked, passes). svcrack stops by itself once it has tried
    0000-9999 (about a minute here); it is started again, from 0000, until ``minutes`` are
    over or it finds the password."""
    started = time.monotonic()
    deadline = started + minutes * 60
    passes = 0
    while (left := deadline - time.monotonic()) > 1:
        passes += 1
        try:
            result = subprocess.run(
                [_tool("sipvicious_svcrack"), "-u", "201", "-r", "0-9999", "-z", "4",
                 "--maximumtime", str(max(1, int(left))), f"udp://127.0.0.1:{port}"],
                capture_output=True, text=True, timeout=left + 60,
                stdin=subprocess.DEVNULL, check=False)
            output = result.stdout + result.stderr
        except subprocess.TimeoutExpired:
            output = ""
        if PASSWORD in output:
            return True, time.monotonic() - started, passes
    return False, time.monotonic() - started, passes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crack-minutes", type=float, default=10.0,
                        help="how long svcrack attacks (10: the issue's figure)")
    parser.add_argument("--skip-svwar", action="store_true")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="sipdial-scanners-"))
    ok = True
    with Sipdial(workdir, users=USERS, routes=[], transports=("udp",),
                 extra="[auth]\nallow_weak_passwords = true\n") as sd:
        port = sd.sip_port("udp")
        print(f"sipdial udp:127.0.0.1:{port}, log {sd.log_path}")
        if not args.skip_svwar:
            for method in ("REGISTER", "INVITE", "OPTIONS"):
                found = run_svwar(port, method)
                print(f"svwar -m {method} -e 100-999: {len(found)} users found {sorted(found)}")
                ok &= not found
        cracked, elapsed, passes = run_svcrack(port, args.crack_minutes)
        log = sd.log_text()
        evaluated = log.count("wrong password: '201'")
        unchecked = log.count("password not checked (guessing limit): '201'")
        lockouts = log.count("locked out")
        print(f"svcrack -u 201 -r 0-9999 -z 4, {passes} passes in {elapsed:.0f} s: password "
              f"{'FOUND' if cracked else 'not found'}; sipdial evaluated {evaluated} guesses, "
              f"answered {unchecked} without checking them; {lockouts} lockout lines")
        ok &= not cracked
        tracebacks = log.count("Traceback")
        print(f"sipdial log: {tracebacks} tracebacks")
        ok &= tracebacks == 0
    print("OK" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
