"""sipdial behind a real Kamailio 5.6 proxy (issue 8 §1, §5): Record-Route, route sets, Path.

Kamailio (tests/peers/kamailio.py: ``record_route`` on initial requests, ``loose_route`` for
in-dialog ones, ``add_path_received`` for REGISTER) sits between sipdial and everyone else:
the phone registers at sipdial through it (baresip's outbound proxy), and sipdial reaches the
destination (SIPp) through it (``[sip] outbound_proxy``). Each test then reads Kamailio's log
(one ``KAMLOG`` line per request) to prove that every request of every leg — INVITE, ACK,
REFER, NOTIFY, BYE — went through the proxy, none around it.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sipdial.sip import Response, answer_challenge, parse_challenges, preferred_challenge
from sipdial.sip.message import Request, parse_message
from tests.integration.c2d_helpers import wait_until
from tests.peers.baresip import Baresip
from tests.peers.kamailio import Kamailio
from tests.peers.ports import LOOPBACK, free_port
from tests.peers.sipp import Sipp
from tests.sipdial_proc import Sipdial

pytestmark = pytest.mark.integration

TARGET = "+4930123456"
USERS = [{"id": "201", "password": "secret201", "name": "Alice", "auto_answer": True}]


def _sipdial(tmp_path: Path, kam: Kamailio, dest_port: int) -> Sipdial:
    return Sipdial(tmp_path, users=USERS, transports=("udp",),
                   sip={"outbound_proxy": kam.uri},
                   routes=[{"match": "^\\+?[0-9]+$",
                            "uri": f"sip:{{number}}@127.0.0.1:{dest_port}"}])


def _phone(tmp_path: Path, sd: Sipdial, kam: Kamailio) -> Baresip:
    """baresip 201: registers at sipdial, every request through Kamailio (its outbound)."""
    return Baresip(tmp_path, user="201", password="secret201",
                   registrar=f"127.0.0.1:{sd.sip_port('udp')}", outbound=False,
                   extra_account_params=(f'outbound="sip:{kam.address};transport=udp"',))


def _in_dialog(kam: Kamailio, call_id: str) -> list[str]:
    return kam.methods(call_id)


def _report(kam: Kamailio, sd: Sipdial) -> str:
    return f"kamailio:\n{kam.log_text()[-4000:]}\nsipdial:\n{sd.log_text()[-4000:]}"


@pytest.mark.timeout(120)
def test_refer_call_every_request_of_every_leg_goes_through_kamailio(tmp_path: Path) -> None:
    with Kamailio(tmp_path) as kam, Sipp.uas(tmp_path, "uas_answer.xml") as dest, \
            _sipdial(tmp_path, kam, dest.port) as sd:
        dest.start()
        with _phone(tmp_path, sd, kam) as phone:
            _refer_call_through_kamailio(kam, sd, dest, phone)


def _refer_call_through_kamailio(kam: Kamailio, sd: Sipdial, dest: Sipp,
                                 phone: Baresip, transport: str = "udp") -> None:
    """A REFER click-to-dial call by the registered ``phone``; then every request of every
    leg must appear in Kamailio's log."""
    phone.wait_registered()
    (reg,) = sd.wait_registered("201")
    assert reg["path"] and f"127.0.0.1:{kam.port}" in reg["path"][0], reg
    assert reg["transport"] == transport, reg  # how sipdial sees Kamailio
    status, call = sd.api("POST", "/v1/calls", {"user": "201", "to": TARGET})
    assert status == 201, call
    sd.wait_state(call["id"], "connected", timeout=30)
    phone.hangup()
    assert dest.wait(20) == 0, dest.report()
    final = sd.wait_state(call["id"], "ended", timeout=20)
    assert final["cause"] == "completed", final
    # the first dialog's BYE (after the final NOTIFY) and the NOTIFYs: give them time
    first, referred, target = wait_until(lambda: _three_dialogs(kam), timeout=15,
                                         what="three dialogs in Kamailio's log")
    report = _report(kam, sd)
    # sipdial -> phone: the INVITE via Path, ACK/REFER/BYE by its Record-Route; the
    # phone's NOTIFYs by sipdial's (echoed) Record-Route
    assert {"INVITE", "ACK", "REFER", "NOTIFY", "BYE"} <= set(_in_dialog(kam, first)), report
    # phone -> sipdial (the referred INVITE): 407, ACK, INVITE, ACK, BYE
    assert _in_dialog(kam, referred).count("INVITE") == 2, report
    assert {"ACK", "BYE"} <= set(_in_dialog(kam, referred)), report
    # sipdial -> destination through the outbound proxy, then its Record-Route
    assert {"INVITE", "ACK", "BYE"} <= set(_in_dialog(kam, target)), report
    assert "KAMLOG STRAY" not in kam.log_text(), report


def _three_dialogs(kam: Kamailio) -> list[str] | None:
    """The Call-IDs of the phone's first dialog (has REFER), the referred call (the phone's
    INVITE to sipdial: 2 INVITEs, 407 first) and the target leg, once each has its BYE."""
    first = referred = target = None
    for cid in kam.call_ids():
        methods = kam.methods(cid)
        if "REGISTER" in methods:
            continue
        if "REFER" in methods:
            first = cid
        elif methods.count("INVITE") == 2:
            referred = cid
        elif "INVITE" in methods:
            target = cid
    if first is None or referred is None or target is None:
        return None
    if not all("BYE" in kam.methods(c) for c in (first, referred, target)):
        return None
    return [first, referred, target]


@pytest.mark.timeout(120)
def test_bridge_call_every_request_of_both_legs_goes_through_kamailio(tmp_path: Path) -> None:
    with Kamailio(tmp_path) as kam, Sipp.uas(tmp_path, "uas_answer.xml") as dest, \
            _sipdial(tmp_path, kam, dest.port) as sd:
        dest.start()
        with _phone(tmp_path, sd, kam) as phone:
            phone.wait_registered()
            sd.wait_registered("201")
            status, call = sd.api("POST", "/v1/calls",
                                  {"user": "201", "to": TARGET, "mode": "bridge"})
            assert status == 201, call
            sd.wait_state(call["id"], "connected", timeout=30)
            phone.hangup()  # the phone's BYE reaches sipdial through Kamailio...
            assert dest.wait(20) == 0, dest.report()  # ...and sipdial's BYE the target
            final = sd.wait_state(call["id"], "ended", timeout=20)
            assert final["cause"] == "completed", final
        report = _report(kam, sd)
        legs = [cid for cid in kam.call_ids() if "INVITE" in kam.methods(cid)]
        assert len(legs) == 2, report
        for cid in legs:
            assert {"INVITE", "ACK", "BYE"} <= set(_in_dialog(kam, cid)), report
        assert "KAMLOG STRAY" not in kam.log_text(), report


@pytest.mark.timeout(120)
def test_refer_call_over_tcp_through_kamailio(tmp_path: Path) -> None:
    """The phone and sipdial talk SIP over TCP, through Kamailio (the destination leg stays
    UDP): the REGISTER's Path, the phone leg's INVITE/ACK/REFER/BYE and the phone's referred
    INVITE all go through the proxy on TCP connections, and the call completes."""
    with Kamailio(tmp_path, tcp=True) as kam, Sipp.uas(tmp_path, "uas_answer.xml") as dest, \
            Sipdial(tmp_path, users=USERS, transports=("udp", "tcp"),
                    sip={"outbound_proxy": kam.uri},
                    routes=[{"match": "^\\+?[0-9]+$",
                             "uri": f"sip:{{number}}@127.0.0.1:{dest.port}"}]) as sd:
        dest.start()
        with Baresip(tmp_path, user="201", password="secret201", transport="tcp",
                     registrar=f"127.0.0.1:{sd.sip_port('tcp')}", outbound=False,
                     extra_account_params=(f'outbound="sip:{kam.address};transport=tcp"',),
                     ) as phone:
            _refer_call_through_kamailio(kam, sd, dest, phone, transport="tcp")


# ------------------------------------------------------------------ Path with a NAT'd Contact


def _sip(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def _recv(sock: socket.socket, want: str) -> Request | Response:
    """The next SIP message on ``sock`` whose method or status starts with ``want``."""
    def next_one() -> Request | Response | None:
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            return None
        message = parse_message(data)
        label = message.method if isinstance(message, Request) else str(message.status)
        return message if label.startswith(want) else None
    found: Request | Response = wait_until(next_one, timeout=15, what=f"SIP {want}")
    return found


def _register(sock: socket.socket, kam: Kamailio, sd_port: int, dead_port: int, cseq: int,
              authorization: str | None = None) -> None:
    port = sock.getsockname()[1]
    auth = f"Authorization: {authorization}\n" if authorization else ""
    sock.sendto(_sip(
        f"REGISTER sip:127.0.0.1:{sd_port} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bKnat{cseq}\n"
        "Max-Forwards: 70\n"
        "From: <sip:201@127.0.0.1>;tag=nat1\n"
        "To: <sip:201@127.0.0.1>\n"
        "Call-ID: nat-reg-1\n"
        f"CSeq: {cseq} REGISTER\n"
        f"Contact: <sip:201@127.0.0.1:{dead_port}>\n"  # nobody listens there: "behind NAT"
        "Expires: 300\n"
        "Supported: path\n"
        f"{auth}"
        "User-Agent: nat-phone\n"
        "Content-Length: 0\n\n"), (LOOPBACK, kam.port))


@pytest.mark.timeout(90)
def test_phone_with_unreachable_contact_rings_through_its_path(tmp_path: Path) -> None:
    dead_port = free_port("udp")  # free now, never bound by anyone in this test
    with Kamailio(tmp_path) as kam, _sipdial(tmp_path, kam, 9) as sd, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(0.5)
        sd_port = sd.sip_port("udp")
        _register(sock, kam, sd_port, dead_port, 1)
        challenge = _recv(sock, "401")
        assert isinstance(challenge, Response)
        found = preferred_challenge([c for v in challenge.headers.get_all("WWW-Authenticate")
                                     for c in parse_challenges(v)])
        assert found is not None
        creds = answer_challenge(found, username="201", password="secret201",
                                 method="REGISTER", uri=f"sip:127.0.0.1:{sd_port}",
                                 cnonce="c0ffee")
        _register(sock, kam, sd_port, dead_port, 2, creds.to_header())
        ok = _recv(sock, "200")
        assert isinstance(ok, Response)
        assert "path" in (ok.headers.get("Supported") or "")
        assert ok.headers.get_all("Path"), ok  # echoed: the REGISTER said Supported: path
        (reg,) = sd.wait_registered("201")
        assert reg["contact"] == f"sip:201@127.0.0.1:{dead_port}"

        status, call = sd.api("POST", "/v1/calls", {"user": "201", "to": TARGET})
        assert status == 201, call
        invite = _recv(sock, "INVITE")  # before: sent to the dead Contact, 408 after 32 s
        assert isinstance(invite, Request)
        assert str(invite.uri) == f"sip:201@127.0.0.1:{dead_port}"
        via = invite.headers.get_all("Via")
        assert f"127.0.0.1:{kam.port}" in via[0], via  # it came through Kamailio
        ringing = _sip(
            "SIP/2.0 180 Ringing\n"
            + "".join(f"Via: {v}\n" for v in via)
            + f"From: {invite.headers.get('From')}\n"
            + f"To: {invite.headers.get('To')};tag=natph\n"
            + f"Call-ID: {invite.headers.get('Call-ID')}\n"
            + f"CSeq: {invite.headers.get('CSeq')}\n"
            + "".join(f"Record-Route: {v}\n" for v in invite.headers.get_all("Record-Route"))
            + f"Contact: <sip:201@127.0.0.1:{dead_port}>\n"
            + "Content-Length: 0\n\n")
        sock.sendto(ringing, (LOOPBACK, kam.port))
        sd.wait_state(call["id"], "user_ringing", timeout=15)
        # sipdial sent it to Kamailio (the Path's hop), which used the Path's received=
        hops = kam.requests(str(invite.headers.get("Call-ID")))
        sources = [h.source for h in hops if h.kind == "REQ" and h.method == "INVITE"]
        assert sources == [f"127.0.0.1:{sd_port}"], _report(kam, sd)
