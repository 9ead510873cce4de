"""The workers' mesh: Unix datagram sockets between sipdial's worker processes (Twisted).

Each worker listens on ``<dir>/w<index>.sock`` (the directory is the supervisor's, mode
0700) and sends to the others' sockets. One datagram is one message; its first byte says
what it is (:class:`MeshKind`):

``S``  a SIP message this worker received that another worker owns (:mod:`sipdial.sip.shard`),
       with where it came from: the owner handles it as if its own socket had received it;
``O``  a SIP message to send over a TCP/TLS connection: worker 0 holds every connection
       (see :mod:`sipdial.workers`), the others hand it what they send over one;
``R``  a registration binding that changed (or went) at the sender: every worker keeps the
       whole location table, so any of them can ring any user;
``H``  "hello, I (re)started": the others answer with every binding they hold.

A datagram that cannot be sent (a worker restarting, its queue full) is dropped and logged
once per interval: SIP retransmits, and a registration is refreshed. Nothing here crosses a
machine; several machines behind a dispatcher would use SIP itself (see sipdial.workers).
"""

from __future__ import annotations

import enum
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import protocol

from sipdial.sip import Peer

__all__ = ["Mesh", "MeshHandlers", "MeshKind", "mesh_socket_path"]

log = logging.getLogger("sipdial.mesh")

#: the largest message: a SIP datagram (64 KiB) and its header
MAX_MESSAGE = 70_000
_BUFFER = 4 * 1024 * 1024
_DROP_LOG_INTERVAL = 10.0


class MeshKind(enum.Enum):
    SIP = b"S"
    OUT = b"O"
    REGISTRATION = b"R"
    HELLO = b"H"


def mesh_socket_path(directory: str, index: int) -> str:
    return os.path.join(directory, f"w{index}.sock")


@dataclass(frozen=True)
class MeshHandlers:
    """What a worker does with what the others send it."""

    sip: Callable[[bytes, Peer], None]  #: a SIP message for this worker, and its source
    out: Callable[[bytes, Peer], None]  #: send this over the connection to ``peer``
    registration: Callable[[bytes], None]  #: a binding changed (JSON, sipdial.app)
    hello: Callable[[int], None]  #: worker ``index`` (re)started


def _with_peer(kind: MeshKind, peer: Peer, data: bytes) -> bytes:
    return b"".join((kind.value, f"{peer.transport} {peer.host} {peer.port}\n".encode(), data))


def _split_peer(message: bytes) -> tuple[Peer, bytes] | None:
    end = message.find(b"\n", 1)
    if end < 0:
        return None
    try:
        transport, host, port = message[1:end].decode("ascii").split(" ")
        return Peer(transport, host, int(port)), message[end + 1 :]
    except (ValueError, UnicodeDecodeError):
        return None


class _Receiver(protocol.DatagramProtocol):
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        try:
            self.mesh.dispatch(datagram)
        except Exception:  # a bug must not take the next message down with it
            log.exception("error handling a mesh message")


class Mesh:
    """This worker's end of the mesh: ``start()`` listens, ``send_*`` reach the others."""

    def __init__(self, reactor: Any, directory: str, index: int, count: int) -> None:
        self.reactor = reactor
        self.directory = directory
        self.index = index
        self.count = count
        self.handlers: MeshHandlers | None = None
        self._port: Any = None
        self._sock: socket.socket | None = None
        self._dropped = 0
        self._drop_logged = 0.0
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
        self._port = self.reactor.listenUNIXDatagram(path, _Receiver(self),
                                                     maxPacketSize=MAX_MESSAGE, mode=0o600)
        sock = getattr(self._port, "socket", None)
        if sock is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, _BUFFER)
                except OSError:
                    pass
            sock.setblocking(False)
        self._sock = sock

    def stop(self) -> None:
        if self._port is not None:
            self._port.stopListening()
            self._port = None
            self._sock = None

    # ------------------------------------------------------------ out

    def forward(self, worker: int, data: bytes, source: Peer) -> None:
        """Hand a received SIP message to the worker that owns it."""
        self._send(worker, _with_peer(MeshKind.SIP, source, data))

    def relay(self, data: bytes, peer: Peer) -> None:
        """Send over a TCP/TLS connection: worker 0 holds them."""
        self._send(0, _with_peer(MeshKind.OUT, peer, data))

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

    def _send(self, worker: int, message: bytes, *, quiet: bool = False) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.sendto(message, mesh_socket_path(self.directory, worker))
            self.sent += 1
        except OSError as exc:  # restarting (ENOENT, ECONNREFUSED), queue full (EAGAIN)
            if quiet:
                return
            self._dropped += 1
            now = self.reactor.seconds()
            if now - self._drop_logged >= _DROP_LOG_INTERVAL:
                log.warning("mesh: %d message(s) to worker %d dropped (%s)", self._dropped,
                            worker, exc.strerror or exc)
                self._dropped = 0
                self._drop_logged = now

    # ------------------------------------------------------------ in

    def dispatch(self, message: bytes) -> None:
        handlers = self.handlers
        if not message or handlers is None:
            return
        self.received += 1
        kind = message[:1]
        if kind == MeshKind.SIP.value or kind == MeshKind.OUT.value:
            split = _split_peer(message)
            if split is None:
                log.warning("mesh: a malformed %r message dropped", kind)
                return
            peer, data = split
            if kind == MeshKind.SIP.value:
                handlers.sip(data, peer)
            else:
                handlers.out(data, peer)
        elif kind == MeshKind.REGISTRATION.value:
            handlers.registration(message[1:])
        elif kind == MeshKind.HELLO.value:
            try:
                worker = int(message[1:])
            except ValueError:
                return
            if 0 <= worker < self.count and worker != self.index:
                handlers.hello(worker)
        else:
            log.warning("mesh: a message of unknown kind %r dropped", kind)
