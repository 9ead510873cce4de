"""Twisted adapter for the sans-IO endpoint: sockets in, one ``callLater`` for all timers.

Everything here is glue: bytes from UDP/TCP/TLS go to :meth:`Endpoint.receive` with
``reactor.seconds()``; after every input :meth:`SipDriver.pump` hands the endpoint's events to
the transaction user, writes the outbox and re-arms the single timer for
:meth:`TimerHeap.next_deadline`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import protocol
from twisted.internet.interfaces import IHandshakeListener
from zope.interface import implementer  # type: ignore[import-untyped]

from sipdial.sip import (
    Endpoint,
    Event,
    ParseError,
    Peer,
    Referrals,
    Shard,
    StreamFramer,
    TimerHandle,
    TimerHeap,
    family,
)
from sipdial.transport.limits import TcpLimits
from sipdial.transport.tls import TlsContexts, certificate_names_host, handshake_failure

__all__ = ["Forwarder", "SipDriver", "TransactionUser"]

log = logging.getLogger("sipdial.transport")
#: Every SIP message sent and received, logged at INFO: ``SIPDIAL_TRACE=1`` alone shows them
#: at the default level. Off (``SIPDIAL_TRACE`` unset, empty or ``0``) it costs one global
#: lookup per message.
_trace_log = logging.getLogger("sipdial.trace")
_trace = os.environ.get("SIPDIAL_TRACE", "") not in ("", "0")

#: Where the endpoint's events go, with the time: the user agent.
TransactionUser = Callable[[Event, float], None]


class Forwarder(Protocol):
    """How a worker process reaches the others (:class:`~sipdial.transport.mesh.Mesh`)."""

    def forward(self, worker: int, data: bytes, source: Peer) -> None:
        """Hand a received message to the worker that owns it."""

    def relay(self, data: bytes, peer: Peer) -> None:
        """Send over a TCP/TLS connection, which worker 0 holds."""

    def report_failure(self, peer: Peer) -> None:
        """Worker 0: a connection failed; the other workers' transactions to it fail too."""


UDP_BUFFER = 4 * 1024 * 1024
_REFUSAL_LOG_INTERVAL = 10.0  # seconds between warnings about refused TCP connections
_UDP_HOSTS_MAX = 10_000


def reuse_port_socket(kind: socket.SocketKind, host: str, port: int) -> socket.socket:
    """A socket bound with ``SO_REUSEPORT`` (Linux: the kernel spreads what arrives over
    every socket bound so, one source address:port always to the same one), listening if a
    stream socket, non-blocking: for ``reactor.adoptDatagramPort``/``adoptStreamPort``."""
    fam = socket.AF_INET6 if family(host) == 6 else socket.AF_INET
    sock = socket.socket(fam, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _grow_buffers(port: Any) -> None:
    """Room for bursts: at ~500 calls/s the default 208 KiB receive buffer overflows while the
    reactor is busy, and every dropped request costs a retransmission (loadtest/README.md).
    The kernel caps this at net.core.rmem_max/wmem_max."""
    sock = getattr(port, "socket", None)
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER)
        except OSError as exc:
            log.info("could not set UDP buffer size: %s", exc)


class _Udp(protocol.DatagramProtocol):
    def __init__(self, driver: SipDriver) -> None:
        self.driver = driver

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.driver.receive(datagram, Peer("udp", addr[0], addr[1]))


def _skip_separators(data: bytes, pos: int) -> int:
    """The index of the first byte at or after ``pos`` that is not CR or LF."""
    n = len(data)
    while pos < n and data[pos] in b"\r\n":
        pos += 1
    return pos


class _Progress:
    """How many bytes of an unfinished message the framer holds, worked out from what went
    in and what came out (:class:`StreamFramer` keeps its buffer to itself): messages are
    contiguous in the stream but for CR/LF between them, which the framer skips."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = 0  # bytes of the unfinished message, from its first byte; 0: none

    def update(self, data: bytes, messages: list[bytes]) -> None:
        held = self.held
        pos = 0 if held else _skip_separators(data, 0)
        for message in messages:
            if message == StreamFramer.PING:
                continue  # CRLFs between messages: skipped below
            pos += len(message) - held
            held = 0
            pos = _skip_separators(data, pos)
        self.held = held + len(data) - pos if pos < len(data) else held


@implementer(IHandshakeListener)
class _TcpConnection(protocol.Protocol):
    """One SIP-over-TCP connection, or SIP over TLS (``kind`` "tls": the same connection
    under Twisted's TLS wrapping, so the same framing, limits and deadlines; sipdial's own
    connections report a failed handshake as a transport error). Its one deadline (a
    :class:`TimerHandle` on the endpoint's heap, not a reactor timer of its own) is the
    earlier of: the unfinished message's first byte (or the accept) + ``message_timeout``,
    and the last complete message + ``idle_timeout``. The handle is re-armed lazily: a
    deadline moving later waits for the old handle to fire."""

    def __init__(self, driver: SipDriver, *, inbound: bool = False, kind: str = "tcp") -> None:
        self.driver = driver
        self.framer = StreamFramer()
        self.peer: Peer | None = None
        self.pending: list[bytes] = []
        self.inbound = inbound
        self.kind = kind  # "tcp" | "tls"
        self.secured = False  # TLS: the handshake completed
        self.aliases: list[Peer] = []  # RFC 5923 sent-bys this connection serves
        self.name = ""  # outgoing TLS: the host name the server's certificate must match
        self._progress = _Progress()
        #: when the unfinished message began (or the accept, until the first message)
        self._started: float | None = None
        self._last_message = 0.0
        self._deadline = 0.0
        self._timer: TimerHandle | None = None
        self._counted = False  # in the driver's per-source count

    def connectionMade(self) -> None:
        transport: Any = self.transport
        addr = transport.getPeer()
        self.peer = Peer(self.kind, addr.host, addr.port)
        driver = self.driver
        driver._tcp[self.peer] = self
        driver._connecting.pop(self.peer, None)
        driver._per_source[addr.host] = driver._per_source.get(addr.host, 0) + 1
        self._counted = True
        now = driver.reactor.seconds()
        self._last_message = now
        if self.inbound:  # the peer opened it to send something: it must come
            self._started = now
        self._arm()
        for data in self.pending:
            transport.write(data)
        self.pending.clear()

    def handshakeCompleted(self) -> None:
        self.secured = True

    def dataReceived(self, data: bytes) -> None:
        assert self.peer is not None
        try:
            messages = self.framer.feed(data)
        except ParseError as exc:
            log.info("closing %s: bad stream: %s", self.peer, exc)
            transport: Any = self.transport
            transport.loseConnection()
            return
        progress = self._progress
        was_held = progress.held
        progress.update(data, messages)
        now = self.driver.reactor.seconds()
        if messages:
            self._last_message = now
            # a message that began in this segment began now
            self._started = now if progress.held else None
        elif progress.held and not was_held and self._started is None:
            self._started = now
        self._arm()
        for message in messages:
            if message == StreamFramer.PING:  # RFC 5626 §4.4.1 keep-alive
                pong: Any = self.transport
                pong.write(StreamFramer.PONG)
                continue
            self.driver.receive(message, self.peer)

    def _arm(self) -> None:
        limits = self.driver.tcp
        deadline = self._last_message + limits.idle_timeout
        if self._started is not None:
            deadline = min(deadline, self._started + limits.message_timeout)
        self._deadline = deadline
        timer = self._timer
        if timer is None or timer.cancelled or deadline < timer.deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.driver.timers.schedule(deadline, self._on_deadline)

    def _on_deadline(self, now: float) -> None:
        self._timer = None
        if now < self._deadline:  # moved later since the handle was armed
            self._timer = self.driver.timers.schedule(self._deadline, self._on_deadline)
            return
        if self._started is not None and now >= self._started + self.driver.tcp.message_timeout:
            log.info("closing TCP connection from %s: no complete message within %g s",
                     self.peer, self.driver.tcp.message_timeout)
        else:
            log.info("closing idle TCP connection from %s", self.peer)
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()  # a peer that does not read must not hold it either

    def connectionLost(self, reason: Any = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        driver = self.driver
        if self.peer is not None and driver._tcp.get(self.peer) is self:
            del driver._tcp[self.peer]
        for alias in self.aliases:
            if driver._aliases.get(alias) is self:
                del driver._aliases[alias]
        self.aliases.clear()
        if self._counted and self.peer is not None:
            self._counted = False
            left = driver._per_source.get(self.peer.host, 1) - 1
            if left > 0:
                driver._per_source[self.peer.host] = left
            else:
                driver._per_source.pop(self.peer.host, None)
        if self.kind == "tls" and not self.secured and self.peer is not None:
            error = reason.value if reason is not None else ConnectionError("connection lost")
            if self.inbound:
                log.info("TLS handshake from %s failed: %s", self.peer, error)
            else:  # what was waiting for this connection fails now, not at Timer B/F
                name = self.name or self.peer.host
                log.warning("TLS connection to %s refused: %s", self.peer,
                            handshake_failure(error, name))
                driver.transport_failed(self.peer)


class _TcpFactory(protocol.ServerFactory):
    def __init__(self, driver: SipDriver, kind: str = "tcp") -> None:
        self.driver = driver
        self.kind = kind

    def buildProtocol(self, addr: Any) -> _TcpConnection | None:
        driver = self.driver
        host = getattr(addr, "host", "")
        if len(driver._tcp) + len(driver._connecting) >= driver.tcp.max_connections:
            driver._refused("budget", host)
            return None  # Twisted closes it at once
        if driver._per_source.get(host, 0) >= driver.tcp.max_per_source:
            driver._refused("per-source", host)
            return None
        return _TcpConnection(driver, inbound=True, kind=self.kind)


class _TcpClientFactory(protocol.ClientFactory):
    def __init__(self, driver: SipDriver, conn: _TcpConnection, peer: Peer) -> None:
        self.driver = driver
        self.conn = conn
        self.peer = peer

    def buildProtocol(self, addr: Any) -> _TcpConnection:
        return self.conn

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.driver._connecting.pop(self.peer, None)
        self.driver.transport_failed(self.peer)


class SipDriver:
    """Sockets and the one timer of a sans-IO SIP stack.

    ``tu`` handles the endpoint's events. The driver flushes after every datagram, stream
    message and timer; when the TU sends or schedules on its own (an HTTP command, a key
    press on the media), the endpoint's output hook and the timer heap's change hook tell
    the driver, which flushes once at the end of the current reactor turn.
    """

    def __init__(self, reactor: Any, endpoint: Endpoint, timers: TimerHeap,
                 tu: TransactionUser | None = None, *, tcp: TcpLimits | None = None,
                 tls: TlsContexts | None = None,
                 forwarder: Forwarder | None = None,
                 referrals: Referrals | None = None) -> None:
        self.reactor = reactor
        #: with workers: which worker waits for which referred INVITE (sipdial.sip.shard)
        self.referrals = referrals
        #: one of several workers (the endpoint's shard, sipdial.workers): messages another
        #: worker owns go to it through ``forwarder``; so do TCP/TLS sends of all but worker 0
        shard = endpoint.shard
        self._shard: Shard | None = shard if shard.sharded else None
        self._forwarder = forwarder
        self._relay_streams = (self._shard is not None and forwarder is not None
                               and self._shard.index != 0)
        #: what TLS listeners present and outgoing TLS trusts; None: no TLS
        self.tls = tls
        #: RFC 5923: sent-by (transport, host, port) -> the connection that asked for reuse
        self._aliases: dict[Peer, _TcpConnection] = {}
        self.endpoint = endpoint
        self.timers = timers
        self.tu = tu
        self._udp: dict[int, Any] = {}  # address family -> listening UDP port
        self._tcp: dict[Peer, _TcpConnection] = {}
        self._connecting: dict[Peer, _TcpConnection] = {}
        self._listening: list[Any] = []
        self._timer: Any = None
        self._pumping = False
        self._wake_pending = False
        #: limits on SIP-TCP connections (read at each decision: may be replaced)
        self.tcp = tcp or TcpLimits()
        self._per_source: dict[str, int] = {}  # source IP -> open TCP connections
        self._refusals = 0  # TCP connections refused since the last warning
        self._refusal_logged = -_REFUSAL_LOG_INTERVAL
        #: UDP destinations Twisted's Port.write has accepted (IP literals of the socket's
        #: family), sent to with the socket's sendto directly from then on
        self._udp_hosts: set[str] = set()
        endpoint.set_output_hook(self._wake)
        timers.set_change_hook(self._wake)

    def _wake(self) -> None:
        """Output or an earlier deadline outside :meth:`pump`: flush at the end of this turn."""
        if self._pumping or self._wake_pending:
            return
        self._wake_pending = True
        self.reactor.callLater(0, self._woken)

    def _woken(self) -> None:
        self._wake_pending = False
        self.pump()

    # ------------------------------------------------------------ setup

    def listen(self, transport: str, host: str, port: int, advertise: str | None = None, *,
               reuse_port: bool = False) -> int:
        """Listen and return the bound port (port 0 picks a free one). ``advertise`` is the
        address put in Via/Contact when ``host`` is a wildcard (0.0.0.0, ::). ``reuse_port``
        (UDP): ``SO_REUSEPORT``, the workers' shared SIP socket (sipdial.workers)."""
        if transport == "udp" and reuse_port:
            sock = reuse_port_socket(socket.SOCK_DGRAM, host, port)
            try:
                lp = self.reactor.adoptDatagramPort(sock.fileno(), sock.family, _Udp(self))
            finally:
                sock.close()  # the reactor's port holds its own duplicate
            _grow_buffers(lp)
            self._udp.setdefault(family(host), lp)
        elif transport == "udp":
            lp = self.reactor.listenUDP(port, _Udp(self), interface=host)
            _grow_buffers(lp)
            self._udp.setdefault(family(host), lp)
        elif transport == "tcp":
            lp = self.reactor.listenTCP(port, _TcpFactory(self), interface=host)
        elif transport == "tls":
            if self.tls is None:
                raise ValueError("a tls: listener needs [sip.tls] certificate and key")
            lp = self.reactor.listenSSL(port, _TcpFactory(self, "tls"), self.tls.server(),
                                        interface=host)
        else:
            raise ValueError(f"unsupported transport {transport!r}")
        self._listening.append(lp)
        bound = int(lp.getHost().port)
        self.endpoint.add_local(transport, advertise or host, bound)
        return bound

    def listen_elsewhere(self, transport: str, host: str, port: int,
                         advertise: str | None = None) -> None:
        """Another worker (0) listens on ``transport`` there: this one's Via and Contact name
        that address all the same, and what it sends over that transport goes through it."""
        self.endpoint.add_local(transport, advertise or host, port)

    def stop(self) -> None:
        self.endpoint.set_output_hook(None)
        self.timers.set_change_hook(None)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        for lp in self._listening:
            lp.stopListening()
        for conn in list(self._tcp.values()):
            transport: Any = conn.transport
            if transport is not None:
                transport.loseConnection()

    # ------------------------------------------------------------ input

    def receive(self, data: bytes, peer: Peer) -> None:
        shard = self._shard
        if shard is not None and self._forwarder is not None:
            owner = shard.route(data, self.referrals)
            if owner is not None:
                self._forwarder.forward(owner, data, peer)
                return
        self.receive_here(data, peer)

    def receive_here(self, data: bytes, peer: Peer) -> None:
        """A message this worker handles (received, or forwarded by the worker that did)."""
        if _trace:
            _trace_log.info("recv from %s:\n%s", peer, data.decode("utf-8", "replace"))
        try:
            self.endpoint.receive(data, peer, self.reactor.seconds())
        except Exception:  # a bug must not take the next datagram down with it
            log.exception("error handling message from %s", peer)
        if peer.reliable:
            for alias, source in self.endpoint.drain_aliases():
                self._alias(alias, source)
        self.pump()

    def _alias(self, alias: Peer, source: Peer) -> None:
        """RFC 5923: requests to ``alias`` (a Via sent-by) go over ``source``'s connection;
        only over TLS, and only when the client's certificate (checked against the CA at the
        handshake) names that host (§10.2): over plain TCP anyone could claim any sent-by."""
        conn = self._tcp.get(source)
        if conn is None or alias == source or self._aliases.get(alias) is conn:
            return
        if source.transport != "tls":
            return
        transport: Any = conn.transport
        cert = transport.getPeerCertificate() if transport is not None else None
        if not certificate_names_host(cert, alias.host):
            log.info("not reusing the TLS connection from %s for %s: no client "
                     "certificate for %s", source, alias, alias.host)
            return
        self._aliases[alias] = conn
        conn.aliases.append(alias)
    def tcp_connections(self) -> int:
        """SIP-TCP connections open or being opened."""
        return len(self._tcp) + len(self._connecting)

    def _refused(self, why: str, host: str) -> None:
        """A connection refused at accept: one warning per interval, not one per refusal
        (a flood would flood the log too)."""
        self._refusals += 1
        now = self.reactor.seconds()
        if now - self._refusal_logged >= _REFUSAL_LOG_INTERVAL:
            log.warning("refusing TCP connections (%s limit; latest from %s): %d refused, "
                        "%d open, at most %d per source, %d in all", why, host,
                        self._refusals, self.tcp_connections(), self.tcp.max_per_source,
                        self.tcp.max_connections)
            self._refusals = 0
            self._refusal_logged = now

    def transport_failed(self, peer: Peer) -> None:
        self.transport_failed_here(peer)
        if self._forwarder is not None and self._shard is not None and self._shard.index == 0:
            self._forwarder.report_failure(peer)  # whoever relayed through it is told

    def transport_failed_here(self, peer: Peer) -> None:
        """Worker 0 reported that its connection to ``peer`` failed (sipdial.workers)."""
        self.endpoint.txns.transport_error(peer, self.reactor.seconds())
        self.pump()

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.timers.run_due(self.reactor.seconds())
        except Exception:
            log.exception("error in timer")
        self.pump()

    # ------------------------------------------------------------ the loop

    def pump(self) -> None:
        """Deliver events to the TU and flush output until quiet, then re-arm the timer."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while True:
                events = self.endpoint.drain_events()
                if self.tu is not None:
                    now = self.reactor.seconds()
                    for event in events:
                        try:
                            self.tu(event, now)
                        except Exception:
                            log.exception("transaction user failed on %r", event)
                out = self.endpoint.drain_outbox()
                for peer, data in out:
                    try:
                        self._send(peer, data)
                    except Exception:  # e.g. a host name Twisted's UDP cannot send to
                        log.exception("cannot send to %s", peer)
                if not events and not out:
                    break
        finally:
            self._pumping = False
            self._rearm()

    def _rearm(self) -> None:
        deadline = self.timers.next_deadline()
        if deadline is None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            return
        delay = max(0.0, deadline - self.reactor.seconds())
        if self._timer is not None and self._timer.active():
            if abs(self._timer.getTime() - deadline) > 1e-6:
                self._timer.reset(delay)
            return
        self._timer = self.reactor.callLater(delay, self._on_timer)

    def _send(self, peer: Peer, data: bytes) -> None:
        if _trace:
            _trace_log.info("send to %s:\n%s", peer, data.decode("utf-8", "replace"))
        forwarder = self._forwarder
        if peer.transport != "udp" and self._relay_streams and forwarder is not None:
            forwarder.relay(data, peer)
            return
        self.send_here(peer, data)

    def send_here(self, peer: Peer, data: bytes) -> None:
        """Send from this process's own sockets and connections."""
        if peer.transport == "udp":
            lp = self._udp.get(family(peer.host))
            if lp is None:
                log.warning("no UDP socket for %s", peer)
                return
            addr = (peer.host, peer.port)
            if peer.host in self._udp_hosts:
                # Port.write already accepted this host: skip its three address checks (2 % of
                # the reactor at 400 calls/s); any error goes through Port.write below
                try:
                    lp.socket.sendto(data, addr)
                    return
                except OSError:
                    pass
            try:
                lp.write(data, addr)
            except OSError as exc:
                log.info("UDP send to %s failed: %s", peer, exc)
                return
            if getattr(lp, "socket", None) is not None:
                if len(self._udp_hosts) >= _UDP_HOSTS_MAX:
                    self._udp_hosts.clear()
                self._udp_hosts.add(peer.host)
            return
        conn = self._tcp.get(peer) or self._connecting.get(peer) or self._aliases.get(peer)
        if conn is not None and conn.transport is not None and (
                conn.peer == peer or peer in conn.aliases):
            transport: Any = conn.transport
            transport.write(data)
            return
        if conn is not None:
            conn.pending.append(data)
            return
        if self.tcp_connections() >= self.tcp.max_connections:
            log.warning("cannot connect to %s: %d SIP-TCP connections open", peer,
                        self.tcp_connections())
            self.reactor.callLater(0, self.transport_failed, peer)
            return
        if peer.transport == "tls":
            if self.tls is None:
                log.warning("cannot send to %s: TLS is not configured ([sip.tls])", peer)
                self.reactor.callLater(0, self.transport_failed, peer)
                return
            conn = _TcpConnection(self, kind="tls")
            conn.name = peer.name or peer.host
            conn.pending.append(data)
            self._connecting[peer] = conn
            self.reactor.connectSSL(peer.host, peer.port, _TcpClientFactory(self, conn, peer),
                                    self.tls.client(conn.name), timeout=10)
            return
        if peer.transport != "tcp":
            log.warning("cannot send to %s: no %s transport", peer, peer.transport)
            self.reactor.callLater(0, self.transport_failed, peer)
            return
        conn = _TcpConnection(self)
        conn.pending.append(data)
        self._connecting[peer] = conn
        self.reactor.connectTCP(peer.host, peer.port, _TcpClientFactory(self, conn, peer),
                                timeout=10)
