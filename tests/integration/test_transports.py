"""SIP over real sockets: UDP and TCP, IPv4 and IPv6, framing and bad input."""

from __future__ import annotations

import socket

import pytest

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
