"""The user-agent core (TU) answering what needs no call logic, with bytes and a fake clock."""

from __future__ import annotations

import pytest

from sipdial.sip.dialog import Dialog
from sipdial.sip.message import Request, Response
from sipdial.sip.peer import Peer
from sipdial.sip.transaction import OwnerEvent
from sipdial.ua import ALLOW, DialogAck, DialogEvent, DialogRequest
from tests.unit.simnet import SimNet, parse_request, parse_response

PHONE = Peer("udp", "127.0.0.1", 5070)


def request(method: str, *, uri: str = "sip:201@127.0.0.1", branch: str = "z9hG4bK-ua1",
            to_tag: str | None = None, cseq: int = 1, call_id: str = "ua-1@phone",
            extra: str = "", from_tag: str = "f1") -> bytes:
    tag = f";tag={to_tag}" if to_tag else ""
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:202@127.0.0.1>;tag={from_tag}\r\n"
        f"To: <sip:201@127.0.0.1>{tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:202@127.0.0.1:5070>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.fixture
def net() -> SimNet:
    return SimNet()


def final(net: SimNet) -> Response:
    """The final response sipdial sent the phone (100 Trying skipped)."""
    responses = [parse_response(d) for d in net.sent_to(PHONE)]
    finals = [r for r in responses if r.status >= 200]
    assert len(finals) == 1, [(r.status, r.reason) for r in responses]
    return finals[0]


def allow_set(response: Response) -> set[str]:
    return {m.strip() for m in response.headers.get_all("Allow")}


def test_options_200_with_allow(net: SimNet) -> None:
    net.deliver(request("OPTIONS"), PHONE)
    response = final(net)
    assert response.status == 200
    assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REFER", "NOTIFY"} <= allow_set(response)
    assert response.headers.get("Accept") == "application/sdp"
    assert "replaces" in (response.headers.get("Supported") or "")
    assert response.headers.get("Server") == net.config.sip.user_agent


def test_unknown_method_501(net: SimNet) -> None:
    net.deliver(request("FOOBAR"), PHONE)
    response = final(net)
    assert response.status == 501
    assert allow_set(response) == {m.strip() for m in ALLOW.split(",")}


@pytest.mark.parametrize("method", ["PUBLISH", "MESSAGE", "SUBSCRIBE", "PRACK"])
def test_known_but_not_allowed_405_with_allow(net: SimNet, method: str) -> None:
    net.deliver(request(method), PHONE)
    response = final(net)
    assert response.status == 405
    assert method not in allow_set(response)
    assert "INVITE" in allow_set(response)


@pytest.mark.parametrize("method", ["BYE", "NOTIFY", "REFER", "INFO", "UPDATE"])
def test_in_dialog_request_with_unknown_to_tag_481(net: SimNet, method: str) -> None:
    extra = "Event: refer\r\nSubscription-State: active\r\n" if method == "NOTIFY" else ""
    net.deliver(request(method, to_tag="nosuchtag", extra=extra), PHONE)
    assert final(net).status == 481


@pytest.mark.parametrize("method", ["BYE", "NOTIFY", "INFO"])
def test_dialog_request_without_to_tag_481(net: SimNet, method: str) -> None:
    net.deliver(request(method), PHONE)
    assert final(net).status == 481


def test_reinvite_with_unknown_to_tag_481(net: SimNet) -> None:
    net.deliver(request("INVITE", to_tag="gone"), PHONE)
    assert final(net).status == 481


def test_ack_for_unknown_dialog_is_ignored(net: SimNet) -> None:
    net.deliver(request("ACK", to_tag="gone"), PHONE)
    assert net.log == []


def test_cancel_without_invite_481(net: SimNet) -> None:
    net.deliver(request("CANCEL"), PHONE)
    assert final(net).status == 481


def test_require_unknown_extension_420_with_unsupported(net: SimNet) -> None:
    net.deliver(request("OPTIONS", extra="Require: foo, replaces\r\n"), PHONE)
    response = final(net)
    assert response.status == 420
    assert response.headers.get_all("Unsupported") == ["foo"]


def test_require_supported_extension_is_fine(net: SimNet) -> None:
    net.deliver(request("OPTIONS", extra="Require: replaces\r\n"), PHONE)
    assert final(net).status == 200


def test_unknown_uri_scheme_416(net: SimNet) -> None:
    net.deliver(request("OPTIONS", uri="urn:service:sos"), PHONE)
    assert final(net).status == 416


def test_unknown_uri_scheme_invite_416(net: SimNet) -> None:
    net.deliver(request("INVITE", uri="http://example.com/x"), PHONE)
    assert final(net).status == 416


def test_tel_uri_is_understood(net: SimNet) -> None:
    net.deliver(request("OPTIONS", uri="tel:+4930123"), PHONE)
    assert final(net).status == 200


def test_max_forwards_zero_invite_483(net: SimNet) -> None:
    data = request("INVITE").replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    net.deliver(data, PHONE)
    assert final(net).status == 483


def test_unauthenticated_invite_gets_its_407_without_100_each_time_it_comes(
        net: SimNet) -> None:
    """No 100 before the challenge: the phone's Timer A goes on retransmitting the INVITE
    until a 407 gets through, and every copy is challenged again (issue 7 §4)."""
    for _ in range(3):
        net.deliver(request("INVITE"), PHONE)
        statuses = [parse_response(d).status for d in net.sent_to(PHONE)]
        assert statuses == [407]
    assert net.endpoint.txns.server == {}


class Owner:
    """A minimal dialog owner (what a call leg implements: sipdial.ua.LegOwner)."""

    def __init__(self, net: SimNet) -> None:
        self.net = net
        self.requests: list[Request] = []

    def transaction_event(self, event: OwnerEvent, now: float) -> None:
        pass

    def dialog_event(self, event: DialogEvent, now: float) -> None:
        match event:
            case DialogAck(ack=ack):
                self.requests.append(ack)
            case DialogRequest(request=request, txn=txn):
                self.requests.append(request)
                self.net.endpoint.reply(txn, 200, now)


def make_dialog(net: SimNet) -> Owner:
    invite = parse_request(request("INVITE", cseq=5))
    dialog = Dialog.from_uas(invite, "lt1", PHONE, "<sip:sipdial@127.0.0.1:5060>")
    owner = Owner(net)
    net.ua.add_dialog(dialog, owner)
    return owner


def test_in_dialog_request_reaches_owner(net: SimNet) -> None:
    owner = make_dialog(net)
    net.deliver(request("INFO", to_tag="lt1", cseq=6), PHONE)
    assert final(net).status == 200
    assert [r.method for r in owner.requests] == ["INFO"]


def test_in_dialog_cseq_out_of_order_500(net: SimNet) -> None:
    owner = make_dialog(net)
    net.deliver(request("INFO", to_tag="lt1", cseq=7, branch="z9hG4bK-i7"), PHONE)
    assert final(net).status == 200
    net.deliver(request("INFO", to_tag="lt1", cseq=6, branch="z9hG4bK-i6"), PHONE)
    response = final(net)
    assert response.status == 500
    net.deliver(request("INFO", to_tag="lt1", cseq=7, branch="z9hG4bK-i7b"), PHONE)
    assert final(net).status == 500  # equal is out of order too
    assert len(owner.requests) == 1


def test_in_dialog_ack_reaches_owner_without_response(net: SimNet) -> None:
    owner = make_dialog(net)
    net.deliver(request("ACK", to_tag="lt1", cseq=5, branch="z9hG4bK-ack"), PHONE)
    assert net.sent_to(PHONE) == []
    assert [r.method for r in owner.requests] == ["ACK"]


def test_dropped_dialog_gives_481(net: SimNet) -> None:
    owner = make_dialog(net)
    net.ua.drop_dialog(next(iter(net.ua.dialogs.values()))[0])
    net.deliver(request("BYE", to_tag="lt1", cseq=6), PHONE)
    assert final(net).status == 481
    assert owner.requests == []


def test_identifiers_are_unique() -> None:
    net = SimNet()
    tags = {net.ua.new_tag() for _ in range(100)}
    ids = {net.ua.new_call_id() for _ in range(100)}
    assert len(tags) == 100 and len(ids) == 100
