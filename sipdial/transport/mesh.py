"""The workers' mesh: Unix stream sockets between sipdial's worker processes (Twisted).

Each worker listens on ``<dir>/w<index>.sock`` (the directory is the supervisor's, mode
0700: no other user can connect, so no one else can claim to be a worker) and connects to
the others' sockets. A message is length-prefixed (32 bits); its first byte says what it
is (:class:`MeshKind`):

``S``  a SIP message this worker received that another worker owns (:mod:`sipdial.sip.shard`),
       with where it came from: the owner handles it as if its own socket had received it;
``O``  a SIP message to send over a TCP/TLS connection: worker 0 holds every connection
       (see :mod:`sipdial.workers`), the others hand it what they send over one;
``F``  from worker 0: a TCP/TLS connection to that peer failed (refused, handshake, limit):
       every worker fails its transactions to it at once, as for its own connection;
``R``  registration bindings that changed (or went) at the sender, a JSON list: every
       worker keeps the whole location table, so any of them can ring any user;
``H``  "hello, I (re)started": the others answer with every binding they hold;
``I``  "I have SSE clients: forward me your events" (or "no longer"), with the sender's index;
``A``  the answer to ``I``: the id of the last event released before forwarding began;
``E``  an event the sender released (:func:`sipdial.events.encode_event`);
``W``  a REFER-mode call of the sender waits for its phone's referred INVITE, or no longer
       (JSON: ``[worker, "+" or "-", call id, user, number]``, :class:`sipdial.sip.Referrals`);
``G``  a password-guessing outcome at the sender (JSON ``[outcome, source, account, time]``,
       :class:`sipdial.guard.FailureGuard`): every worker counts every failure.

A message that cannot be sent (a worker restarting) is dropped and logged once per
interval: SIP retransmits, and a registration is refreshed. Nothing here crosses a
machine; several machines behind a dispatcher would use SIP itself (see sipdial.workers).
"""

from __future__ import annotations

import enum
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import protocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

from sipdial.sip import Peer

__all__ = ["Mesh", "MeshHandlers", "MeshKind", "mesh_socket_path"]

log = logging.getLogger("sipdial.mesh")

#: the largest message: a SIP datagram (64 KiB) and its header
MAX_MESSAGE = 70_000
#: messages held for a link being opened; more are dropped (SIP retransmits)
MAX_WAITING = 10_000
#: bytes written to a link whose other end does not read, beyond its transport's own
#: buffer; more are dropped (a stalled worker must not make the others grow without end)
MAX_BUFFERED = 8 * 1024 * 1024
_DROP_LOG_INTERVAL = 10.0
_LENGTH = struct.Struct("!I")  # Int32StringReceiver's prefix
#: kinds dropped when a link is over MAX_BUFFERED (the others always go)
_CAPPED = (b"S", b"O", b"E")


class MeshKind(enum.Enum):
    SIP = b"S"
    OUT = b"O"
    FAILED = b"F"
    REGISTRATION = b"R"
    HELLO = b"H"
    INTEREST = b"I"
    ACK = b"A"
    EVENT = b"E"
    REFERRAL = b"W"
    GUARD = b"G"


def mesh_socket_path(directory: str, index: int) -> str:
    return os.path.join(directory, f"w{index}.sock")


@dataclass(frozen=True)
class MeshHandlers:
    """What a worker does with what the others send it."""

    sip: Callable[[bytes, Peer], None]  #: a SIP message for this worker, and its source
    out: Callable[[bytes, Peer], None]  #: send this over the connection to ``peer``
    failed: Callable[[Peer], None]  #: worker 0's connection to ``peer`` failed
    registration: Callable[[bytes], None]  #: bindings changed (a JSON list, sipdial.app)
    hello: Callable[[int], None]  #: worker ``index`` (re)started
    interest: Callable[[int, bool], None]  #: worker wants (True) our events, or no longer
    ack: Callable[[int, int], None]  #: worker forwards its events after this id
    event: Callable[[bytes], None]  #: an event another worker released
    referral: Callable[[bytes], None]  #: a call of another worker waits (or no longer)
    guard: Callable[[bytes], None]  #: a failed password or a new trust at another worker


def _with_peer(kind: MeshKind, peer: Peer, data: bytes) -> bytes:
    """The peer (with its TLS name: the certificate is checked against it) in one line."""
    line = f"{peer.transport} {peer.host} {peer.port} {peer.name or '-'}\n"
    return b"".join((kind.value, line.encode("utf-8"), data))


def _split_peer(message: bytes) -> tuple[Peer, bytes] | None:
    end = message.find(b"\n", 1)
    if end < 0:
        return None
    try:
        transport, host, port, name = message[1:end].decode("utf-8").split(" ")
        return (Peer(transport, host, int(port), "" if name == "-" else name),
                message[end + 1 :])
    except (ValueError, UnicodeDecodeError):
        return None


@implementer(IPushProducer)
class _Link(Int32StringReceiver):
    """One stream connection of the mesh: length-prefixed messages, either way.

    It is its transport's producer, so it knows when the other worker does not read (the
    transport's buffer is full: paused); what it sends meanwhile is counted, and past
    :data:`MAX_BUFFERED` bytes dropped (SIP retransmits) instead of piling up."""

    MAX_LENGTH = MAX_MESSAGE

    def __init__(self, mesh: Mesh, worker: int | None) -> None:
        self.mesh = mesh
        self.worker = worker  #: the worker this link was opened to (None: accepted)
        self.paused = False

    def send(self, message: bytes, *, capped: bool = True) -> bool:
        """Write ``message``; False: dropped (the other worker is not reading). Only
        ``capped`` messages are dropped: SIP (retransmitted) and events (their gaps are
        noticed and read from the file); registrations and the SSE protocol always go."""
        transport: Any = self.transport
        if self.paused and capped and _outstanding(transport) + len(message) > MAX_BUFFERED:
            return False
        transport.writeSequence((_LENGTH.pack(len(message)), message))
        return True

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.registerProducer(self, True)
        if self.worker is not None:
            self.mesh._connected(self.worker, self)

    def stringReceived(self, string: bytes) -> None:
        try:
            self.mesh.dispatch(string)
        except Exception:  # a bug must not take the next message down with it
            log.exception("error handling a mesh message")

    def lengthLimitExceeded(self, length: int) -> None:
        log.error("mesh: a message of %d bytes: closing the link", length)
        transport: Any = self.transport
        transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.worker is not None:
            self.mesh._lost(self.worker, self)


def _outstanding(transport: Any) -> int:
    """Bytes a Twisted stream transport still holds to write (its buffer is not public:
    read defensively; 0 when the attributes are not there)."""
    try:
        return int(transport._tempDataLen + len(transport.dataBuffer) - transport.offset)
    except (AttributeError, TypeError):
        return 0


class _Accepting(protocol.Factory):
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh

    def buildProtocol(self, addr: Any) -> _Link:
        return _Link(self.mesh, None)


class _Connecting(protocol.ClientFactory):
    def __init__(self, mesh: Mesh, worker: int) -> None:
        self.mesh = mesh
        self.worker = worker

    def buildProtocol(self, addr: Any) -> _Link:
        return _Link(self.mesh, self.worker)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.mesh._failed(self.worker, reason)


class Mesh:
    """This worker's end of the mesh: ``start()`` listens, ``send_*`` reach the others.

    A link is a Unix stream connection from this worker to another's socket, opened at the
    first message for it and again after it broke (the other restarted); what is sent
    while it opens waits (at most :data:`MAX_WAITING` messages). Streams, not datagrams:
    a Unix datagram socket queues only ``net.unix.max_dgram_qlen`` (10) datagrams, and at
    430 calls/s bursts overflowed it (loadtest/RESULTS.md)."""

    def __init__(self, reactor: Any, directory: str, index: int, count: int) -> None:
        self.reactor = reactor
        self.directory = directory
        self.index = index
        self.count = count
        self.handlers: MeshHandlers | None = None
        self._port: Any = None
        self._links: dict[int, _Link] = {}
        self._waiting: dict[int, list[bytes]] = {}  # messages for links being opened
        self._dropped = 0
        self._drop_logged = -_DROP_LOG_INTERVAL
        self.sent = 0
        self.received = 0

    def start(self, handlers: MeshHandlers) -> None:
        """Listen, handing what arrives to ``handlers`` (the driver and the registrar, which
        are built with this mesh as their way out: hence here, not in the constructor)."""
        self.handlers = handlers
        path = mesh_socket_path(self.directory, self.index)
        try:
            os.unlink(path)  # left by this worker's previous life
        except FileNotFoundError:
            pass
        self._port = self.reactor.listenUNIX(path, _Accepting(self), mode=0o600, backlog=64)

    def stop(self) -> None:
        if self._port is not None:
            self._port.stopListening()
            self._port = None
        for link in list(self._links.values()):
            transport: Any = link.transport
            transport.unregisterProducer()  # else a paused link never closes
            transport.loseConnection()
        self._links.clear()
        self._waiting.clear()

    # ------------------------------------------------------------ links

    def _connected(self, worker: int, link: _Link) -> None:
        self._links[worker] = link
        for message in self._waiting.pop(worker, []):
            if link.send(message, capped=message[:1] in _CAPPED):
                self.sent += 1
            else:
                self._drop(worker, 1, "it does not read", quiet=False)

    def _lost(self, worker: int, link: _Link) -> None:
        if self._links.get(worker) is link:
            del self._links[worker]

    def _failed(self, worker: int, reason: Failure) -> None:
        waiting = self._waiting.pop(worker, [])
        self._drop(worker, len(waiting), reason.getErrorMessage(), quiet=False)

    def _drop(self, worker: int, count: int, why: str, *, quiet: bool) -> None:
        if quiet or not count:
            return
        self._dropped += count
        now = self.reactor.seconds()
        if now - self._drop_logged >= _DROP_LOG_INTERVAL:
            log.warning("mesh: %d message(s) to worker %d dropped (%s)", self._dropped,
                        worker, why)
            self._dropped = 0
            self._drop_logged = now

    # ------------------------------------------------------------ out

    def forward(self, worker: int, data: bytes, source: Peer) -> None:
        """Hand a received SIP message to the worker that owns it."""
        self._send(worker, _with_peer(MeshKind.SIP, source, data))

    def relay(self, data: bytes, peer: Peer) -> None:
        """Send over a TCP/TLS connection: worker 0 holds them."""
        self._send(0, _with_peer(MeshKind.OUT, peer, data))

    def report_failure(self, peer: Peer) -> None:
        """Worker 0: the connection to ``peer`` failed; the others fail their transactions."""
        message = _with_peer(MeshKind.FAILED, peer, b"")
        for worker in range(self.count):
            if worker != self.index:
                self._send(worker, message)

    def broadcast_registration(self, document: bytes) -> None:
        message = MeshKind.REGISTRATION.value + document
        for worker in range(self.count):
            if worker != self.index:
                self._send(worker, message)

    def send_registration(self, worker: int, document: bytes) -> None:
        self._send(worker, MeshKind.REGISTRATION.value + document)

    def hello(self) -> None:
        """Ask the others for their bindings; one not started yet sends its own hello."""
        message = MeshKind.HELLO.value + str(self.index).encode()
        for worker in range(self.count):
            if worker != self.index:
                self._send(worker, message, quiet=True)

    def want_events(self, on: bool, worker: int | None = None) -> None:
        """Ask ``worker`` (None: every other) to forward its events, or to stop."""
        message = MeshKind.INTEREST.value + f"{self.index} {int(on)}".encode()
        for other in range(self.count) if worker is None else (worker,):
            if other != self.index:
                self._send(other, message)

    def send_ack(self, worker: int, last: int) -> None:
        self._send(worker, MeshKind.ACK.value + f"{self.index} {last}".encode())

    def send_event(self, worker: int, document: bytes) -> None:
        self._send(worker, MeshKind.EVENT.value + document)

    def broadcast_guard(self, document: bytes) -> None:
        message = MeshKind.GUARD.value + document
        for other in range(self.count):
            if other != self.index:
                self._send(other, message)

    def send_referral(self, worker: int | None, document: bytes) -> None:
        """To ``worker``, or (None) to every other."""
        message = MeshKind.REFERRAL.value + document
        for other in range(self.count) if worker is None else (worker,):
            if other != self.index:
                self._send(other, message)

    def _send(self, worker: int, message: bytes, *, quiet: bool = False) -> None:
        if self._port is None:
            return
        link = self._links.get(worker)
        if link is not None:
            if link.send(message, capped=message[:1] in _CAPPED):
                self.sent += 1
            else:
                self._drop(worker, 1, "it does not read", quiet=quiet)
            return
        waiting = self._waiting.get(worker)
        if waiting is None:
            path = mesh_socket_path(self.directory, worker)
            if not os.path.exists(path):  # not started yet, or restarting
                self._drop(worker, 1, "not running", quiet=quiet)
                return
            waiting = self._waiting[worker] = []
            self.reactor.connectUNIX(path, _Connecting(self, worker), timeout=5)
        if len(waiting) >= MAX_WAITING:
            self._drop(worker, 1, "its link is still opening", quiet=quiet)
            return
        waiting.append(message)

    # ------------------------------------------------------------ in

    def dispatch(self, message: bytes) -> None:
        handlers = self.handlers
        if not message or handlers is None:
            return
        self.received += 1
        kind = message[:1]
        if kind in (MeshKind.SIP.value, MeshKind.OUT.value, MeshKind.FAILED.value):
            split = _split_peer(message)
            if split is None:
                log.warning("mesh: a malformed %r message dropped", kind)
                return
            peer, data = split
            if kind == MeshKind.SIP.value:
                handlers.sip(data, peer)
            elif kind == MeshKind.OUT.value:
                handlers.out(data, peer)
            else:
                handlers.failed(peer)
        elif kind == MeshKind.REGISTRATION.value:
            handlers.registration(message[1:])
        elif kind == MeshKind.EVENT.value:
            handlers.event(message[1:])
        elif kind == MeshKind.REFERRAL.value:
            handlers.referral(message[1:])
        elif kind == MeshKind.GUARD.value:
            handlers.guard(message[1:])
        elif kind in (MeshKind.INTEREST.value, MeshKind.ACK.value):
            try:
                worker, number = (int(x) for x in message[1:].split(b" "))
            except ValueError:
                log.warning("mesh: a malformed %r message dropped", kind)
                return
            if not 0 <= worker < self.count or worker == self.index:
                return
            if kind == MeshKind.INTEREST.value:
                handlers.interest(worker, bool(number))
            else:
                handlers.ack(worker, number)
        elif kind == MeshKind.HELLO.value:
            try:
                worker = int(message[1:])
            except ValueError:
                return
            if 0 <= worker < self.count and worker != self.index:
                handlers.hello(worker)
        else:
            log.warning("mesh: a message of unknown kind %r dropped", kind)
