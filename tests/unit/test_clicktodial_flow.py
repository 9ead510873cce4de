"""Click-to-dial (REFER mode) end to end through CallEngine.create_call, with scripted phones
speaking bytes to the real endpoint, UA, registrar and call engine, and a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from sipdial.api.service import ApiError
from sipdial.calls import MediaPort, PromptSource, ReferralWatch, Resolver
from sipdial.calls.transfer import NOTIFY_GRACE
from sipdial.config import Config
from sipdial.sip.message import Request, Response, call_id, cseq, from_, to
from sipdial.sip.uri import NameAddr, SipURI, parse_name_addr_list
from sipdial.store.models import CallRecord
from tests.unit.simnet import (
    MEDIA,
    Phone,
    PhoneDialog,
    SimNet,
    ack_for,
    first_via,
    make_config,
    sdp_answer,
)

TARGET = "+4930123"
SIPFRAG = "message/sipfrag;version=2.0"


class Flow:
    """One click-to-dial call for user 201 with scripted devices and a scripted target."""

    def __init__(self, *, devices: int = 1, config: Config | None = None,
                 user_agents: tuple[str | None, ...] = ("Yealink SIP-T46S 66.86.0.15",
                                                        "baresip v1.0.0 (x86_64/linux)"),
                 media: MediaPort | None = None, prompts: PromptSource | None = None,
                 resolver: Resolver | None = None,
                 referrals: ReferralWatch | None = None) -> None:
        self.net = SimNet(config, media=media, prompts=prompts, resolver=resolver,
                          referrals=referrals)
        self.phones = [Phone(self.net, port=5070 + i, contact_host=f"192.168.1.{10 + i}",
                             user_agent=user_agents[i % len(user_agents)])
                       for i in range(devices)]
        for phone in self.phones:
            assert phone.register().status == 200
        self.target = Phone(self.net, TARGET, None, port=5080, contact_host="127.0.0.1",
                            user_agent=None)
        self.net.clear()
        self.call_id = ""
        self.invites: dict[int, Request] = {}  # sipdial's INVITE per phone port
        self.tags: dict[int, str] = {}
        self.dialog: PhoneDialog | None = None  # the answering phone's first dialog
        self.answered: Phone | None = None
        self.refer: Request | None = None
        self.referred: Request | None = None  # the phone's authenticated INVITE to sipdial
        self.referred_ok: Response | None = None
        self.target_invite: Request | None = None

    @property
    def phone(self) -> Phone:
        return self.phones[0]

    @property
    def net_record(self) -> CallRecord:
        return self.net.store.calls[self.call_id]

    @property
    def state(self) -> str:
        return self.net_record.state

    @property
    def cause(self) -> str | None:
        return self.net_record.cause

    def states(self) -> list[str]:
        return [e.state for e in self.net_record.events]

    # ------------------------------------------------------------ the user's device(s)

    def create(self, **kw: Any) -> dict[str, Any]:
        args: dict[str, Any] = {"user": "201", "to": TARGET, "device": None,
                                "auto_answer": None, "mode": None}
        args.update(kw)
        results: list[dict[str, Any]] = []
        errors: list[Any] = []
        self.net.api.create_call(**args).addCallbacks(results.append, errors.append)
        assert not errors, errors[0]
        (result,) = results
        self.call_id = result["id"]
        for phone in self.phones:
            if not phone.nothing():
                self.invites[phone.peer.port] = phone.take_request("INVITE")
        return result

    def invite(self, phone: Phone | None = None) -> Request:
        return self.invites[(phone or self.phone).peer.port]

    def ring(self, phone: Phone | None = None, status: int = 180) -> None:
        phone = phone or self.phone
        tag = self.tags.setdefault(phone.peer.port, f"ph{phone.peer.port}")
        phone.reply(self.invite(phone), 100)
        phone.reply(self.invite(phone), status, to_tag=tag)

    def answer(self, phone: Phone | None = None) -> Response:
        """The device answers: 200 with SDP; sipdial ACKs and (first answer) REFERs."""
        phone = phone or self.phone
        tag = self.tags.setdefault(phone.peer.port, f"ph{phone.peer.port}")
        invite = self.invite(phone)
        response = phone.reply(invite, 200, to_tag=tag, body=sdp_answer())
        ack = phone.take_request("ACK")
        assert cseq(ack).number == cseq(invite).number
        assert call_id(ack) == call_id(invite)
        assert to(ack).tag == tag
        assert str(ack.uri) == phone.contact_uri  # the remote target: the phone's Contact
        if self.answered is None:
            self.answered = phone
            self.dialog = PhoneDialog(phone, invite, tag)
        return response

    def take_refer(self) -> Request:
        assert self.answered is not None
        refer = self.answered.take_request("REFER")
        self.refer = refer
        return refer

    def accept_refer(self, status: int = 202) -> None:
        assert self.refer is not None and self.answered is not None
        self.answered.reply(self.refer, status, contact=False)

    def notify(self, frag: str, *, terminated: bool = False) -> Response:
        """The phone reports the transfer's progress in its first dialog."""
        assert self.dialog is not None and self.answered is not None
        state = "terminated;reason=noresource" if terminated else "active;expires=60"
        request = self.dialog.request("NOTIFY", extra=[
            ("Event", "refer"), ("Subscription-State", state)],
            body=f"{frag}\r\n".encode(), content_type=SIPFRAG)
        self.answered.send(request)
        return self.answered.take_response(200)

    def refer_to(self) -> str:
        assert self.refer is not None
        return str(NameAddr.parse(self.refer.headers.get("Refer-To") or "").uri)

    def referred_invite(self) -> Request:
        """The phone follows the REFER: INVITE -> 407 -> ACK -> INVITE with credentials."""
        phone = self.answered
        assert phone is not None
        uri = self.refer_to()
        cid = phone.new_id("referred")
        sdp = sdp_answer(port=31000)
        extra = [("Referred-By", self.refer.headers.get("Referred-By") or "")] \
            if self.refer is not None else []
        first = phone.request("INVITE", uri, call_id_value=cid, from_tag="rf-a",
                              to_value=f"<sip:{TARGET}@127.0.0.1>", cseq_number=1,
                              extra=extra, body=sdp, content_type="application/sdp")
        phone.send(first)
        challenge = phone.take_response(407)
        phone.send(ack_for(first, challenge, first_via(first)))
        assert phone.nothing(), phone.pending()
        auth = phone.authorization(challenge, "INVITE", uri, proxy=True)
        second = phone.request("INVITE", uri, call_id_value=cid, from_tag="rf-a",
                               to_value=f"<sip:{TARGET}@127.0.0.1>", cseq_number=2,
                               extra=[*extra, ("Proxy-Authorization", auth)], body=sdp,
                               content_type="application/sdp")
        phone.send(second)
        if phone.pending()[:1] and phone.pending()[0].startswith("100 "):
            phone.take_response(100)  # none when sipdial refused it at once
        self.referred = second
        return second

    # ------------------------------------------------------------ the target

    def target_gets_invite(self) -> Request:
        invite = self.target.take_request("INVITE")
        self.target_invite = invite
        return invite

    def target_rings(self) -> Response:
        assert self.target_invite is not None
        self.target.reply(self.target_invite, 100)
        self.target.reply(self.target_invite, 180, to_tag="tgt")
        assert self.answered is not None
        return self.answered.take_response(180)  # relayed to the phone

    def target_answers(self) -> Response:
        assert self.target_invite is not None and self.answered is not None
        self.target.reply(self.target_invite, 200, to_tag="tgt", body=sdp_answer("10.7.7.7"))
        ack = self.target.take_request("ACK")
        assert cseq(ack).number == cseq(self.target_invite).number
        ok = self.answered.take_response(200)
        self.referred_ok = ok
        return ok

    def phone_acks_bridge(self) -> None:
        assert self.referred is not None and self.referred_ok is not None
        self.answered_send(self.bridge_request("ACK", cseq_number=2))

    def bridge_request(self, method: str, cseq_number: int) -> Request:
        """An in-dialog request from the phone on its referred (bridged) call."""
        assert self.referred is not None and self.referred_ok is not None
        assert self.answered is not None
        contact = parse_name_addr_list(self.referred_ok.headers.get("Contact") or "")[0]
        ok_to = self.referred_ok.headers.get("To") or ""
        return self.answered.request(
            method, str(contact.uri), call_id_value=call_id(self.referred),
            from_tag="rf-a", to_value=ok_to, cseq_number=cseq_number)

    def answered_send(self, request: Request) -> None:
        assert self.answered is not None
        self.answered.send(request)

    # ------------------------------------------------------------ whole stretches

    def to_refer(self) -> Request:
        self.create()
        self.ring()
        assert self.state == "user_ringing"
        self.answer()
        return self.take_refer()

    def to_connected(self) -> None:
        self.to_refer()
        self.accept_refer()
        self.notify("SIP/2.0 100 Trying")
        self.referred_invite()
        self.target_gets_invite()
        self.target_rings()
        self.target_answers()
        self.phone_acks_bridge()
        assert self.state == "connected"


def header_names(request: Request) -> set[str]:
    return {name for name, _ in request.headers.items()}


AUTO_ANSWER_HEADERS = {"Call-Info", "Alert-Info", "Answer-Mode"}


# ------------------------------------------------------------------ the happy path


def test_invite_to_registered_device() -> None:
    flow = Flow()
    result = flow.create()
    assert result["state"] == "calling_user"
    invite = flow.invite()
    # sent to where the REGISTER came from, addressed to the registered Contact
    assert str(invite.uri) == "sip:201@192.168.1.10:5070"
    caller = from_(invite)
    assert caller.display_name == TARGET
    assert isinstance(caller.uri, SipURI) and caller.uri.user == TARGET
    assert caller.tag
    callee = to(invite)
    assert isinstance(callee.uri, SipURI) and callee.uri.user == "201"
    assert callee.tag is None
    pai = NameAddr.parse(invite.headers.get("P-Asserted-Identity") or "")
    assert isinstance(pai.uri, SipURI) and pai.uri.user == TARGET
    # one device, auto_answer = true in the config: ask it to answer by itself
    assert AUTO_ANSWER_HEADERS <= header_names(invite)
    assert invite.headers.get("Answer-Mode") == "Auto"
    assert invite.headers.get("Content-Type") == "application/sdp"
    assert b"m=audio" in invite.body
    assert f"c=IN IP4 {MEDIA[0]}".encode() in invite.body
    assert f"m=audio {MEDIA[1]} ".encode() in invite.body
    assert flow.net_record.auto_answer is True
    assert flow.states() == ["calling_user"]


def test_no_auto_answer_headers_when_not_asked() -> None:
    flow = Flow()
    flow.create(auto_answer=False)
    assert not AUTO_ANSWER_HEADERS & header_names(flow.invite())
    assert flow.net_record.auto_answer is False


def test_no_auto_answer_headers_when_user_config_says_no() -> None:
    flow = Flow(config=make_config(auto_answer=False))
    flow.create()
    assert not AUTO_ANSWER_HEADERS & header_names(flow.invite())


def test_ringing_then_answer_refers_phone_to_target_at_sipdial() -> None:
    flow = Flow()
    flow.create()
    flow.ring()
    assert flow.state == "user_ringing"
    rec = flow.net_record
    assert rec.events[-1].sip_code == 180
    flow.answer()
    assert flow.state == "user_answered"
    refer = flow.take_refer()
    invite = flow.invite()
    assert call_id(refer) == call_id(invite)
    assert from_(refer).tag == from_(invite).tag
    assert to(refer).tag == "ph5070"
    assert cseq(refer).number > cseq(invite).number
    assert str(refer.uri) == flow.phone.contact_uri
    refer_to = NameAddr.parse(refer.headers.get("Refer-To") or "")
    assert isinstance(refer_to.uri, SipURI)
    assert refer_to.uri.user == TARGET
    assert refer_to.uri.host == "127.0.0.1"
    assert refer_to.uri.params.get("x-c2d") == flow.call_id
    referred_by = NameAddr.parse(refer.headers.get("Referred-By") or "")
    assert isinstance(referred_by.uri, SipURI) and referred_by.uri.user == "201"
    assert refer.headers.get("Contact")
    assert flow.states() == ["calling_user", "user_ringing", "user_answered"]


def test_full_call_connected_and_completed_by_phone_bye() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    flow.notify("SIP/2.0 100 Trying")
    assert flow.state == "calling_target"
    flow.referred_invite()
    target_invite = flow.target_gets_invite()
    # the bridged INVITE goes to the route target with the phone's SDP
    assert str(target_invite.uri) == f"sip:{TARGET}@127.0.0.1:5080"
    assert b"m=audio 31000" in target_invite.body
    flow.target_rings()
    assert flow.state == "target_ringing"
    flow.notify("SIP/2.0 180 Ringing")  # the bridged leg already said so: no change
    assert flow.state == "target_ringing"
    ok = flow.target_answers()
    assert b"10.7.7.7" in ok.body  # the target's SDP reaches the phone untouched
    assert flow.state == "connected"
    flow.phone_acks_bridge()
    # the final NOTIFY ends sipdial's own first dialog with the phone
    flow.notify("SIP/2.0 200 OK", terminated=True)
    bye = flow.phone.take_request("BYE")
    assert flow.dialog is not None
    assert call_id(bye) == flow.dialog.call_id
    flow.phone.reply(bye, 200)
    assert flow.phone.nothing(), flow.phone.pending()
    assert flow.state == "connected"
    # the phone hangs up the bridged call: BYE to the target, call completed
    flow.answered_send(flow.bridge_request("BYE", cseq_number=3))
    flow.phone.take_response(200)
    target_bye = flow.target.take_request("BYE")
    assert call_id(target_bye) == call_id(target_invite)
    flow.target.reply(target_bye, 200)
    assert flow.state == "ended"
    assert flow.cause == "completed"
    assert flow.states() == ["calling_user", "user_ringing", "user_answered", "calling_target",
                             "target_ringing", "connected", "ended"]
    assert flow.call_id not in flow.net.calls.calls
    assert not flow.net.inbound.relayed
    assert flow.net.ua.dialogs == {}


def test_target_hangs_up_bridged_call() -> None:
    flow = Flow()
    flow.to_connected()
    bye = target_request(flow, "BYE", 1)
    flow.target.send(bye)
    flow.target.take_response(200)
    phone_bye = flow.phone.take_request("BYE")
    assert flow.referred is not None
    assert call_id(phone_bye) == call_id(flow.referred)
    assert flow.state == "ended"
    assert flow.cause == "completed"


def test_notify_grace_releases_first_dialog_without_final_notify() -> None:
    flow = Flow()
    flow.to_connected()
    assert flow.phone.nothing(), flow.phone.pending()
    flow.net.advance(5)  # NOTIFY_GRACE
    bye = flow.phone.take_request("BYE")
    assert flow.dialog is not None and call_id(bye) == flow.dialog.call_id
    assert flow.state == "connected"


def test_referred_invite_without_c2d_param_is_correlated_by_number() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    refer = flow.refer
    assert refer is not None
    # a phone that drops the URI parameter from Refer-To
    refer.headers.set("Refer-To", f"<sip:{TARGET}@127.0.0.1>")
    flow.referred_invite()
    flow.target_gets_invite()
    assert flow.state == "calling_target"


class Watch:
    """Records what a REFER-mode call tells the other workers (sipdial.app._MeshReferrals)."""

    def __init__(self) -> None:
        self.log: list[tuple[str, ...]] = []

    def waiting(self, call_id: str, user: str, number: str) -> None:
        self.log.append(("waiting", call_id, user, number))

    def done(self, call_id: str) -> None:
        self.log.append(("done", call_id))


def test_with_workers_a_refer_call_says_it_waits_until_connected() -> None:
    """From its first state on (a phone's referred INVITE may reach another worker before
    a message sent with the REFER would), until connected: then the INVITE has come."""
    watch = Watch()
    flow = Flow(referrals=watch)
    flow.to_refer()
    assert watch.log == [("waiting", flow.call_id, "201", TARGET)]
    flow.accept_refer()
    flow.notify("SIP/2.0 100 Trying")
    flow.referred_invite()
    flow.target_gets_invite()
    flow.target_rings()
    assert len(watch.log) == 1
    flow.target_answers()
    assert flow.state == "connected"
    assert len(watch.log) == 1  # a CANCEL or retransmission may still be routed by it
    flow.net.advance(32.0)
    assert watch.log[1:] == [("done", flow.call_id)]


def test_with_workers_a_call_that_ends_early_is_withdrawn_and_bridge_calls_never_wait() -> None:
    watch = Watch()
    flow = Flow(referrals=watch)
    flow.create()
    flow.net.calls.hang_up(flow.call_id)
    assert flow.state == "ended"
    flow.net.advance(32.0)
    assert watch.log == [("waiting", flow.call_id, "201", TARGET), ("done", flow.call_id)]
    from tests.unit.test_bridge_flow import FakeMedia, FakePrompts

    bridged = Watch()
    flow = Flow(referrals=bridged, media=FakeMedia(), prompts=FakePrompts())
    flow.create(mode="bridge")
    flow.ring()
    assert flow.state == "user_ringing" and bridged.log == []


def test_retransmitted_2xx_is_reacked_without_second_refer() -> None:
    flow = Flow()
    flow.create()
    flow.ring()
    response = flow.answer()
    flow.take_refer()
    (first_ack,) = [d for p, d in flow.net.log if p == flow.phone.peer and d.startswith(b"ACK")]
    flow.phone.send(response)  # 2xx retransmission
    assert flow.net.sent_to(flow.phone.peer) == [first_ack]  # the same ACK again
    assert flow.phone.nothing(), flow.phone.pending()
    flow.net.advance(0.6)  # REFER retransmission timer E is the only thing allowed out
    sent = [m for m in flow.phone.received() if isinstance(m, Request)]
    assert all(m.method == "REFER" for m in sent)
    assert all(cseq(m).number == cseq(flow.refer).number for m in sent)  # type: ignore[arg-type]
    assert flow.states() == ["calling_user", "user_ringing", "user_answered"]


def test_answer_without_ringing() -> None:
    flow = Flow()
    flow.create()
    flow.answer()
    flow.take_refer()
    assert flow.states() == ["calling_user", "user_answered"]


# ------------------------------------------------------------------ failures reaching the user


@pytest.mark.parametrize(("status", "cause"), [
    (486, "user_busy"), (600, "user_busy"), (603, "user_rejected"), (480, "user_no_answer"),
    (404, "failed"),
])
def test_device_refuses(status: int, cause: str) -> None:
    flow = Flow()
    flow.create()
    flow.ring()
    flow.phone.reply(flow.invite(), status, to_tag="ph5070")
    ack = flow.phone.take_request("ACK")  # the transaction ACKs the failure
    assert cseq(ack).number == cseq(flow.invite()).number
    assert flow.state == "ended"
    assert flow.cause == cause
    assert flow.net_record.events[-1].sip_code == status
    assert flow.phone.nothing(), flow.phone.pending()


def test_user_no_answer_ring_timeout_cancels() -> None:
    flow = Flow(config=make_config(user_answer_timeout=20))
    flow.create()
    flow.ring()
    flow.net.advance(19.9)
    assert flow.state == "user_ringing"
    assert flow.phone.nothing(), flow.phone.pending()
    flow.net.advance(0.2)
    assert flow.state == "ended"
    assert flow.cause == "user_no_answer"
    cancel = flow.phone.take_request("CANCEL")
    invite = flow.invite()
    assert first_via(cancel) == first_via(invite)
    assert cseq(cancel).number == cseq(invite).number
    flow.phone.reply(cancel, 200, contact=False)
    flow.phone.reply(invite, 487, to_tag="ph5070")
    flow.phone.take_request("ACK")
    assert flow.cause == "user_no_answer"


def test_cancel_before_any_provisional_waits_for_it() -> None:
    flow = Flow(config=make_config(user_answer_timeout=10))
    flow.create()
    flow.net.advance(10.1)
    assert flow.cause == "user_no_answer"
    # §9.1: no CANCEL before a provisional response; only INVITE retransmissions so far
    sent = flow.phone.received()
    assert all(isinstance(m, Request) and m.method == "INVITE" for m in sent)
    flow.phone.reply(flow.invite(), 180, to_tag="ph5070")
    flow.phone.take_request("CANCEL")


def test_user_hung_up_before_refer_accepted() -> None:
    flow = Flow()
    flow.to_refer()
    assert flow.dialog is not None
    bye = flow.dialog.request("BYE")
    flow.phone.send(bye)
    flow.phone.take_response(200)
    assert flow.state == "ended"
    assert flow.cause == "user_hung_up"
    assert flow.refer is not None
    flow.phone.reply(flow.refer, 481, contact=False)  # late answer to the REFER
    assert flow.cause == "user_hung_up"
    assert flow.phone.nothing(), flow.phone.pending()


# ------------------------------------------------------------------ REFER failures


@pytest.mark.parametrize("status", [405, 603, 501])
def test_refer_refused(status: int) -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer(status)
    assert flow.state == "ended"
    assert flow.cause == "refer_failed"
    assert flow.net_record.events[-1].sip_code == status
    bye = flow.phone.take_request("BYE")
    assert flow.dialog is not None and call_id(bye) == flow.dialog.call_id


def test_refer_accepted_but_no_referred_invite() -> None:
    flow = Flow(config=make_config(refer_timeout=10))
    flow.to_refer()
    flow.accept_refer()
    flow.net.advance(9.9)
    assert flow.state == "user_answered"
    flow.net.advance(0.2)
    assert flow.state == "ended"
    assert flow.cause == "refer_failed"
    flow.phone.take_request("BYE")


def test_refer_accepted_notify_100_but_no_referred_invite() -> None:
    flow = Flow(config=make_config(refer_timeout=10))
    flow.to_refer()
    flow.accept_refer()
    flow.notify("SIP/2.0 100 Trying")
    assert flow.state == "calling_target"
    flow.net.advance(600)
    assert flow.state == "ended"
    assert flow.cause == "refer_failed"


def test_refer_never_answered() -> None:
    flow = Flow(config=make_config(refer_timeout=60))
    flow.to_refer()
    flow.net.advance(33)  # timer F = 64*T1: a 408 for the REFER
    assert flow.state == "ended"
    assert flow.cause == "refer_failed"


def test_notify_with_failure_ends_call_when_phone_called_elsewhere() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    flow.notify("SIP/2.0 100 Trying")
    flow.notify("SIP/2.0 486 Busy Here", terminated=True)
    assert flow.state == "ended"
    assert flow.cause == "target_busy"


# ------------------------------------------------------------------ failures reaching the target


@pytest.mark.parametrize(("status", "relayed", "cause"), [
    (486, 486, "target_busy"), (503, 502, "target_failed"), (480, 480, "target_no_answer"),
])
def test_target_refuses(status: int, relayed: int, cause: str) -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    flow.referred_invite()
    target_invite = flow.target_gets_invite()
    flow.target_rings()
    flow.target.reply(target_invite, status, to_tag="tgt")
    flow.target.take_request("ACK")
    refusal = flow.phone.take_response(relayed)
    assert flow.referred is not None and call_id(refusal) == call_id(flow.referred)
    assert flow.state == "ended"
    assert flow.cause == cause
    assert flow.net_record.events[-1].sip_code == status
    # sipdial's first dialog with the phone is released too
    flow.phone.take_request("BYE")


def test_target_no_answer_timeout() -> None:
    flow = Flow(config=make_config(target_answer_timeout=25, refer_timeout=100))
    flow.to_refer()
    flow.accept_refer()
    flow.notify("SIP/2.0 100 Trying")
    flow.referred_invite()
    target_invite = flow.target_gets_invite()
    flow.target_rings()
    flow.net.advance(24.9)
    assert flow.state == "target_ringing"
    flow.net.advance(0.2)
    cancel = flow.target.take_request("CANCEL")
    assert cseq(cancel).number == cseq(target_invite).number
    assert first_via(cancel) == first_via(target_invite)
    flow.phone.take_response(480)
    assert flow.state == "ended"
    assert flow.cause == "target_no_answer"
    flow.target.reply(cancel, 200, contact=False)
    flow.target.reply(target_invite, 487, to_tag="tgt")
    flow.target.take_request("ACK")
    assert flow.cause == "target_no_answer"


def test_phone_cancels_referred_invite() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    referred = flow.referred_invite()
    target_invite = flow.target_gets_invite()
    flow.target_rings()
    cancel = flow.phone.request("CANCEL", str(referred.uri), call_id_value=call_id(referred),
                                from_tag="rf-a", to_value=f"<sip:{TARGET}@127.0.0.1>",
                                cseq_number=2, branch=referred.headers.get_all("Via")[0]
                                .split("branch=")[1])
    flow.phone.send(cancel)
    statuses = sorted(m.status for m in flow.phone.received() if isinstance(m, Response))
    assert statuses == [200, 487]
    flow.target.take_request("CANCEL")
    assert flow.state == "ended"
    assert flow.cause == "user_hung_up"
    assert target_invite is not None


# ------------------------------------------------------------------ cancelled by the API


def hangup(flow: Flow) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    flow.net.api.hangup_call(flow.call_id).addCallback(results.append)
    (result,) = results
    return result


def test_cancel_at_calling_user() -> None:
    flow = Flow()
    flow.create()
    result = hangup(flow)
    assert result["state"] == "ended" and result["cause"] == "cancelled"
    assert flow.cause == "cancelled"
    assert flow.phone.nothing()  # no provisional yet: CANCEL held (§9.1)
    flow.phone.reply(flow.invite(), 100)
    cancel = flow.phone.take_request("CANCEL")
    flow.phone.reply(cancel, 200, contact=False)
    flow.phone.reply(flow.invite(), 487, to_tag="ph5070")
    flow.phone.take_request("ACK")
    assert flow.cause == "cancelled"
    assert flow.states() == ["calling_user", "ended"]


def test_cancel_at_user_ringing() -> None:
    flow = Flow()
    flow.create()
    flow.ring()
    hangup(flow)
    cancel = flow.phone.take_request("CANCEL")
    assert cseq(cancel).number == cseq(flow.invite()).number
    assert flow.state == "ended" and flow.cause == "cancelled"
    assert flow.states() == ["calling_user", "user_ringing", "ended"]


def test_cancel_while_target_rings() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    flow.referred_invite()
    flow.target_gets_invite()
    flow.target_rings()
    hangup(flow)
    flow.target.take_request("CANCEL")
    statuses = [m.status if isinstance(m, Response) else m.method
                for m in flow.phone.received()]
    assert 487 in statuses and "BYE" in statuses
    assert flow.cause == "cancelled"


def test_cancel_when_connected() -> None:
    flow = Flow()
    flow.to_connected()
    hangup(flow)
    assert flow.state == "ended" and flow.cause == "cancelled"
    flow.target.take_request("BYE")
    byes = [m for m in flow.phone.received() if isinstance(m, Request) and m.method == "BYE"]
    assert flow.referred is not None and flow.dialog is not None
    assert {call_id(b) for b in byes} == {call_id(flow.referred), flow.dialog.call_id}


def test_hangup_of_ended_call_reads_the_store() -> None:
    flow = Flow()
    flow.create()
    flow.ring()
    hangup(flow)
    again = hangup(flow)
    assert again["cause"] == "cancelled"


def test_user_not_registered() -> None:
    net = SimNet()
    errors: list[Any] = []
    net.api.create_call(user="202", to=TARGET, device=None, auto_answer=None,
                           mode=None).addErrback(lambda f: errors.append(f.value))
    (error,) = errors
    assert isinstance(error, ApiError)
    assert error.status == 409
    assert error.code == "user_not_registered"
    assert net.log == []
    assert net.store.calls == {}


def test_unknown_user_404() -> None:
    net = SimNet()
    errors: list[Any] = []
    net.api.create_call(user="999", to=TARGET, device=None, auto_answer=None,
                           mode=None).addErrback(lambda f: errors.append(f.value))
    assert isinstance(errors[0], ApiError) and errors[0].status == 404


# ------------------------------------------------------------------ two devices


def test_two_devices_first_answer_wins() -> None:
    flow = Flow(devices=2)
    result = flow.create(auto_answer=True)
    assert result["events"][0]["detail"] == "2 device(s)"
    desk, soft = flow.phones
    for phone in flow.phones:
        assert not AUTO_ANSWER_HEADERS & header_names(flow.invite(phone))
    assert call_id(flow.invite(desk)) != call_id(flow.invite(soft))
    assert flow.net_record.auto_answer is False
    flow.ring(desk)
    flow.ring(soft)
    flow.answer(soft)
    assert flow.answered is soft
    cancel = desk.take_request("CANCEL")
    assert cseq(cancel).number == cseq(flow.invite(desk)).number
    desk.reply(cancel, 200, contact=False)
    desk.reply(flow.invite(desk), 487, to_tag="ph5070")
    desk.take_request("ACK")
    assert desk.nothing(), desk.pending()
    refer = flow.take_refer()
    assert str(refer.uri) == soft.contact_uri
    assert flow.state == "user_answered"
    assert flow.net_record.device is not None


def test_two_devices_late_200_from_loser_gets_ack_and_bye() -> None:
    flow = Flow(devices=2)
    flow.create()
    desk, soft = flow.phones
    flow.ring(desk)
    flow.ring(soft)
    flow.answer(desk)
    flow.take_refer()
    cancel = soft.take_request("CANCEL")
    # soft's 200 crosses the CANCEL
    soft.reply(flow.invite(soft), 200, to_tag="ph5071", body=sdp_answer())
    ack = soft.take_request("ACK")
    bye = soft.take_request("BYE")
    assert call_id(ack) == call_id(bye) == call_id(flow.invite(soft))
    assert to(bye).tag == "ph5071"
    soft.reply(cancel, 200, contact=False)
    soft.reply(bye, 200, contact=False)
    assert soft.nothing(), soft.pending()
    assert flow.state == "user_answered"
    assert flow.answered is desk


def test_two_devices_both_busy() -> None:
    flow = Flow(devices=2)
    flow.create()
    desk, soft = flow.phones
    desk.reply(flow.invite(desk), 486, to_tag="a")
    assert flow.state == "calling_user"  # the other one still rings
    soft.reply(flow.invite(soft), 486, to_tag="b")
    assert flow.cause == "user_busy"


def test_two_devices_decline_beats_busy() -> None:
    flow = Flow(devices=2)
    flow.create()
    desk, soft = flow.phones
    desk.reply(flow.invite(desk), 486, to_tag="a")
    soft.reply(flow.invite(soft), 603, to_tag="b")
    assert flow.cause == "user_rejected"


def test_two_devices_one_busy_other_answers() -> None:
    flow = Flow(devices=2)
    flow.create()
    desk, soft = flow.phones
    desk.reply(flow.invite(desk), 486, to_tag="a")
    desk.take_request("ACK")
    flow.ring(soft)
    flow.answer(soft)
    flow.take_refer()
    assert flow.state == "user_answered"


def test_device_selection_rings_one_with_auto_answer() -> None:
    flow = Flow(devices=2)
    flow.create(device="baresip")
    _desk, soft = flow.phones
    assert list(flow.invites) == [soft.peer.port]  # only the chosen device is rung
    assert AUTO_ANSWER_HEADERS & header_names(flow.invite(soft))
    assert flow.net_record.auto_answer is True


# ------------------------------------------------------------------ more edges


def test_invite_retransmitted_over_udp_until_provisional() -> None:
    flow = Flow()
    flow.create()
    invite_bytes = flow.invite().to_bytes()
    flow.net.advance(0.5)
    assert flow.net.sent_to(flow.phone.peer) == [invite_bytes]
    flow.net.advance(1.0)
    assert flow.net.sent_to(flow.phone.peer) == [invite_bytes]
    flow.ring()
    flow.net.advance(10)
    assert flow.phone.nothing(), flow.phone.pending()


def test_183_counts_as_ringing() -> None:
    flow = Flow()
    flow.create()
    flow.ring(status=183)
    assert flow.state == "user_ringing"
    assert flow.net_record.events[-1].sip_code == 183


def test_device_never_answers_timer_b() -> None:
    flow = Flow(config=make_config(user_answer_timeout=120))
    flow.create()
    flow.net.advance(40)  # timer B = 64*T1 = 32 s
    assert flow.state == "ended"
    assert flow.cause == "user_no_answer"


def test_tcp_phone() -> None:
    net_flow = Flow(devices=0)
    phone = Phone(net_flow.net, port=5090, transport="tcp")
    assert phone.register().status == 200
    net_flow.phones = [phone]
    net_flow.create()
    invite = net_flow.invite()
    assert invite.headers.get_all("Via")[0].startswith("SIP/2.0/TCP ")
    assert "transport=tcp" in (invite.headers.get("Contact") or "")
    net_flow.net.advance(5)
    assert phone.nothing(), phone.pending()  # no retransmissions over TCP
    net_flow.ring()
    net_flow.answer()
    refer = net_flow.take_refer()
    refer_to = NameAddr.parse(refer.headers.get("Refer-To") or "").uri
    assert isinstance(refer_to, SipURI)
    assert refer_to.params.get("transport") == "tcp"
    assert refer_to.port == 5060
    net_flow.accept_refer()
    net_flow.referred_invite()
    net_flow.target_gets_invite()
    net_flow.target_rings()
    assert net_flow.state == "target_ringing"


def test_phone_holds_first_call_before_transfer() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    assert flow.dialog is not None
    hold = sdp_answer().replace(b"a=sendrecv", b"a=sendonly")
    reinvite = flow.dialog.request("INVITE", body=hold, content_type="application/sdp")
    flow.phone.send(reinvite)
    ok = flow.phone.take_response(200)
    assert b"a=recvonly" in ok.body
    assert to(ok).tag == to(reinvite).tag
    ack = flow.dialog.request("ACK", cseq_number=cseq(reinvite).number)
    flow.phone.send(ack)
    flow.net.advance(5)  # the 2xx is not retransmitted once ACKed
    assert flow.phone.nothing(), flow.phone.pending()
    assert flow.state == "user_answered"


def test_phone_ends_first_dialog_after_refer_accepted() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    assert flow.dialog is not None
    flow.phone.send(flow.dialog.request("BYE"))
    flow.phone.take_response(200)
    assert flow.state == "user_answered"  # the transfer goes on
    flow.referred_invite()
    flow.target_gets_invite()
    flow.target_rings()
    flow.target_answers()
    flow.phone_acks_bridge()
    assert flow.state == "connected"
    flow.net.advance(5)
    assert flow.phone.nothing(), flow.phone.pending()  # no BYE for a dialog already gone


def test_phone_never_acks_bridged_200() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    flow.notify("SIP/2.0 100 Trying")
    flow.referred_invite()
    flow.target_gets_invite()
    flow.target_rings()
    flow.target_answers()
    flow.notify("SIP/2.0 200 OK", terminated=True)
    flow.phone.reply(flow.phone.take_request("BYE"), 200, contact=False)
    flow.net.advance(0.5)
    assert flow.referred_ok is not None
    assert flow.net.sent_to(flow.phone.peer) == [flow.referred_ok.to_bytes()]  # timer G
    flow.net.advance(40)
    assert flow.target.take_request("BYE")
    assert flow.state == "ended"


def test_bridged_call_acked_no_retransmissions() -> None:
    flow = Flow()
    flow.to_connected()
    flow.notify("SIP/2.0 200 OK", terminated=True)
    flow.phone.take_request("BYE")
    flow.net.advance(60)
    # only the retransmissions of the unanswered BYE may follow
    assert all(isinstance(m, Request) and m.method == "BYE" for m in flow.phone.received())
    assert flow.target.nothing(), flow.target.pending()
    assert flow.state == "connected"


def test_api_cancel_crossing_200_gets_ack_and_bye() -> None:
    flow = Flow()
    flow.create()
    flow.ring()
    hangup(flow)
    cancel = flow.phone.take_request("CANCEL")
    flow.phone.reply(flow.invite(), 200, to_tag="ph5070", body=sdp_answer())
    flow.phone.take_request("ACK")
    flow.phone.take_request("BYE")
    flow.phone.reply(cancel, 200, contact=False)
    assert flow.phone.nothing(), flow.phone.pending()
    assert flow.cause == "cancelled"


def test_refer_to_local_user_target() -> None:
    flow = Flow()
    bob = Phone(flow.net, "202", "secret202", port=5085, contact_host="192.168.1.85")
    assert bob.register().status == 200
    flow.net.clear()
    flow.create(to="202")
    flow.ring()
    flow.answer()
    refer = flow.take_refer()
    assert "sip:202@" in (refer.headers.get("Refer-To") or "")
    flow.accept_refer()
    uri = flow.refer_to()
    referred = flow.phone.request("INVITE", uri, call_id_value="loc@phone", from_tag="l1",
                                  to_value="<sip:202@127.0.0.1>", cseq_number=1)
    flow.phone.send(referred)
    c407 = flow.phone.take_response(407)
    flow.phone.send(ack_for(referred, c407, first_via(referred)))
    auth = flow.phone.authorization(c407, "INVITE", uri, proxy=True)
    second = flow.phone.request("INVITE", uri, call_id_value="loc@phone", from_tag="l1",
                                to_value="<sip:202@127.0.0.1>", cseq_number=2,
                                extra=[("Proxy-Authorization", auth)])
    flow.phone.send(second)
    invite = bob.take_request("INVITE")
    assert str(invite.uri) == "sip:202@192.168.1.85:5085"
    assert flow.state == "calling_target"


def test_referred_invite_without_param_after_notify_100_is_correlated() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    flow.notify("SIP/2.0 100 Trying")
    refer = flow.refer
    assert refer is not None
    refer.headers.set("Refer-To", f"<sip:{TARGET}@127.0.0.1>")
    flow.referred_invite()
    flow.target_gets_invite()
    flow.target_rings()
    assert flow.state == "target_ringing"


# ------------------------------------------------------------------ relaying in the bridged call


def target_request(flow: Flow, method: str, cseq_number: int, *, body: bytes = b"",
                   content_type: str | None = None) -> Request:
    """An in-dialog request from the target on the bridged call's B leg."""
    invite = flow.target_invite
    assert invite is not None
    request = flow.target.request(method, "sip:sipdial@127.0.0.1:5060",
                                  call_id_value=call_id(invite), from_user=TARGET,
                                  from_tag="tgt", to_value=invite.headers.get("From") or "",
                                  cseq_number=cseq_number, body=body,
                                  content_type=content_type)
    request.headers.set("From", f"{invite.headers.get('To')};tag=tgt")
    return request


def test_target_bye_when_phone_acked() -> None:
    flow = Flow()
    flow.to_connected()
    flow.target.send(target_request(flow, "BYE", 1))
    flow.target.take_response(200)
    assert flow.state == "ended" and flow.cause == "completed"
    events = flow.net_record.events
    assert events[-1].detail == "target hung up"


def test_info_relayed_phone_to_target_and_back() -> None:
    flow = Flow()
    flow.to_connected()
    info = flow.bridge_request("INFO", cseq_number=3)
    flow.answered_send(info)
    relayed = flow.target.take_request("INFO")
    assert cseq(relayed).number == 2  # the B leg's own CSeq space (INVITE was 1)
    flow.target.reply(relayed, 200, contact=False)
    ok = flow.phone.take_response(200)
    assert cseq(ok).number == 3 and cseq(ok).method == "INFO"


def test_info_relayed_target_to_phone_and_back() -> None:
    flow = Flow()
    flow.to_connected()
    flow.notify("SIP/2.0 200 OK", terminated=True)
    flow.phone.reply(flow.phone.take_request("BYE"), 200, contact=False)
    flow.target.send(target_request(flow, "INFO", 5))
    relayed = flow.phone.take_request("INFO")
    assert flow.referred is not None and call_id(relayed) == call_id(flow.referred)
    flow.phone.reply(relayed, 200, contact=False)
    ok = flow.target.take_response(200)
    assert cseq(ok).number == 5


def test_reinvite_from_phone_relayed_and_target_200_acked() -> None:
    flow = Flow()
    flow.to_connected()
    hold = sdp_answer(port=31000).replace(b"a=sendrecv", b"a=sendonly")
    reinvite = flow.bridge_request("INVITE", cseq_number=3)
    reinvite.body = hold
    reinvite.headers.add("Content-Type", "application/sdp")
    flow.answered_send(reinvite)
    relayed = flow.target.take_request("INVITE")
    assert relayed.body == hold
    flow.target.reply(relayed, 200, to_tag="tgt",
                      body=sdp_answer("10.7.7.7").replace(b"sendrecv", b"recvonly"))
    flow.phone.take_response(100)
    ok = flow.phone.take_response(200)
    assert b"recvonly" in ok.body
    flow.answered_send(flow.bridge_request("ACK", cseq_number=3))
    flow.net.advance(0.1)
    sent = [m for m in flow.target.received() if isinstance(m, Request)]
    assert [m.method for m in sent] == ["ACK"]
    assert cseq(sent[0]).number == cseq(relayed).number


def test_referred_invite_after_api_cancel_is_not_bridged() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    hangup(flow)
    assert flow.cause == "cancelled"
    flow.phone.reply(flow.phone.take_request("BYE"), 200, contact=False)
    flow.referred_invite()  # the phone had accepted the REFER and goes ahead
    assert flow.target.nothing(), flow.target.pending()
    final = [m for m in flow.phone.received() if isinstance(m, Response) and m.status >= 300]
    assert final, "the phone's referred INVITE must be refused"


def test_store_gets_every_event() -> None:
    flow = Flow()
    flow.to_connected()
    assert flow.net.store.events[flow.call_id] == flow.net_record.events
    codes = {e.state: e.sip_code for e in flow.net_record.events}
    assert codes["user_ringing"] == 180
    assert codes["user_answered"] == 200
    assert codes["target_ringing"] == 180
    assert codes["connected"] == 200


def test_second_device_without_provisional_is_cancelled_on_its_first_1xx() -> None:
    flow = Flow(devices=2)
    flow.create()
    desk, soft = flow.phones
    flow.ring(desk)
    flow.answer(desk)
    flow.take_refer()
    assert soft.nothing(), soft.pending()  # §9.1: no CANCEL before a provisional response
    soft.reply(flow.invite(soft), 180, to_tag="s")
    soft.take_request("CANCEL")
    assert flow.states() == ["calling_user", "user_ringing", "user_answered"]


def test_target_invite_identity() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    flow.referred_invite()
    invite = flow.target_gets_invite()
    caller = from_(invite)
    assert isinstance(caller.uri, SipURI) and caller.uri.user == "201"
    assert caller.display_name == "Alice"
    callee = to(invite)
    assert isinstance(callee.uri, SipURI) and callee.uri.user == TARGET
    assert invite.headers.get("Content-Type") == "application/sdp"


def test_transfer_reported_only_by_notify() -> None:
    # the phone sent its INVITE somewhere else: NOTIFY sipfrag is all sipdial sees
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    flow.notify("SIP/2.0 100 Trying")
    flow.notify("SIP/2.0 180 Ringing")
    assert flow.state == "target_ringing"
    flow.notify("SIP/2.0 200 OK", terminated=True)
    # the referred INVITE, sent to sipdial, may still come (some phones report success
    # before their call is up): sipdial waits NOTIFY_GRACE for it
    assert flow.state == "target_ringing"
    flow.net.advance(NOTIFY_GRACE)
    # none came: connected, then at once completed (the end of a call outside sipdial is
    # not observable)
    assert flow.states()[-2:] == ["connected", "ended"]
    assert flow.cause == "completed"
    bye = flow.phone.take_request("BYE")
    assert flow.dialog is not None and call_id(bye) == flow.dialog.call_id


def test_notify_only_call_does_not_stay_live_forever() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    flow.notify("SIP/2.0 200 OK", terminated=True)
    flow.net.advance(NOTIFY_GRACE)
    flow.phone.reply(flow.phone.take_request("BYE"), 200, contact=False)
    flow.net.advance(24 * 3600)
    assert flow.call_id not in flow.net.calls.calls
    assert flow.state == "ended"


def test_notify_cseq_out_of_order_500() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    assert flow.dialog is not None
    flow.notify("SIP/2.0 100 Trying")
    stale = flow.dialog.request("NOTIFY", cseq_number=flow.dialog.cseq - 1, extra=[
        ("Event", "refer"), ("Subscription-State", "active")],
        body=b"SIP/2.0 200 OK\r\n", content_type=SIPFRAG)
    flow.phone.send(stale)
    flow.phone.take_response(500)
    assert flow.state == "calling_target"  # the stale NOTIFY was not acted on


def test_forked_second_2xx_from_target_gets_ack_and_bye() -> None:
    flow = Flow()
    flow.to_connected()
    assert flow.target_invite is not None
    flow.target.reply(flow.target_invite, 200, to_tag="tgt2", body=sdp_answer("10.8.8.8"))
    sent = [m for m in flow.target.received() if isinstance(m, Request)]
    assert [(m.method, to(m).tag) for m in sent] == [("ACK", "tgt2"), ("BYE", "tgt2")]
    assert flow.state == "connected"


def test_a_2xx_notify_before_the_referred_invite_waits_for_it() -> None:
    """baresip reports "200 OK" in a NOTIFY as soon as its referred INVITE was challenged
    (seen through Kamailio): the call must not end before that INVITE, retried with
    credentials, reaches sipdial and is relayed to the target."""
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    flow.notify("SIP/2.0 100 Trying")
    flow.notify("SIP/2.0 200 OK", terminated=True)
    assert flow.state == "calling_target"
    flow.net.advance(NOTIFY_GRACE / 2)
    flow.referred_invite()
    flow.target_gets_invite()
    flow.target_rings()
    flow.target_answers()
    assert flow.state == "connected"
    flow.net.advance(NOTIFY_GRACE)
    assert flow.state == "connected"  # the grace is over, the relayed call goes on
