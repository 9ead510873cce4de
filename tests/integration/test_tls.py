"""SIP over TLS (issue 8 §3) with real peers on loopback and a CA made at run time.

* baresip (Debian baresip-core 1.0) registers over TLS with the generated CA and client
  certificate; a REFER click-to-dial completes with the phone leg over TLS.
* sipdial connects over TLS to ``sips:`` routes: a responder (Python ``ssl``) certified for
  ``localhost`` by the configured CA gets the INVITE; one certified for another host name, or
  by another CA, is refused at the handshake: the call fails at once with a clear log line
  and no traceback, and that responder never sees a request.
* an RFC 5626 double-CRLF ping over TLS is answered with a single CRLF pong.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
from pathlib import Path

import pytest

from tests.integration.c2d_helpers import wait_until
from tests.peers.baresip import Baresip
from tests.peers.certs import CertificateAuthority, Issued, make_ca
from tests.peers.sipp import Sipp
from tests.sipdial_proc import Sipdial

pytestmark = pytest.mark.integration

TARGET = "+4930123456"
USERS = [{"id": "201", "password": "secret201", "name": "Alice", "auto_answer": True}]


class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca: CertificateAuthority = make_ca(directory, "ca")
        self.other_ca = make_ca(directory, "other-ca", "some other CA")
        self.sipdial: Issued = self.ca.issue("sipdial", dns=["localhost"], ips=["127.0.0.1"])
        self.phone: Issued = self.ca.issue("phone", dns=["localhost"], ips=["127.0.0.1"])
        self.good: Issued = self.ca.issue("good", dns=["localhost"])
        self.wrong_host: Issued = self.ca.issue("wrong-host", dns=["trunk.example.org"])
        self.wrong_ca: Issued = self.other_ca.issue("wrong-ca", dns=["localhost"])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def tls_table(pki: Pki) -> str:
    return (f'[sip.tls]\ncertificate = "{pki.sipdial.cert}"\nkey = "{pki.sipdial.key}"\n'
            f'ca = "{pki.ca.files.cert}"\n')


class TlsResponder:
    """A SIP-over-TLS server that answers every INVITE 100 then 486 and records what it got
    (a stand-in for a TLS trunk; SIPp's TLS is not built into Debian's sip-tester)."""

    def __init__(self, issued: Issued) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(issued.cert), str(issued.key))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self.handshake_errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TlsResponder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._connection, args=(raw,), daemon=True).start()

    def _connection(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.handshake_errors.append(str(exc))
            raw.close()
            return
        buf = b""
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65535)
                except (TimeoutError, ssl.SSLError, OSError):
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\r\n\r\n" in buf:
                    head, rest = buf.split(b"\r\n\r\n", 1)
                    m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
                    length = int(m.group(1)) if m else 0
                    if len(rest) < length:
                        break
                    message, buf = head.decode() + "\r\n\r\n", rest[length:]
                    if not message.strip():
                        continue
                    self.requests.append(message)
                    if message.startswith("INVITE "):
                        for status in ("100 Trying", "486 Busy Here"):
                            conn.sendall(_response(message, status))

    def invites(self) -> list[str]:
        return [r for r in self.requests if r.startswith("INVITE ")]


def _response(request: str, status: str) -> bytes:
    keep = [line for line in request.split("\r\n")
            if re.match(r"(?i)(via|from|to|call-id|cseq)\s*:", line)]
    if not status.startswith("100"):
        keep = [f"{line};tag=busy1" if re.match(r"(?i)to\s*:", line) else line
                for line in keep]
    return ("SIP/2.0 " + status + "\r\n" + "\r\n".join(keep)
            + "\r\nContent-Length: 0\r\n\r\n").encode()


def _sipdial(tmp_path: Path, pki: Pki, routes: list[dict[str, str]]) -> Sipdial:
    return Sipdial(tmp_path, users=USERS, routes=routes,
                   listen=["udp:127.0.0.1:0", "tls:127.0.0.1:0"], extra=tls_table(pki))


def _phone(tmp_path: Path, pki: Pki, sd: Sipdial) -> Baresip:
    return Baresip(tmp_path, user="201", password="secret201",
                   registrar=f"127.0.0.1:{sd.sip_port('tls')}", transport="tls",
                   outbound=False,
                   extra_config={"sip_certificate": str(pki.phone.combined),
                                 "sip_cafile": str(pki.ca.files.cert)})


def _registered_over_tls(sd: Sipdial, phone: Baresip) -> None:
    phone.wait_registered()
    regs = sd.wait_registered("201")
    assert regs[0]["user_agent"].startswith("baresip")
    assert regs[0]["transport"] == "tls", regs


def test_baresip_registers_over_tls_and_a_refer_call_completes(tmp_path: Path,
                                                                pki: Pki) -> None:
    with Sipp.uas(tmp_path, "uas_answer.xml") as dest:
        routes = [{"match": "^\\+?[0-9]+$", "uri": f"sip:{{number}}@127.0.0.1:{dest.port}"}]
        with _sipdial(tmp_path, pki, routes) as sd:
            dest.start()
            with _phone(tmp_path, pki, sd) as phone:
                _registered_over_tls(sd, phone)
                status, call = sd.api("POST", "/v1/calls", {"user": "201", "to": TARGET})
                assert status == 201, call
                phone.wait_event("CALL_ESTABLISHED", timeout=15)
                sd.wait_state(call["id"], "connected", timeout=20)
                phone.hangup()
                assert dest.wait(15) == 0, dest.report()
                final = sd.wait_state(call["id"], "ended", timeout=15)
                assert final["cause"] == "completed", final
                log = sd.log_text()
                # the phone leg was TLS both ways (sipdial's INVITE and REFER, the phone's
                # INVITE to the target), all on the connection the phone registered over
                assert re.search(r"send to tls:127\.0\.0\.1:\d+:\s*\nINVITE sip:201", log)
                assert re.search(r"send to tls:127\.0\.0\.1:\d+:\s*\nREFER ", log)
                assert re.search(r"recv from tls:127\.0\.0\.1:\d+:\s*\nINVITE sip:"
                                 + re.escape(TARGET), log)
                assert len(set(re.findall(r"(?:send to|recv from) tls:127\.0\.0\.1:(\d+)",
                                          log))) == 1
                assert "Traceback" not in log


@pytest.mark.parametrize("which", ["good", "wrong_host", "wrong_ca"])
def test_sips_route_is_verified(tmp_path: Path, pki: Pki, which: str) -> None:
    with TlsResponder(getattr(pki, which)) as responder:
        routes = [{"match": "^\\+?[0-9]+$",
                   "uri": f"sips:{{number}}@localhost:{responder.port}"}]
        with _sipdial(tmp_path, pki, routes) as sd, _phone(tmp_path, pki, sd) as phone:
            _registered_over_tls(sd, phone)
            status, call = sd.api("POST", "/v1/calls", {"user": "201", "to": TARGET})
            assert status == 201, call
            final = sd.wait_state(call["id"], "ended", timeout=20)
            log = sd.log_text()
            assert "Traceback" not in log
            if which == "good":
                invites = wait_until(responder.invites, 5, "the INVITE over TLS")
                assert invites[0].startswith(f"INVITE sips:{TARGET}@localhost:")
                assert "Via: SIP/2.0/TLS " in invites[0]
                # a sips: Request-URI: our Contact is a SIPS URI too (RFC 3261 §8.1.1.8)
                assert re.search(r"^Contact: <sips:sipdial@", invites[0], re.M), invites[0]
                assert final["cause"] == "target_busy", final  # the trunk's 486
                return
            # refused at the handshake: never a request, a clear reason, no 32 s timeout
            assert responder.invites() == [], responder.requests
            reason = ("its certificate is not valid for localhost" if which == "wrong_host"
                      else "its certificate is not signed by a trusted CA")
            assert re.search(r"TLS connection to tls:127\.0\.0\.1:\d+ refused: "
                             + re.escape(reason), log), log[-3000:]
            # a transport error (503) at once, not Timer B's 32 s
            assert final["cause"] == "target_failed", final
            assert re.search(r"ended cause=target_failed sip=503", log), log[-3000:]


def test_crlf_keepalive_over_tls_gets_a_single_crlf(tmp_path: Path, pki: Pki) -> None:
    with _sipdial(tmp_path, pki, []) as sd:
        context = ssl.create_default_context(cafile=str(pki.ca.files.cert))
        with socket.create_connection(("127.0.0.1", sd.sip_port("tls")), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as conn:
            conn.sendall(b"\r\n\r\n")
            assert conn.recv(16) == b"\r\n"
            conn.sendall(b"\r\n\r\n")  # and again: the connection stays up
            assert conn.recv(16) == b"\r\n"
