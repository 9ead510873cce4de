"""Click-to-dial by REFER end to end, with real peers on loopback.

baresip (Debian baresip-core) is user 201's phone: it registers with digest, is rung with the
target number as caller ID, auto-answers, receives the REFER, calls the target through
sipdial (407-authenticated), and SIPp (Debian sip-tester) is the destination behind a
[[routes]] entry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers.baresip import Baresip
from tests.peers.sipp import Sipp
from tests.sipdial_proc import Sipdial

pytestmark = pytest.mark.integration

TARGET = "+4930123456"
USERS = [{"id": "201", "password": "secret201", "name": "Alice", "auto_answer": True},
         {"id": "202", "password": "secret202", "name": "Bob"}]


def _sipdial(tmp_path: Path, dest_port: int, **calls: object) -> Sipdial:
    return Sipdial(tmp_path, users=USERS,
                   routes=[{"match": "^\\+?[0-9]+$",
                            "uri": f"sip:{{number}}@127.0.0.1:{dest_port}"}],
                   calls=dict(calls) or None)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_refer_call_reaches_target_and_completes(tmp_path: Path, transport: str) -> None:
    # the destination is a UDP trunk either way; the phone's transport varies
    with Sipp.uas(tmp_path, "uas_answer.xml") as dest, \
            _sipdial(tmp_path, dest.port) as sd:
        dest.start()
        registrar = f"127.0.0.1:{sd.sip_port(transport)}"
        with Baresip(tmp_path, user="201", password="secret201", registrar=registrar,
                     transport=transport, outbound=False) as phone:
            phone.wait_registered()
            regs = sd.wait_registered("201")
            assert regs[0]["user_agent"].startswith("baresip")
            assert regs[0]["transport"] == transport

            status, call = sd.api("POST", "/v1/calls", {"user": "201", "to": TARGET})
            assert status == 201, call
            call_id = call["id"]
            assert call["state"] == "calling_user"

            incoming = phone.wait_event("CALL_ESTABLISHED", timeout=15)
            # the phone saw the target number as the caller
            assert TARGET in incoming.get("peeruri", "") + incoming.get("param", ""), incoming
            sd.wait_state(call_id, "connected", timeout=20)
            assert dest.returncode is None  # still talking

            phone.hangup()
            assert dest.wait(15) == 0, dest.report()
            final = sd.wait_state(call_id, "ended", timeout=15)
            assert final["cause"] == "completed", final
            states = [e["state"] for e in final["events"]]
            assert states[:3] == ["calling_user", "user_ringing", "user_answered"] or \
                states[:2] == ["calling_user", "user_answered"], states
            assert "calling_target" in states and "connected" in states
            assert states[-1] == "ended"

            invite = dest.messages()
            assert "P-Asserted-Identity" not in invite or TARGET not in invite.split(
                "P-Asserted-Identity")[1].split("\n")[0]
