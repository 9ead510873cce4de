"""Inbound calls for CTI, live (issue 10 §3): a SIPp "carrier" at 127.0.0.2 (a
``[[trunks]]`` entry) calls user 201's number; baresip, 201's phone, rings without the
carrier being challenged and answers. The CRM's webhook gets call.incoming with the caller
in E.164 and the phonebook's name, then call.answered and call.ended; a second caller,
unknown to the phonebook, is named by the CRM's lookup URL; a call the user rejects is
missed. The same carrier from 127.0.0.1 (not the trunk) is challenged."""

from __future__ import annotations

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.integration.c2d_helpers import scenario_variant, user
from tests.peers.baresip import Baresip
from tests.peers.sipp import Sipp
from tests.sipdial_proc import Sipdial

pytestmark = pytest.mark.integration

CARRIER = "127.0.0.2"  # a loopback address of its own: the trunk's source
DID = "+4921133990312"


class Crm(ThreadingHTTPServer):
    """The CRM: receives the webhooks and answers the contact lookup."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CrmHandler)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.lookups: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_event(self, timeout: float = 20.0) -> dict[str, Any]:
        return self.events.get(timeout=timeout)


class _CrmHandler(BaseHTTPRequestHandler):
    server: Crm

    def do_POST(self) -> None:
        self.server.events.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:
        number = parse_qs(urlparse(self.path).query).get("number", [""])[0]
        self.server.lookups.append(number)
        body = b"{}"
        if number == "+4940555000":
            body = json.dumps({"name": "Lookup Person",
                               "url": "https://crm.example/contact/40555000"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _carrier(tmp_path: Path, sd: Sipdial, caller: str, *, name: str,
             local_ip: str = CARRIER, duration_ms: int = 500) -> Sipp:
    """SIPp calling ``DID`` at sipdial as ``caller`` (From and P-Asserted-Identity)."""
    scenario = scenario_variant(tmp_path / name, "uac_invite.xml", {
        '"SIPp Caller" <sip:sipp@[local_ip]:[local_port]>':
            f'"Carrier" <sip:{caller}@[local_ip]:[local_port]>',
        "Subject: sipdial peer selfcheck": f"P-Asserted-Identity: <sip:{caller}@[local_ip]>",
    })
    return Sipp.uac(tmp_path, f"127.0.0.1:{sd.sip_port('udp')}", scenario, service=DID,
                    local_ip=local_ip, duration_ms=duration_ms, timeout=30, name=name)


def _call_events(crm: Crm, count: int) -> list[dict[str, Any]]:
    return [crm.next_event() for _ in range(count)]


def test_a_carriers_call_rings_the_user_and_the_crm_sees_who_calls(tmp_path: Path) -> None:
    crm = Crm()
    threading.Thread(target=crm.serve_forever, daemon=True).start()
    book = tmp_path / "phonebook.csv"
    book.write_text("name,phone,url\nErika Mustermann,030 123456,https://crm.example/c/1\n")
    extra = (f'[numbers]\ncountry = "49"\narea = "211"\n'
             f'[[trunks]]\nname = "carrier"\nallow_from = ["{CARRIER}/32"]\n'
             f'dids = {{ "{DID}" = "201" }}\n'
             f'[contacts]\nphonebook = "{book}"\n'
             f'lookup_url = "{crm.url}/lookup?number={{e164}}"\nlookup_timeout = 2.0\n'
             f'[[webhooks]]\nurl = "{crm.url}/hook"\nsecret = "hook-secret-0123456789"\n'
             f'events = ["*"]\n')
    sd = Sipdial(tmp_path, users=[user("201", auto_answer=False)], routes=[], extra=extra)
    try:
        with sd.start(), Baresip(tmp_path, user="201", password="secret201",
                                 registrar=f"127.0.0.1:{sd.sip_port('udp')}",
                                 outbound=False, auto_answer=False) as phone:
            sd.wait_registered("201")

            # 1. in the phonebook; answered; the carrier hangs up after 500 ms
            with _carrier(tmp_path, sd, "030123456", name="erika") as carrier:
                carrier.start()
                incoming = crm.next_event()
                assert incoming["event"] == "call.incoming", incoming
                call = incoming["call"]
                assert (call["direction"], call["user"], call["to"], call["caller"]) == (
                    "inbound", "201", DID, "+4930123456")
                assert call["contact"] == {"name": "Erika Mustermann",
                                           "url": "https://crm.example/c/1"}
                ringing = phone.wait_event("CALL_INCOMING", timeout=10)
                assert "4930123456" in json.dumps(ringing)
                phone.accept()
                rest = [e["event"] for e in _call_events(crm, 3)]
                assert rest == ["call.ringing", "call.answered", "call.ended"], rest
                assert carrier.wait(20) == 0, carrier.report()
            status, listed = sd.api("GET", "/v1/calls?direction=inbound")
            assert status == 200 and listed["calls"][0]["cause"] == "completed", listed
            assert crm.lookups == []  # the phonebook knew

            # 2. not in the phonebook: the CRM's lookup names the caller; the user rejects
            # it (baresip: 486) -> missed
            with _carrier(tmp_path, sd, "+4940555000", name="lookup") as carrier:
                carrier.start()
                incoming = crm.next_event()
                assert incoming["event"] == "call.incoming"
                assert incoming["call"]["contact"] == {
                    "name": "Lookup Person", "url": "https://crm.example/contact/40555000"}
                assert crm.lookups == ["+4940555000"]
                phone.wait_event("CALL_INCOMING", timeout=10)
                phone.hangup()  # the user rejects it
                events = []
                while not events or events[-1]["event"] != "call.ended":
                    events.append(crm.next_event())
                assert events[-1]["missed"] is True, events[-1]
                assert events[-1]["cause"] == "user_busy", events[-1]
                assert carrier.wait(20) != 0  # SIPp wanted a 200: it got the 486

            # 3. the same carrier from an address that is no trunk: challenged like anyone
            with _carrier(tmp_path, sd, "030123456", name="stranger",
                          local_ip="127.0.0.1") as stranger:
                stranger.start()
                assert stranger.wait(20) != 0  # it wanted a 200
                assert "SIP/2.0 407" in stranger.messages(), stranger.report()
            status, listed = sd.api("GET", "/v1/calls?direction=inbound")
            assert len(listed["calls"]) == 2, listed  # nothing for the stranger
    finally:
        crm.shutdown()
