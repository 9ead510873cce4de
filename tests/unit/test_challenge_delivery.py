"""Challenges under loss without amplification (issue 7 §4), with SimNet and a number for time.

A 407 to an INVITE from an address that never proved itself goes out once, statelessly (a
spoofed source must not get ~11 retransmissions). A registered phone's address has proved
itself (digest REGISTER, and sipdial sends that phone's requests there anyway): its challenge is
sent statefully, retransmitted until the ACK comes, so a lost 407 no longer costs the referred
call when the phone's own INVITE retransmissions are lost too.
"""

from __future__ import annotations

from sipdial.sip import Peer
from tests.unit.simnet import Phone, SimNet, ack_for, first_via, parse_request, parse_response

URI = "sip:+4930123@127.0.0.1"


def _invite(phone: Phone, n: int = 1) -> bytes:
    return phone.request("INVITE", URI, call_id_value=f"c{n}@p", from_tag=f"f{n}",
                         to_value=f"<{URI}>", cseq_number=1).to_bytes()


def _statuses(net: SimNet, peer: Peer) -> list[int]:
    return [parse_response(data).status for data in net.sent_to(peer)]


def test_an_unknown_source_gets_one_challenge_and_no_retransmission() -> None:
    net = SimNet()
    stranger = Phone(net, "201", port=5099, host="192.0.2.7")
    net.deliver(_invite(stranger), stranger.peer)
    assert _statuses(net, stranger.peer) == [407]
    net.advance(40.0)
    assert _statuses(net, stranger.peer) == []
    assert net.endpoint.txns.server == {}


def test_a_registered_phones_challenge_is_retransmitted_until_acked() -> None:
    net = SimNet()
    phone = Phone(net, "201")
    assert phone.register().status == 200
    net.clear()
    invite = _invite(phone)
    net.deliver(invite, phone.peer)
    first = _statuses(net, phone.peer)
    assert first == [407]
    net.advance(0.6)  # Timer G (T1): the 407 again, the phone may have lost the first
    assert _statuses(net, phone.peer) == [407]
    net.advance(1.1)
    assert _statuses(net, phone.peer) == [407]
    # the phone's retransmitted INVITE is absorbed by the transaction: the same 407 again,
    # not a second transaction with a fresh nonce
    net.deliver(invite, phone.peer)
    assert _statuses(net, phone.peer) == [407]
    request = parse_request(invite)
    challenge = parse_response(net.log[-1][1])
    net.deliver(ack_for(request, challenge, first_via(request)), phone.peer)
    net.advance(10.0)
    assert _statuses(net, phone.peer) == []  # ACKed: no more retransmissions
    net.advance(40.0)
    assert net.endpoint.txns.server == {}  # and nothing is left behind


def test_registrar_knows_a_peer_only_while_it_has_a_binding() -> None:
    net = SimNet()
    phone = Phone(net, "201")
    registrar = net.core.registrar
    assert not registrar.knows_peer(phone.peer)
    assert phone.register(expires=60).status == 200
    assert registrar.knows_peer(phone.peer)
    assert not registrar.knows_peer(Peer("udp", "127.0.0.1", phone.peer.port + 1))
    assert phone.register(expires=60).status == 200  # a refresh keeps one entry
    assert phone.register(expires=0).status == 200  # unregistered
    assert not registrar.knows_peer(phone.peer)
    assert phone.register(expires=60).status == 200
    net.advance(61.0)
    registrar.sweep(net.now)  # expired
    assert not registrar.knows_peer(phone.peer)
