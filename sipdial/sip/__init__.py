"""SIP without I/O: messages, transactions, dialogs, digest authentication, SDP, RFC 3263.

Nothing in this room opens a socket, reads a clock or imports Twisted (STYLE.md §1), and it
imports nothing outside ``sipdial.sip``: bytes and the time ``now`` go in, typed events and
``(Peer, bytes)`` to send come out. :mod:`sipdial.transport` owns the sockets and ONE reactor
timer; the user agent and the calls are the transaction user (TU)::

    timers = TimerHeap()
    endpoint = Endpoint(timers, TimerConfig())
    endpoint.add_local("udp", "192.0.2.10", 5060)
    endpoint.receive(datagram, Peer("udp", host, port), now)  # never raises for bad input
    for event in endpoint.drain_events(): ...     # Event: RequestReceived, ResponseReceived, ...
    for peer, data in endpoint.drain_outbox(): ...  # what to send, where
    timers.next_deadline()                        # when to call timers.run_due(now) next

Errors are typed and carry what to answer with: :class:`ParseError` (400, 413 too large, 505
bad version) with a best-effort ``request`` to answer when one can be built, :class:`SipError`
for protocol errors above the parser, :class:`AuthError` for digest headers. A bad message is
answered or dropped and never affects the next one.

Each module documents its part of the contract:

=========================  ===========================================================
:mod:`~.message`           :class:`Request`, :class:`Response`, :func:`parse_message`,
                           typed header accessors (:func:`call_id`, :func:`cseq`, ...),
                           :func:`make_response`, :class:`StreamFramer` (TCP framing)
:mod:`~.uri`               :class:`SipURI` (sip:, sips:, tel:), :class:`AbsoluteURI`,
                           :class:`NameAddr`, :func:`parse_uri`
:mod:`~.headers`           :class:`Headers` (ordered, case-insensitive), :class:`Via`,
                           :class:`CSeq`, compact forms
:mod:`~.transaction`       the RFC 3261 §17 machines (one table each), the events for
                           the TU, :class:`TimerConfig` (T1, T2, T4)
:mod:`~.dialog`            RFC 3261 §12: :class:`Dialog` builds in-dialog requests;
                           :func:`check_dialog_headers` (400 before a dialog is promised),
                           :func:`route_request` (loose/strict routing, preloaded routes)
:mod:`~.endpoint`          :class:`Endpoint`: bytes in, transactions, bytes out;
                           :func:`peer_for_uri` without DNS
:mod:`~.auth`              HTTP digest (RFC 7616, 2617, 2069; RFC 8760): server
                           (:class:`DigestServer`) and client (:func:`answer_challenge`)
:mod:`~.sdp`               sipdial's own G.711 offers, what it needs from an answer
                           (used as ``sdp.audio_offer(...)``, ``sdp.CONTENT_TYPE``)
:mod:`~.rfc3263`           which DNS lookups a SIP URI needs and the ordered
                           :class:`Peer` targets they give (:class:`Resolution`)
:mod:`~.timers`            :class:`TimerHeap`: one heap for every timer in the process
:mod:`~.peer`              :class:`Peer`: transport and address
:mod:`~.shard`             :class:`Shard`: which worker process owns a message; :class:`Referrals`
:mod:`~.symbols`           :class:`Symbol`: enums for state-table keys, hashed by identity
:mod:`~.errors`            :class:`SipError`, :class:`ParseError`
=========================  ===========================================================

Other rooms import these names from ``sipdial.sip`` (``__all__``), not from the modules.
"""

from sipdial.sip import sdp
from sipdial.sip.auth import (
    AuthError,
    Challenge,
    Credentials,
    DigestServer,
    NonceManager,
    VerifyResult,
    answer_challenge,
    digest_response,
    parse_challenges,
    preferred_challenge,
)
from sipdial.sip.dialog import (
    Dialog,
    DialogKey,
    Routed,
    check_dialog_headers,
    hop_peer,
    is_loose,
    route_request,
)
from sipdial.sip.endpoint import Endpoint, family, peer_for_uri
from sipdial.sip.errors import ParseError, SipError
from sipdial.sip.headers import CSeq, Headers, Via
from sipdial.sip.message import (
    MAX_MESSAGE_SIZE,
    Message,
    Request,
    Response,
    StreamFramer,
    call_id,
    cseq,
    from_,
    from_tag,
    make_response,
    parse_message,
    to,
    to_tag,
    top_via,
    vias,
)
from sipdial.sip.peer import Peer
from sipdial.sip.rfc3263 import (
    Answer,
    DnsFailure,
    NaptrRecord,
    Query,
    RecordType,
    Resolution,
    ResolveError,
    SrvRecord,
    Step,
    is_ip_literal,
    plan,
)
from sipdial.sip.sdp import MediaAnswer
from sipdial.sip.shard import SINGLE, Referrals, Shard
from sipdial.sip.symbols import Symbol
from sipdial.sip.timers import TimerHandle, TimerHeap
from sipdial.sip.transaction import (
    AckTimeout,
    CancelReceived,
    ClientTransaction,
    Event,
    OwnerEvent,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimerConfig,
    TransactionOwner,
    TransactionTimeout,
    TransportError,
)
from sipdial.sip.uri import (
    URI,
    AbsoluteURI,
    NameAddr,
    SipURI,
    parse_name_addr_list,
    parse_uri,
)

__all__ = [
    "MAX_MESSAGE_SIZE",
    "SINGLE",
    "URI",
    "AbsoluteURI",
    "AckTimeout",
    "Answer",
    "AuthError",
    "CSeq",
    "CancelReceived",
    "Challenge",
    "ClientTransaction",
    "Credentials",
    "Dialog",
    "DialogKey",
    "DigestServer",
    "DnsFailure",
    "Endpoint",
    "Event",
    "Headers",
    "MediaAnswer",
    "Message",
    "NameAddr",
    "NaptrRecord",
    "NonceManager",
    "OwnerEvent",
    "ParseError",
    "Peer",
    "Query",
    "RecordType",
    "Referrals",
    "Request",
    "RequestReceived",
    "Resolution",
    "ResolveError",
    "Response",
    "ResponseReceived",
    "Routed",
    "ServerTransaction",
    "Shard",
    "SipError",
    "SipURI",
    "SrvRecord",
    "Step",
    "StreamFramer",
    "Symbol",
    "TimerConfig",
    "TimerHandle",
    "TimerHeap",
    "TransactionOwner",
    "TransactionTimeout",
    "TransportError",
    "VerifyResult",
    "Via",
    "answer_challenge",
    "call_id",
    "check_dialog_headers",
    "cseq",
    "digest_response",
    "family",
    "from_",
    "from_tag",
    "hop_peer",
    "is_ip_literal",
    "is_loose",
    "make_response",
    "parse_challenges",
    "parse_message",
    "parse_name_addr_list",
    "parse_uri",
    "peer_for_uri",
    "plan",
    "preferred_challenge",
    "route_request",
    "sdp",
    "to",
    "to_tag",
    "top_via",
    "vias",
]
