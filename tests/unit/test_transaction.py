"""RFC 3261 §17 transactions with a fake clock: no sockets, no real time."""

from __future__ import annotations

import itertools

import pytest

from sipdial.sip.message import Request, Response, make_response, parse_message
from sipdial.sip.peer import Peer
from sipdial.sip.timers import TimerHeap
from sipdial.sip.transaction import (
    INVITE_CLIENT,
    INVITE_SERVER,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
    AckTimeout,
    CancelReceived,
    IllegalTransition,
    In,
    RequestReceived,
    ResponseReceived,
    State,
    TimerConfig,
    TransactionLayer,
    TransactionTimeout,
)

UDP = Peer("udp", "127.0.0.1", 5070)
TCP = Peer("tcp", "127.0.0.1", 5070)


def request(method: str = "INVITE", branch: str = "z9hG4bKabc", cseq: int = 1,
            to_tag: str = "") -> Request:
    tag = f";tag={to_tag}" if to_tag else ""
    text = (
        f"{method} sip:201@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:100@127.0.0.1>;tag=f1\r\n"
        f"To: <sip:201@127.0.0.1>{tag}\r\n"
        "Call-ID: call-1@test\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:100@127.0.0.1:5070>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def response_to(req: Request, status: int, to_tag: str = "t1") -> Response:
    return make_response(req, status, to_tag=to_tag if status > 100 else None)


class Harness:
    def __init__(self) -> None:
        self.now = 0.0
        self.timers = TimerHeap()
        self.layer = TransactionLayer(self.timers, TimerConfig(t1=0.5, t2=4.0, t4=5.0))

    def advance(self, seconds: float) -> None:
        """Move the fake clock, firing every due timer in order."""
        end = self.now + seconds
        while True:
            deadline = self.timers.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = deadline
            self.timers.run_due(self.now)
        self.now = end

    def sent(self) -> list[bytes]:
        return [data for _peer, data in self.layer.drain_outbox()]


def first_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode()


# ----------------------------------------------------------------- tables


@pytest.mark.parametrize("table", [INVITE_CLIENT, NON_INVITE_CLIENT, INVITE_SERVER,
                                   NON_INVITE_SERVER])
def test_tables_never_leave_terminated_and_have_no_dangling_states(table: dict) -> None:  # type: ignore[type-arg]
    states_with_rows = {state for state, _ in table}
    for (_state, _inp), (nxt, _actions) in table.items():
        assert nxt is State.TERMINATED or nxt in states_with_rows
    assert State.TERMINATED not in states_with_rows


def test_missing_row_raises() -> None:
    h = Harness()
    txn = h.layer.send_request(request("OPTIONS"), UDP, h.now)
    with pytest.raises(IllegalTransition):
        h.layer._apply(txn, In.TIMER_G, h.now, None)


# ----------------------------------------------------------------- INVITE client


def test_invite_client_retransmits_with_doubling_over_udp_until_timer_b() -> None:
    h = Harness()
    h.layer.send_request(request(), UDP, h.now)
    assert len(h.sent()) == 1
    times = []
    while h.now < 32.0:
        h.advance(0.25)
        if h.sent():
            times.append(h.now)
    # Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 (intervals 0.5, 1, 2, 4, 8, 16)
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    events = h.layer.drain_events()
    assert len(events) == 1 and isinstance(events[0], TransactionTimeout)
    assert h.layer.client == {}


def test_invite_client_over_tcp_never_retransmits() -> None:
    h = Harness()
    h.layer.send_request(request(), TCP, h.now)
    h.sent()
    h.advance(31.0)
    assert h.sent() == []
    h.advance(2.0)
    assert isinstance(h.layer.drain_events()[0], TransactionTimeout)


def test_invite_client_provisional_stops_retransmission_and_timer_b() -> None:
    h = Harness()
    inv = request()
    txn = h.layer.send_request(inv, UDP, h.now)
    h.sent()
    h.layer.receive(response_to(inv, 180), UDP, h.now)
    assert txn.state is State.PROCEEDING
    assert [type(e) for e in h.layer.drain_events()] == [ResponseReceived]
    h.advance(120.0)
    assert h.sent() == [] and h.layer.drain_events() == []


def test_invite_client_error_response_is_acked_and_retransmissions_reacked() -> None:
    h = Harness()
    inv = request()
    txn = h.layer.send_request(inv, UDP, h.now)
    h.sent()
    busy = response_to(inv, 486)
    h.layer.receive(busy, UDP, h.now)
    acks = h.sent()
    assert len(acks) == 1 and first_line(acks[0]) == "ACK sip:201@127.0.0.1 SIP/2.0"
    assert b"branch=z9hG4bKabc" in acks[0] and b"CSeq: 1 ACK" in acks[0]
    assert b"tag=t1" in acks[0]
    assert txn.state is State.COMPLETED
    h.layer.receive(busy, UDP, h.now + 1)
    assert len(h.sent()) == 1  # the ACK again, not passed to the TU twice
    assert len([e for e in h.layer.drain_events() if isinstance(e, ResponseReceived)]) == 1
    h.advance(32.0)  # timer D
    assert txn.state is State.TERMINATED


def test_invite_client_2xx_accepted_state_resends_tu_ack() -> None:
    h = Harness()
    inv = request()
    txn = h.layer.send_request(inv, UDP, h.now)
    h.sent()
    ok = response_to(inv, 200)
    h.layer.receive(ok, UDP, h.now)
    assert txn.state is State.ACCEPTED
    assert len(h.layer.drain_events()) == 1
    ack = request("ACK", branch="z9hG4bKack", to_tag="t1")
    h.layer.send_ack(txn, ack, UDP)
    assert len(h.sent()) == 1
    h.layer.receive(ok, UDP, h.now + 0.5)  # 2xx retransmission
    again = h.sent()
    assert len(again) == 1 and first_line(again[0]).startswith("ACK")
    assert h.layer.drain_events() == []  # absorbed (RFC 6026)
    h.advance(32.0)  # timer M = 64*T1
    assert txn.state is State.TERMINATED


def test_cancel_waits_for_provisional_response() -> None:
    h = Harness()
    inv = request()
    txn = h.layer.send_request(inv, UDP, h.now)
    h.sent()
    assert h.layer.cancel(txn, h.now) is None  # §9.1: not before a 1xx
    assert h.sent() == []
    h.layer.receive(response_to(inv, 100), UDP, h.now)
    cancels = h.sent()
    assert len(cancels) == 1 and first_line(cancels[0]).startswith("CANCEL ")
    assert b"branch=z9hG4bKabc" in cancels[0] and b"CSeq: 1 CANCEL" in cancels[0]


def test_cancelled_invite_without_final_response_is_given_up_64t1_after_the_cancel() -> None:
    """§9.1: the CANCEL was answered but the 487 never comes (a proxy that lost the branch):
    64*T1 after the CANCEL the INVITE transaction ends with a timeout for the TU instead of
    staying in Proceeding for ever."""
    h = Harness()
    inv = request()
    txn = h.layer.send_request(inv, UDP, h.now)
    h.layer.receive(response_to(inv, 180), UDP, h.now)
    h.advance(10.0)
    h.layer.drain_events()
    h.layer.cancel(txn, h.now)
    h.advance(31.9)
    assert txn.state is State.PROCEEDING
    h.advance(0.2)
    assert txn.state is State.TERMINATED
    events = h.layer.drain_events()
    assert any(isinstance(e, TransactionTimeout) and e.txn is txn for e in events)


def test_cancelled_invite_answered_in_time_ignores_the_cancel_timer() -> None:
    h = Harness()
    inv = request()
    txn = h.layer.send_request(inv, UDP, h.now)
    h.layer.receive(response_to(inv, 180), UDP, h.now)
    h.layer.cancel(txn, h.now)
    h.layer.receive(response_to(inv, 487), UDP, h.now + 1)
    h.layer.drain_events()
    h.advance(40.0)
    assert txn.state is State.TERMINATED
    assert not any(isinstance(e, TransactionTimeout) and e.txn is txn
                   for e in h.layer.drain_events())


# ----------------------------------------------------------------- non-INVITE client


def test_non_invite_client_backoff_caps_at_t2_and_times_out_at_64t1() -> None:
    h = Harness()
    h.layer.send_request(request("OPTIONS"), UDP, h.now)
    h.sent()
    times = []
    while h.now < 33.0:
        h.advance(0.25)
        if h.sent():
            times.append(h.now)
    # Timer E: 0.5, 1.5, 3.5, 7.5, 11.5, 15.5 ... capped at T2 = 4 s
    assert times[:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert all(b - a == 4.0 for a, b in itertools.pairwise(times[3:]))
    assert isinstance(h.layer.drain_events()[0], TransactionTimeout)


def test_non_invite_client_final_response_then_timer_k() -> None:
    h = Harness()
    req = request("OPTIONS")
    txn = h.layer.send_request(req, UDP, h.now)
    h.layer.receive(response_to(req, 200), UDP, 0.1)
    assert txn.state is State.COMPLETED
    h.advance(4.9)
    assert txn.state is State.COMPLETED
    h.advance(0.2)
    assert txn.state is State.TERMINATED


# ----------------------------------------------------------------- servers


def test_invite_server_sends_100_absorbs_retransmission_and_repeats_response() -> None:
    h = Harness()
    inv = request()
    h.layer.receive(inv, UDP, h.now)
    events = h.layer.drain_events()
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    txn = events[0].txn
    assert txn is not None
    assert h.sent() == []  # the TU has not handled it yet
    assert h.layer.drain_events() == []  # ... now it has, and did not answer: 100
    assert first_line(h.sent()[0]) == "SIP/2.0 100 Trying"
    h.layer.receive(inv, UDP, h.now + 0.5)
    assert h.layer.drain_events() == []
    assert first_line(h.sent()[0]) == "SIP/2.0 100 Trying"


def test_invite_server_error_retransmitted_until_ack_then_confirmed() -> None:
    h = Harness()
    inv = request()
    h.layer.receive(inv, UDP, h.now)
    txn = h.layer.drain_events()[0].txn  # type: ignore[union-attr]
    assert txn is not None
    h.sent()
    h.layer.respond(txn, response_to(inv, 486), h.now)
    assert len(h.sent()) == 1
    h.advance(0.5)  # timer G
    assert len(h.sent()) == 1
    h.layer.receive(request("ACK", to_tag="t1"), UDP, h.now)
    assert txn.state is State.CONFIRMED
    assert h.layer.drain_events() == []  # ACK for non-2xx is absorbed
    h.advance(10.0)
    assert h.sent() == []
    assert txn.state is State.TERMINATED


def test_invite_server_timer_h_reports_missing_ack() -> None:
    h = Harness()
    inv = request()
    h.layer.receive(inv, UDP, h.now)
    txn = h.layer.drain_events()[0].txn  # type: ignore[union-attr]
    assert txn is not None
    h.layer.respond(txn, response_to(inv, 486), h.now)
    h.advance(33.0)
    assert any(isinstance(e, TransactionTimeout) for e in h.layer.drain_events())


def test_2xx_retransmitted_until_ack_for_2xx_arrives() -> None:
    h = Harness()
    inv = request()
    h.layer.receive(inv, UDP, h.now)
    txn = h.layer.drain_events()[0].txn  # type: ignore[union-attr]
    assert txn is not None
    h.sent()
    h.layer.respond(txn, response_to(inv, 200), h.now)
    h.sent()
    h.advance(1.6)  # 0.5, 1.5
    assert len(h.sent()) == 2
    ack = request("ACK", branch="z9hG4bKnew", to_tag="t1")
    h.layer.receive(ack, UDP, h.now)
    events = h.layer.drain_events()
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    assert events[0].txn is None and events[0].request.method == "ACK"
    h.advance(40.0)
    assert h.sent() == []
    assert not any(isinstance(e, AckTimeout) for e in h.layer.drain_events())


def test_2xx_never_acked_gives_ack_timeout() -> None:
    h = Harness()
    inv = request()
    h.layer.receive(inv, UDP, h.now)
    txn = h.layer.drain_events()[0].txn  # type: ignore[union-attr]
    assert txn is not None
    h.layer.respond(txn, response_to(inv, 200), h.now)
    h.advance(33.0)
    assert [type(e) for e in h.layer.drain_events()] == [AckTimeout]


def test_cancel_matches_pending_invite_and_unknown_cancel_gets_481() -> None:
    h = Harness()
    inv = request()
    h.layer.receive(inv, UDP, h.now)
    h.layer.drain_events()
    h.layer.drain_events()  # the TU has handled the INVITE: 100 Trying
    h.sent()
    h.layer.receive(request("CANCEL"), UDP, h.now)
    assert first_line(h.sent()[0]) == "SIP/2.0 200 OK"
    events = h.layer.drain_events()
    assert len(events) == 1 and isinstance(events[0], CancelReceived)
    h.layer.receive(request("CANCEL", branch="z9hG4bKother"), UDP, h.now)
    assert first_line(h.sent()[0]).startswith("SIP/2.0 481")


def test_non_invite_server_absorbs_retransmissions_and_repeats_final() -> None:
    h = Harness()
    bye = request("BYE", to_tag="t1", cseq=2)
    h.layer.receive(bye, UDP, h.now)
    txn = h.layer.drain_events()[0].txn  # type: ignore[union-attr]
    assert txn is not None
    h.layer.receive(bye, UDP, h.now)  # retransmission in Trying: discarded
    assert h.sent() == [] and h.layer.drain_events() == []
    h.layer.respond(txn, response_to(bye, 200), h.now)
    assert len(h.sent()) == 1
    h.layer.receive(bye, UDP, h.now + 1)
    assert len(h.sent()) == 1
    h.advance(32.0)
    assert txn.state is State.TERMINATED


def test_one_heap_entry_per_pending_timer_not_per_retransmission() -> None:
    h = Harness()
    for i in range(100):
        h.layer.send_request(request("OPTIONS", branch=f"z9hG4bK{i}"), UDP, h.now)
    assert len(h.timers) == 200  # timer E and timer F for each


# --- lingering transactions keep only what retransmissions need --------------------------------


class Leg:
    """A TU owner object (weak-referenceable, like the call legs)."""


def test_lingering_server_transactions_drop_messages_and_hold_owner_weakly() -> None:
    import gc
    import weakref

    h = Harness()
    bye = request("BYE", to_tag="t1", cseq=2)
    h.layer.receive(bye, UDP, h.now)
    txn = h.layer.drain_events()[0].txn  # type: ignore[union-attr]
    assert txn is not None
    leg = Leg()
    txn.owner = leg
    h.layer.respond(txn, response_to(bye, 200), h.now)
    assert txn.request is bye and txn.last_response is not None  # TU may still look
    assert h.layer.drain_events() == [] and h.layer.drain_events() == []  # TU handled all
    with pytest.raises(RuntimeError):
        txn.request  # noqa: B018
    assert txn.last_response is None and txn.answered and txn.method == "BYE"
    assert txn.owner is leg  # still there while something else holds it
    ref = weakref.ref(leg)
    del leg
    gc.collect()
    assert ref() is None and txn.owner is None
    h.sent()
    h.layer.receive(bye, UDP, h.now + 1)  # retransmission: the same bytes again
    again = h.sent()
    assert len(again) == 1 and first_line(again[0]) == "SIP/2.0 200 OK"
    h.advance(32.0)
    assert txn.state is State.TERMINATED


def test_accepted_invite_server_keeps_request_and_still_reports_ack_timeout() -> None:
    h = Harness()
    inv = request()
    h.layer.receive(inv, UDP, h.now)
    txn = h.layer.drain_events()[0].txn  # type: ignore[union-attr]
    assert txn is not None
    leg = Leg()
    txn.owner = leg
    h.layer.respond(txn, response_to(inv, 200), h.now)
    h.layer.drain_events()
    h.layer.drain_events()
    assert txn.request is inv and txn.owner is leg and txn.last_response is None
    h.layer.respond(txn, response_to(inv, 200), h.now)  # the TU may still send a 2xx
    h.advance(33.0)
    events = h.layer.drain_events()
    assert [type(e) for e in events] == [AckTimeout]
    assert events[0].txn.owner is leg  # type: ignore[union-attr]


def test_error_to_invite_keeps_acking_retransmissions_after_slimming() -> None:
    h = Harness()
    inv = request()
    h.layer.receive(inv, UDP, h.now)
    txn = h.layer.drain_events()[0].txn  # type: ignore[union-attr]
    assert txn is not None
    h.layer.respond(txn, response_to(inv, 486), h.now)
    h.layer.drain_events()
    h.layer.drain_events()
    h.sent()
    h.layer.receive(inv, UDP, h.now + 0.1)  # INVITE retransmission: 486 again
    assert [first_line(d) for d in h.sent()] == ["SIP/2.0 486 Busy Here"]
    h.layer.receive(request("CANCEL"), UDP, h.now + 0.2)  # answered: no CancelReceived
    assert first_line(h.sent()[0]) == "SIP/2.0 200 OK" and h.layer.drain_events() == []
    h.layer.receive(request("ACK", to_tag="t1"), UDP, h.now + 0.3)
    assert txn.state is State.CONFIRMED and h.layer.drain_events() == []
    h.advance(6.0)
    assert txn.state is State.TERMINATED


def test_completed_non_invite_client_drops_request_and_owner() -> None:
    h = Harness()
    opt = request("OPTIONS", branch="z9hG4bKo1")
    txn = h.layer.send_request(opt, UDP, h.now)
    leg = Leg()
    txn.owner = leg
    h.layer.receive(response_to(opt, 200), UDP, h.now)
    (event,) = h.layer.drain_events()
    assert isinstance(event, ResponseReceived) and event.txn.request is opt
    assert event.txn.owner is leg
    h.layer.drain_events()
    with pytest.raises(RuntimeError):
        txn.request  # noqa: B018
    assert txn.method == "OPTIONS" and txn.owner is leg
    h.advance(5.0)
    assert txn.state is State.TERMINATED


def test_stateless_final_response_is_sent_once_and_forgets_the_transaction() -> None:
    # challenges to unauthenticated requests: no Timer G amplification towards spoofers
    h = Harness()
    inv = request()
    h.layer.receive(inv, UDP, h.now)
    txn = h.layer.drain_events()[0].txn  # type: ignore[union-attr]
    assert txn is not None
    h.sent()
    h.layer.respond_stateless(txn, response_to(inv, 407))
    assert [first_line(d) for d in h.sent()] == ["SIP/2.0 407 Proxy Authentication Required"]
    assert h.layer.server == {}
    h.advance(40.0)
    assert h.sent() == [] and h.layer.drain_events() == []


# --- 100 Trying only for an INVITE the TU did not answer at once (issue 7 §4) ------------------


def test_no_100_before_a_challenge_so_the_client_keeps_retransmitting() -> None:
    """A challenge is sent once, statelessly (no amplification towards a spoofed source).
    Had a 100 gone first, the client would stop its Timer A and a lost 407 would end the
    call; without it every retransmitted INVITE is challenged again."""
    h = Harness()
    inv = request()
    challenged = 0
    for arrival in (0.0, 0.5, 1.5):  # the INVITE and two Timer A retransmissions
        h.layer.receive(inv, UDP, arrival)
        (event,) = h.layer.drain_events()
        assert isinstance(event, RequestReceived) and event.txn is not None
        h.layer.respond_stateless(event.txn, response_to(inv, 407))
        assert h.layer.drain_events() == []
        assert [first_line(d) for d in h.sent()] == [
            "SIP/2.0 407 Proxy Authentication Required"]  # no 100, one 407 per INVITE
        challenged += 1
        assert h.layer.server == {}  # nothing kept for a source that may be spoofed
    assert challenged == 3
    h.advance(40.0)
    assert h.sent() == []  # and nothing retransmitted


def test_no_100_when_the_tu_answers_at_once_and_100_when_it_does_not() -> None:
    h = Harness()
    ringing, later = request(branch="z9hG4bKr"), request(branch="z9hG4bKl")
    h.layer.receive(ringing, UDP, h.now)
    h.layer.receive(later, UDP, h.now)
    events = h.layer.drain_events()
    assert len(events) == 2
    txn = events[0].txn  # type: ignore[union-attr]
    assert txn is not None
    h.layer.respond(txn, response_to(ringing, 180), h.now)  # the TU answers one of them
    assert h.layer.drain_events() == []
    sent = [(first_line(d), d) for d in h.sent()]
    assert [line for line, _ in sent] == ["SIP/2.0 180 Ringing", "SIP/2.0 100 Trying"]
    assert b"branch=z9hG4bKl" in sent[1][1]
    h.layer.drain_events()
    assert h.sent() == []  # one 100, not one per drain


def test_non_invite_requests_get_no_automatic_100() -> None:
    h = Harness()
    h.layer.receive(request("OPTIONS"), UDP, h.now)
    h.layer.drain_events()
    h.layer.drain_events()
    assert h.sent() == []
