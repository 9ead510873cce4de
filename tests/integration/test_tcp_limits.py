"""SIP-TCP limits against a real sipdial process whose open-file limit is 256 (issue 7 §6):
connections over the per-source limit are refused, exhausting the SIP-TCP budget leaves the
HTTP API and UDP answering, and slowloris connections (a message trickled byte by byte,
60 KB of headers that never end) are closed by the message deadline."""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections.abc import Iterator

import pytest

from tests.integration.c2d_helpers import wait_until
from tests.sipdial_proc import Sipdial

pytestmark = pytest.mark.integration

NOFILE = 256
RESERVE = 200  # budget: 256 - 200 = 56 SIP-TCP connections
BUDGET = NOFILE - RESERVE
PER_SOURCE = 10
MESSAGE_TIMEOUT = 2.0


def options(port: int, tag: str) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK{tag};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={tag}\r\n"
        "To: <sip:127.0.0.1>\r\n"
        f"Call-ID: {tag}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.fixture(scope="module")
def sipdial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sipdial]:
    sd = Sipdial(tmp_path_factory.mktemp("tcp_limits"),
                 users=[{"id": "201", "password": "tcp-limits-201"}], routes=[],
                 sip={"tcp_message_timeout": MESSAGE_TIMEOUT, "tcp_max_per_source": PER_SOURCE,
                      "tcp_fd_reserve": RESERVE})
    sd.nofile = NOFILE
    sd.start()
    yield sd
    sd.stop()
    assert "Traceback" not in sd.log_text()


def connect(sd: Sipdial, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", sd.sip_port("tcp")))
    return sock


def answered(sock: socket.socket, port: int, tag: str) -> bool:
    """Sends an OPTIONS: True if a 200 comes back, False if the connection is closed."""
    try:
        sock.sendall(options(port, tag))
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65535)
            if not chunk:
                return False
            received += chunk
    except (ConnectionResetError, BrokenPipeError):
        return False
    return received.startswith(b"SIP/2.0 200 OK")


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True once sipdial closed ``sock`` (EOF or reset) within ``timeout``."""
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            return False
        try:
            return sock.recv(65535) == b""
        except ConnectionResetError:
            return True
    finally:
        sel.close()


def healthz(sd: Sipdial) -> int:
    status, _body = sd.api("GET", "/healthz", token=None)
    return status


def udp_options(sd: Sipdial, tag: str) -> bytes:
    port = sd.sip_port("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(options(port, tag).replace(b"/TCP", b"/UDP"), ("127.0.0.1", port))
        data, _ = sock.recvfrom(65535)
    return data


def logged(sd: Sipdial, text: str) -> bool:
    """``text`` is in sipdial's log (written by a background thread: waited for)."""
    return bool(wait_until(lambda: text in sd.log_text(), 5, f"log line {text!r}"))


def test_the_budget_is_derived_from_the_lowered_nofile(sipdial: Sipdial) -> None:
    assert logged(sipdial, f"SIP-TCP: at most {BUDGET} connections")
    assert logged(sipdial, f"open-file limit: {NOFILE} (hard {NOFILE})")


def test_connections_over_the_per_source_limit_are_refused(sipdial: Sipdial) -> None:
    port = sipdial.sip_port("tcp")
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(sipdial, "127.0.0.2")) for _ in range(PER_SOURCE)]
        for i, sock in enumerate(held):
            assert answered(sock, port, f"ps{i}"), f"connection {i} within the limit refused"
        extra = stack.enter_context(connect(sipdial, "127.0.0.2"))
        assert not answered(extra, port, "ps-extra")
        other = stack.enter_context(connect(sipdial, "127.0.0.3"))
        assert answered(other, port, "ps-other")  # another source is not affected


def test_http_and_udp_answer_while_the_sip_tcp_budget_is_exhausted(sipdial: Sipdial) -> None:
    port = sipdial.sip_port("tcp")
    attempts = 300  # more than the whole nofile limit; 30 sources within the per-source limit
    with contextlib.ExitStack() as stack:
        socks = []
        for i in range(attempts):
            try:
                source = f"127.0.1.{i // PER_SOURCE + 1}"
                socks.append(stack.enter_context(connect(sipdial, source)))
            except OSError:
                pass  # refused at accept before connect() returned: also a refusal
        # every connection sends a whole message: the accepted ones stay (idle timeout)
        accepted = sum(answered(sock, port, f"b{i}") for i, sock in enumerate(socks))
        # with 300 connections held, sipdial (nofile 256) still has descriptors for these
        assert healthz(sipdial) == 200
        assert udp_options(sipdial, "budget-udp").startswith(b"SIP/2.0 200 OK")
        assert 0 < accepted <= BUDGET
    # once they are closed, new connections are accepted again
    def fresh() -> bool:
        with connect(sipdial, "127.0.2.1") as sock:
            return answered(sock, port, f"after{time.monotonic()}")
    wait_until(fresh, 10, "a SIP-TCP connection accepted again", interval=0.2)


def test_slowloris_connections_are_closed_by_the_message_deadline(sipdial: Sipdial) -> None:
    port = sipdial.sip_port("tcp")
    message = options(port, "slow")
    with contextlib.ExitStack() as stack:
        trickling = [stack.enter_context(connect(sipdial, f"127.0.3.{i // PER_SOURCE + 1}"))
                     for i in range(40)]
        huge = [stack.enter_context(connect(sipdial, "127.0.4.1")) for _ in range(5)]
        for sock in huge:  # 60 KB of headers, never ended (the limit is 64 KiB)
            sock.sendall(message[:-4] + b"X-Pad: " + b"p" * 60_000)
        # one byte a second per connection for 3 x the deadline: bytes used to reset the idle
        # timer; now the message deadline closes each connection whatever trickles in
        open_ = set(trickling)
        end = time.monotonic() + 3 * MESSAGE_TIMEOUT + 2
        offset = 0
        while open_ and time.monotonic() < end and offset < len(message) - 4:
            for sock in list(open_):
                try:
                    sock.sendall(message[offset:offset + 1])
                except OSError:
                    open_.discard(sock)
                    continue
                if closed_by_peer(sock, 0):
                    open_.discard(sock)
            offset += 1
            time.sleep(0.25)  # the trickle's pace (what is awaited is the close, below)
        still_open = [s for s in open_ if not closed_by_peer(s, 2 * MESSAGE_TIMEOUT)]
        assert not still_open, f"{len(still_open)} of 40 trickling connections still open"
        assert all(closed_by_peer(s, 2 * MESSAGE_TIMEOUT) for s in huge)
    assert logged(sipdial, "no complete message within")
    assert healthz(sipdial) == 200
