"""A simulated network for unit tests: the real sans-IO SIP stack and call engine, driven with
bytes and a fake clock. No sockets, no real time, deterministic.

:class:`SimNet` builds the stack with :func:`sipdial.app.build_core`, as the app does (with
:class:`FakeStore`, UDP and TCP on 127.0.0.1:5060), and :meth:`SimNet.pump` is the transport
driver's loop: drain events -> ``core.handle`` -> drain outbox, until quiet. What sipdial
sends is queued per destination :class:`Peer`; :meth:`SimNet.advance` moves the clock forward
firing timers in deadline order.

:class:`Phone` is a scripted SIP device at one address: it builds requests and responses as
bytes (replies with the real :func:`make_response`), answers digest challenges with
:func:`answer_challenge` and reads what sipdial sent it.
"""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from typing import Any

from twisted.internet.defer import Deferred, succeed

from sipdial.api import CallsApi
from sipdial.app import build_core
from sipdial.calls import CallRequest, MediaPort, Mode, PromptSource, ReferralWatch, Resolver
from sipdial.config import Config, parse_config
from sipdial.contacts import ContactLookup
from sipdial.events.names import is_missed
from sipdial.sip import (
    Message,
    Peer,
    Request,
    Response,
    answer_challenge,
    call_id,
    cseq,
    from_,
    make_response,
    parse_challenges,
    parse_message,
    parse_name_addr_list,
    preferred_challenge,
    to,
    top_via,
)
from sipdial.store import CallEvent, CallRecord, RegistrationRecord, WriteReport

START = 1_700_000_000.0
SIPDIAL_UDP = Peer("udp", "127.0.0.1", 5060)
MEDIA = ("127.0.0.1", 40000)

BASE_CONFIG = """
[sip]
listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
domain = "127.0.0.1"

[http]
listen = "127.0.0.1:8080"

[store]
url = "sqlite:///:memory:"

[api]
tokens = {{ "admin" = "*" }}

[[users]]
id = "201"
password = "secret201"
name = "Alice"
auto_answer = {auto_answer}

[[users]]
id = "202"
password = "secret202"
name = "Bob"

[[routes]]
match = "^\\\\+?[0-9]+$"
uri = "sip:{{number}}@127.0.0.1:5080"

[calls]
user_answer_timeout = {user_answer_timeout}
target_answer_timeout = {target_answer_timeout}
refer_timeout = {refer_timeout}
max_concurrent = {max_concurrent}
"""


def make_config(*, auto_answer: bool = True, user_answer_timeout: float = 30.0,
                target_answer_timeout: float = 60.0, refer_timeout: float = 32.0,
                extra_users: range = range(0), max_concurrent: int = 2000) -> Config:
    """The unit tests' and benchmarks' configuration: users 201 and 202, every number routed
    to 127.0.0.1:5080; ``extra_users`` adds users with ids from the range (password
    ``pw<id>``, auto-answer on)."""
    text = BASE_CONFIG.format(
        auto_answer="true" if auto_answer else "false",
        user_answer_timeout=user_answer_timeout,
        target_answer_timeout=target_answer_timeout,
        refer_timeout=refer_timeout,
        max_concurrent=max_concurrent)
    text += "".join(f'\n[[users]]\nid = "{uid}"\npassword = "pw{uid}"\nname = "User {uid}"\n'
                    "auto_answer = true\n" for uid in extra_users)
    return parse_config(text)


class FakeStore:
    """In-memory stand-in for :class:`sipdial.store.sqlite.SqliteStore`."""

    def __init__(self) -> None:
        self.calls: dict[str, CallRecord] = {}
        self.events: dict[str, list[CallEvent]] = defaultdict(list)
        self.registrations: dict[tuple[str, str], RegistrationRecord] = {}
        self.deleted: list[tuple[str, str]] = []
        self.changes: list[tuple[str, str, bool]] = []  # (user, contact, removed)

    def save_call(self, call: CallRecord) -> None:
        self.calls[call.id] = call

    def add_event(self, call_id: str, event: CallEvent) -> None:
        self.events[call_id].append(event)

    def get_call(self, call_id: str) -> Deferred[CallRecord | None]:
        return succeed(self.calls.get(call_id))

    def when_committed(self) -> Deferred[WriteReport]:
        return succeed(WriteReport())  # in memory: every write is "committed" at once

    def list_calls(self, *, user: str | None = None, state: str | None = None,
                   limit: int = 100, direction: str | None = None, missed: bool = False,
                   since: float | None = None, before: float | None = None
                   ) -> Deferred[list[CallRecord]]:
        found = [c for c in self.calls.values()
                 if (user is None or c.user == user) and (state is None or c.state == state)
                 and (direction is None or c.direction == direction)
                 and (not missed or (c.state == "ended" and is_missed(
                     c.cause, c.direction, any(e.state == "connected" for e in c.events))))
                 and (since is None or c.created_at >= since)
                 and (before is None or c.created_at < before)]
        return succeed(found[:limit])

    def save_registration(self, reg: RegistrationRecord) -> None:
        self.registrations[(reg.user, reg.contact)] = reg
        self.changes.append((reg.user, reg.contact, False))

    def delete_registration(self, user: str, contact: str) -> None:
        self.registrations.pop((user, contact), None)
        self.deleted.append((user, contact))
        self.changes.append((user, contact, True))


def parse(data: bytes) -> Message:
    return parse_message(data)


def parse_request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request), data[:80]
    return message


def parse_response(data: bytes) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response), data[:80]
    return message


class SimNet:
    def __init__(self, config: Config | None = None, *, now: float = START,
                 media: MediaPort | None = None, prompts: PromptSource | None = None,
                 store: FakeStore | None = None, resolver: Resolver | None = None,
                 referrals: ReferralWatch | None = None,
                 contacts: ContactLookup | None = None) -> None:
        self.config = config or make_config()
        self.now = now
        self.store = store or FakeStore()
        self.published: list[tuple[str, str]] = []
        self.core = build_core(self.config, clock=lambda: self.now, store=self.store,
                               events=self, secret=b"simnet-secret-0123456789abcdef!!",
                               rtp_sinks={4: MEDIA}, media=media, prompts=prompts,
                               load=self, resolver=resolver, referrals=referrals,
                               contacts=contacts)
        core = self.core
        self.timers = core.timers
        self.endpoint = core.endpoint
        self.endpoint.add_local("udp", "127.0.0.1", 5060)
        self.endpoint.add_local("tcp", "127.0.0.1", 5060)
        self.auth = core.auth
        self.registrar = core.registrar
        self.ua = core.ua
        self.calls = core.calls
        self.inbound = core.inbound
        #: the HTTP API's view of the calls (dicts, Deferreds), as the HTTP layer uses it
        self.api = CallsApi(core.calls, core.inbound, self.store, core.registrar,
                            lambda: self.now, upstream=core.upstream)
        self.changes: list[tuple[str, str, bool]] = self.store.changes
        self.is_overloaded = False
        self.queues: dict[Peer, deque[bytes]] = defaultdict(deque)
        self.log: list[tuple[Peer, bytes]] = []
        self._pumping = False
        self._dirty = False
        # as the driver: flush when the TU acts on its own (API command, media digit)
        self.endpoint.set_output_hook(self._wake)
        self.timers.set_change_hook(self._wake)

    # EventSink and LoadGauge for the call service
    def publish(self, record: CallRecord, event: CallEvent) -> None:
        self.published.append((record.id, event.state))

    def overloaded(self) -> bool:
        return self.is_overloaded

    def _wake(self) -> None:
        if not self._pumping:
            self._dirty = True

    def settle(self) -> None:
        """What the driver's end-of-turn flush does: deliver what the TU queued."""
        if self._dirty:
            self._dirty = False
            self.pump()

    def create_call(self, **request: Any) -> CallRecord:
        """Start a call as the HTTP API does (raises CallRefused)."""
        mode = request.pop("mode", None)
        call = self.calls.create(CallRequest(mode=Mode(mode) if mode else None, **request))
        self.settle()
        return call.record

    # ------------------------------------------------------------ the driver loop

    def pump(self) -> None:
        """As :meth:`SipDriver.pump`: events to the TU, outbox to the queues, until quiet.
        Unlike the driver, exceptions are not swallowed: a test sees them."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while True:
                events = self.endpoint.drain_events()
                for event in events:
                    self.core.handle(event, self.now)
                out = self.endpoint.drain_outbox()
                for peer, data in out:
                    self.queues[peer].append(data)
                    self.log.append((peer, data))
                if not events and not out:
                    break
        finally:
            self._pumping = False

    def deliver(self, data: bytes, source: Peer) -> None:
        """Bytes from ``source`` arrive at sipdial now."""
        self.endpoint.receive(data, source, self.now)
        self.pump()

    def advance(self, seconds: float) -> None:
        """Move the clock forward, firing due timers in deadline order."""
        self.settle()
        target = self.now + seconds
        while True:
            deadline = self.timers.next_deadline()
            if deadline is None or deadline > target:
                break
            self.now = max(self.now, deadline)
            self.timers.run_due(self.now)
            self.pump()
        self.now = target

    # ------------------------------------------------------------ what was sent

    def sent_to(self, peer: Peer) -> list[bytes]:
        """Take everything queued for ``peer``."""
        self.settle()
        queue = self.queues[peer]
        items = list(queue)
        queue.clear()
        return items

    def clear(self) -> None:
        for queue in self.queues.values():
            queue.clear()


class Phone:
    """A scripted SIP device at ``peer``, registered (or not) as ``user``."""

    _counter = itertools.count(1)

    def __init__(self, net: SimNet, user: str = "201", password: str | None = "secret201", *,
                 port: int = 5070, transport: str = "udp", host: str = "127.0.0.1",
                 contact_host: str = "192.168.1.10", user_agent: str | None = "Yealink SIP-T46S",
                 instance: str | None = None) -> None:
        self.net = net
        self.user = user
        self.password = password
        self.peer = Peer(transport, host, port)
        self.contact_uri = f"sip:{user}@{contact_host}:{port}" + (
            "" if transport == "udp" else f";transport={transport}")
        self.user_agent = user_agent
        self.instance = instance
        self.n = next(self._counter)
        self._ids = itertools.count(1)
        self.reg_call_id = self.new_id("reg")
        self.reg_cseq = 0
        self.nonce_count = 0

    # ------------------------------------------------------------ identifiers

    def new_id(self, what: str) -> str:
        return f"{what}-{self.n}-{next(self._ids)}@phone"

    def branch(self) -> str:
        return f"z9hG4bK-ph{self.n}-{next(self._ids)}"

    def via(self, *, rport: bool = False, branch: str | None = None) -> str:
        host = self.peer.host
        return (f"SIP/2.0/{self.peer.transport.upper()} {host}:{self.peer.port}"
                f"{';rport' if rport else ''};branch={branch or self.branch()}")

    # ------------------------------------------------------------ I/O

    def send(self, data: bytes | Message) -> None:
        if not isinstance(data, bytes):
            data = data.to_bytes()
        self.net.deliver(data, self.peer)

    def received(self) -> list[Message]:
        self.net.settle()
        return [parse(d) for d in self.net.sent_to(self.peer)]

    def take(self, method_or_status: str | int | None = None) -> Message:
        """The single next message sipdial sent us (optionally checked)."""
        self.net.settle()
        queue = self.net.queues[self.peer]
        assert queue, f"nothing sent to {self.peer}"
        message = parse(queue.popleft())
        if isinstance(method_or_status, str):
            assert isinstance(message, Request) and message.method == method_or_status, \
                _describe(message)
        elif isinstance(method_or_status, int):
            assert isinstance(message, Response) and message.status == method_or_status, \
                _describe(message)
        return message

    def take_request(self, method: str) -> Request:
        message = self.take(method)
        assert isinstance(message, Request)
        return message

    def take_response(self, status: int | None = None) -> Response:
        message = self.take(status)
        assert isinstance(message, Response), _describe(message)
        return message

    def nothing(self) -> bool:
        self.net.settle()
        return not self.net.queues[self.peer]

    def pending(self) -> list[str]:
        self.net.settle()
        return [_describe(parse(d)) for d in self.net.queues[self.peer]]

    # ------------------------------------------------------------ replies

    def reply(self, request: Request, status: int, *, to_tag: str | None = None,
              headers: list[tuple[str, str]] | None = None, body: bytes = b"",
              contact: bool = True) -> Response:
        response = make_response(request, status, to_tag=to_tag)
        if contact and 100 < status < 300:
            response.headers.add("Contact", f"<{self.contact_uri}>")
        for name, value in headers or ():
            response.headers.add(name, value)
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        self.send(response)
        return response

    # ------------------------------------------------------------ REGISTER

    def register_request(self, *, expires: int | None = 3600,
                         contacts: list[str] | None = None,
                         authorization: str | None = None, cseq_number: int | None = None,
                         call_id_value: str | None = None, to_user: str | None = None,
                         extra: list[tuple[str, str]] | None = None) -> bytes:
        if cseq_number is None:
            self.reg_cseq += 1
            cseq_number = self.reg_cseq
        if contacts is None:
            params = f';+sip.instance="{self.instance}"' if self.instance else ""
            contacts = [f"<{self.contact_uri}>{params}"]
        to_user = to_user or self.user
        lines = [
            "REGISTER sip:127.0.0.1 SIP/2.0",
            f"Via: {self.via(rport=True)}",
            "Max-Forwards: 70",
            f"From: <sip:{to_user}@127.0.0.1>;tag=rf{self.n}",
            f"To: <sip:{to_user}@127.0.0.1>",
            f"Call-ID: {call_id_value or self.reg_call_id}",
            f"CSeq: {cseq_number} REGISTER",
        ]
        lines += [f"Contact: {c}" for c in contacts]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if self.user_agent:
            lines.append(f"User-Agent: {self.user_agent}")
        if authorization:
            lines.append(f"Authorization: {authorization}")
        lines += [f"{n}: {v}" for n, v in extra or ()]
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    def authorization(self, challenge_response: Response, method: str, uri: str, *,
                      proxy: bool = False, username: str | None = None,
                      password: str | None = None, qop: bool = True) -> str:
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        challenges = [c for v in challenge_response.headers.get_all(name)
                      for c in parse_challenges(v)]
        challenge = preferred_challenge(challenges)
        assert challenge is not None
        if not qop:  # a pyVoIP-style client: RFC 2069 answer, no qop/nc/cnonce
            challenge = type(challenge)(challenge.realm, challenge.nonce, challenge.algorithm,
                                        (), challenge.opaque)
        self.nonce_count += 1
        credentials = answer_challenge(
            challenge, username=username or self.user,
            password=password if password is not None else (self.password or ""),
            method=method, uri=uri, cnonce=f"cn{self.n}x{self.nonce_count}", nc=1)
        return credentials.to_header()

    def register(self, *, expires: int | None = 3600, contacts: list[str] | None = None,
                 qop: bool = True, extra: list[tuple[str, str]] | None = None) -> Response:
        """REGISTER, answer the 401, return the final response."""
        self.send(self.register_request(expires=expires, contacts=contacts, extra=extra))
        challenge = self.take_response(401)
        auth = self.authorization(challenge, "REGISTER", "sip:127.0.0.1", qop=qop)
        self.send(self.register_request(expires=expires, contacts=contacts,
                                        authorization=auth, extra=extra))
        return self.take_response()

    # ------------------------------------------------------------ requests of our own

    def request(self, method: str, uri: str, *, call_id_value: str, from_tag: str,
                to_value: str, cseq_number: int, from_user: str | None = None,
                to_tag: str | None = None, branch: str | None = None,
                extra: list[tuple[str, str]] | None = None, body: bytes = b"",
                content_type: str | None = None) -> Request:
        tag = f";tag={to_tag}" if to_tag else ""
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: {self.via(branch=branch)}",
            "Max-Forwards: 70",
            f"From: <sip:{from_user or self.user}@127.0.0.1>;tag={from_tag}",
            f"To: {to_value}{tag}",
            f"Call-ID: {call_id_value}",
            f"CSeq: {cseq_number} {method}",
            f"Contact: <{self.contact_uri}>",
        ]
        lines += [f"{n}: {v}" for n, v in extra or ()]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        text = "\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n"
        return parse_request(text.encode() + body)


class PhoneDialog:
    """The phone's side of a dialog that sipdial created by INVITEing the phone."""

    def __init__(self, phone: Phone, invite: Request, local_tag: str) -> None:
        self.phone = phone
        self.call_id = call_id(invite)
        self.local_tag = local_tag
        remote = from_(invite)
        assert remote.tag is not None
        self.remote_tag = remote.tag
        self.local = to(invite)
        self.remote = remote
        contacts = parse_name_addr_list(invite.headers.get("Contact") or "")
        self.remote_target = str(contacts[0].uri)
        self.cseq = 100

    def request(self, method: str, *, extra: list[tuple[str, str]] | None = None,
                body: bytes = b"", content_type: str | None = None,
                cseq_number: int | None = None) -> Request:
        if cseq_number is None:
            self.cseq += 1
            cseq_number = self.cseq
        local = self.local.copy(params={**self.local.params, "tag": self.local_tag})
        p = self.phone
        lines = [
            f"{method} {self.remote_target} SIP/2.0",
            f"Via: {p.via()}",
            "Max-Forwards: 70",
            f"From: {local}",
            f"To: {self.remote}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq_number} {method}",
            f"Contact: <{p.contact_uri}>",
        ]
        lines += [f"{n}: {v}" for n, v in extra or ()]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        text = "\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n"
        return parse_request(text.encode() + body)


def ack_for(invite: Request, response: Response, via: str) -> bytes:
    """An ACK for a non-2xx final response (same transaction: the INVITE's branch)."""
    lines = [
        f"ACK {invite.uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: {invite.headers.get('From')}",
        f"To: {response.headers.get('To')}",
        f"Call-ID: {call_id(invite)}",
        f"CSeq: {cseq(invite).number} ACK",
    ]
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def first_via(message: Message) -> str:
    return message.headers.get_all("Via")[0]


def branch_of(message: Message) -> str:
    return top_via(message).branch or ""


def sdp_answer(host: str = "192.168.1.10", port: int = 30000) -> bytes:
    return (f"v=0\r\no=phone 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n").encode()


def _describe(message: Any) -> str:
    if isinstance(message, Request):
        return f"{message.method} {message.uri}"
    if isinstance(message, Response):
        return f"{message.status} {message.reason} ({cseq(message)})"
    return repr(message)
