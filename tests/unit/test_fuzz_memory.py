"""What a flood of junk requests leaves behind (issue 7 §6, memory retention).

loadtest/fuzz_sip.py showed that after a parser fuzz sipdial's live data returns to where it
started, but its RSS does not: at the fuzz's peak every rejected request lingered in a server
transaction for 64*T1 (32 s) to absorb retransmissions, ~1.7 KB each (thousands per second
of junk), and the allocator keeps that high-water mark. Rejections of non-INVITE requests
and OPTIONS answers over UDP are now sent statelessly (RFC 3261 §8.2.7): a retransmission
is answered again, identically, and nothing lingers."""

from __future__ import annotations

import gc

from sipdial.sip import Peer
from tests.unit.simnet import SimNet


def request(method: str, n: int, *, to_tag: str = "") -> bytes:
    return (
        f"{method} sip:999@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-junk{n};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:x@192.0.2.1>;tag=f{n}\r\n"
        f"To: <sip:999@127.0.0.1>{to_tag}\r\n"
        f"Call-ID: junk-{n}@192.0.2.1\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_rejected_requests_and_options_leave_no_transaction_behind() -> None:
    net = SimNet()
    kinds = [("BYE", ";tag=x"), ("SUBSCRIBE", ""), ("CANCEL", ""), ("OPTIONS", ""),
             ("FROB", ""), ("INFO", ";tag=x")]
    for n in range(600):
        method, tag = kinds[n % len(kinds)]
        net.deliver(request(method, n, to_tag=tag), Peer("udp", "192.0.2.1", 5070 + n % 50))
    assert len(net.endpoint.txns.server) == 0
    assert len(net.timers) == 0  # no Timer J waiting either


def test_a_retransmitted_rejected_request_gets_the_same_answer_again() -> None:
    net = SimNet()
    peer = Peer("udp", "192.0.2.1", 5070)
    bye = request("BYE", 1, to_tag=";tag=x")
    net.deliver(bye, peer)
    first = net.sent_to(peer)
    net.advance(0.5)
    net.deliver(bye, peer)  # the 481 was lost: the client retransmits
    again = net.sent_to(peer)
    assert len(first) == len(again) == 1
    assert first[0].startswith(b"SIP/2.0 481 ") and again[0].startswith(b"SIP/2.0 481 ")
    # the same To tag both times: one answer, as a transaction would have repeated it
    tag = [line for line in first[0].split(b"\r\n") if line.startswith(b"To:")]
    assert tag == [line for line in again[0].split(b"\r\n") if line.startswith(b"To:")]


def test_over_tcp_and_for_invites_the_transactions_stay_stateful() -> None:
    net = SimNet()
    net.deliver(request("INVITE", 7), Peer("udp", "192.0.2.1", 5070))
    assert len(net.endpoint.txns.server) == 1  # a rejected INVITE still waits for its ACK


def test_malformed_datagrams_leave_no_reference_cycles() -> None:
    """A ParseError kept in a local of the frame its own traceback holds made a cycle per
    malformed datagram; with ``sipdial serve``'s GC threshold (50,000) they piled up ~10 MiB
    before each collection, and the freed memory stayed pinned (RSS did not come back)."""
    net = SimNet()
    peer = Peer("udp", "192.0.2.1", 5070)
    bad = [
        request("OPTIONS", 1).replace(b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS"),
        request("BYE", 2).replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1),
        request("INFO", 3).replace(b"Content-Length: 0", b"Content-Length: 99"),
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\nCSeq: y\r\n\r\n",
    ]
    net.deliver(bad[0], peer)  # first use: lazy imports, caches
    gc.collect()
    gc.disable()
    try:
        for n in range(200):
            net.deliver(bad[n % len(bad)], peer)
        net.sent_to(peer)
        assert gc.collect() == 0
    finally:
        gc.enable()
