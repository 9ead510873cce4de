"""RFC 3261 §12 dialogs: creation from both sides, route sets, CSeq, target refresh, ACK."""

from __future__ import annotations

import pytest

from sipdial.sip.dialog import Dialog
from sipdial.sip.errors import SipError
from sipdial.sip.message import Request, Response, cseq, make_response
from sipdial.sip.peer import Peer
from tests.unit.simnet import parse_request

PEER = Peer("udp", "127.0.0.1", 5070)
OUR_CONTACT = "<sip:sipdial@127.0.0.1:5060>"


def invite(*, cseq_number: int = 1, record_route: list[str] | None = None,
           contact: str | None = "<sip:alice@10.0.0.1:5070>", method: str = "INVITE",
           to_tag: str | None = None, uri: str = "sip:bob@127.0.0.1") -> Request:
    lines = [
        f"{method} {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-d1",
        "Max-Forwards: 70",
        "From: Alice <sip:alice@127.0.0.1>;tag=alicetag",
        "To: Bob <sip:bob@127.0.0.1>" + (f";tag={to_tag}" if to_tag else ""),
        "Call-ID: dlg-1@test",
        f"CSeq: {cseq_number} {method}",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    lines += [f"Record-Route: {rr}" for rr in record_route or ()]
    return parse_request(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())


def ok(request: Request, *, record_route: list[str] | None = None,
       contact: str | None = "<sip:bob@10.0.0.2:5080>") -> Response:
    response = make_response(request, 200, to_tag="bobtag")
    if contact is not None:
        response.headers.add("Contact", contact)
    for rr in record_route or ():
        response.headers.add("Record-Route", rr)
    return response


RR = ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]


def routes(request: Request) -> list[str]:
    return request.headers.get_all("Route")


# ------------------------------------------------------------ creation


def test_from_uac_reverses_record_route() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv, record_route=RR), PEER, OUR_CONTACT)
    assert [str(r) for r in dialog.route_set] == ["<sip:p2.example.com;lr>",
                                                  "<sip:p1.example.com;lr>"]
    bye = dialog.create_request("BYE")
    assert routes(bye) == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]


def test_from_uac_record_route_in_one_header() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv, record_route=[", ".join(RR)]), PEER, OUR_CONTACT)
    assert routes(dialog.create_request("BYE")) == ["<sip:p2.example.com;lr>",
                                                    "<sip:p1.example.com;lr>"]


def test_from_uas_keeps_record_route_order() -> None:
    dialog = Dialog.from_uas(invite(record_route=RR), "ourtag", PEER, OUR_CONTACT)
    assert routes(dialog.create_request("BYE")) == RR


def test_from_uac_identifiers_and_target() -> None:
    inv = invite(cseq_number=7)
    dialog = Dialog.from_uac(inv, ok(inv), PEER, OUR_CONTACT)
    assert dialog.key == ("dlg-1@test", "alicetag", "bobtag")
    assert str(dialog.remote_target) == "sip:bob@10.0.0.2:5080"
    assert dialog.local_seq == 7
    assert dialog.remote_seq is None
    assert dialog.peer == PEER
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:bob@10.0.0.2:5080"
    assert bye.headers.get("From") == "Alice <sip:alice@127.0.0.1>;tag=alicetag"
    assert bye.headers.get("To") == "Bob <sip:bob@127.0.0.1>;tag=bobtag"
    assert bye.headers.get("Call-ID") == "dlg-1@test"
    assert "Via" not in bye.headers  # the endpoint adds it


def test_from_uac_without_contact_targets_request_uri() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv, contact=None), PEER, OUR_CONTACT)
    assert str(dialog.remote_target) == "sip:bob@127.0.0.1"


def test_from_uac_needs_to_tag() -> None:
    inv = invite()
    with pytest.raises(SipError):
        Dialog.from_uac(inv, make_response(inv, 200), PEER, OUR_CONTACT)


def test_from_uas_identifiers_and_target() -> None:
    dialog = Dialog.from_uas(invite(cseq_number=42), "ourtag", PEER, OUR_CONTACT)
    assert dialog.key == ("dlg-1@test", "ourtag", "alicetag")
    assert dialog.remote_seq == 42
    assert str(dialog.remote_target) == "sip:alice@10.0.0.1:5070"
    bye = dialog.create_request("BYE")
    assert bye.headers.get("From") == "Bob <sip:bob@127.0.0.1>;tag=ourtag"
    assert bye.headers.get("To") == "Alice <sip:alice@127.0.0.1>;tag=alicetag"
    assert str(bye.uri) == "sip:alice@10.0.0.1:5070"


def test_from_uas_needs_contact() -> None:
    with pytest.raises(SipError) as info:
        Dialog.from_uas(invite(contact=None), "ourtag", PEER, OUR_CONTACT)
    assert info.value.status == 400


# ------------------------------------------------------------ CSeq


def test_cseq_increments_and_ack_cancel_do_not() -> None:
    inv = invite(cseq_number=1)
    dialog = Dialog.from_uac(inv, ok(inv), PEER, OUR_CONTACT)
    numbers = [cseq(dialog.create_request(m)) for m in ("REFER", "INFO", "BYE")]
    assert [(c.number, c.method) for c in numbers] == [(2, "REFER"), (3, "INFO"), (4, "BYE")]
    ack = dialog.create_ack(1)
    assert (cseq(ack).number, cseq(ack).method) == (1, "ACK")
    assert cseq(dialog.create_request("UPDATE")).number == 5


def test_uas_first_request_after_zero() -> None:
    dialog = Dialog.from_uas(invite(cseq_number=9), "ourtag", PEER, OUR_CONTACT)
    assert cseq(dialog.create_request("BYE")).number == 1


def test_contact_only_on_target_refresh_and_refer() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv), PEER, OUR_CONTACT)
    assert dialog.create_request("REFER").headers.get("Contact") == OUR_CONTACT
    assert dialog.create_request("INVITE").headers.get("Contact") == OUR_CONTACT
    assert "Contact" not in dialog.create_request("BYE").headers


def test_extra_headers_and_body() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv), PEER, OUR_CONTACT)
    request = dialog.create_request("REFER", extra=[("Refer-To", "<sip:x@y>")],
                                    body=b"hi", content_type="text/plain")
    assert request.headers.get("Refer-To") == "<sip:x@y>"
    assert request.headers.get("Content-Type") == "text/plain"
    assert request.body == b"hi"


def test_receive_request_checks_cseq_order() -> None:
    dialog = Dialog.from_uas(invite(cseq_number=5), "ourtag", PEER, OUR_CONTACT)
    dialog.receive_request(invite(method="INFO", cseq_number=6, to_tag="ourtag"))
    assert dialog.remote_seq == 6
    for number in (6, 3):
        with pytest.raises(SipError) as info:
            dialog.receive_request(invite(method="INFO", cseq_number=number, to_tag="ourtag"))
        assert info.value.status == 500
    assert dialog.remote_seq == 6
    # ACK carries the INVITE's number: never out of order
    dialog.receive_request(invite(method="ACK", cseq_number=5, to_tag="ourtag", contact=None))
    assert dialog.remote_seq == 6


def test_uac_dialog_accepts_any_first_remote_cseq() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv), PEER, OUR_CONTACT)
    dialog.receive_request(invite(method="NOTIFY", cseq_number=1, to_tag="x"))
    assert dialog.remote_seq == 1


# ------------------------------------------------------------ target refresh


def test_reinvite_refreshes_remote_target() -> None:
    dialog = Dialog.from_uas(invite(cseq_number=1), "ourtag", PEER, OUR_CONTACT)
    dialog.receive_request(invite(cseq_number=2, to_tag="ourtag",
                                  contact="<sip:alice@10.9.9.9:6000>"))
    assert str(dialog.remote_target) == "sip:alice@10.9.9.9:6000"
    assert str(dialog.create_request("BYE").uri) == "sip:alice@10.9.9.9:6000"


def test_update_refreshes_and_info_does_not() -> None:
    dialog = Dialog.from_uas(invite(cseq_number=1), "ourtag", PEER, OUR_CONTACT)
    dialog.receive_request(invite(method="INFO", cseq_number=2, to_tag="ourtag",
                                  contact="<sip:alice@10.1.1.1>"))
    assert str(dialog.remote_target) == "sip:alice@10.0.0.1:5070"
    dialog.receive_request(invite(method="UPDATE", cseq_number=3, to_tag="ourtag",
                                  contact="<sip:alice@10.2.2.2>"))
    assert str(dialog.remote_target) == "sip:alice@10.2.2.2"


def test_refresh_from_response_to_our_reinvite() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv), PEER, OUR_CONTACT)
    reinvite = dialog.create_request("INVITE")
    reinvite.headers.prepend("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-re")
    dialog.refresh_from_response(ok(reinvite, contact="<sip:bob@10.3.3.3>"))
    assert str(dialog.remote_target) == "sip:bob@10.3.3.3"


# ------------------------------------------------------------ ACK


def test_ack_uses_invite_cseq_and_dialog_identifiers() -> None:
    inv = invite(cseq_number=3)
    dialog = Dialog.from_uac(inv, ok(inv, record_route=RR), PEER, OUR_CONTACT)
    dialog.create_request("INFO")  # local_seq moves on; the ACK does not follow it
    ack = dialog.create_ack(3)
    assert ack.method == "ACK"
    assert (cseq(ack).number, cseq(ack).method) == (3, "ACK")
    assert str(ack.uri) == "sip:bob@10.0.0.2:5080"
    assert routes(ack) == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert ack.headers.get("To") == "Bob <sip:bob@127.0.0.1>;tag=bobtag"
    assert ack.headers.get("From") == "Alice <sip:alice@127.0.0.1>;tag=alicetag"
    assert ack.headers.get("Call-ID") == "dlg-1@test"


def test_requests_round_trip_through_the_parser() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv, record_route=RR), PEER, OUR_CONTACT)
    bye = dialog.create_request("BYE")
    bye.headers.prepend("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-bye")
    again = parse_request(bye.to_bytes())
    assert routes(again) == routes(bye)
    assert cseq(again) == cseq(bye)


def test_secure_when_sips() -> None:
    inv = invite(uri="sips:bob@127.0.0.1")
    assert Dialog.from_uac(inv, ok(inv), PEER, OUR_CONTACT).secure
    assert not Dialog.from_uac(invite(), ok(invite()), PEER, OUR_CONTACT).secure
