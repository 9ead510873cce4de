"""SIP scanners against a real sipdial: sipvicious svwar must find no user.

svwar (PyPI ``sipvicious``) enumerates extensions by sending REGISTER/INVITE/OPTIONS for each
name and telling known from unknown users by the answer. sipdial answers every name alike (a
challenge for REGISTER and INVITE, the same 200 for OPTIONS), so nothing is found. A control run
against a deliberately leaky registrar (404 for unknown users, 401 for known ones) proves that the
scanner works here and that "found nothing" is a real result.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sipdial_proc import Sipdial

SVWAR = Path(sys.executable).with_name("sipvicious_svwar")
USERS = [{"id": "201", "password": "Secret-201x"}, {"id": "202", "password": "Secret-202x"},
         {"id": "250", "password": "Secret-250x"}]

pytestmark = pytest.mark.skipif(
    not SVWAR.exists() and shutil.which("sipvicious_svwar") is None,
    reason="sipvicious is a test dependency (pip install -e '.[test]')")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _svwar(port: int, method: str, extensions: str = "195-260") -> str:
    """Run svwar (bounded: 20 s of sending, 60 s in all) and return what it printed."""
    result = subprocess.run(
        [str(SVWAR) if SVWAR.exists() else "sipvicious_svwar", "-e", extensions, "-m", method,
         "--force", "--maximumtime", "20", "-b", "127.0.0.1", "-P", str(_free_udp_port()),
         "-p", str(port), "127.0.0.1"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    return result.stdout + result.stderr


def _found(output: str) -> set[str]:
    """The extensions in svwar's result table (``| 201 | reqauth |``)."""
    found = set()
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            found.add(cells[0])
    return found


@pytest.fixture
def leaky_registrar() -> Iterator[int]:
    """A registrar that gives its users away: 401 for 201/202, 404 for everyone else."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            lines = data.decode("utf-8", "replace").split("\r\n")
            if not lines[0] or lines[0].startswith("SIP/2.0") or lines[0].startswith("ACK"):
                continue
            keep = [line for line in lines[1:] if line.split(":", 1)[0].lower()
                    in ("via", "from", "to", "call-id", "cseq")]
            to = next((line for line in keep if line.lower().startswith("to:")), "")
            known = "sip:201@" in to or "sip:202@" in to
            status = "401 Unauthorized" if known else "404 Not Found"
            extra = ['WWW-Authenticate: Digest realm="x", nonce="n"'] if known else []
            reply = "\r\n".join([f"SIP/2.0 {status}", *keep, *extra,
                                 "Content-Length: 0", "", ""])
            sock.sendto(reply.encode(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(sock.getsockname()[1])
    stop.set()
    thread.join(2)
    sock.close()


def test_svwar_finds_the_users_of_a_leaky_registrar(leaky_registrar: int) -> None:
    assert _found(_svwar(leaky_registrar, "REGISTER")) == {"201", "202"}


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
def test_svwar_finds_no_user_of_sipdial(tmp_path: Path, method: str) -> None:
    with Sipdial(tmp_path, users=USERS, routes=[]) as sd:
        output = _svwar(sd.sip_port("udp"), method)
        assert sd.proc is not None and sd.proc.poll() is None, "sipdial died under the scan"
        log = sd.log_text()
    assert _found(output) == set(), output
    assert "Traceback" not in log
