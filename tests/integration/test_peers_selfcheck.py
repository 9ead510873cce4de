"""The peer harness works on its own, without sipdial: baresip, SIPp and pyVoIP
talk to each other on 127.0.0.1 and the harness reports what happened."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.peers.baresip import Baresip, BaresipError, account_line
from tests.peers.ports import LOOPBACK, free_port, free_port_block, free_port_both, is_free
from tests.peers.sipp import Sipp

pytestmark = pytest.mark.integration

MakeBaresip = Callable[..., Baresip]
MakeSipp = Callable[..., Sipp]
FRAME_BYTES = 160 * 2  # 20 ms of 8 kHz S16 mono, what sndfile dumps per packet


def _wav_frames(path: Path) -> int:
    return max(path.stat().st_size - 44, 0) // FRAME_BYTES


# --------------------------------------------------------------- pure helpers
def test_free_ports_are_bindable() -> None:
    for kind in ("udp", "tcp"):
        port = free_port(kind)
        assert 1024 <= port <= 65535 and is_free(port, kind)
    both = free_port_both()
    assert is_free(both, "udp") and is_free(both, "tcp")
    base = free_port_block(3)
    assert all(is_free(base + i, k) for i in range(3) for k in ("udp", "tcp"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        assert not is_free(s.getsockname()[1], "udp")


def test_account_line_syntax() -> None:
    assert account_line(
        user="201",
        domain="127.0.0.1:5060",
        password="secret201",
        outbound="sip:127.0.0.1:5060;transport=udp",
        regint=60,
    ) == (
        '<sip:201@127.0.0.1:5060>;auth_pass=secret201;outbound="sip:127.0.0.1:5060;'
        'transport=udp";answermode=auto;regint=60;audio_codecs=pcmu,pcma'
    )
    tcp = account_line(user="202", domain="127.0.0.1", transport="tcp", auto_answer=False)
    assert tcp.startswith("<sip:202@127.0.0.1;transport=tcp>;answermode=manual;regint=0")


# ------------------------------------------------------------------ baresip
def test_baresip_starts_and_answers_ctrl_commands(baresip_factory: MakeBaresip) -> None:
    phone = baresip_factory(user="201")
    assert phone.running
    info = phone.command("reginfo")
    assert info["response"] is True and info["ok"] is True
    assert "sip:201@127.0.0.1" in info["data"]
    bad = phone.command("no_such_command")
    assert bad["ok"] is False and "not found" in bad["data"]
    with pytest.raises(BaresipError):
        phone.command("no_such_command", check=True)
    assert phone.stop() == 0
    assert "baresip is ready." in phone.log_text()


def test_sipp_calls_baresip_which_auto_answers(
    baresip_factory: MakeBaresip, sipp_factory: MakeSipp
) -> None:
    phone = baresip_factory(user="201", auto_answer=True)  # no registrar: regint=0
    caller = sipp_factory(
        "uac_invite.xml",
        remote=f"{LOOPBACK}:{phone.sip_port}",
        service="201",
        duration_ms=1000,
        timeout=20,
    )
    caller.start()

    up = phone.wait_event("CALL_ESTABLISHED")
    assert up["direction"] == "incoming"
    assert up["peerdisplayname"] == "SIPp Caller"
    assert "CALL_INCOMING" not in phone.event_types()  # auto answer skips it
    closed = phone.wait_event("CALL_CLOSED")
    assert closed["id"] == up["id"]
    assert closed["param"] == "Connection reset by peer"  # baresip's words for a remote BYE

    assert caller.wait(15) == 0, caller.report()
    trace = caller.messages()
    assert "SIP/2.0 200 " in trace and "BYE sip:" in trace

    # Media flowed both ways: baresip sent its tone, SIPp echoed it back.
    phone.stop()
    assert _wav_frames(phone.recordings("enc")[0]) > 10
    assert _wav_frames(phone.recordings("dec")[0]) > 10


def test_baresip_manual_answer_and_dtmf(
    baresip_factory: MakeBaresip, sipp_factory: MakeSipp
) -> None:
    phone = baresip_factory(user="201", auto_answer=False)
    caller = sipp_factory(
        "uac_invite.xml",
        remote=f"{LOOPBACK}:{phone.sip_port}",
        service="201",
        duration_ms=2000,
        timeout=20,
    )
    caller.start()
    incoming = phone.wait_event("CALL_INCOMING")
    assert incoming["peeruri"].startswith("sip:sipp@127.0.0.1")
    phone.accept()
    phone.wait_event("CALL_ESTABLISHED")
    phone.send_dtmf("5#")
    # SIPp's RTP echo returns the RFC 4733 events, so baresip "hears" its own digits.
    digits = [phone.wait_event("CALL_DTMF_START")["param"] for _ in range(2)]
    assert digits == ["5", "#"]
    phone.wait_event("CALL_CLOSED", timeout=10)
    assert caller.wait(15) == 0, caller.report()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_baresip_dials_sipp_uas(
    baresip_factory: MakeBaresip, sipp_factory: MakeSipp, transport: str
) -> None:
    dest = sipp_factory(
        "uas_answer.xml", transport=transport, service="dest", duration_ms=300, timeout=20
    ).start()
    phone = baresip_factory(user="201", transport=transport)
    phone.dial(dest.uri)
    assert phone.wait_event("CALL_RINGING")["direction"] == "outgoing"
    up = phone.wait_event("CALL_ESTABLISHED")
    assert up["peeruri"].startswith(f"sip:dest@127.0.0.1:{dest.port}")
    assert dest.returncode is None  # still in the call, waiting for BYE
    phone.hangup()
    assert phone.wait_event("CALL_CLOSED")["param"] == "Connection reset by user"
    assert dest.wait(15) == 0, dest.report()
    trace = dest.messages()
    assert f"{transport.upper()} message received" in trace
    assert "BYE sip:" in trace


@pytest.mark.parametrize(
    ("scenario", "closed_param"),
    [
        ("uas_busy.xml", "486 Busy Here"),
        ("uas_noanswer.xml", "Connection reset by user"),
        ("uas_answer_then_bye.xml", "Connection reset by peer"),
    ],
)
def test_sipp_uas_variants(
    baresip_factory: MakeBaresip, sipp_factory: MakeSipp, scenario: str, closed_param: str
) -> None:
    dest = sipp_factory(scenario, service="dest", duration_ms=500, timeout=20).start()
    phone = baresip_factory(user="201")
    phone.dial(dest.uri)
    if scenario == "uas_noanswer.xml":
        phone.wait_event("CALL_RINGING")
        phone.hangup()  # -> CANCEL, which the scenario answers with 200 + 487
    closed = phone.wait_event("CALL_CLOSED")
    assert closed["param"] == closed_param
    assert dest.wait(15) == 0, dest.report()
    if scenario == "uas_noanswer.xml":
        assert "CANCEL sip:" in dest.messages()
        assert "CALL_ESTABLISHED" not in phone.event_types()
    if scenario == "uas_answer_then_bye.xml":
        assert "CALL_ESTABLISHED" in phone.event_types()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_baresip_registers_with_digest(
    baresip_factory: MakeBaresip, sipp_factory: MakeSipp, transport: str
) -> None:
    registrar = sipp_factory(
        "uas_register.xml",
        transport=transport,
        timeout=15,
        extra_args=["-set", "user", "201", "-set", "pass", "secret201"],
    )
    registrar.start()
    phone = baresip_factory(
        user="201",
        password="secret201",
        transport=transport,
        registrar=f"{LOOPBACK}:{registrar.port}",
    )
    assert phone.wait_registered()["type"] == "REGISTER_OK"
    assert registrar.wait(10) == 0, registrar.report()
    trace = registrar.messages()
    assert "Authorization: Digest" in trace and 'username="201"' in trace


def test_baresip_register_wrong_password_fails(
    baresip_factory: MakeBaresip, sipp_factory: MakeSipp
) -> None:
    registrar = sipp_factory(
        "uas_register.xml",
        timeout=15,
        extra_args=["-set", "user", "201", "-set", "pass", "secret201"],
    )
    registrar.start()
    phone = baresip_factory(user="201", password="wrong", registrar=f"{LOOPBACK}:{registrar.port}")
    with pytest.raises(BaresipError, match="403 Forbidden"):
        phone.wait_registered()
    assert registrar.wait(10) != 0  # the scenario flags rejected credentials


# ------------------------------------------------------------------- pyVoIP
def test_display_name_parsing() -> None:
    from tests.peers.pyvoip_phone import display_name_of

    assert display_name_of('"Call: +49 30 1234" <sip:201@127.0.0.1>') == "Call: +49 30 1234"
    assert display_name_of('"A \\"B\\"" <sip:x@h>') == 'A "B"'
    assert display_name_of("Bob <sip:bob@h>;tag=1") == "Bob"
    assert display_name_of("<sip:bob@h>") == ""
    assert display_name_of("sip:bob@h") == ""


def test_pyvoip_registers_and_auto_answers(tmp_path: Path, sipp_factory: MakeSipp) -> None:
    from tests.peers.pyvoip_phone import PyVoIPPhone

    registrar = sipp_factory(
        "uas_register.xml",
        timeout=15,
        extra_args=["-set", "user", "202", "-set", "pass", "secret202"],
    )
    registrar.start()
    phone = PyVoIPPhone(registrar.port, "202", "secret202")
    try:
        phone.start()
        assert phone.registered
        assert registrar.wait(10) == 0, registrar.report()
        # pyVoIP talks only to its server address, so the caller takes the registrar's port.
        caller = sipp_factory(
            "uac_invite.xml",
            remote=f"{LOOPBACK}:{phone.sip_port}",
            port=registrar.port,
            service="202",
            duration_ms=500,
            timeout=20,
        )
        caller.start()
        ev = phone.wait_for("incoming", timeout=10)
        assert ev.display_name == "SIPp Caller"
        assert ev.from_user == "sipp" and ev.to_user == "202"
        assert phone.wait_for("answered", timeout=5).call_id == ev.call_id
        assert phone.wait_for("bye", timeout=10).call_id == ev.call_id
        assert caller.wait(15) == 0, caller.report()
    finally:
        phone.stop()
