"""The SIP endpoint: bytes in, transactions, bytes out (sans-IO).

``receive(data, source, now)`` parses one message (a datagram or one framed TCP message),
applies RFC 3581 / §18.2.1 Via processing, answers unparseable requests with 400 where it can,
and feeds the transaction layer. ``send_request`` stamps our Via (fresh branch, ``rport``) and
starts a client transaction. Events for the TU and ``(Peer, bytes)`` to send are drained by the
transport driver, which owns the sockets and the single reactor timer.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from sipdial.sip.errors import ParseError
from sipdial.sip.message import (
    Request,
    Response,
    make_response,
    parse_message,
    to_tag,
    top_via,
)
from sipdial.sip.peer import Peer
from sipdial.sip.shard import SINGLE, Shard
from sipdial.sip.timers import TimerHeap
from sipdial.sip.transaction import (
    ClientTransaction,
    Event,
    ServerTransaction,
    TimerConfig,
    TransactionLayer,
    TransactionOwner,
)
from sipdial.sip.uri import URI, SipURI

#: Rejections of a non-INVITE request that processing it again would give again (malformed,
#: unsupported, no such dialog, loop, ...): sent statelessly over UDP (see Endpoint.respond).
#: Not 491/500/503/486..., whose retransmission might be accepted the second time.
_STATELESS_REJECTIONS = frozenset({400, 405, 414, 416, 420, 481, 483, 501, 505, 513})


@dataclass(slots=True)
class EndpointStats:
    received: int = 0
    sent: int = 0
    malformed: int = 0
    dropped: int = 0


def family(host: str) -> int:
    return 6 if ":" in host else 4


class Endpoint:
    """One SIP endpoint (see the module docstring): ``receive`` bytes, ``drain_events`` for
    the TU and ``drain_outbox`` for the transport."""

    def __init__(self, timers: TimerHeap, config: TimerConfig | None = None,
                 user_agent: str = "sipdial", shard: Shard = SINGLE) -> None:
        self.timers = timers
        #: this process's place among sipdial's workers: its index leads every branch and
        #: tag it makes, so the worker that receives a response or an in-dialog request
        #: hands it to the one that owns it (:mod:`sipdial.sip.shard`)
        self.shard = shard
        self.txns = TransactionLayer(timers, config, branch_prefix=shard.prefix(12))
        self.user_agent = user_agent
        # (transport, address family) -> (host, port) we listen on
        self.local: dict[tuple[str, int], tuple[str, int]] = {}
        self.stats = EndpointStats()
        self._output_hook: Callable[[], None] | None = None
        self._tag_prefix = shard.prefix(8)
        self._tags = itertools.count(1)
        #: (sent-by, connection) of requests whose top Via asked for connection reuse
        #: (RFC 5923 ``alias``), for the transport to honour or not: see drain_aliases
        self._aliases: list[tuple[Peer, Peer]] = []

    def set_output_hook(self, hook: Callable[[], None] | None) -> None:
        """``hook`` is told whenever the TU queues something to send (a request, response,
        ACK or CANCEL): the transport adapter's cue to flush when the TU acted on its own
        (an API command, a key press on the media) rather than in reply to the network."""
        self._output_hook = hook

    def _output(self) -> None:
        hook = self._output_hook
        if hook is not None:
            hook()

    # ------------------------------------------------------------ local addresses

    def add_local(self, transport: str, host: str, port: int) -> None:
        self.local.setdefault((transport, family(host)), (host, port))

    def local_for(self, peer: Peer) -> tuple[str, int]:
        try:
            return self.local[(peer.transport, family(peer.host))]
        except KeyError:
            for (transport, _fam), addr in self.local.items():
                if transport == peer.transport:
                    return addr
            raise LookupError(f"no local {peer.transport} transport for {peer}") from None

    def contact(self, peer: Peer, user: str = "sipdial", *, secure: bool = False) -> str:
        """Our Contact towards ``peer``. ``secure``: the dialog's request had a ``sips:``
        Request-URI, so the Contact is a SIPS URI too (RFC 3261 §8.1.1.8, §12.1.1) — over
        TLS, which a SIPS URI implies (no transport parameter)."""
        host, port = self.local_for(peer)
        h = f"[{host}]" if ":" in host else host
        if secure and peer.transport == "tls":
            return f"<sips:{user}@{h}:{port}>"
        param = "" if peer.transport == "udp" else f";transport={peer.transport}"
        return f"<sip:{user}@{h}:{port}{param}>"

    def via(self, peer: Peer, branch: str) -> str:
        host, port = self.local_for(peer)
        h = f"[{host}]" if ":" in host else host
        return f"SIP/2.0/{peer.transport.upper()} {h}:{port};rport;branch={branch}"

    # ------------------------------------------------------------ input

    def receive(self, data: bytes, source: Peer, now: float) -> None:
        """One message from the wire. Never raises for bad input."""
        self.stats.received += 1
        if not data.strip(b"\r\n"):
            return  # keep-alive (RFC 5626 §3.5.1 CRLF)
        try:
            message = parse_message(data)
            if isinstance(message, Request):
                reply_to = self._process_via(message, source)
            else:
                reply_to = source
                top_via(message)
        except ParseError as exc:
            self.stats.malformed += 1
            request = exc.request
            if request is not None and request.method != "ACK":
                try:
                    reply_to = self._process_via(request, source)  # §18.2.2 as for any reply
                    try:  # §8.2.6.2 To tag, where the To can be read at all
                        response = make_response(request, exc.status, _short(str(exc)),
                                                 to_tag=self._tag())
                    except Exception:
                        response = make_response(request, exc.status, _short(str(exc)))
                    self.txns.send_stateless(response, reply_to)
                except Exception:
                    self.stats.dropped += 1
            return
        self.txns.receive(message, reply_to, now)

    def _process_via(self, request: Request, source: Peer) -> Peer:
        """§18.2.1 received=, RFC 3581 rport=; returns where responses go (§18.2.2)."""
        vias = request.headers.get_all("Via")
        via = top_via(request)
        changed = False
        if via.host != source.host:
            via.params["received"] = source.host
            changed = True
        if "rport" in via.params:
            via.params["received"] = source.host
            via.params["rport"] = str(source.port)
            changed = True
        if changed:
            vias[0] = str(via)
            request.headers.set("Via", ", ".join(vias))
        if (source.reliable and "alias" in via.params and via.port is not None
                and len(self._aliases) < 1024):  # bounded where no transport drains them
            self._aliases.append((Peer(source.transport, via.host, via.port), source))
        if source.reliable or "rport" in via.params:
            return source
        return Peer(source.transport, source.host, via.port or 5060)

    # ------------------------------------------------------------ output

    def send_request(self, request: Request, peer: Peer, now: float,
                     owner: TransactionOwner | None = None) -> ClientTransaction:
        """Add our Via (and User-Agent) and start a client transaction reporting to
        ``owner``."""
        branch = self.txns.new_branch()
        request.headers.prepend("Via", self.via(peer, branch))
        if "User-Agent" not in request.headers:
            request.headers.add("User-Agent", self.user_agent)
        txn = self.txns.send_request(request, peer, now)
        txn.owner = owner
        self._output()
        return txn

    def send_ack(self, invite_txn: ClientTransaction, ack: Request, peer: Peer,
                 remember: bool = True) -> None:
        """ACK a 2xx. ``remember``: re-send it for retransmissions of that 2xx; False for
        the ACK of a second dialog (another fork's 2xx) that is hung up at once."""
        ack.headers.prepend("Via", self.via(peer, self.txns.new_branch()))
        if remember:
            self.txns.send_ack(invite_txn, ack, peer)
        else:
            self.txns.send_stateless(ack, peer)
        self._output()

    def respond(self, txn: ServerTransaction, response: Response, now: float, *,
                known_source: bool = False) -> None:
        """Send ``response`` through ``txn``.

        A 401/407 over UDP goes out once, statelessly, unless the TU says the source is
        ``known_source`` (it proved itself before, e.g. a registered device's address): a
        stateful challenge is retransmitted until ACKed, ~11 datagrams for one request, which
        toward a spoofed source would make sipdial an amplifier.

        Answers to OPTIONS and rejections of other non-INVITE requests that re-processing
        would give again (:data:`_STATELESS_REJECTIONS`) go out statelessly too (§8.2.7),
        with a To tag derived from the transaction key, so a retransmission gets the same
        answer: a flood of junk requests no longer leaves a transaction lingering 64*T1 per
        request (issue 7 §6: ~1.7 KB each, an RSS high-water mark that stayed)."""
        if "Server" not in response.headers:
            response.headers.add("Server", self.user_agent)
        if response.status > 100:
            # §8.2.6.2: a UAS MUST add a To tag to a response to a request without one. The
            # request's To is parsed (and cached) already; a response whose To is still the
            # request's very text got no tag from the TU.
            request = txn.request
            stateless = not txn.peer.reliable and (
                (response.status in (401, 407) and not known_source)
                or (txn.method == "OPTIONS" and response.status >= 200)
                or (txn.method not in ("INVITE", "REGISTER")
                    and response.status in _STATELESS_REJECTIONS))
            to_value = response.headers.get("To")
            if to_value == request.headers.get("To") and to_tag(request) is None:
                tag = self._stateless_tag(txn) if stateless else self._tag()
                response.headers.set("To", f"{to_value};tag={tag}")
        else:
            stateless = False
        if stateless:
            self.txns.respond_stateless(txn, response)  # nothing lingers, nothing repeats
        else:
            self.txns.respond(txn, response, now)
        self._output()

    def reply(self, txn: ServerTransaction, status: int, now: float, reason: str | None = None,
              to_tag: str | None = None,
              headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> Response:
        response = make_response(txn.request, status, reason, to_tag=to_tag)
        for name, value in headers or ():
            response.headers.add(name, value)
        response.body = body
        self.respond(txn, response, now)
        return response

    def cancel(self, invite_txn: ClientTransaction, now: float,
               reason: str | None = None) -> None:
        self.txns.cancel(invite_txn, now, reason)
        self._output()

    def _tag(self) -> str:
        return f"{self._tag_prefix}{next(self._tags):x}"

    def _stateless_tag(self, txn: ServerTransaction) -> str:
        """The same To tag for every copy of a request (§8.2.7): from its transaction key."""
        digest = hashlib.blake2s("\x00".join(txn.key).encode("utf-8", "surrogateescape"),
                                 digest_size=6).hexdigest()
        return f"{self._tag_prefix}s{digest}"

    def drain_aliases(self) -> list[tuple[Peer, Peer]]:
        """RFC 5923 §5: ``(sent-by, source)`` for each request received over a connection
        whose top Via carried ``alias`` (and a port) since the last call: the sender asks
        that requests to its sent-by reuse that connection. Whether to is the transport's
        decision (over TLS only for a client whose certificate names the sent-by, §10.2)."""
        found, self._aliases = self._aliases, []
        return found

    def drain_events(self) -> list[Event]:
        return self.txns.drain_events()

    def drain_outbox(self) -> list[tuple[Peer, bytes]]:
        out = self.txns.drain_outbox()
        self.stats.sent += len(out)
        return out


def peer_for_uri(uri: URI, default_transport: str = "udp") -> Peer:
    """Where a request for ``uri`` goes when no registration or dialog says otherwise
    (RFC 3263 without DNS: numeric hosts and /etc/hosts names only)."""
    if not isinstance(uri, SipURI) or uri.scheme == "tel":
        raise ValueError(f"cannot route to {uri}")
    transport = (uri.params.get("transport") or default_transport).lower()
    if uri.scheme == "sips":
        transport = "tls"
    host = uri.params.get("maddr") or uri.host
    port = uri.port or (5061 if transport == "tls" else 5060)
    return Peer(transport, host, port)


def _short(text: str) -> str:
    text = text.replace("\r", " ").replace("\n", " ")
    return text[:80] if text else "Bad Request"
