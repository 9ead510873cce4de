"""Issue 7 §4: click-to-dial calls through 20 % packet loss each way, in both modes.

Real sipdial process, real peers, real UDP on 127.0.0.1; the loss is made by
:class:`tests.peers.lossy_relay.LossyRelay` (seeded, independent per direction) because
``tc netem`` is not available here. Every datagram between sipdial and the phone, and between
sipdial and the destination, crosses a relay:

    phone <-> relay <-> sipdial <-> relay <-> destination (SIPp, behind [[routes]])

Bridge mode: the phone (user 202) is loadtest/scenarios/phone_bridge.xml, a SIPp UAS that
registered through its relay (Via ``rport``, so sipdial answers through the relay too).

REFER mode: the phones are real baresip processes (SIPp cannot answer the digest challenge of
the referred INVITE correctly in a UAS scenario: it builds the digest-uri as ``sip::5060``).
Each registers through its own relay, which it also uses as outbound proxy, so the REFER, the
407 challenge of the referred INVITE (sent once, statelessly: the phone's retransmissions of
its INVITE are what makes it arrive), the NOTIFYs and the BYEs all cross the loss. Each phone
takes its calls one after the other; the phones run side by side.

In both modes the destination answers and hangs up after ``HOLD_MS``.

The count: the issue's goal is >= 99 % complete; with 20 calls per mode that means every one
of them (19/20 is 95 %), which is what is asserted. 20 keeps each test within ~90 s on this
2-core machine; the longer runs to do are ``LOSS_CALLS=100`` (bridge) and
``LOSS_REFER_PHONES=10 LOSS_REFER_CALLS=10`` (REFER), which still require >= 99 %.

Afterwards nothing may be left in sipdial: /healthz shows no call, no relayed call and, once
the transactions' last timers (D/J/L/M, 32 s) have run, no SIP transaction.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.integration.c2d_helpers import ROUTE_MATCH, user, wait_until
from tests.peers.baresip import Baresip
from tests.peers.lossy_relay import LossyRelay
from tests.peers.ports import LOOPBACK, free_port_both
from tests.peers.sipp import Sipp, scenario_path
from tests.sipdial_proc import Sipdial

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CALLS = int(os.environ.get("LOSS_CALLS", "20"))  # per mode, all at once
LOSS = 0.2
HOLD_MS = 2000
# SIPp counts a retransmission that arrives after its call ended (a late BYE, ACK) as a new,
# failed call, and stops at its -m count: room for those, the test stops SIPp itself
SIPP_CALLS = 4
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
        self.uas = Sipp(tmp_path, scenario, port=self.port, service=uid, calls=SIPP_CALLS * CALLS,
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


def _wait_no_transactions(sd: Sipdial) -> None:
    """Every transaction's last timer (D, J, L, M: at most 32 s) runs, and nothing is left."""
    def empty() -> bool:
        status, health = sd.api("GET", "/healthz")
        assert status == 200, health
        return bool(health["calls"] == 0 and health["relayed_calls"] == 0
                    and health["sip_transactions"] == 0)
    wait_until(empty, 50, "no call and no SIP transaction left in sipdial", interval=0.5)


def test_bridge_calls_complete_through_20_percent_loss_each_way(
        tmp_path: Path) -> None:
    dest = Sipp.uas(tmp_path, _write(tmp_path, "dest.xml", _with_rport(
        scenario_path("uas_answer_then_bye.xml").read_text())), calls=SIPP_CALLS * CALLS,
        duration_ms=HOLD_MS, timeout=150, rtp_echo=False,
        extra_args=["-default_behaviors", "all,-abortunexp"])  # see the REFER test below
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
        outcome = {mode: _calls(sd, mode_ids) for mode, mode_ids in ids.items()}
        causes = {mode: [c["cause"] for c in calls] for mode, calls in outcome.items()}
        for mode, mode_causes in causes.items():
            done = mode_causes.count("completed")
            failed = [c for c in outcome[mode] if c["cause"] != "completed"]
            assert done >= 0.99 * CALLS, json.dumps(failed[:3], indent=1)
        status, health = sd.api("GET", "/healthz")
        assert status == 200 and health["calls"] == 0 and health["relayed_calls"] == 0, health
        for relay in (dest_relay, *(p.relay for p in phones)):
            assert relay.stats.up_dropped > 0 and relay.stats.down_dropped > 0, relay.stats
        _wait_no_transactions(sd)
    finally:
        for phone in phones:
            phone.close()
        sd.stop()
        dest.stop()
        dest_relay.close()


REFER_PHONES = int(os.environ.get("LOSS_REFER_PHONES", "5"))
REFER_CALLS = int(os.environ.get("LOSS_REFER_CALLS", "4"))  # per phone, one after the other


def test_refer_calls_complete_through_20_percent_loss_each_way(tmp_path: Path) -> None:
    total = REFER_PHONES * REFER_CALLS
    uids = [str(201 + i) for i in range(REFER_PHONES)]
    # SIPp must not abort a call on a message it reads before the 200 it still has to send:
    # sipdial's INVITE retransmission (its 180/200 were lost) and the ACK for the first 200
    # can arrive in one read, while the retransmitted INVITE sent SIPp back to the 200
    # (seen twice in full suites: the call never got its BYE and the test waited 60 s)
    dest = Sipp.uas(tmp_path, _write(tmp_path, "dest.xml", _with_rport(
        scenario_path("uas_answer_then_bye.xml").read_text())), calls=SIPP_CALLS * total,
        duration_ms=HOLD_MS, timeout=150, rtp_echo=False,
        extra_args=["-default_behaviors", "all,-abortunexp"])
    dest_relay = LossyRelay((LOOPBACK, dest.port), drop_up=LOSS, drop_down=LOSS, seed=11)
    sd = Sipdial(tmp_path, users=[user(uid, auto_answer=True) for uid in uids],
                 routes=[{"match": ROUTE_MATCH,
                          "uri": f"sip:{{number}}@{LOOPBACK}:{dest_relay.port}"}],
                 calls={"max_concurrent": 4 * total})
    relays: list[LossyRelay] = []
    phones: list[Baresip] = []
    ids: dict[str, list[str]] = {uid: [] for uid in uids}
    errors: list[BaseException] = []

    def calls_of(uid: str) -> None:
        try:
            for _ in range(REFER_CALLS):
                status, call = sd.api("POST", "/v1/calls", {
                    "user": uid, "to": TARGET, "mode": "refer", "confirm": False})
                assert status == 201, call
                call_id = str(call["id"])
                ids[uid].append(call_id)
                wait_until(lambda c=call_id: _calls(sd, [c])[0]["state"] == "ended", 60,
                           f"call {call_id} of {uid} to end", interval=0.2)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    try:
        dest.start()
        sd.start()
        for index, uid in enumerate(uids):
            relay = LossyRelay((LOOPBACK, sd.sip_port("udp")), drop_up=LOSS, drop_down=LOSS,
                               seed=100 + index)
            relays.append(relay)
            phone = Baresip(tmp_path, user=uid, password=f"secret{uid}",
                            registrar=f"{LOOPBACK}:{relay.port}", outbound=True)
            phones.append(phone.start())
        for uid in uids:
            sd.wait_registered(uid, timeout=30)
        workers = [threading.Thread(target=calls_of, args=(uid,), daemon=True) for uid in uids]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(REFER_CALLS * 65)
        assert not errors, errors
        assert not any(worker.is_alive() for worker in workers), "a phone's calls did not end"
        outcome = _calls(sd, [call_id for uid in uids for call_id in ids[uid]])
        assert len(outcome) == total
        causes = [c["cause"] for c in outcome]
        failed = [c for c in outcome if c["cause"] != "completed"]
        assert causes.count("completed") >= 0.99 * total, json.dumps(failed[:3], indent=1)
        for call in outcome:  # they were REFER calls: the phone was transferred
            assert "calling_target" in [e["state"] for e in call["events"]], call
        for relay in (dest_relay, *relays):
            assert relay.stats.up_dropped > 0 and relay.stats.down_dropped > 0, relay.stats
        for phone in phones:  # baresip re-registers every ~30 s: quiet them first
            phone.stop()
        _wait_no_transactions(sd)
    finally:
        for phone in phones:
            phone.stop()
        for relay in relays:
            relay.close()
        sd.stop()
        dest.stop()
        dest_relay.close()
