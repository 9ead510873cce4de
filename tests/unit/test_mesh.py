"""The workers' mesh (sipdial.transport.mesh) without sockets: framing, what each kind of
message does, links opened on demand, and a worker that does not read. A memory reactor
and string transports stand for the Unix sockets."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.testing import MemoryReactorClock, StringTransport

from sipdial.sip import Peer
from sipdial.transport import Mesh, MeshHandlers, mesh_socket_path
from sipdial.transport.mesh import MAX_BUFFERED, _Link


class Seen:
    def __init__(self) -> None:
        self.sip: list[tuple[bytes, Peer]] = []
        self.out: list[tuple[bytes, Peer]] = []
        self.failed: list[Peer] = []
        self.registrations: list[bytes] = []
        self.hellos: list[int] = []
        self.interest: list[tuple[int, bool]] = []
        self.acks: list[tuple[int, int]] = []
        self.events: list[bytes] = []
        self.referrals: list[bytes] = []
        self.guard: list[bytes] = []

    def handlers(self) -> MeshHandlers:
        return MeshHandlers(
            sip=lambda d, p: self.sip.append((d, p)), out=lambda d, p: self.out.append((d, p)),
            failed=self.failed.append, registration=self.registrations.append,
            hello=self.hellos.append, interest=lambda w, on: self.interest.append((w, on)),
            ack=lambda w, n: self.acks.append((w, n)), event=self.events.append,
            referral=self.referrals.append, guard=self.guard.append)


def started(tmp_path: Path, index: int, count: int = 3) -> tuple[Mesh, Seen,
                                                                   MemoryReactorClock]:
    reactor = MemoryReactorClock()
    mesh = Mesh(reactor, str(tmp_path), index, count)
    seen = Seen()
    mesh.start(seen.handlers())
    return mesh, seen, reactor


class Buffering(StringTransport):
    """Holds everything written, like a Twisted transport whose peer does not read (the
    attributes the mesh reads to know how much is outstanding)."""

    dataBuffer = b""
    offset = 0

    @property
    def _tempDataLen(self) -> int:
        return len(self.value())


def connect(mesh: Mesh, reactor: MemoryReactorClock,
            worker: int) -> tuple[_Link, StringTransport]:
    """Complete the link the mesh is opening to ``worker`` (its newest connectUNIX)."""
    path = mesh_socket_path(mesh.directory, worker)
    factory = [f for p, f, _t, _c in reactor.unixClients if p == path][-1]
    link = factory.buildProtocol(None)
    transport = Buffering()
    link.makeConnection(transport)
    return link, transport


def test_every_kind_reaches_its_handler_and_bad_ones_are_dropped(tmp_path: Path) -> None:
    sender, _, reactor = started(tmp_path, 0)
    receiver, seen, _ = started(tmp_path, 1)
    for worker in (1, 2):  # the others' sockets exist (their files are what is checked)
        Path(mesh_socket_path(str(tmp_path), worker)).touch()
    tls = Peer("tls", "192.0.2.9", 5061, "pbx.example.com")
    sender.forward(1, b"SIP/2.0 200 OK\r\n\r\n", Peer("udp", "::1", 5070))
    sender.report_failure(tls)
    sender.want_events(True, 1)
    sender.send_ack(1, 42)
    sender.send_event(1, b"ev")
    sender.send_registration(1, b"[]")
    sender.send_referral(1, b'[0,"+","c","201","555"]')
    sender.broadcast_guard(b'["failed","192.0.2.1","201",1.0]')
    sender.hello()
    _link, transport = connect(sender, reactor, 1)  # the link to worker 1 opens now
    receiver_link = _Link(receiver, None)
    receiver_link.makeConnection(StringTransport())
    receiver_link.dataReceived(transport.value())
    assert seen.sip == [(b"SIP/2.0 200 OK\r\n\r\n", Peer("udp", "::1", 5070))]
    assert seen.failed == [tls] and seen.failed[0].name == "pbx.example.com"
    assert seen.interest == [(0, True)] and seen.acks == [(0, 42)]
    assert seen.events == [b"ev"] and seen.registrations == [b"[]"] and seen.hellos == [0]
    assert seen.referrals == [b'[0,"+","c","201","555"]']
    assert seen.guard == [b'["failed","192.0.2.1","201",1.0]']
    # nonsense from a worker is dropped, the next message still handled
    for bad in (b"S no newline", b"Sudp h x -\ndata", b"I 9 1", b"Ix", b"Zwhat", b""):
        receiver.dispatch(bad)
    receiver.dispatch(b"A0 7")
    assert seen.acks[-1] == (0, 7) and len(seen.sip) == 1


def test_a_worker_not_running_gets_nothing_and_a_link_is_reopened(tmp_path: Path) -> None:
    mesh, _, reactor = started(tmp_path, 0, count=2)
    mesh.forward(1, b"x", Peer("udp", "h", 1))  # no socket file: dropped, nothing opened
    assert reactor.unixClients == []
    Path(mesh_socket_path(str(tmp_path), 1)).touch()
    mesh.forward(1, b"a", Peer("udp", "h", 1))
    mesh.forward(1, b"b", Peer("udp", "h", 1))  # waits for the same link
    assert len(reactor.unixClients) == 1
    link, transport = connect(mesh, reactor, 1)
    assert transport.value().count(b"udp h 1 -\n") == 2
    link.connectionLost(None)  # type: ignore[arg-type]  # the other worker restarted
    mesh.forward(1, b"c", Peer("udp", "h", 1))
    assert len(reactor.unixClients) == 2


def test_a_worker_that_does_not_read_is_not_buffered_for_without_end(tmp_path: Path) -> None:
    mesh, _, reactor = started(tmp_path, 0, count=2)
    Path(mesh_socket_path(str(tmp_path), 1)).touch()
    mesh.forward(1, b"first", Peer("udp", "h", 1))
    link, transport = connect(mesh, reactor, 1)
    assert transport.producer is link
    link.pauseProducing()  # its buffer is full: the other worker does not read
    big = b"x" * 60_000
    for _ in range(2 * MAX_BUFFERED // len(big)):  # twice what may wait
        mesh.forward(1, big, Peer("udp", "h", 1))
    assert MAX_BUFFERED - len(big) < len(transport.value()) <= MAX_BUFFERED
    held = len(transport.value())
    mesh.send_registration(1, b"[]")  # registrations (and the SSE protocol) always go
    mesh.send_ack(1, 5)
    assert len(transport.value()) > held
    link.resumeProducing()
    transport.clear()  # it read everything
    mesh.forward(1, b"after", Peer("udp", "h", 1))
    assert b"after" in transport.value()  # reading again: sent again
