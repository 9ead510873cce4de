"""sipdial as a process: it exits at once when it cannot listen, SIGTERM always stops it, and
it refuses the demo secrets on a public address."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.sipdial_proc import Sipdial, config_text

USERS = [{"id": "201", "password": "pw-201-not-demo", "name": "Alice"}]
ROUTES = [{"match": "^\\+?[0-9]+$", "uri": "sip:{number}@127.0.0.1:5080"}]


def _run(config: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sipdial", "serve", "--config", str(config)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, cwd=config.parent)


def test_a_sip_port_in_use_makes_sipdial_exit_non_zero_at_once(tmp_path: Path) -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        config = tmp_path / "sipdial.toml"
        config.write_text(config_text(tmp_path / "db.sqlite", users=USERS, routes=ROUTES,
                                      listen=[f"udp:127.0.0.1:{port}"]))
        started = time.monotonic()
        result = _run(config, timeout=20)  # it used to hang here forever
        elapsed = time.monotonic() - started
    finally:
        busy.close()
    output = result.stdout + result.stderr
    assert result.returncode not in (0, None), output
    assert "Address already in use" in output, output
    assert f"127.0.0.1:{port}" in output, output
    assert elapsed < 15, elapsed


def test_an_http_port_in_use_makes_sipdial_exit_non_zero_at_once(tmp_path: Path) -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        config = tmp_path / "sipdial.toml"
        text = config_text(tmp_path / "db.sqlite", users=USERS, routes=ROUTES)
        config.write_text(text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"'))
        result = _run(config, timeout=20)
    finally:
        busy.close()
    output = result.stdout + result.stderr
    assert result.returncode not in (0, None), output
    assert "Address already in use" in output, output


def test_sigterm_stops_a_running_sipdial(tmp_path: Path) -> None:
    sd = Sipdial(tmp_path, users=USERS, routes=ROUTES).start()
    assert sd.proc is not None
    sd.proc.send_signal(signal.SIGTERM)
    assert sd.proc.wait(timeout=10) == 0
    assert "sipdial stopped" in sd.log_text()


def _media_processes(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # not a process, or gone meanwhile
            continue
        if int(stat.rsplit(b")", 1)[1].split()[1]) == parent \
                and b"sipdial.media.process" in cmdline:
            found.append(int(entry.name))
    return found


def _exits(pid: int, timeout: float) -> bool:
    """Whether ``pid`` (not our child) ends within ``timeout`` s: its pidfd becomes readable."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_media_process_ends_with_sipdial(tmp_path: Path, how: signal.Signals) -> None:
    sd = Sipdial(tmp_path, users=USERS, routes=ROUTES).start()
    assert sd.proc is not None
    media = _media_processes(sd.proc.pid)
    assert len(media) == 1, "[media] process = true (the default): one media process"
    sd.proc.send_signal(how)
    sd.proc.wait(timeout=10)
    assert _exits(media[0], timeout=10)  # SIGKILL: the kernel's parent-death signal


def test_sigterm_while_starting_stops_sipdial(tmp_path: Path) -> None:
    config = tmp_path / "sipdial.toml"
    config.write_text(config_text(tmp_path / "db.sqlite", users=USERS, routes=ROUTES))
    proc = subprocess.Popen([sys.executable, "-m", "sipdial", "serve", "--config", str(config)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # the first log line: the process is up, maybe not ready
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("key", ["api token", "user password"])
def test_demo_secrets_on_a_public_address_are_refused(tmp_path: Path, key: str) -> None:
    users = [{"id": "201", "password": "secret201" if key == "user password" else "pw-x-201"}]
    text = config_text(tmp_path / "db.sqlite", users=users, routes=ROUTES, host="0.0.0.0")
    if key != "api token":
        text = text.replace('"admin-secret"', '"a-real-token-0123456789"')
    config = tmp_path / "sipdial.toml"
    config.write_text(text)
    result = _run(config, timeout=20)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "demo secret" in output, output
    assert ("users[0].password" if key == "user password" else "api.tokens") in output, output
    check = subprocess.run([sys.executable, "-m", "sipdial", "check-config", str(config)],
                           capture_output=True, text=True, timeout=20)
    assert check.returncode != 0 and "demo secret" in check.stdout + check.stderr
