"""SIP over real sockets: UDP and TCP, IPv4 and IPv6, framing and bad input."""

from __future__ import annotations

import os
import socket

import pytest

from tests.integration.c2d_helpers import wait_until
from tests.sipdial_proc import Sipdial

pytestmark = pytest.mark.integration

USERS = [{"id": "201", "password": "secret201"}]


def options(host: str, port: int, transport: str, branch: str, call_id: str) -> bytes:
    h = f"[{host}]" if ":" in host else host
    return (
        f"OPTIONS sip:{h}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} {h}:9;branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{h}>;tag=t{branch}\r\n"
        f"To: <sip:{h}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.fixture(scope="module")
def sipdial(tmp_path_factory: pytest.TempPathFactory) -> Sipdial:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    tmp = tmp_path_factory.mktemp("transports")
    sd = Sipdial(tmp, users=USERS, routes=[], listen=[
        "udp:127.0.0.1:0", "tcp:127.0.0.1:0", "udp:[::1]:0", "tcp:[::1]:0"])
    sd.start()
    yield sd  # type: ignore[misc]
    sd.stop()


def _udp(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.bind((host, 0))
    return sock


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_options_over_udp_with_rport(sipdial: Sipdial, host: str) -> None:
    port = sipdial.sip_port("udp", host)
    with _udp(host) as sock:
        sock.sendto(options(host, port, "udp", "u1" + host.replace(":", ""), "c1"),
                    (host, port))
        data, _ = sock.recvfrom(65535)
        my_port = sock.getsockname()[1]
    text = data.decode()
    assert text.startswith("SIP/2.0 200 OK\r\n")
    assert "Allow: " in text and "REFER" in text
    assert f"rport={my_port}" in text  # RFC 3581: answered to the source port, said so


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tcp_stream_framing_two_messages_in_one_segment(sipdial: Sipdial, host: str) -> None:
    port = sipdial.sip_port("tcp", host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect((host, port))
        sock.sendall(b"\r\n\r\n" + options(host, port, "tcp", "a", "ca")
                     + options(host, port, "tcp", "b", "cb"))
        received = b""
        while received.count(b"SIP/2.0 200 OK") < 2:
            chunk = sock.recv(65535)
            assert chunk, "connection closed early"
            received += chunk
    assert b"Call-ID: ca" in received and b"Call-ID: cb" in received


def test_bad_datagram_gets_400_and_does_not_affect_the_next(sipdial: Sipdial) -> None:
    host = "127.0.0.1"
    port = sipdial.sip_port("udp", host)
    with _udp(host) as sock:
        bad = options(host, port, "udp", "bad", "cbad").replace(b"CSeq: 1 OPTIONS",
                                                                b"CSeq: x OPTIONS")
        sock.sendto(bad, (host, port))
        data, _ = sock.recvfrom(65535)
        assert data.startswith(b"SIP/2.0 400 ")
        sock.sendto(b"\x00\xffgarbage that is no SIP at all\r\n\r\n", (host, port))
        sock.sendto(options(host, port, "udp", "good", "cgood"), (host, port))
        data, _ = sock.recvfrom(65535)
    assert data.startswith(b"SIP/2.0 200 OK") and b"Call-ID: cgood" in data


def test_unknown_method_501_and_out_of_dialog_bye_481(sipdial: Sipdial) -> None:
    host = "127.0.0.1"
    port = sipdial.sip_port("udp", host)
    with _udp(host) as sock:
        sock.sendto(options(host, port, "udp", "m1", "cm1").replace(b"OPTIONS", b"FROB"),
                    (host, port))
        data, _ = sock.recvfrom(65535)
        assert data.startswith(b"SIP/2.0 501 ")
        sock.sendto(options(host, port, "udp", "m2", "cm2").replace(b"OPTIONS", b"BYE"),
                    (host, port))
        data, _ = sock.recvfrom(65535)
        assert data.startswith(b"SIP/2.0 481 ")


def test_a_short_parser_fuzz_leaves_no_traceback_and_options_answered(sipdial: Sipdial) -> None:
    """20,000 seeded mutations (loadtest/fuzz_sip.py; the benchmark sends 200,000 and
    measures memory): no traceback in the log, and sipdial still answers afterwards."""
    import time

    from loadtest.fuzz_sip import Mutator

    host = "127.0.0.1"
    port = sipdial.sip_port("udp", host)
    with _udp(host) as sock:
        sock.setblocking(False)
        mutator = Mutator(7, host, f"{host}:{sock.getsockname()[1]}")
        started = time.monotonic()
        for n, data in enumerate(mutator):
            if n >= 20_000 or time.monotonic() - started > 60:
                break
            try:
                sock.sendto(data, (host, port))
            except BlockingIOError:
                pass
            if n % 500 == 0:
                time.sleep(0.05)  # pacing (~10,000/s), not synchronisation
                while True:
                    try:
                        sock.recv(65535)
                    except BlockingIOError:
                        break
        sock.setblocking(True)
        sock.settimeout(5)
        sock.sendto(options(host, port, "udp", "afterfuzz", "cafterfuzz"), (host, port))
        while True:  # answers to the fuzz may still be queued: read up to ours
            data, _ = sock.recvfrom(65535)
            if b"Call-ID: cafterfuzz" in data:
                break
    assert data.startswith(b"SIP/2.0 200 OK")
    assert sipdial.proc is not None and sipdial.proc.poll() is None
    if os.environ.get("SIPDIAL_TRACE", "1") != "0":  # the log is written by a thread
        wait_until(lambda: "cafterfuzz" in sipdial.log_text(), 20, "the log up to our OPTIONS")
    assert "Traceback" not in sipdial.log_text()
