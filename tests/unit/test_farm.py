"""loadtest/farm.py: the load test's simulated phones, sans-IO.

Two kinds of tests: the farm's :class:`FarmCore` wired to the REAL sipdial core
(:class:`tests.unit.simnet.SimNet`, fake clock, no sockets) for whole click-to-dial calls, and
hand-made messages for the details (retransmissions, CANCEL, digest, NOTIFY order).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from loadtest.farm import FarmConfig, FarmCore, parse_users
from sipdial.sip import (
    DigestServer,
    NonceManager,
    Peer,
    Request,
    Response,
    call_id,
    cseq,
    make_response,
    parse_message,
    to_tag,
)
from tests.unit.simnet import START, SimNet, make_config, sdp_answer

SIPDIAL = ("127.0.0.1", 5060)
FARM_PORT = 5070
FARM = Peer("udp", "127.0.0.1", FARM_PORT)
DEST = Peer("udp", "127.0.0.1", 5080)
T1 = 0.5


def farm_config(**changes: Any) -> FarmConfig:
    base: dict[str, Any] = {"sipdial": SIPDIAL, "users": ("1", "2", "3"),
                            "password_template": "pw{user}"}
    base.update(changes)
    return FarmConfig(**base)


def make_farm(**changes: Any) -> tuple[FarmCore, list[tuple[int, int]]]:
    config = farm_config(**changes)
    ready: list[tuple[int, int]] = []
    ports = [30000 + 2 * i for i in range(len(FarmCore.device_order(config)))]
    farm = FarmCore(config, FARM_PORT, ports, on_ready=lambda r, f: ready.append((r, f)))
    return farm, ready


def events(farm: FarmCore) -> list[dict[str, Any]]:
    return [json.loads(line) for line in farm.drain_events()]


def names(evs: list[dict[str, Any]]) -> list[str]:
    return [e["ev"] for e in evs]


# ------------------------------------------------------------------ the farm against sipdial


class Destination:
    """The SIPp UAS of the harness, scripted: 100/180/200 with SDP at once, BYE later."""

    def __init__(self, net: SimNet) -> None:
        self.net = net
        self.dialogs: list[tuple[Request, Response]] = []
        self.byes_sent = 0

    def handle(self, data: bytes) -> None:
        message = parse_message(data)
        if isinstance(message, Response):
            return  # the 200 to our BYE
        if message.method == "INVITE" and to_tag(message) is None:
            for status in (100, 180):
                self.send(make_response(message, status, to_tag="dest"))
            ok = make_response(message, 200, to_tag="dest")
            ok.headers.add("Contact", f"<sip:dest@127.0.0.1:{DEST.port}>")
            ok.headers.add("Content-Type", "application/sdp")
            ok.body = sdp_answer("127.0.0.1", 40000)
            self.dialogs.append((message, ok))
            self.send(ok)
        elif message.method in ("BYE", "INVITE"):
            self.send(make_response(message, 200))

    def bye(self) -> None:
        for invite, ok in self.dialogs:
            lines = [
                f"BYE {parse_contact(invite)} SIP/2.0",
                f"Via: SIP/2.0/UDP 127.0.0.1:{DEST.port};branch=z9hG4bKdestbye{self.byes_sent}",
                "Max-Forwards: 70",
                f"From: {ok.headers.get('To')}",
                f"To: {invite.headers.get('From')}",
                f"Call-ID: {call_id(invite)}",
                "CSeq: 1 BYE",
            ]
            self.byes_sent += 1
            self.net.deliver(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode(),
                             DEST)
        self.dialogs.clear()

    def send(self, response: Response) -> None:
        self.net.deliver(response.to_bytes(), DEST)


def parse_contact(request: Request) -> str:
    value = request.headers.get("Contact") or ""
    return value.strip().lstrip("<").split(">")[0]


class World:
    """sipdial (SimNet) + the farm at 127.0.0.1:5070 + the destination at :5080."""

    def __init__(self, farm_changes: dict[str, Any] | None = None, **net: Any) -> None:
        self.net = SimNet(make_config(extra_users=range(1, 4)), **net)
        self.farm, self.ready = make_farm(**(farm_changes or {}))
        self.dest = Destination(self.net)
        self.lost_to_farm = 0  # drop the next N datagrams sipdial sends the farm

    @property
    def now(self) -> float:
        return self.net.now

    def pump(self) -> None:
        for _ in range(1000):
            moved = False
            for data, addr, source in self.farm.drain():
                moved = True
                if source == 0:
                    assert addr == SIPDIAL
                    self.net.deliver(data, FARM)
            for data in self.net.sent_to(FARM):
                moved = True
                if self.lost_to_farm:
                    self.lost_to_farm -= 1
                    continue
                self.farm.receive(data, SIPDIAL, self.net.now)
            for data in self.net.sent_to(DEST):
                moved = True
                self.dest.handle(data)
            if not moved:
                return
        raise AssertionError("no quiet after 1000 rounds")

    def advance(self, seconds: float) -> None:
        """Both clocks forward, timers in deadline order (bounded)."""
        target = self.net.now + seconds
        for _ in range(100_000):
            self.pump()
            deadlines = [d for d in (self.net.timers.next_deadline(),
                                     self.farm.timers.next_deadline()) if d is not None]
            step = min(deadlines, default=target)
            if step > target:
                break
            self.net.advance(max(0.0, step - self.net.now))
            self.farm.timers.run_due(self.net.now)
        self.net.advance(max(0.0, target - self.net.now))
        self.farm.timers.run_due(self.net.now)
        self.pump()

    def start(self) -> None:
        self.farm.start(self.net.now)
        self.advance(1.0)


def test_every_device_registers_with_digest_and_the_ready_callback_fires_once() -> None:
    world = World(farm_changes={"devices": 2})
    world.start()
    assert world.ready == [(6, 0)]
    evs = events(world.farm)
    assert names(evs).count("registered") == 6
    regs = world.net.store.registrations
    assert set(regs) >= {("1", f"sip:1-d1@127.0.0.1:{FARM_PORT}"),
                         ("1", f"sip:1-d2@127.0.0.1:{FARM_PORT}")}, regs


def test_refer_call_completes_through_sipdial() -> None:
    world = World()
    world.start()
    events(world.farm)
    record = world.net.create_call(user="2", to="+4930123400001", mode="refer")
    world.advance(2.0)
    world.dest.bye()
    world.advance(5.0)
    call = world.net.store.calls[record.id]
    assert (call.state, call.cause) == ("ended", "completed"), call
    evs = events(world.farm)
    assert names(evs) == ["invite", "answered", "acked", "refer", "referred_invite",
                          "referred_connected", "bye", "bye"], evs
    invite = evs[0]
    assert invite["user"] == "2" and invite["device"] == 1
    assert invite["from_user"] == "+4930123400001" and invite["retrans"] is False
    referred = evs[4]
    assert referred["parent"] == invite["call_id"] != referred["call_id"]
    assert {evs[6]["call_id"], evs[7]["call_id"]} == {invite["call_id"], referred["call_id"]}
    assert world.farm.stats.retransmissions == 0


def test_bridge_call_completes_through_sipdial() -> None:
    from tests.unit.test_bridge_flow import FakeMedia, FakePrompts

    world = World(media=FakeMedia(), prompts=FakePrompts())
    world.start()
    events(world.farm)
    record = world.net.create_call(user="3", to="+4930123400002", mode="bridge",
                                   confirm=False)
    world.advance(2.0)
    world.dest.bye()
    world.advance(5.0)
    call = world.net.store.calls[record.id]
    assert (call.state, call.cause) == ("ended", "completed"), call
    assert names(events(world.farm)) == ["invite", "answered", "acked", "reinvite", "bye"]


def test_refer_call_completes_when_sipdials_messages_to_the_farm_are_lost() -> None:
    world = World()
    world.start()
    events(world.farm)
    record = world.net.create_call(user="1", to="+4930123400003", mode="refer")
    world.lost_to_farm = 1  # the INVITE: sipdial retransmits it
    world.advance(2.0)
    world.dest.bye()
    world.advance(10.0)
    call = world.net.store.calls[record.id]
    assert (call.state, call.cause) == ("ended", "completed"), call
    assert names(events(world.farm))[:3] == ["invite", "answered", "acked"]


# ------------------------------------------------------------------ hand-made messages


def invite_bytes(*, user: str = "1-d1", branch: str = "z9hG4bKs1", cid: str = "c1@sipdial",
                 number: str = "+4930123400042", body: bytes | None = None) -> bytes:
    offer = body if body is not None else (
        b"v=0\r\no=sipdial 1 1 IN IP4 127.0.0.1\r\ns=sipdial\r\nc=IN IP4 127.0.0.1\r\n"
        b"t=0 0\r\nm=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
    lines = [
        f"INVITE sip:{user}@127.0.0.1:{FARM_PORT} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}",
        "Max-Forwards: 70",
        f"From: <sip:{number}@127.0.0.1>;tag=sd1",
        f"To: <sip:{user.split('-')[0]}@127.0.0.1>",
        f"Call-ID: {cid}",
        "CSeq: 1 INVITE",
        "Contact: <sip:sipdial@127.0.0.1:5060>",
        "Content-Type: application/sdp",
    ]
    return ("\r\n".join(lines) + f"\r\nContent-Length: {len(offer)}\r\n\r\n").encode() + offer


def in_dialog(method: str, ok: Response, *, branch: str, number: int,
              extra: list[str] | None = None, body: bytes = b"") -> bytes:
    lines = [
        f"{method} sip:1-d1@127.0.0.1:{FARM_PORT} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}",
        "Max-Forwards: 70",
        f"From: {ok.headers.get('From')}",
        f"To: {ok.headers.get('To')}",
        f"Call-ID: {call_id(ok)}",
        f"CSeq: {number} {method}",
        *(extra or []),
    ]
    return ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def sent(farm: FarmCore) -> list[Request | Response]:
    return [parse_message(d) for d, _a, s in farm.drain() if s == 0]


def statuses(messages: list[Request | Response]) -> list[int | str]:
    return [m.status if isinstance(m, Response) else m.method for m in messages]


def answered_farm(**changes: Any) -> tuple[FarmCore, Response]:
    farm, _ = make_farm(**changes)
    farm.receive(invite_bytes(), SIPDIAL, START)
    out = sent(farm)
    assert statuses(out) == [180, 200]
    ok = out[1]
    assert isinstance(ok, Response)
    return farm, ok


def test_invite_is_answered_180_then_200_with_an_sdp_answer_on_the_devices_rtp_port() -> None:
    farm, ok = answered_farm()
    assert to_tag(ok)
    assert ok.headers.get("Contact") == f"<sip:1-d1@127.0.0.1:{FARM_PORT}>"
    body = ok.body.decode()
    assert "c=IN IP4 127.0.0.1" in body and "m=audio 30000 RTP/AVP 0 8 101" in body
    assert "a=rtpmap:101 telephone-event/8000" in body
    assert names(events(farm)) == ["invite", "answered"]


def test_media_to_names_the_rtp_probe_as_every_devices_audio_address() -> None:
    """``--media-to``: sipdial's prompt RTP goes to loadtest.rtp_probe, not the device."""
    _farm, ok = answered_farm(media_to=("127.0.0.9", 41000))
    body = ok.body.decode()
    assert "c=IN IP4 127.0.0.9" in body and "m=audio 41000 RTP/AVP 0 8 101" in body
    assert "30000" not in body.split("m=audio", 1)[1]


def test_200_is_retransmitted_until_the_ack_and_a_retransmitted_invite_gets_it_again() -> None:
    farm, ok = answered_farm()
    farm.timers.run_due(START + T1)
    assert statuses(sent(farm)) == [200]
    farm.timers.run_due(START + 3 * T1)  # T1 doubling: 0.5, then 1.0 later
    assert statuses(sent(farm)) == [200]
    farm.receive(invite_bytes(), SIPDIAL, START + 1.6)  # sipdial's retransmission
    assert statuses(sent(farm)) == [200]
    ack = in_dialog("ACK", ok, branch="z9hG4bKack", number=1)
    farm.receive(ack, SIPDIAL, START + 1.7)
    farm.timers.run_due(START + 40)
    assert sent(farm) == []
    assert names(events(farm)) == ["invite", "answered", "acked"]
    assert farm.stats.retransmissions == 3 and farm.stats.duplicates_in == 1


def test_200_without_ack_gives_up_after_64_t1_with_a_timeout_event() -> None:
    farm, _ok = answered_farm()
    for step in range(1, 80):
        farm.timers.run_due(START + step * 0.5)
    resent = statuses(sent(farm))
    assert resent and set(resent) == {200}
    assert len(resent) == 10  # 0.5 1 2 4 4 4 4 4 4 4 (s after the 200) < 32 s
    assert names(events(farm))[-1] == "timeout"


def test_reject_and_no_answer_shares_and_cancel() -> None:
    farm, _ = make_farm(reject_share=0.5, no_answer_share=0.5, seed=7)
    outcome: dict[str, str] = {}
    for n in range(40):
        farm.receive(invite_bytes(branch=f"z9hG4bKb{n}", cid=f"c{n}", number=f"+49{n}"),
                     SIPDIAL, START)
        out = statuses(sent(farm))
        outcome[f"c{n}"] = "busy" if out == [180, 486] else "ring" if out == [180] else "?"
    assert set(outcome.values()) == {"busy", "ring"}
    again, _ = make_farm(reject_share=0.5, no_answer_share=0.5, seed=7)
    for n in range(40):
        # deterministic: same seed, same numbers, same choices (other Call-IDs: a fork)
        again.receive(invite_bytes(branch=f"z9hG4bKb{n}", cid=f"fork{n}", number=f"+49{n}"),
                      SIPDIAL, START)
        out = statuses(sent(again))
        assert outcome[f"c{n}"] == ("busy" if out == [180, 486] else "ring")
    ringing = next(n for n in range(40) if outcome[f"c{n}"] == "ring")
    cancel = invite_bytes(branch=f"z9hG4bKb{ringing}", cid=f"c{ringing}",
                          number=f"+49{ringing}").replace(
        b"INVITE sip:", b"CANCEL sip:", 1).replace(b"1 INVITE", b"1 CANCEL")
    farm.receive(cancel, SIPDIAL, START + 1)
    out = sent(farm)
    assert statuses(out) == [200, 487]
    assert cseq(out[0]).method == "CANCEL" and cseq(out[1]).method == "INVITE"
    evs = events(farm)
    assert names(evs).count("cancelled") == 1 and names(evs).count("rejected") > 0
    assert next(e for e in evs if e["ev"] == "rejected")["status"] == 486


def test_bye_is_answered_once_and_its_retransmission_without_a_new_event() -> None:
    farm, ok = answered_farm()
    farm.receive(in_dialog("ACK", ok, branch="z9hG4bKack", number=1), SIPDIAL, START)
    bye = in_dialog("BYE", ok, branch="z9hG4bKbye", number=2)
    farm.receive(bye, SIPDIAL, START + 1)
    farm.receive(bye, SIPDIAL, START + 2)
    assert statuses(sent(farm)) == [200, 200]
    assert names(events(farm)) == ["invite", "answered", "acked", "bye"]
    unknown = in_dialog("BYE", ok, branch="z9hG4bKbye2", number=3)
    farm.receive(unknown, SIPDIAL, START + 3)
    assert statuses(sent(farm)) == [481]


def test_refer_202_notify_and_referred_invite_answering_407_with_valid_digest() -> None:
    farm, ok = answered_farm()
    farm.receive(in_dialog("ACK", ok, branch="z9hG4bKack", number=1), SIPDIAL, START)
    refer = in_dialog("REFER", ok, branch="z9hG4bKref", number=2, extra=[
        "Refer-To: <sip:+4930123400042@127.0.0.1:5060;x-c2d=abc?Replaces=foo>",
        "Referred-By: <sip:1@127.0.0.1>"])
    farm.receive(refer, SIPDIAL, START + 1)
    out = sent(farm)
    assert statuses(out) == [202, "NOTIFY", "INVITE"]
    notify, invite = out[1], out[2]
    assert isinstance(notify, Request) and isinstance(invite, Request)
    assert notify.body == b"SIP/2.0 100 Trying\r\n"
    assert notify.headers.get("Event") == "refer"
    assert notify.headers.get("Subscription-State", "").startswith("active")
    assert str(notify.uri) == "sip:sipdial@127.0.0.1:5060"
    assert str(invite.uri) == "sip:+4930123400042@127.0.0.1:5060;x-c2d=abc"
    assert invite.headers.get("From", "").startswith("<sip:1@127.0.0.1>;tag=")
    assert call_id(invite) != call_id(ok)
    farm.receive(make_response(notify, 200).to_bytes(), SIPDIAL, START + 1.01)
    # sipdial challenges the referred INVITE
    server = DigestServer("127.0.0.1", lambda user: "pw1" if user == "1" else None,
                          NonceManager(b"k" * 32), ("MD5",))
    challenge = make_response(invite, 407, to_tag="sdx")
    challenge.headers.add("Proxy-Authenticate", server.challenges(START)[0].to_header())
    farm.receive(challenge.to_bytes(), SIPDIAL, START + 1.02)
    out = sent(farm)
    assert statuses(out) == ["ACK", "INVITE"]
    ack, again = out
    assert isinstance(ack, Request) and isinstance(again, Request)
    assert cseq(ack).number == 1 and to_tag(ack) == "sdx"
    assert cseq(again).number == 2 and call_id(again) == call_id(invite)
    header = again.headers.get("Proxy-Authorization") or ""
    assert server.verify(header, "INVITE", START + 1.03, uri=str(again.uri)) == ("ok", "1")
    # the challenge retransmitted (our ACK lost): ACKed again, no third INVITE
    farm.receive(challenge.to_bytes(), SIPDIAL, START + 1.5)
    assert statuses(sent(farm)) == ["ACK"]
    # answered: ACK to the 200's Contact, final NOTIFY in the first dialog
    answer = make_response(again, 200, to_tag="sdy")
    answer.headers.add("Contact", "<sip:relay-leg@127.0.0.1:5060>")
    answer.headers.add("Content-Type", "application/sdp")
    answer.body = sdp_answer("127.0.0.1", 40000)
    farm.receive(answer.to_bytes(), SIPDIAL, START + 1.6)
    out = sent(farm)
    assert statuses(out) == ["ACK", "NOTIFY"]
    ack2, final = out
    assert isinstance(ack2, Request) and isinstance(final, Request)
    assert str(ack2.uri) == "sip:relay-leg@127.0.0.1:5060" and cseq(ack2).number == 2
    assert final.body == b"SIP/2.0 200 OK\r\n"
    assert final.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert cseq(final).number == cseq(notify).number + 1
    # a retransmitted 200: the ACK again
    farm.receive(answer.to_bytes(), SIPDIAL, START + 2)
    assert statuses(sent(farm)) == ["ACK"]
    evs = events(farm)
    assert names(evs) == ["invite", "answered", "acked", "refer", "referred_invite",
                          "referred_connected"]
    assert evs[3]["refer_to"].startswith("<sip:+4930123400042@")


def test_final_notify_waits_for_the_first_and_requests_are_retransmitted_timer_e() -> None:
    farm, ok = answered_farm()
    farm.receive(in_dialog("ACK", ok, branch="z9hG4bKack", number=1), SIPDIAL, START)
    refer = in_dialog("REFER", ok, branch="z9hG4bKref", number=2, extra=[
        "Refer-To: <sip:+4930123400042@127.0.0.1:5060>"])
    farm.receive(refer, SIPDIAL, START)
    out = sent(farm)
    notify, invite = out[1], out[2]
    assert isinstance(notify, Request) and isinstance(invite, Request)
    busy = make_response(invite, 486, to_tag="z")
    farm.receive(busy.to_bytes(), SIPDIAL, START + 0.1)
    assert statuses(sent(farm)) == ["ACK"]  # the final NOTIFY waits for the first's answer
    farm.timers.run_due(START + T1)
    assert statuses(sent(farm)) == ["NOTIFY"]  # Timer E: the first NOTIFY again
    farm.receive(make_response(notify, 200).to_bytes(), SIPDIAL, START + 0.6)
    out = sent(farm)
    assert statuses(out) == ["NOTIFY"]
    final = out[0]
    assert isinstance(final, Request)
    assert final.body == b"SIP/2.0 486 Busy Here\r\n"
    assert names(events(farm))[-1] == "referred_failed"


def test_register_timeout_after_64_t1_counts_as_failed_and_makes_the_farm_ready() -> None:
    farm, ready = make_farm(users=("9",))
    farm.start(START)
    farm.timers.run_due(START)
    assert statuses(sent(farm)) == ["REGISTER"]
    for step in range(1, 70):
        farm.timers.run_due(START + step * 0.5)
    assert len(sent(farm)) == 10  # Timer E: 0.5 1 2 4 4 4 4 4 4 4 -> 31.5 s, then F
    assert ready == [(0, 1)]
    assert names(events(farm)) == ["timeout", "register_failed"]


def test_parse_users() -> None:
    assert parse_users("1-3") == ("1", "2", "3")
    assert parse_users("7") == ("7",)
    with pytest.raises(ValueError):
        parse_users("5-1")


def test_forked_call_rings_every_device_and_sipdial_keeps_one() -> None:
    world = World(farm_changes={"devices": 2})
    world.start()
    events(world.farm)
    record = world.net.create_call(user="1", to="+4930123400004", mode="refer")
    world.advance(2.0)
    world.dest.bye()
    world.advance(5.0)
    call = world.net.store.calls[record.id]
    assert (call.state, call.cause) == ("ended", "completed"), call
    evs = events(world.farm)
    invites = [e for e in evs if e["ev"] == "invite"]
    assert sorted(e["device"] for e in invites) == [1, 2]
    assert len({e["call_id"] for e in invites}) >= 1
    assert names(evs).count("referred_connected") == 1


def test_reinvite_answered_200_with_sdp_retransmitted_until_its_ack() -> None:
    farm, ok = answered_farm()
    farm.receive(in_dialog("ACK", ok, branch="z9hG4bKack", number=1), SIPDIAL, START)
    offer = sdp_answer("127.0.0.1", 41000)
    reinvite = in_dialog("INVITE", ok, branch="z9hG4bKre", number=2,
                         extra=["Content-Type: application/sdp"], body=offer)
    farm.receive(reinvite, SIPDIAL, START + 1)
    out = sent(farm)
    assert statuses(out) == [200]
    assert b"m=audio 30000 RTP/AVP 0" in out[0].body
    farm.timers.run_due(START + 1 + T1)
    assert statuses(sent(farm)) == [200]
    farm.receive(in_dialog("ACK", ok, branch="z9hG4bKack2", number=2), SIPDIAL, START + 1.6)
    farm.timers.run_due(START + 60)
    assert sent(farm) == []
    assert names(events(farm)) == ["invite", "answered", "acked", "reinvite"]


def test_dtmf_after_the_ack_is_rfc4733_event_1_from_the_devices_rtp_socket() -> None:
    farm, ok = answered_farm(dtmf_after=0.2)
    farm.receive(in_dialog("ACK", ok, branch="z9hG4bKack", number=1), SIPDIAL, START)
    packets = []
    for step in range(1, 30):
        farm.timers.run_due(START + step * 0.02)
        packets += [(d, a, s) for d, a, s in farm.drain() if s != 0]
    assert len(packets) == 3
    assert {(a, s) for _d, a, s in packets} == {(("127.0.0.1", 20000), 30000)}
    heads = [d[:12] for d, _a, _s in packets]
    assert [h[1] for h in heads] == [0x80 | 101, 101, 101]  # marker on the first, PT 101
    assert len({h[4:8] for h in heads}) == 1  # one timestamp: one event
    payloads = [d[12:] for d, _a, _s in packets]
    assert [p[0] for p in payloads] == [1, 1, 1]  # event "1"
    assert [p[1] & 0x80 for p in payloads] == [0, 0, 0x80]  # end bit on the last
    assert names(events(farm))[-1] == "dtmf"


def test_a_reinvite_before_the_first_ack_leaves_both_2xx_waiting_for_their_acks() -> None:
    farm, ok = answered_farm()
    reinvite = in_dialog("INVITE", ok, branch="z9hG4bKre", number=2,
                         extra=["Content-Type: application/sdp"],
                         body=sdp_answer("127.0.0.1", 41000))
    farm.receive(reinvite, SIPDIAL, START + 0.1)  # the first ACK was lost
    assert statuses(sent(farm)) == [200]
    farm.receive(in_dialog("ACK", ok, branch="z9hG4bKa2", number=2), SIPDIAL, START + 0.2)
    farm.timers.run_due(START + T1)
    assert statuses(sent(farm)) == [200]  # the first 200 only: its ACK is still missing
    farm.receive(in_dialog("ACK", ok, branch="z9hG4bKa1", number=1), SIPDIAL, START + 0.6)
    farm.timers.run_due(START + 60)
    assert sent(farm) == [] and farm.stats.unmatched == 0
    assert names(events(farm)) == ["invite", "answered", "reinvite", "acked"]
