"""What the load tools read about the processes they start, and how they stop them: /proc
CPU and RSS, SIPp's ``-trace_stat`` CSV, SIGTERM turned into KeyboardInterrupt (so a run's
``finally`` blocks stop everything), a process group stopped TERM then KILL."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

CLK_TCK = os.sysconf("SC_CLK_TCK")

__all__ = ["CLK_TCK", "interrupt", "proc_cpu", "proc_rss", "sigterm_as_interrupt", "sipp_stats",
           "stop_group"]


def proc_cpu(pid: int, tid: int | None = None) -> float:
    """utime + stime in seconds of a process (all its threads) or one of its threads."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    with open(path) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of stat


def proc_rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return rss, hwm


def sipp_stats(stat_file: Path) -> dict[str, str]:
    """The last row of a SIPp -trace_stat CSV (cumulative columns end in '(C)')."""
    try:
        rows = list(csv.reader(stat_file.read_text(errors="replace").splitlines(),
                               delimiter=";"))
    except FileNotFoundError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def interrupt(signum: int, frame: FrameType | None) -> None:
    """A signal handler: raise KeyboardInterrupt."""
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block (the previous handler after it)."""
    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def stop_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int | None:
    """SIGTERM to ``proc``'s process group, SIGKILL after ``grace`` seconds; its exit code."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.returncode
