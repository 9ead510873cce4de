"""Numbers as CRMs store them, end to end (issue 10 §1): a CRM asks for ``12`` (ConSol
CM/Phone's example: country 49, area 211, base 339903); baresip, user 201's phone, is
REFERred to +4921133990312 and shows it as the caller; SIPp behind a ``format = "dial"``
route is called at the dialled form 0021133990312 (outside line 0); an impossible number is
422 invalid_number before anyone is rung."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers.baresip import Baresip
from tests.peers.sipp import Sipp
from tests.sipdial_proc import Sipdial

pytestmark = pytest.mark.integration

USERS = [{"id": "201", "password": "secret201", "name": "Alice", "auto_answer": True}]
NUMBERS = ('[numbers]\ncountry = "49"\narea = "211"\nbase = "339903"\noutside_line = "0"\n')


def test_a_short_number_is_completed_shown_and_dialled_as_the_route_wants(
        tmp_path: Path) -> None:
    with Sipp.uas(tmp_path, "uas_answer.xml") as dest:
        sd = Sipdial(tmp_path, users=USERS,
                     routes=[{"match": "^\\+?[0-9]+$", "format": "dial",
                              "uri": f"sip:{{number}}@127.0.0.1:{dest.port}"}],
                     extra=NUMBERS)
        with sd.start():
            dest.start()
            with Baresip(tmp_path, user="201", password="secret201",
                         registrar=f"127.0.0.1:{sd.sip_port('udp')}", outbound=False) as phone:
                phone.wait_registered()
                sd.wait_registered("201")
                status, error = sd.api("POST", "/v1/calls", {"user": "201", "to": "+491"})
                assert (status, error["error"]["code"]) == (422, "invalid_number"), error
                assert "too short" in error["error"]["message"]

                status, call = sd.api("POST", "/v1/calls", {"user": "201", "to": "12"})
                assert status == 201, call
                assert call["to"] == "+4921133990312"
                incoming = phone.wait_event("CALL_ESTABLISHED", timeout=15)
                shown = incoming.get("peeruri", "") + incoming.get("param", "")
                assert "+4921133990312" in shown, incoming
                sd.wait_state(call["id"], "connected", timeout=20)
                phone.hangup()
                final = sd.wait_state(call["id"], "ended", timeout=15)
                assert final["cause"] == "completed", final
            invite = dest.messages()
            assert "INVITE sip:0021133990312@127.0.0.1" in invite, invite[:2000]


def test_a_forbidden_destination_is_403_over_http(tmp_path: Path) -> None:
    """The toll-fraud policy (issue 10 §2) at the real HTTP API: the CRM's national number,
    completed to E.164, is matched by the deny pattern before anyone is rung."""
    policy = '[[policy]]\ndeny = ["^\\\\+49900"]\n'
    sd = Sipdial(tmp_path, users=USERS,
                 routes=[{"match": "^\\+?[0-9]+$", "uri": "sip:{number}@127.0.0.1:9"}],
                 extra=NUMBERS + policy)
    with sd.start():
        status, body = sd.api("POST", "/v1/calls", {"user": "201", "to": "0900 1234567"})
        assert status == 403, body
        assert body["error"]["code"] == "destination_forbidden"
        assert "+499001234567" in body["error"]["message"]
