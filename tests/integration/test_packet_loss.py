"""Issue 7 §4: click-to-dial calls through 20 % packet loss each way (bridge mode).

Real sipdial process, real SIPp peers, real UDP on 127.0.0.1; the loss is made by
:class:`tests.peers.lossy_relay.LossyRelay` (seeded, independent per direction) because
``tc netem`` is not available here. Every datagram between sipdial and the phone, and between
sipdial and the destination, crosses a relay:

    phone (SIPp) <-> relay <-> sipdial <-> relay <-> destination (SIPp, behind [[routes]])

The phone (user 202) is loadtest/scenarios/phone_bridge.xml, a SIPp UAS that registered
through its relay (Via ``rport``, so sipdial answers through the relay too); the destination
answers and hangs up after ``HOLD_MS``.

REFER mode is not run here (yet): a SIPp phone can place the referred call in the same SIPp
call (Call-ID ``ref///[call_id]``), but SIPp 3.6.1 builds the digest-uri of its
``[authentication]`` answer as ``sip::5060`` in a UAS scenario and ignores ``auth_uri``, so
sipdial rightly refuses it. The REFER-mode fix (no 100 Trying before a stateless challenge)
is proven by the unit tests in tests/unit/test_transaction.py and test_ua.py.

The count: ``CALLS`` calls, all at once. The issue's goal is >= 99 % complete; with 20 calls
that means every one of them (19/20 is 95 %), which is what is asserted. 20 keeps the test
within ~90 s on this 2-core machine (the transactions' last timers, D/J/L/M, run 32 s after
the last call); the longer run to do is ``LOSS_CALLS=100``, which still requires >= 99 %.

Afterwards nothing may be left in sipdial: /healthz shows no call or relayed call, and the
"stopping:" line sipdial logs when it stops shows 0 server and 0 client transactions (it
stops more than 32 s after the last call ended, so every transaction's last timer has run).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.c2d_helpers import ROUTE_MATCH, user, wait_until
from tests.peers.lossy_relay import LossyRelay
from tests.peers.ports import LOOPBACK, free_port_both
from tests.peers.sipp import Sipp, scenario_path
from tests.sipdial_proc import Sipdial

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CALLS = int(os.environ.get("LOSS_CALLS", "20"))  # per mode, all at once
LOSS = 0.2
HOLD_MS = 2000
TARGET = "+4930123456"
LOADTEST_PHONE = Path(__file__).resolve().parents[2] / "loadtest" / "scenarios" / \
    "phone_bridge.xml"

def _with_rport(text: str) -> str:
    """Via ``rport``: sipdial answers to the source (the relay), not to the Via port."""
    return text.replace("[local_port];branch=[branch]", "[local_port];rport;branch=[branch]")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / "scenarios" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class LossyPhone:
    """A SIPp phone for ``uid`` that reaches sipdial only through a lossy relay."""

    def __init__(self, tmp_path: Path, sd: Sipdial, uid: str, scenario: Path,
                 seed: int) -> None:
        self.uid = uid
        self.port = free_port_both()
        self.relay = LossyRelay((LOOPBACK, sd.sip_port("udp")), drop_up=LOSS, drop_down=LOSS,
                                seed=seed)
        register = _write(tmp_path, f"register-{uid}.xml",
                          _with_rport(scenario_path("phone_register.xml").read_text()))
        self.registrar = Sipp(tmp_path, register, remote=f"{LOOPBACK}:{self.relay.port}",
                              port=self.port, service=uid, timeout=20,
                              name=f"phone-{uid}-register",
                              extra_args=["-au", uid, "-ap", f"secret{uid}"])
        self.uas = Sipp(tmp_path, scenario, port=self.port, service=uid, calls=CALLS,
                        timeout=150, name=f"phone-{uid}")
        self.sd = sd

    def register(self) -> None:
        rc = self.registrar.run(30)
        assert rc == 0, self.registrar.report()
        self.sd.wait_registered(self.uid)

    def close(self) -> None:
        self.uas.stop()
        self.registrar.stop()
        self.relay.close()


def _calls(sd: Sipdial, ids: list[str]) -> list[dict[str, Any]]:
    out = []
    for call_id in ids:
        status, call = sd.api("GET", f"/v1/calls/{call_id}")
        assert status == 200, call
        out.append(call)
    return out


def _stopping_line(sd: Sipdial) -> tuple[int, int, int, int]:
    match = re.search(r"stopping: (\d+) calls, (\d+) relayed calls, (\d+) server and "
                      r"(\d+) client transactions", sd.log_text())
    assert match, "sipdial did not log its 'stopping:' line"
    calls, relayed, server, client = (int(g) for g in match.groups())
    return calls, relayed, server, client


def test_bridge_calls_complete_through_20_percent_loss_each_way(
        tmp_path: Path) -> None:
    dest = Sipp.uas(tmp_path, _write(tmp_path, "dest.xml", _with_rport(
        scenario_path("uas_answer_then_bye.xml").read_text())), calls=CALLS,
        duration_ms=HOLD_MS, timeout=150, rtp_echo=False)
    dest_relay = LossyRelay((LOOPBACK, dest.port), drop_up=LOSS, drop_down=LOSS, seed=7)
    sd = Sipdial(tmp_path, users=[user("201"), user("202", name="Bob")],
                 routes=[{"match": ROUTE_MATCH,
                          "uri": f"sip:{{number}}@{LOOPBACK}:{dest_relay.port}"}],
                 calls={"max_concurrent": 4 * CALLS})
    phones: list[LossyPhone] = []
    try:
        dest.start()
        sd.start()
        bridge_scenario = _write(tmp_path, "phone_bridge.xml", _with_rport(
            LOADTEST_PHONE.read_text().replace('<timewait milliseconds="500"/>',
                                               '<timewait milliseconds="8000"/>')))
        phones = [LossyPhone(tmp_path, sd, "202", bridge_scenario, seed=2)]
        for phone in phones:
            phone.register()
            phone.uas.start()
        ids: dict[str, list[str]] = {"bridge": []}
        for _ in range(CALLS):
            for mode, uid in (("bridge", "202"),):
                status, call = sd.api("POST", "/v1/calls", {
                    "user": uid, "to": TARGET, "mode": mode, "confirm": False})
                assert status == 201, call
                ids[mode].append(call["id"])
        every = ids["bridge"]
        wait_until(lambda: all(c["state"] == "ended" for c in _calls(sd, every)), 120,
                   "every call to end")
        ended_at = time.monotonic()
        outcome = {mode: _calls(sd, mode_ids) for mode, mode_ids in ids.items()}
        causes = {mode: [c["cause"] for c in calls] for mode, calls in outcome.items()}
        for mode, mode_causes in causes.items():
            done = mode_causes.count("completed")
            assert done >= 0.99 * CALLS, (mode, causes, [
                c for c in outcome[mode] if c["cause"] != "completed"][:3])
        status, health = sd.api("GET", "/healthz")
        assert status == 200 and health["calls"] == 0 and health["relayed_calls"] == 0, health
        for relay in (dest_relay, *(p.relay for p in phones)):
            assert relay.stats.up_dropped > 0 and relay.stats.down_dropped > 0, relay.stats
        # every transaction's last timer (D, J, L, M: 32 s) has run by now
        time.sleep(max(0.0, 33.0 - (time.monotonic() - ended_at)))
        sd.stop()
        assert _stopping_line(sd) == (0, 0, 0, 0), sd.log_text()[-3000:]
    finally:
        for phone in phones:
            phone.close()
        sd.stop()
        dest.stop()
        dest_relay.close()
