"""SIP over TLS without sockets: ``[sip.tls]`` and ``tls:`` listen addresses, the contexts
sipdial's connections use (handshakes run in memory through Twisted's TLS over iosim), the
host name a TLS peer must prove (RFC 5922), and RFC 5923 ``alias`` requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import protocol
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim

from sipdial.config import ConfigError, ListenAddr, TlsConfig, parse_config
from sipdial.sip import Endpoint, Peer, SipURI, TimerHeap
from sipdial.transport import DnsResolver, TlsContexts, TlsError, certificate_names_host
from sipdial.transport.driver import SipDriver
from sipdial.transport.tls import handshake_failure
from tests.peers.certs import CertificateAuthority, Issued, make_ca

BASE = ('[http]\nlisten = "127.0.0.1:0"\n[store]\nurl = "sqlite:///:memory:"\n'
        '[api]\ntokens = { "admin" = "*" }\n[[users]]\nid = "201"\npassword = "pw201-long"\n')


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca")
    other_ca = make_ca(d, "other-ca", "another CA")
    return {
        "ca": ca,
        "server": ca.issue("server", dns=["localhost"], ips=["127.0.0.1"]),
        "elsewhere": ca.issue("elsewhere", dns=["other.example"]),
        "foreign": other_ca.issue("foreign", dns=["localhost"], ips=["127.0.0.1"]),
        "other_ca": other_ca,
    }


def config(listen: str, tls: str = "") -> str:
    return f'[sip]\nlisten = ["{listen}"]\ndomain = "127.0.0.1"\n{tls}\n{BASE}'


def tls_table(pki: dict[str, Any], extra: str = "") -> str:
    server: Issued = pki["server"]
    ca: CertificateAuthority = pki["ca"]
    return (f'[sip.tls]\ncertificate = "{server.cert}"\nkey = "{server.key}"\n'
            f'ca = "{ca.files.cert}"\n{extra}')


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return str(info.value)


# --- configuration -------------------------------------------------------------------------


def test_tls_listener_and_files(pki: dict[str, Any]) -> None:
    cfg = parse_config(config("tls:127.0.0.1:5061", tls_table(pki)))
    assert cfg.sip.listen == (ListenAddr("tls", "127.0.0.1", 5061),)
    assert cfg.sip.tls == TlsConfig(str(pki["server"].cert), str(pki["server"].key),
                                    str(pki["ca"].files.cert), verify=True)


def test_verify_is_on_unless_explicitly_off(pki: dict[str, Any]) -> None:
    assert parse_config(config("udp:127.0.0.1:0")).sip.tls.verify is True
    off = parse_config(config("tls:127.0.0.1:0", tls_table(pki, "verify = false")))
    assert off.sip.tls.verify is False
    assert error(config("tls:127.0.0.1:0", tls_table(pki, 'verify = "no"'))) == (
        'sip.tls.verify: expected true or false, got string "no"')


def test_tls_config_errors(pki: dict[str, Any], tmp_path: Path) -> None:
    server: Issued = pki["server"]
    assert error(config("tls:127.0.0.1:0")) == (
        "sip.tls.certificate: required by the tls: listen address")
    assert error(config("tls:127.0.0.1:0", f'[sip.tls]\ncertificate = "{server.cert}"')) == (
        "sip.tls.key: required by the tls: listen address")
    assert error(config("udp:127.0.0.1:0", f'[sip.tls]\nkey = "{server.key}"')) == (
        "sip.tls.certificate: required with sip.tls.key")
    missing = tmp_path / "nope.pem"
    assert error(config("tls:127.0.0.1:0", f'[sip.tls]\ncertificate = "{missing}"')) == (
        f'sip.tls.certificate: no such file "{missing}"')
    assert error(config("tls:127.0.0.1:0", tls_table(pki, 'cafile = "x"'))) == (
        'unknown key "sip.tls.cafile"')


def test_unusable_files_are_clear_errors(pki: dict[str, Any], tmp_path: Path) -> None:
    server: Issued = pki["server"]
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsError, match="holds no PEM certificate"):
        TlsContexts(str(junk), str(server.key))
    with pytest.raises(TlsError, match="does not match the certificate"):
        TlsContexts(str(server.cert), str(pki["foreign"].key))
    with pytest.raises(TlsError, match="not a PEM private key"):
        TlsContexts(str(server.cert), str(junk))
    with pytest.raises(TlsError, match=r"needs sip\.tls\.certificate"):
        TlsContexts(ca=str(pki["ca"].files.cert)).server()


# --- handshakes in memory ---------------------------------------------------------------------


class _Side(protocol.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = reason


def handshake(server_ctx: Any, client_ctx: Any) -> tuple[_Side, _Side]:
    """Client sends b"ping" to the server over TLS in memory; both sides returned."""
    server, client = _Side(), _Side()
    clock = Clock()  # TLS aggregates small writes until the next reactor turn
    server_factory = TLSMemoryBIOFactory(
        server_ctx, False, protocol.Factory.forProtocol(lambda: server), clock)
    client_factory = TLSMemoryBIOFactory(
        client_ctx, True, protocol.Factory.forProtocol(lambda: client), clock)
    _c, _s, pump = iosim.connectedServerAndClient(
        lambda: server_factory.buildProtocol(None), lambda: client_factory.buildProtocol(None))
    client.transport.write(b"ping")
    for _ in range(10):
        pump.flush()
        clock.advance(0)
    pump.flush()
    return server, client


def contexts(pki: dict[str, Any], issued: str = "server", *, verify: bool = True,
             ca: str = "ca") -> TlsContexts:
    files: Issued = pki[issued]
    return TlsContexts(str(files.cert), str(files.key), str(pki[ca].files.cert), verify=verify)


def test_client_accepts_a_server_certified_for_its_name(pki: dict[str, Any]) -> None:
    server, client = handshake(contexts(pki).server(), contexts(pki).client("localhost"))
    assert server.data == b"ping" and client.lost is None
    server, client = handshake(contexts(pki).server(), contexts(pki).client("127.0.0.1"))
    assert server.data == b"ping" and client.lost is None


def test_client_refuses_a_certificate_for_another_host(pki: dict[str, Any]) -> None:
    server, client = handshake(contexts(pki, "elsewhere").server(),
                               contexts(pki).client("localhost"))
    assert server.data == b""
    assert handshake_failure(client.lost.value, "localhost") == (
        "its certificate is not valid for localhost (host name check, RFC 5922)")


def test_client_refuses_a_certificate_from_another_ca(pki: dict[str, Any]) -> None:
    server, client = handshake(contexts(pki, "foreign", ca="other_ca").server(),
                               contexts(pki).client("localhost"))
    assert server.data == b""
    assert handshake_failure(client.lost.value, "localhost") == (
        "its certificate is not signed by a trusted CA (sip.tls.ca) (certificate verify failed)")


def test_verify_false_accepts_any_certificate(pki: dict[str, Any]) -> None:
    server, client = handshake(contexts(pki, "elsewhere").server(),
                               contexts(pki, verify=False).client("localhost"))
    assert server.data == b"ping" and client.lost is None


def test_server_asks_for_client_certificates_only_with_a_ca(pki: dict[str, Any]) -> None:
    assert contexts(pki).asks_client_certificates
    assert not contexts(pki, verify=False).asks_client_certificates
    own: Issued = pki["server"]
    assert not TlsContexts(str(own.cert), str(own.key)).asks_client_certificates
    # a client certificate from another CA is refused at the handshake
    server, _client = handshake(contexts(pki).server(),
                                contexts(pki, "foreign", ca="ca").client("localhost"))
    assert server.data == b""


def test_certificate_names_host(pki: dict[str, Any]) -> None:
    from OpenSSL import crypto

    cert = crypto.load_certificate(crypto.FILETYPE_PEM, pki["server"].cert.read_bytes())
    assert certificate_names_host(cert, "localhost")
    assert certificate_names_host(cert, "127.0.0.1")
    assert not certificate_names_host(cert, "other.example")
    assert not certificate_names_host(cert, "127.0.0.2")
    assert not certificate_names_host(None, "localhost")


# --- what a TLS peer must prove; RFC 5923 alias -----------------------------------------------


class Forbidden:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"DNS used: {name}")


def test_tls_peers_carry_the_uri_host_as_the_name_to_verify(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 sip.example.test\n")
    resolver = DnsResolver(Clock(), resolver=Forbidden(), hosts_file=str(hosts),
                           supported=("udp", "tcp", "tls"))
    found: list[Any] = []
    resolver.resolve(SipURI.parse("sips:x@sip.example.test:5071"), "udp", found.append)
    resolver.resolve(SipURI.parse("sip:x@127.0.0.1:5071;transport=tls"), "udp", found.append)
    resolver.resolve(SipURI.parse("sip:x@sip.example.test:5070"), "udp", found.append)
    assert found == [[Peer("tls", "127.0.0.1", 5071)], [Peer("tls", "127.0.0.1", 5071)],
                     [Peer("udp", "127.0.0.1", 5070)]]
    assert [p[0].name for p in found] == ["sip.example.test", "127.0.0.1", ""]


def _options(via: str) -> bytes:
    return (f"OPTIONS sip:sipdial@127.0.0.1 SIP/2.0\r\nVia: {via}\r\n"
            "From: <sip:201@127.0.0.1>;tag=1\r\nTo: <sip:sipdial@127.0.0.1>\r\n"
            "Call-ID: alias-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def test_alias_in_via_is_reported_for_connections_only() -> None:
    endpoint = Endpoint(TimerHeap())
    source = Peer("tls", "127.0.0.1", 40001)
    endpoint.receive(_options("SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKa1;alias"), source, 0.0)
    assert endpoint.drain_aliases() == [(Peer("tls", "127.0.0.1", 5061), source)]
    assert endpoint.drain_aliases() == []
    endpoint.receive(_options("SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKa2"), source, 0.0)
    endpoint.receive(_options("SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKa3;alias"),
                     Peer("udp", "127.0.0.1", 5061), 0.0)
    assert endpoint.drain_aliases() == []


# --- the driver: which connection a request to a TLS or aliased peer takes --------------------


class _Driver(SipDriver):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failed: list[Peer] = []

    def transport_failed(self, peer: Peer) -> None:
        self.failed.append(peer)
        super().transport_failed(peer)


class _TlsTransport(StringTransport):
    """What Twisted's TLS transport adds that the driver reads: the client's certificate."""

    def __init__(self, peer_port: int, certificate: Any) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", peer_port))
        self.certificate = certificate

    def getPeerCertificate(self) -> Any:
        return self.certificate


def tls_driver(pki: dict[str, Any]) -> tuple[_Driver, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    timers = TimerHeap()
    d = _Driver(reactor, Endpoint(timers), timers, tls=contexts(pki))
    d.listen("tcp", "127.0.0.1", 5060)
    d.listen("tls", "127.0.0.1", 5061)
    return d, reactor


def test_outgoing_tls_checks_the_peer_name(pki: dict[str, Any]) -> None:
    d, reactor = tls_driver(pki)
    d._send(Peer("tls", "127.0.0.1", 5071, name="localhost"), b"OPTIONS")
    d._send(Peer("tls", "127.0.0.1", 5072), b"OPTIONS")
    (host, port, _f, creator, _t, _b), (_h, _p, _f2, creator2, _t2, _b2) = reactor.sslClients
    assert (host, port) == ("127.0.0.1", 5071)
    assert creator._hostname == "localhost"
    assert creator2._hostname == "127.0.0.1"  # no name: the address itself


def test_a_refused_handshake_is_a_transport_error_at_once(pki: dict[str, Any]) -> None:
    from service_identity import VerificationError
    from twisted.python.failure import Failure

    d, reactor = tls_driver(pki)
    peer = Peer("tls", "127.0.0.1", 5071, name="localhost")
    d._send(peer, b"OPTIONS")
    factory = reactor.sslClients[0][2]
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5071))
    proto.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5071)))
    proto.connectionLost(Failure(VerificationError(errors=[])))
    assert d.failed == [peer]
    # once the handshake completed, a lost connection is no transport error of its own
    d._send(Peer("tls", "127.0.0.1", 5073), b"OPTIONS")
    proto = reactor.sslClients[1][2].buildProtocol(None)
    proto.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5073)))
    proto.handshakeCompleted()
    proto.connectionLost(Failure(ConnectionError("closed")))
    assert d.failed == [peer]


def _alias_request(sent_by_port: int) -> bytes:
    return _options(f"SIP/2.0/TLS 127.0.0.1:{sent_by_port};branch=z9hG4bKal{sent_by_port};alias")


def test_alias_reuses_a_tls_connection_only_for_a_certified_client(pki: dict[str, Any]) -> None:
    from OpenSSL import crypto

    d, reactor = tls_driver(pki)
    factory = reactor.sslServers[0][1]
    phone_cert = crypto.load_certificate(crypto.FILETYPE_PEM, pki["server"].cert.read_bytes())
    # a client whose certificate names 127.0.0.1: requests to its sent-by take its connection
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
    certified = _TlsTransport(40001, phone_cert)
    proto.makeConnection(certified)
    proto.dataReceived(_alias_request(5070))
    certified.clear()
    d._send(Peer("tls", "127.0.0.1", 5070), b"BYE")
    assert certified.value() == b"BYE" and reactor.sslClients == []
    # a client without a certificate asks in vain: sipdial connects to the sent-by itself
    proto2 = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40002))
    anonymous = _TlsTransport(40002, None)
    proto2.makeConnection(anonymous)
    proto2.dataReceived(_alias_request(5080))
    anonymous.clear()
    d._send(Peer("tls", "127.0.0.1", 5080), b"BYE")
    assert anonymous.value() == b"" and len(reactor.sslClients) == 1
    # the alias goes with the connection
    proto.connectionLost(None)
    d._send(Peer("tls", "127.0.0.1", 5070), b"BYE")
    assert len(reactor.sslClients) == 2


def test_alias_over_plain_tcp_is_not_honoured(pki: dict[str, Any]) -> None:
    d, reactor = tls_driver(pki)
    factory = reactor.tcpServers[0][1]
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40003))
    plain = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40003))
    proto.makeConnection(plain)
    proto.dataReceived(_options("SIP/2.0/TCP 127.0.0.1:5090;branch=z9hG4bKtcp1;alias"))
    plain.clear()
    d._send(Peer("tcp", "127.0.0.1", 5090), b"BYE")  # anyone could claim that sent-by
    assert plain.value() == b"" and [c[:2] for c in reactor.tcpClients] == [("127.0.0.1", 5090)]
