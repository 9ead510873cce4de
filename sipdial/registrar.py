"""The embedded registrar (RFC 3261 §10.3), sans-IO: where each user's devices are.

A user may have several devices at once (desk phone, DECT handset, softphone): one binding per
Contact, replaced by ``+sip.instance`` (RFC 5626) when a device re-registers from a new
address. Each binding remembers the address its REGISTER came from, because that is where
requests to a device behind NAT must go (RFC 3581), and its User-Agent, which picks the
auto-answer headers. Bindings expire lazily (checked on lookup) and by a periodic sweep.

RFC 3327 Path: a REGISTER that came through proxies (Kamailio's ``add_path``) carries their
Path header values; the binding keeps them and every request sipdial sends to that contact
carries them as a preloaded route set, going to the first Path hop (:attr:`Binding.next_hop`)
— not to the Contact, which behind NAT only the proxy can reach, and not to the REGISTER's
source. The 200 says ``Supported: path`` and, when the REGISTER's Supported names ``path``,
echoes the Path (§5.3). A Path that does not parse is answered 400 and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sipdial.authn import Authenticator
from sipdial.sip import (
    NameAddr,
    ParseError,
    Peer,
    Request,
    Response,
    SipError,
    SipURI,
    call_id,
    cseq,
    hop_peer,
    make_response,
    parse_name_addr_list,
    parse_uri,
    route_request,
    to,
)
from sipdial.store import iso_time

__all__ = ["Binding", "BindingHook", "ExpiryLimits", "Registrar"]

log = logging.getLogger("sipdial.registrar")


@dataclass(slots=True)
class Binding:
    user: str
    contact: str  # the Contact URI as registered
    instance: str | None  # +sip.instance
    peer: Peer  # where the REGISTER came from: requests to the device go here
    expires_at: float
    q: float
    user_agent: str | None
    call_id: str
    cseq: int
    registered_at: float
    #: RFC 3327 Path of the REGISTER, in order: the preloaded route set towards the device
    path: tuple[NameAddr, ...] = ()

    @property
    def next_hop(self) -> Peer:
        """Where requests to the device go: the first Path hop (when its host is an IP
        literal), else where the REGISTER came from."""
        if not self.path:
            return self.peer
        try:
            target = parse_uri(self.contact)
        except SipError:
            return hop_peer(self.path[0].uri, self.peer)
        return hop_peer(route_request(target, self.path).next_hop, self.peer)

    @property
    def device(self) -> str:
        """A stable name for the device in the API: instance id, else the contact."""
        return self.instance or self.contact

    def to_json(self, now: float) -> dict[str, Any]:
        """The binding as ``GET /v1/registrations`` shows it; times in ISO 8601 UTC."""
        return {
            "user": self.user,
            "contact": self.contact,
            "instance": self.instance,
            "transport": self.peer.transport,
            "source": self.peer.host_port(),
            "expires_in": max(0, round(self.expires_at - now)),
            "q": self.q,
            "user_agent": self.user_agent,
            "registered_at": iso_time(self.registered_at),
            "path": [str(p) for p in self.path],
        }


@dataclass(frozen=True, slots=True)
class ExpiryLimits:
    minimum: int = 60
    maximum: int = 3600
    default: int = 3600


BindingHook = Callable[[Binding, bool], None]  # (binding, removed)


class Registrar:
    def __init__(self, auth: Authenticator, users: Iterable[str], limits: ExpiryLimits,
                 on_change: BindingHook | None = None) -> None:
        self.auth = auth
        self.users = set(users)
        self.limits = limits
        self.on_change = on_change
        self._bindings: dict[str, dict[str, Binding]] = {}
        # where the bindings' REGISTERs came from: a source that proved itself (digest) and
        # that sipdial sends requests to anyway (see knows_peer)
        self._peer_of: dict[tuple[str, str], Peer] = {}
        self._peers: dict[Peer, int] = {}
        #: until then (unix time), REGISTERs are answered 503: a worker rejoining the others
        #: (sipdial.workers) waits for their table, which would undo what it took meanwhile
        self.hold_until = 0.0

    # ------------------------------------------------------------ queries

    def knows_peer(self, peer: Peer) -> bool:
        """Whether a registered device sent its REGISTER from ``peer`` (O(1)).

        Such a source has authenticated and is where sipdial sends that device's requests
        anyway, so a challenge to it may be retransmitted (RFC 3261 §17.2.1) without making
        sipdial an amplifier toward an address that never spoke SIP to it."""
        return peer in self._peers

    def contacts(self, user: str, now: float) -> list[Binding]:
        """Live bindings of ``user``, best first (q, then most recently registered)."""
        table = self._bindings.get(user)
        if not table:
            return []
        live = [b for b in table.values() if b.expires_at > now]
        live.sort(key=lambda b: (-b.q, -b.registered_at))
        return live

    def all(self, now: float) -> list[Binding]:
        return [b for user in sorted(self._bindings) for b in self.contacts(user, now)]

    def restore(self, bindings: Iterable[Binding], now: float) -> int:
        """Load persisted bindings at start; expired ones are dropped."""
        count = 0
        for b in bindings:
            if b.expires_at > now and b.user in self.users:
                self._bindings.setdefault(b.user, {})[b.contact] = b
                self._index(b, removed=False)
                count += 1
        return count

    def replicate(self, binding: Binding, removed: bool, now: float) -> bool:
        """A binding that changed at another worker (sipdial.workers), made here without
        telling ``on_change`` (that worker has). False: not taken — an unknown user, an
        expired binding, or one older than the binding held (:func:`_not_older`): a removal
        or refresh that crossed a newer refresh on its way is not applied."""
        if binding.user not in self.users:
            return False
        table = self._bindings.get(binding.user)
        held = table.get(binding.contact) if table else None
        if held is not None and not _not_older(binding, held):
            return False
        if removed:
            if held is None or table is None:
                return False
            del table[binding.contact]
            if not table:
                del self._bindings[binding.user]
            self._index(held, removed=True)
            return True
        if binding.expires_at <= now:
            return False
        self._bindings.setdefault(binding.user, {})[binding.contact] = binding
        self._index(binding, removed=False)
        return True

    def set_users(self, users: Iterable[str]) -> list[Binding]:
        """The users who may register now (a configuration reload); the bindings of those
        no longer among them are removed (each told to ``on_change``) and returned."""
        self.users = set(users)
        removed = [b for user in [u for u in self._bindings if u not in self.users]
                   for b in self._bindings.pop(user).values()]
        for b in removed:
            self._changed(b, True)
        return removed

    def sweep(self, now: float) -> list[Binding]:
        removed: list[Binding] = []
        for user, table in list(self._bindings.items()):
            for contact, b in list(table.items()):
                if b.expires_at <= now:
                    del table[contact]
                    removed.append(b)
            if not table:
                del self._bindings[user]
        for b in removed:
            self._changed(b, True)
        return removed

    # ------------------------------------------------------------ REGISTER

    def handle(self, request: Request, source: Peer, now: float) -> Response:
        """Process one REGISTER and return the response to send."""
        if now < self.hold_until:
            response = make_response(request, 503, "Service Unavailable (synchronising)")
            response.headers.add("Retry-After", "1")
            return response
        aor = to(request).uri
        if not isinstance(aor, SipURI) or aor.scheme not in ("sip", "sips") or not aor.user:
            return make_response(request, 404, "Not Found")
        user = aor.user
        outcome = self.auth.check(request, now, proxy=False, source=source.host)
        if isinstance(outcome, Response):
            return outcome
        if outcome != user:
            return make_response(request, 403, "Forbidden (credentials do not match To)")
        if user not in self.users:
            return make_response(request, 404, "Not Found")

        try:
            path = tuple(_path(request))
        except ParseError as exc:
            return make_response(request, 400, f"Bad Path: {exc}"[:80])
        values = request.headers.get_all("Contact")
        wildcard = any(v.strip() == "*" for v in values)
        contacts: list[NameAddr] = []
        for value in values:
            if value.strip() != "*":  # "*" is no name-addr: parse_name_addr_list rejects it
                contacts.extend(parse_name_addr_list(value))
        header_expires = _int_or_none(request.headers.get("Expires"))
        cid, seq = call_id(request), cseq(request).number
        table = self._bindings.setdefault(user, {})

        if wildcard:
            # §10.3 step 6: "*" only alone and with Expires: 0
            if len(values) != 1 or header_expires != 0:
                return make_response(request, 400, "Wildcard Contact needs Expires: 0")
            for b in list(table.values()):
                if b.call_id == cid and seq <= b.cseq:
                    return make_response(request, 500, "Out of order CSeq")
            for b in list(table.values()):
                del table[b.contact]
                self._changed(b, True)
            return self._ok(request, user, now)

        user_agent = request.headers.get("User-Agent")
        # §10.3 steps 6-7: check every contact first; a REGISTER updates all or nothing
        checked: list[tuple[NameAddr, int]] = []
        for c in contacts:
            expires = _int_or_none(c.params.get("expires"))
            if expires is None:
                expires = header_expires
            if expires is None:
                expires = self.limits.default
            if 0 < expires < self.limits.minimum:
                response = make_response(request, 423, "Interval Too Brief")
                response.headers.add("Min-Expires", str(self.limits.minimum))
                return response
            existing = table.get(str(c.uri))
            if existing is not None and existing.call_id == cid and seq <= existing.cseq:
                return make_response(request, 500, "Out of order CSeq")
            checked.append((c, min(expires, self.limits.maximum)))
        for c, expires in checked:
            contact = str(c.uri)
            existing = table.get(contact)
            instance = (c.params.get("+sip.instance") or "").strip('"') or None
            if expires == 0:
                if existing is not None:
                    del table[contact]
                    self._changed(existing, True)
                continue
            if instance:
                for other in [b for b in table.values()
                              if b.instance == instance and b.contact != contact]:
                    del table[other.contact]
                    self._changed(other, True)
            binding = Binding(
                user=user, contact=contact, instance=instance, peer=source,
                expires_at=now + expires, q=_q(c.params.get("q")), user_agent=user_agent,
                call_id=cid, cseq=seq,
                registered_at=existing.registered_at if existing else now,
                path=path,
            )
            table[contact] = binding
            if existing is None:
                log.info("registered %s at %s from %s (%s)%s", user, contact, source,
                         user_agent or "no User-Agent",
                         f" via Path {', '.join(map(str, path))}" if path else "")
            self._changed(binding, False)
        if not table:
            self._bindings.pop(user, None)
        return self._ok(request, user, now)

    def _ok(self, request: Request, user: str, now: float) -> Response:
        response = make_response(request, 200)
        for b in self.contacts(user, now):
            params = f";expires={max(0, round(b.expires_at - now))}"
            if b.instance:
                params += f';+sip.instance="{b.instance}"'
            response.headers.add("Contact", f"<{b.contact}>{params}")
        response.headers.add("Date", _http_date(now))
        response.headers.add("Supported", "path")
        if _supports(request, "path"):
            # RFC 3327 §5.3: the Path as stored, in order, when the UA can read it
            for value in request.headers.get_all("Path"):
                response.headers.add("Path", value)
        return response

    def _index(self, binding: Binding, *, removed: bool) -> None:
        key = (binding.user, binding.contact)
        old = self._peer_of.pop(key, None)
        if old is not None:
            left = self._peers[old] - 1
            if left:
                self._peers[old] = left
            else:
                del self._peers[old]
        if not removed:
            self._peer_of[key] = binding.peer
            self._peers[binding.peer] = self._peers.get(binding.peer, 0) + 1

    def _changed(self, binding: Binding, removed: bool) -> None:
        self._index(binding, removed=removed)
        if removed:
            log.info("unregistered %s at %s", binding.user, binding.contact)
        if self.on_change is not None:
            self.on_change(binding, removed)


def _not_older(incoming: Binding, held: Binding) -> bool:
    """Whether ``incoming`` is the same REGISTER as ``held`` or a later one: by CSeq within
    one Call-ID (RFC 3261 §10.3 step 7), else by expiry (a device that started over)."""
    if incoming.call_id == held.call_id:
        return incoming.cseq >= held.cseq
    return incoming.expires_at >= held.expires_at


def _path(request: Request) -> list[NameAddr]:
    """The REGISTER's Path values, in order (raises :class:`ParseError`)."""
    result: list[NameAddr] = []
    for value in request.headers.get_all("Path"):
        result.extend(parse_name_addr_list(value))
    for hop in result:
        if not isinstance(hop.uri, SipURI) or hop.uri.scheme == "tel":
            raise ParseError(f"not a SIP URI: {hop.uri}")
    return result


def _supports(request: Request, option: str) -> bool:
    return any(tag.strip().lower() == option for value in request.headers.get_all("Supported")
               for tag in value.split(","))


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def _q(value: str | None) -> float:
    try:
        q = float(value) if value is not None else 1.0
    except ValueError:
        return 1.0
    return min(max(q, 0.0), 1.0)


def _http_date(now: float) -> str:
    from email.utils import formatdate

    return formatdate(now, usegmt=True)
