"""Which worker owns a SIP message (sipdial.sip.shard): the marks sipdial's identifiers carry
and the routing of raw messages by them. No sockets."""

from __future__ import annotations

import zlib

import pytest

from sipdial.sip import SINGLE, Endpoint, Peer, Referrals, Shard, TimerHeap, parse_message
from sipdial.sip.message import Request

W1 = Shard(1, 4)


def test_a_single_process_marks_nothing_and_routes_nothing() -> None:
    assert not SINGLE.sharded
    assert len(SINGLE.prefix(12)) == 12
    assert SINGLE.owner_of("01abcdef") is None
    assert SINGLE.route(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK01x\r\n\r\n") is None


def test_prefixes_lead_with_the_worker_index_and_are_random_after_it() -> None:
    prefixes = {W1.prefix(8) for _ in range(50)}
    assert all(p.startswith("01") and len(p) == 8 for p in prefixes)
    assert len(prefixes) == 50
    assert Shard(10, 11).prefix(32).startswith("0a")
    assert W1.owner_of("01ffff") == 1
    assert W1.owner_of("07ffff") is None  # no worker 7 of 4
    assert W1.owner_of("zz") is None
    assert W1.owner_of("") is None


@pytest.mark.parametrize("index,count", [(0, 0), (1, 1), (-1, 2), (0, 257)])
def test_impossible_shards_are_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError):
        Shard(index, count)


def test_a_response_goes_to_the_worker_whose_branch_is_on_top() -> None:
    response = (b"SIP/2.0 180 Ringing\r\n"
                b"v: SIP/2.0/UDP 10.0.0.1:5060;rport=5060;branch=z9hG4bK03aa1\r\n"
                b"Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK02bb\r\n"
                b"To: <sip:201@x>;tag=02ff\r\nCall-ID: 00x\r\n\r\nbody;branch=z9hG4bK02")
    assert W1.route(response) == 3
    assert Shard(3, 4).route(response) is None  # its own
    # a comma-joined Via: the first value's branch
    joined = (b"SIP/2.0 200 OK\r\nVIA : SIP/2.0/UDP a;branch=z9hG4bK02q, "
              b"SIP/2.0/UDP b;branch=z9hG4bK03r\r\n\r\n")
    assert W1.route(joined) == 2


def test_an_in_dialog_request_goes_to_the_worker_whose_to_tag_it_carries() -> None:
    bye = (b"BYE sip:sipdial@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP p;branch=z9hG4bK00zz\r\n"
           b"From: <sip:201@x>;tag=00phone\r\nt: \"Sipdial\" <sip:+4930@x>; tag = 02abc\r\n"
           b"Call-ID: 00c\r\nCSeq: 2 BYE\r\n\r\n")
    assert W1.route(bye) == 2  # not the From tag, not the Via
    assert Shard(2, 4).route(bye) is None


def test_the_referred_invite_goes_to_the_worker_of_its_call() -> None:
    invite = (b"INVITE sip:+4930123@10.0.0.1:5070;transport=tcp;x-c2d=03deadbeef SIP/2.0\r\n"
              b"To: <sip:+4930123@10.0.0.1;x-c2d=01nothere>\r\nFrom: <sip:201@x>;tag=02a\r\n"
              b"\r\n")
    assert W1.route(invite) == 3


def test_a_new_invite_its_cancel_and_non_2xx_ack_go_where_the_call_id_hashes() -> None:
    """Not where the kernel happened to deliver them: that changes when a worker stops or
    starts, and a retransmission or CANCEL must find the INVITE's transaction."""
    owners = set()
    for n in range(40):
        cid = f"phone-{n}@10.0.0.7".encode()
        owner = zlib.crc32(cid) % 4
        owners.add(owner)
        for method in (b"INVITE", b"CANCEL", b"ACK"):
            data = (method + b" sip:202@x SIP/2.0\r\nVia: SIP/2.0/UDP p;branch=z9hG4bKa\r\n"
                    b"To: <sip:202@x>\r\ni:  " + cid + b" \r\n\r\n")
            assert W1.route(data) == (None if owner == 1 else owner), (method, cid)
            assert Shard(owner, 4).route(data) is None
    assert owners == {0, 1, 2, 3}
    # a tag or x-c2d wins over the Call-ID; no Call-ID: here
    assert W1.route(b"ACK sip:x SIP/2.0\r\nTo: <sip:x>;tag=03a\r\nCall-ID: q\r\n\r\n") == 3
    assert W1.route(b"INVITE sip:x SIP/2.0\r\nTo: <sip:x>\r\n\r\n") is None
    assert W1.route(b"INVITE sip:x SIP/2.0\r\nCall-ID:\r\n\r\n") is None


def _invite(number: bytes, user: bytes, method: bytes = b"INVITE",
            from_header: bytes = b"From") -> bytes:
    return (method + b" sip:" + number + b"@10.0.0.1:5070 SIP/2.0\r\n"
            + from_header + b": \"Ann\" <sip:" + user + b"@10.0.0.1>;tag=phone\r\n"
            b"To: <sip:" + number + b"@10.0.0.1>\r\nCall-ID: phone-call-1\r\n\r\n")


def test_a_referred_invite_without_x_c2d_goes_to_the_worker_that_waits_for_it() -> None:
    """Some phones drop the Refer-To's parameters: the workers tell each other which of
    them waits for which user's INVITE to which number (sipdial.sip.Referrals)."""
    referrals = Referrals()
    hashed = zlib.crc32(b"phone-call-1") % 4
    waiting = (hashed + 2) % 4  # not where the Call-ID would take it
    assert not referrals
    referrals.add(waiting, "c1", "201", "+4930123")
    invite = _invite(b"+4930123", b"201")
    at = Shard((waiting + 1) % 4, 4)
    assert at.route(invite, referrals) == waiting
    assert at.route(_invite(b"+4930123", b"201", b"CANCEL"), referrals) == waiting
    assert at.route(_invite(b"+4930123", b"201", from_header=b"f"), referrals) == waiting
    assert Shard(waiting, 4).route(invite, referrals) is None  # its own
    # another user, another number, a To tag, an x-c2d: not this rule
    for other in (_invite(b"+4930123", b"202"), _invite(b"+4930999", b"201")):
        assert at.route(other, referrals) == (None if hashed == at.index else hashed)
    tagged = invite.replace(b"To: <sip:+4930123@10.0.0.1>", b"To: <sip:x@y>;tag=03a")
    assert at.route(tagged, referrals) == (None if at.index == 3 else 3)
    marked = invite.replace(b"@10.0.0.1:5070 SIP", b"@10.0.0.1:5070;x-c2d=03ab SIP")
    assert at.route(marked, referrals) == (None if at.index == 3 else 3)
    # gone when the call is done, or when its worker restarted
    referrals.remove("c1")
    assert at.route(invite, referrals) == (None if hashed == at.index else hashed)
    referrals.add(waiting, "c2", "201", "+4930123")
    referrals.add(waiting, "c3", "202", "+4930123")
    assert sorted(referrals.of_worker(waiting)) == [("c2", "201", "+4930123"),
                                                     ("c3", "202", "+4930123")]
    referrals.forget_worker(waiting)
    assert len(referrals) == 0 and at.route(invite, referrals) != waiting


@pytest.mark.parametrize("data", [
    b"REGISTER sip:x SIP/2.0\r\nTo: <sip:201@x>\r\nFrom: <sip:201@x>;tag=03a\r\nCall-ID: r\r\n\r\n",
    b"OPTIONS sip:201@x SIP/2.0\r\nTo: <sip:201@x>\r\nCall-ID: abc\r\n\r\n",
    b"BYE sip:x SIP/2.0\r\nTo: <sip:x>;tag=09a\r\n\r\n",  # no worker 9 of 4
    b"BYE sip:x SIP/2.0\r\nTo: <sip:x>;tag=phone\r\n\r\n",  # not a worker's mark
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP p;branch=z9hG4bKabc\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP p;branch=1234\r\n\r\n",  # RFC 2543 branch
    b"", b"\r\n\r\n", b"\xff\xfe garbage", b"SIP/2.0 ",
])
def test_everything_else_is_handled_where_it_arrived(data: bytes) -> None:
    assert W1.route(data) is None


def test_the_marks_in_the_body_or_past_the_headers_do_not_route() -> None:
    data = (b"MESSAGE sip:x SIP/2.0\r\nTo: <sip:x>\r\nContent-Length: 20\r\n\r\n"
            b"To: <sip:x>;tag=02ab")
    assert W1.route(data) is None


def test_an_endpoint_marks_its_branches_and_tags_so_a_reply_routes_back() -> None:
    """End to end through the sans-IO endpoint: worker 2's request's response, and a
    request in the dialog it answered, both route to worker 2 from any other worker."""
    endpoint = Endpoint(TimerHeap(), shard=Shard(2, 3))
    endpoint.add_local("udp", "10.0.0.1", 5060)
    phone = Peer("udp", "10.0.0.7", 5062)
    via = endpoint.via(phone, endpoint.txns.new_branch())
    request = parse_message(
        f"OPTIONS sip:201@10.0.0.7 SIP/2.0\r\nVia: {via}\r\nFrom: <sip:sipdial@x>;tag=t\r\n"
        "To: <sip:201@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n".encode())
    assert isinstance(request, Request)
    endpoint.send_request(request, phone, 0.0)
    [(_, sent)] = endpoint.drain_outbox()
    response = sent.replace(b"OPTIONS sip:201@10.0.0.7 SIP/2.0", b"SIP/2.0 200 OK", 1)
    assert Shard(0, 3).route(response) == 2

    invite = (b"INVITE sip:sipdial@10.0.0.1 SIP/2.0\r\n"
              b"Via: SIP/2.0/UDP 10.0.0.7:5062;branch=z9hG4bKphone1\r\n"
              b"From: <sip:201@x>;tag=ph\r\nTo: <sip:sipdial@x>\r\nCall-ID: in1\r\n"
              b"CSeq: 1 INVITE\r\nContact: <sip:201@10.0.0.7:5062>\r\nMax-Forwards: 70\r\n"
              b"Content-Length: 0\r\n\r\n")
    endpoint.receive(invite, phone, 0.0)
    [event] = endpoint.drain_events()
    endpoint.reply(event.txn, 486, 0.0)  # type: ignore[attr-defined]
    answer = next(data for _, data in endpoint.drain_outbox() if b" 486 " in data)
    to_line = next(line for line in answer.split(b"\r\n") if line.startswith(b"To:"))
    ack = b"ACK sip:sipdial@10.0.0.1 SIP/2.0\r\n" + to_line + b"\r\n\r\n"
    assert Shard(1, 3).route(ack) == 2
