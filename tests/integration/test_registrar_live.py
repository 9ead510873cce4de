"""The embedded registrar with a real phone (baresip 1.0) over UDP and TCP, and what survives
a sipdial restart: registrations do (SQLite), calls in flight are ended as ``interrupted``.

A restart is a second :class:`~tests.sipdial_proc.Sipdial` on the same ``tmp_path``: same
config file and the same SQLite database (``<tmp>/sipdial/sipdial.db``), new ports.
"""

from __future__ import annotations

import signal
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.c2d_helpers import (
    TARGET,
    make_sipdial,
    place_call,
    registrations,
    requests,
    responses,
    sipdial_trace,
    wait_until,
)
from tests.peers.baresip import Baresip, Transport
from tests.sipdial_proc import Sipdial

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _baresip(tmp_path: Path, sd: Sipdial, transport: Transport = "udp", *,
             auto_answer: bool = False, expires: int = 60) -> Baresip:
    return Baresip(tmp_path, user="201", password="secret201",
                   registrar=f"127.0.0.1:{sd.sip_port(transport)}", transport=transport,
                   auto_answer=auto_answer, outbound=False, expires=expires)


def _db_call_state(db: Path, call_id: str) -> str | None:
    """The call's state as written to sipdial's SQLite file (read-only peek)."""
    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
    try:
        row = conn.execute("SELECT state FROM calls WHERE id = ?", (call_id,)).fetchone()
    except sqlite3.OperationalError:
        return None  # schema not there yet / busy
    finally:
        conn.close()
    return None if row is None else str(row[0])


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_baresip_registration_is_listed(tmp_path: Path, transport: Transport) -> None:
    with make_sipdial(tmp_path) as sd, _baresip(tmp_path, sd, transport) as phone:
        phone.wait_registered()
        (reg,) = sd.wait_registered("201")
        assert reg["user"] == "201"
        assert reg["user_agent"].startswith("baresip"), reg
        assert reg["transport"] == transport, reg
        host, _, port = reg["source"].rpartition(":")
        assert host == "127.0.0.1", reg
        if transport == "udp":
            # a UDP phone sends from its listening socket
            assert int(port) == phone.sip_port, reg
        else:
            assert int(port) > 0
        assert f"127.0.0.1:{phone.sip_port}" in reg["contact"], reg
        assert 0 < reg["expires_in"] <= 60, reg
        assert reg["q"] == 1.0
        # a time like every other in the API: ISO 8601 UTC with milliseconds
        registered = datetime.strptime(reg["registered_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert abs(registered.replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=1)
        # the unfiltered list has it too, and user 202 has nothing
        assert [r["contact"] for r in registrations(sd)] == [reg["contact"]]
        assert registrations(sd, "202") == []
        # it was challenged: 401 first, then 200 to the REGISTER with credentials
        trace = sipdial_trace(sd)
        statuses = [m.status for m in responses(trace, "REGISTER", "out")]
        assert statuses[:2] == [401, 200], statuses
        assert any(m.header("Authorization") for m in requests(trace, "REGISTER", "in"))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_baresip_quit_unregisters(tmp_path: Path, transport: Transport) -> None:
    with make_sipdial(tmp_path) as sd:
        phone = _baresip(tmp_path, sd, transport).start()
        try:
            phone.wait_registered()
            (reg,) = sd.wait_registered("201")
        finally:
            assert phone.stop() == 0  # "quit": un-registers, then exits cleanly
        wait_until(lambda: registrations(sd, "201") == [], 10, "the binding to go away")
        assert registrations(sd) == []
        trace = sipdial_trace(sd)
        unregister = [m for m in requests(trace, "REGISTER", "in")
                      if m.header("Expires") == "0" or "expires=0" in (m.header("Contact") or "")]
        assert unregister, [m.first_line for m in trace]
        # ... and was accepted (after the challenge)
        last = responses(trace, "REGISTER", "out")[-1]
        assert last.status == 200, last.text
        assert reg["contact"] not in "".join(last.headers("Contact"))
        # with no device left, click-to-dial refuses at once
        status, body = sd.api("POST", "/v1/calls", {"user": "201", "to": TARGET})
        assert status == 409 and body["error"]["code"] == "user_not_registered", body


def test_too_short_expiry_gets_423_and_baresip_retries(tmp_path: Path) -> None:
    """baresip asks for 20 s; sipdial's minimum is 60 s: 423 with Min-Expires: 60, and
    baresip registers again with 60."""
    with make_sipdial(tmp_path) as sd, _baresip(tmp_path, sd, expires=20) as phone:
        phone.wait_registered()
        (reg,) = sd.wait_registered("201")
        assert 55 <= reg["expires_in"] <= 60, reg
        trace = sipdial_trace(sd)
        too_brief = [m for m in responses(trace, "REGISTER", "out") if m.status == 423]
        assert len(too_brief) == 1 and too_brief[0].header("Min-Expires") == "60", \
            [m.first_line for m in trace]
        ok = [m for m in responses(trace, "REGISTER", "out") if m.status == 200][-1]
        assert "expires=60" in "".join(ok.headers("Contact")), ok.text


def test_registrations_survive_a_restart(tmp_path: Path) -> None:
    sd = make_sipdial(tmp_path).start()
    phone = _baresip(tmp_path, sd, expires=300)
    try:
        phone.start()
        phone.wait_registered()
        (before,) = sd.wait_registered("201")
        assert sd.stop() == 0  # SIGTERM: a clean shutdown

        sd2 = make_sipdial(tmp_path).start()
        try:
            assert sd2.db == sd.db
            assert sd2.sip_port("udp") != sd.sip_port("udp") or True  # new ephemeral ports
            (after,) = registrations(sd2, "201")
            for key in ("user", "contact", "instance", "transport", "source", "user_agent",
                        "q", "registered_at"):
                assert after[key] == before[key], (key, before, after)
            assert 0 < after["expires_in"] <= before["expires_in"]
            # the restored binding is usable: a call reaches the phone without re-REGISTER
            call = place_call(sd2)
            incoming = phone.wait_event("CALL_INCOMING", timeout=10)
            assert TARGET in str(incoming.get("peeruri", "")), incoming
            sd2.wait_state(call["id"], "user_ringing", timeout=10)
            status, body = sd2.api("DELETE", f"/v1/calls/{call['id']}")
            assert status == 200 and body["cause"] == "cancelled", body
            phone.wait_event("CALL_CLOSED", timeout=10)
        finally:
            sd2.stop()
    finally:
        sd.stop()
        phone.stop(timeout=1.0)  # its registrar is gone: do not wait for the un-REGISTER


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_call_in_flight_is_interrupted_by_a_restart(tmp_path: Path, how: str) -> None:
    sd = make_sipdial(tmp_path, user_answer_timeout=30.0).start()
    phone = _baresip(tmp_path, sd)
    try:
        phone.start()
        phone.wait_registered()
        sd.wait_registered("201")
        call = place_call(sd)
        phone.wait_event("CALL_INCOMING", timeout=10)
        ringing = sd.wait_state(call["id"], "user_ringing", timeout=10)
        assert ringing["state"] == "user_ringing"
        # the store writes in batches: be sure the ringing call is on disk before the kill
        wait_until(lambda: _db_call_state(sd.db, call["id"]) == "user_ringing", 5,
                   "the call to be written to SQLite")
        assert sd.proc is not None
        if how == "SIGKILL":
            sd.proc.send_signal(signal.SIGKILL)
            assert sd.proc.wait(10) == -signal.SIGKILL
        else:
            assert sd.stop() == 0
            # a clean stop releases the call: the ringing phone is CANCELled, not left ringing
            phone.wait_event("CALL_CLOSED", timeout=10)

        sd2 = make_sipdial(tmp_path).start()
        try:
            status, got = sd2.api("GET", f"/v1/calls/{call['id']}")
            assert status == 200, got
            assert got["state"] == "ended", got
            assert got["cause"] == "interrupted", got
            assert got["ended_at"] is not None
            states = [e["state"] for e in got["events"]]
            assert states == ["calling_user", "user_ringing", "ended"], got
            last: dict[str, Any] = got["events"][-1]
            # after a kill the store finds it at start; a clean stop ends it on the way out
            expected = "sipdial restarted" if how == "SIGKILL" else "sipdial stopped"
            assert last["detail"] == expected and last["sip_code"] is None, last
            # it is listed as ended too, and DELETE on it is harmless
            status, listed = sd2.api("GET", "/v1/calls?user=201")
            assert status == 200
            rows = listed.get("calls", listed) if isinstance(listed, dict) else listed
            assert [(c["id"], c["cause"]) for c in rows] == [(call["id"], "interrupted")]
            status, body = sd2.api("DELETE", f"/v1/calls/{call['id']}")
            assert status == 200 and body["cause"] == "interrupted", body
        finally:
            sd2.stop()
    finally:
        sd.stop()
        phone.stop(timeout=1.0)


def test_tcp_registration_is_usable_after_a_restart(tmp_path: Path) -> None:
    sd = make_sipdial(tmp_path, user_answer_timeout=10.0).start()
    phone = _baresip(tmp_path, sd, "tcp", expires=300)
    try:
        phone.start()
        phone.wait_registered()
        (before,) = sd.wait_registered("201")
        assert before["transport"] == "tcp"
        assert sd.stop() == 0

        sd2 = make_sipdial(tmp_path, user_answer_timeout=10.0).start()
        try:
            (after,) = registrations(sd2, "201")
            assert after["contact"] == before["contact"]  # the binding did survive ...
            call = place_call(sd2)
            # ... but can the phone be rung through it?
            invites = wait_until(lambda: requests(sipdial_trace(sd2), "INVITE", "out"), 5,
                                 "sipdial's INVITE to the phone")
            assert f":{phone.sip_port}" in invites[0].peer, (
                f"INVITE sent to {invites[0].peer}, the phone listens on {phone.sip_port} "
                f"(source was {before['source']})")
            phone.wait_event("CALL_INCOMING", timeout=5)
            sd2.wait_state(call["id"], "user_ringing", timeout=5)
            status, body = sd2.api("DELETE", f"/v1/calls/{call['id']}")
            assert status == 200 and body["cause"] == "cancelled", body
        finally:
            sd2.stop()
    finally:
        sd.stop()
        phone.stop(timeout=1.0)
