"""RFC 3261 §12 dialogs, sans-IO.

A :class:`Dialog` holds the identifiers and sequence state of one dialog and builds its
in-dialog requests. It does not send anything; the caller passes the request it returns to
the endpoint together with :attr:`Dialog.peer`.

Where requests go (§12.2.1.1, :func:`route_request`): with a route set, to its first
route. A loose router (``;lr``) gets Request-URI = the remote target and every route as a
Route header; a strict router (no ``;lr``, RFC 2543) gets its own URI as the Request-URI and
the remote target appended as the last Route. The first route's address is used only when it
is over the transport the dialog was created with, and for a UAS dialog (whose route set
the requester wrote) only when it is the same host (:func:`hop_peer`); a host name, another
transport or another address falls back to the address the dialog was created with.
Without a route set, requests go to that address — the source of the request (UAS) or
where our INVITE went (UAC). That is what makes phones behind NAT reachable: their
Contact is often a private address that means nothing here (RFC 3581 symmetric response
routing, applied to the dialog).

The same :func:`route_request` applies a *preloaded* route set to a request outside a dialog
(RFC 3327 Path of a registered contact, an outbound proxy: §8.1.2, §16.12.1).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from sipdial.sip.errors import ParseError, SipError
from sipdial.sip.headers import Headers
from sipdial.sip.message import Request, Response, cseq, from_, to
from sipdial.sip.peer import Peer
from sipdial.sip.uri import URI, NameAddr, SipURI, parse_name_addr_list

DialogKey = tuple[str, str, str]  # (Call-ID, local tag, remote tag)


@dataclass(frozen=True, slots=True)
class Routed:
    """A request's addressing under a route set (RFC 3261 §12.2.1.1, §16.12.1)."""

    request_uri: URI  #: the Request-URI to send
    routes: tuple[NameAddr, ...]  #: the Route header values, in order
    next_hop: URI  #: where the request goes: the first route, or the target when none


def is_loose(route: NameAddr) -> bool:
    """Whether a route names a loose router (``;lr``, RFC 3261 §19.1.1)."""
    return isinstance(route.uri, SipURI) and "lr" in route.uri.params


def route_request(target: URI, route_set: Sequence[NameAddr]) -> Routed:
    """Address a request for ``target`` through ``route_set`` (§12.2.1.1).

    Loose first route: Request-URI ``target``, Route = the whole set, next hop the first
    route. Strict first route: Request-URI = the first route's URI (without the parameters
    and headers a Request-URI may not carry, §19.1.1 table 1), Route = the rest of the set
    and ``target`` last, next hop that Request-URI."""
    if not route_set:
        return Routed(target, (), target)
    first = route_set[0]
    if is_loose(first):
        return Routed(target, tuple(route_set), first.uri)
    uri = first.uri
    if isinstance(uri, SipURI):
        uri = uri.copy(params={k: v for k, v in uri.params.items() if k != "method"},
                       headers={})
    return Routed(uri, (*route_set[1:], NameAddr(target)), uri)


def hop_peer(uri: URI, fallback: Peer, *, any_host: bool = False) -> Peer:
    """Where a request whose first route (or Path hop) is ``uri`` goes, given ``fallback``:
    the address the dialog (or registration) came from, or where our INVITE went.

    The route's own address (an IP literal, or its ``maddr``) is used over the same
    transport as ``fallback`` only — a transport sipdial may not serve (a double
    Record-Route's far side) falls back — and, unless ``any_host``, only when it is the
    same host as ``fallback`` (then its port counts: a proxy's listening port rather than
    the port a request came from). A route set written by the side that sent us a request
    (a UAS dialog's Record-Route, a REGISTER's Path) is the sender's word: followed to any
    address it would let an authenticated phone point sipdial's INVITEs and their
    retransmissions at a third party. Falling back sends to the proxy it came through,
    which routes on by the Route header. ``any_host``: a UAC dialog's route set, which
    comes back along the path our INVITE took (RFC 3261 §12.2.1.1 as written). A host
    name falls back too (no DNS in the sans-IO core)."""
    if not isinstance(uri, SipURI) or uri.scheme == "tel":
        return fallback
    host = uri.params.get("maddr") or uri.host
    try:
        address = ipaddress.ip_address(host)
        same_host = address == ipaddress.ip_address(fallback.host)
    except ValueError:
        return fallback
    transport = "tls" if uri.scheme == "sips" \
        else (uri.params.get("transport") or fallback.transport).lower()
    if transport != fallback.transport or not (same_host or any_host):
        return fallback
    return Peer(transport, host, uri.port or (5061 if transport == "tls" else 5060),
                fallback.name if same_host else "")


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_party: NameAddr  # our From (UAC) / To (UAS), tag included
    remote_party: NameAddr
    remote_target: URI
    route_set: list[NameAddr]
    local_seq: int
    remote_seq: int | None
    peer: Peer
    local_contact: str  # our Contact header value
    secure: bool = False  # §12.1: a sips: dialog (kept for when TLS is served)

    @property
    def key(self) -> DialogKey:
        return (self.call_id, self.local_tag, self.remote_tag)

    # ------------------------------------------------------------ creation

    @classmethod
    def from_uac(cls, request: Request, response: Response, peer: Peer,
                 local_contact: str, *, lenient: bool = False) -> Dialog:
        """§12.1.2: from a 2xx (or 101-199 with To tag) to our dialog-creating request.

        Raises :class:`ParseError` when the response's Contact or Record-Route does not
        parse. ``lenient``: build the dialog anyway, without them (the request's URI as the
        remote target, no route set, ``peer`` as where the INVITE went) — enough to ACK a
        2xx that cannot make a usable dialog and BYE it (§13.2.2.4)."""
        remote = to(response)
        if remote.tag is None:
            raise SipError("response creates no dialog: To has no tag")
        local = from_(request)
        assert local.tag is not None
        try:
            contacts = _contacts(response)
            routes = _record_routes(response)
        except ParseError:
            if not lenient:
                raise
            contacts, routes = [], []
        routes.reverse()
        return cls(
            call_id=request.headers.get("Call-ID") or "",
            local_tag=local.tag,
            remote_tag=remote.tag,
            local_party=local,
            remote_party=remote,
            remote_target=contacts[0].uri if contacts else request.uri,
            route_set=routes,
            local_seq=cseq(request).number,
            remote_seq=None,
            peer=hop_peer(routes[0].uri, peer, any_host=True) if routes else peer,
            local_contact=local_contact,
            secure=isinstance(request.uri, SipURI) and request.uri.scheme == "sips",
        )

    @classmethod
    def from_uas(cls, request: Request, local_tag: str, source: Peer,
                 local_contact: str) -> Dialog:
        """§12.1.1: from a dialog-creating request we answer with a 2xx (or 1xx)."""
        remote = from_(request)
        if remote.tag is None:
            raise SipError("request has no From tag", 400)
        local = to(request)
        local = NameAddr(local.uri, local.display_name, {**local.params, "tag": local_tag})
        contacts = _contacts(request)
        if not contacts:
            raise SipError("dialog-creating request without Contact", 400)
        routes = _record_routes(request)
        return cls(
            call_id=request.headers.get("Call-ID") or "",
            local_tag=local_tag,
            remote_tag=remote.tag,
            local_party=local,
            remote_party=remote,
            remote_target=contacts[0].uri,
            route_set=routes,
            local_seq=0,
            remote_seq=cseq(request).number,
            peer=hop_peer(routes[0].uri, source) if routes else source,
            local_contact=local_contact,
            secure=isinstance(request.uri, SipURI) and request.uri.scheme == "sips",
        )

    # ------------------------------------------------------------ requests

    def create_request(self, method: str, *, body: bytes = b"",
                       content_type: str | None = None,
                       extra: list[tuple[str, str]] | None = None) -> Request:
        """§12.2.1.1: an in-dialog request without Via (the endpoint adds it), routed by
        the route set (loose or strict); it goes to :attr:`peer`."""
        self.local_seq += 1
        routed = route_request(self.remote_target, self.route_set)
        headers = self._headers(f"{self.local_seq} {method}", routed)
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
            headers.add("Contact", self.local_contact)
        for name, value in extra or ():
            headers.add(name, value)
        if content_type is not None:
            headers.add("Content-Type", content_type)
        return Request(method, routed.request_uri, headers, body)

    def create_ack(self, invite_cseq: int, *, body: bytes = b"",
                   content_type: str | None = None) -> Request:
        """§13.2.2.4: ACK for a 2xx carries the INVITE's CSeq number (and is routed like
        any in-dialog request)."""
        routed = route_request(self.remote_target, self.route_set)
        headers = self._headers(f"{invite_cseq} ACK", routed)
        if content_type is not None:
            headers.add("Content-Type", content_type)
        return Request("ACK", routed.request_uri, headers, body)

    def _headers(self, cseq_value: str, routed: Routed) -> Headers:
        """What every request of the dialog carries (Via comes from the endpoint)."""
        headers = Headers()
        for route in routed.routes:
            headers.add("Route", str(route))
        headers.add("Max-Forwards", "70")
        headers.add("From", str(self.local_party))
        headers.add("To", str(self.remote_party))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", cseq_value)
        return headers

    def receive_request(self, request: Request) -> None:
        """§12.2.2: check CSeq order and refresh the remote target. Raises SipError(500)
        for an out-of-order request."""
        number = cseq(request).number
        contacts = _contacts(request) if request.method in ("INVITE", "UPDATE") else []
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and number <= self.remote_seq:
                raise SipError("CSeq out of order", 500)
            self.remote_seq = number
        if contacts:
            self.remote_target = contacts[0].uri

    def refresh_from_response(self, response: Response) -> None:
        """Target refresh from a 2xx to a re-INVITE/UPDATE we sent. A Contact that does not
        parse refreshes nothing: the 2xx is still ACKed (the dialog keeps its target)."""
        try:
            contacts = _contacts(response)
        except ParseError:
            return
        if contacts:
            self.remote_target = contacts[0].uri


def check_dialog_headers(message: Request | Response) -> None:
    """Raise :class:`ParseError` (400, with the reason) unless every header a dialog would
    be built from parses: From, To, Contact, Record-Route (§12.1). For a request that is
    answered when it arrives, so that no call is set up on a message whose dialog cannot be
    made later (when the other side answers, say)."""
    for name, parse in (("From", from_), ("To", to)):
        try:
            parse(message)
        except ParseError as exc:
            raise ParseError(f"bad {name}: {exc}") from None
    for name, parse_all in (("Contact", _contacts), ("Record-Route", _record_routes)):
        try:
            parse_all(message)
        except ParseError as exc:
            raise ParseError(f"bad {name}: {exc}") from None


def _contacts(message: Request | Response) -> list[NameAddr]:
    result: list[NameAddr] = []
    for value in message.headers.get_all("Contact"):
        result.extend(parse_name_addr_list(value))
    return result


def _record_routes(message: Request | Response) -> list[NameAddr]:
    result: list[NameAddr] = []
    for value in message.headers.get_all("Record-Route"):
        result.extend(parse_name_addr_list(value))
    return result
