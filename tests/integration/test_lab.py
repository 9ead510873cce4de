"""scripts/lab (issue 8 §4), run as a user runs it: a real Kamailio, sipdial, two baresip
phones and a SIPp destination, in network namespaces (as root) or on loopback ports.

``--self-test`` places one REFER and one bridge click-to-dial call through the lab, hangs each
up from phone 201's ctrl_tcp, checks in Kamailio's log that every leg went through it, and
exits 0 only if both calls completed. Every test then checks that the lab left nothing
behind: no process whose command line names its work directory, no namespace or host link
carrying its process id.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.c2d_helpers import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "scripts" / "lab"


def _require_peers() -> None:
    for binary, package in (("kamailio", "kamailio"), ("baresip", "baresip-core"),
                            ("sipp", "sip-tester")):
        if shutil.which(binary) is None and not Path(f"/usr/sbin/{binary}").exists():
            pytest.skip(f"{binary} not installed (Debian {package})")


def _netns_possible() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    return subprocess.run(["ip", "netns", "list"], capture_output=True,
                          check=False).returncode == 0


def _processes_naming(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def _lab_leftovers(pid: int) -> list[str]:
    """Namespaces and host links named after the lab run ``pid``."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=False).stdout.split()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                           check=False).stdout
    names = [n for n in netns if n.startswith(f"sdl{pid}-")]
    names += [line.split(":")[1].strip() for line in links.splitlines()
              if line.split(":")[1].strip().startswith(f"sdl{pid}h")]
    return names


def _run_self_test(workdir: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], int]:
    proc = subprocess.Popen([str(LAB), "--self-test", "--workdir", str(workdir), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO)
    try:
        out, _ = proc.communicate(timeout=80)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        raise AssertionError(f"the lab's self-test took more than 80 s:\n{out}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, ""), proc.pid


def _assert_nothing_left(workdir: Path, pid: int, output: str) -> None:
    # the lab waited for each of its processes: none may remain, even a moment later
    assert _processes_naming(str(workdir)) == [], output
    if _netns_possible():
        assert _lab_leftovers(pid) == [], output


@pytest.mark.timeout(90)
def test_self_test_in_namespaces_completes_a_refer_and_a_bridge_call(tmp_path: Path) -> None:
    _require_peers()
    if not _netns_possible():
        pytest.skip("network namespaces need root and iproute2")
    workdir = tmp_path / "lab"
    done, pid = _run_self_test(workdir)
    assert done.returncode == 0, done.stdout
    assert "refer call" in done.stdout and "bridge call" in done.stdout, done.stdout
    assert done.stdout.count("cause completed") == 2, done.stdout
    assert "legs went through Kamailio" in done.stdout, done.stdout
    # namespaced: the phones registered from their own 10.77.N.x addresses, via Kamailio
    kamlog = (workdir / "kamailio" / "kamailio.log").read_text()
    assert "KAMLOG REQ REGISTER" in kamlog and "src=10.77." in kamlog, kamlog[-3000:]
    _assert_nothing_left(workdir, pid, done.stdout)


@pytest.mark.timeout(90)
def test_self_test_on_loopback_ports(tmp_path: Path) -> None:
    _require_peers()
    workdir = tmp_path / "lab"
    done, pid = _run_self_test(workdir, "--loopback")
    assert done.returncode == 0, done.stdout
    assert done.stdout.count("cause completed") == 2, done.stdout
    assert "src=127.0.0.1:" in (workdir / "kamailio" / "kamailio.log").read_text()
    _assert_nothing_left(workdir, pid, done.stdout)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interactive_lab_prints_what_to_try_and_stops_everything_on(
        tmp_path: Path, sig: signal.Signals) -> None:
    _require_peers()
    workdir = tmp_path / "lab"
    out_path = tmp_path / "lab.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen([str(LAB), "--workdir", str(workdir)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_until(lambda: "Ctrl-C stops everything" in out_path.read_text()
                   or proc.poll() is not None, timeout=45, what="the lab's hints")
        hints = out_path.read_text()
        assert proc.poll() is None, hints
        for expected in ('"mode": "refer"', '"mode": "bridge"', "/v1/calls",
                         "scripts/lab ctrl", "hangup", "sipdial.log", "kamailio.log"):
            assert expected in hints, hints
        assert _processes_naming(str(workdir)), "the lab runs no process?"
        os.kill(proc.pid, sig)
        assert proc.wait(45) == 0, out_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    _assert_nothing_left(workdir, proc.pid, out_path.read_text())


@pytest.mark.timeout(90)
def test_a_killed_lab_is_cleaned_up_by_the_next_run(tmp_path: Path) -> None:
    """kill -9 leaves the lab no chance to clean up: the kernel kills its direct children
    (PR_SET_PDEATHSIG), and the next run deletes the dead run's namespaces and kills what
    still runs in them (Kamailio's forked workers)."""
    _require_peers()
    if not _netns_possible():
        pytest.skip("network namespaces need root and iproute2")
    first = tmp_path / "first"
    out_path = tmp_path / "first.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen([str(LAB), "--workdir", str(first)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_until(lambda: "Ctrl-C stops everything" in out_path.read_text()
                   or proc.poll() is not None, timeout=45, what="the first lab up")
        assert proc.poll() is None, out_path.read_text()
        proc.kill()
        proc.wait(10)
        assert _lab_leftovers(proc.pid), "a killed lab left no namespace?"
        done, pid = _run_self_test(tmp_path / "second")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert done.returncode == 0, done.stdout
    assert f"removed sdl{proc.pid}-kam" in done.stdout, done.stdout
    assert _lab_leftovers(proc.pid) == [], done.stdout
    assert _processes_naming(str(first)) == [], done.stdout
    _assert_nothing_left(tmp_path / "second", pid, done.stdout)
