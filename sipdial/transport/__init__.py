"""The Twisted side of SIP: sockets, the one timer, and DNS (RFC 3263) without blocking.

Everything SIP means is decided in :mod:`sipdial.sip` (sans-IO); this room only moves bytes
and time between it and the reactor, which is injected, never imported:

* :class:`SipDriver` — UDP and TCP listeners and outgoing TCP connections for an
  :class:`~sipdial.sip.Endpoint`. Every datagram, stream message and timer goes to the
  endpoint with ``reactor.seconds()``; then the endpoint's events go to the
  :data:`TransactionUser`, its outbox to the sockets, and ONE ``callLater`` is re-armed for
  :meth:`~sipdial.sip.TimerHeap.next_deadline`. With ``SIPDIAL_TRACE=1`` every message sent
  and received is logged (INFO, logger ``sipdial.trace``). TCP connections are held to
  :class:`TcpLimits` (message deadline, idle timeout, per-source limit, a budget that
  :func:`tcp_budget` derives from ``nofile``; :func:`raise_nofile` at start).
* :class:`TlsContexts` — ``[sip.tls]`` as Twisted TLS contexts: ``tls:`` listeners use the
  same connection code as TCP under Twisted's TLS; outgoing TLS checks the server's
  certificate against the CA and its host name (:attr:`~sipdial.sip.Peer.name`, the URI's
  host) unless ``verify = false``; RFC 5923 ``alias`` reuse; RFC 5626 CRLF keep-alives.
* :class:`Mesh` — the worker processes' Unix stream mesh (``sipdial serve --workers``):
  messages another worker owns, TCP/TLS sends through worker 0, registrations replicated;
  the driver forwards by :meth:`~sipdial.sip.Shard.route` (:class:`Forwarder`).
* :class:`DnsResolver` — ``resolve(uri, default_transport, on_done)`` calls ``on_done`` once
  with the peers to try, in order, or a :class:`~sipdial.sip.ResolveError`; cached per TTL,
  hosts file first (see :mod:`.dns`).
"""

from sipdial.transport.dns import DnsResolver, OnResolved
from sipdial.transport.driver import Forwarder, SipDriver, TransactionUser, reuse_port_socket
from sipdial.transport.limits import TcpLimits, raise_nofile, tcp_budget
from sipdial.transport.mesh import Mesh, MeshHandlers, MeshKind, mesh_socket_path
from sipdial.transport.tls import TlsContexts, TlsError, certificate_names_host

__all__ = ["DnsResolver", "Forwarder", "Mesh", "MeshHandlers", "MeshKind", "OnResolved",
           "SipDriver", "TcpLimits", "TlsContexts", "TlsError", "TransactionUser",
           "certificate_names_host", "mesh_socket_path", "raise_nofile", "reuse_port_socket",
           "tcp_budget"]
