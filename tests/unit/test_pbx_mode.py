"""PBX mode (issue 8 §2): sipdial beside an office PBX that its users' phones register at.

With ``[upstream]``, sipdial rings user 201 as ``sip:201@PBX`` through the PBX (which forks
to 201's devices), REFERs the phone to the target at the PBX's domain, and in bridge mode
INVITEs the target through the PBX; every INVITE to the PBX answers its 401/407 once with
sipdial's account. The PBX is scripted here (SimNet: no sockets, a number for time) but checks
the digest with sipdial's own :class:`DigestServer`, so a wrong answer would be noticed.
"""

from __future__ import annotations

import pytest

from sipdial.calls import CallRefused, Refusal
from sipdial.config import Config, ConfigError, parse_config
from sipdial.guard import check_weak_passwords
from sipdial.sip import (
    DigestServer,
    NonceManager,
    Peer,
    Request,
    Response,
    cseq,
    from_,
    make_response,
    parse_name_addr_list,
    to,
)
from tests.unit.simnet import Phone, SimNet, parse, sdp_answer
from tests.unit.test_bridge_flow import FakeMedia, FakePrompts

PBX = Peer("udp", "127.0.0.11", 5060)
TARGET = "+4930123456"
ACCOUNT_PASSWORD = "acct-secret-42"

PBX_CONFIG = """
[sip]
listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
domain = "127.0.0.1"

[http]
listen = "127.0.0.1:8080"

[store]
url = "sqlite:///:memory:"

[api]
tokens = {{ "admin" = "*" }}

[[users]]
id = "201"
name = "Alice"
auto_answer = true

[[users]]
id = "202"
password = "1234"

[upstream]
registrar = "sip:127.0.0.11"
username = "sipdial"
password = "acct-secret-42"
{domain}
"""


def pbx_config(domain: str | None = None, *, weak_ok: bool = True) -> Config:
    text = PBX_CONFIG.format(domain=f'domain = "{domain}"' if domain else "")
    if weak_ok:
        text += "\n[auth]\nallow_weak_passwords = true\n"
    return parse_config(text)


class Pbx:
    """The office PBX at 127.0.0.11: challenges INVITEs (407), checks the answers."""

    def __init__(self, net: SimNet) -> None:
        self.net = net
        self.server = DigestServer(
            "pbx", lambda u: ACCOUNT_PASSWORD if u == "sipdial" else None,
            NonceManager(b"0123456789abcdef0123"), ("MD5",))

    def take(self) -> list[Request | Response]:
        return [parse(d) for d in self.net.sent_to(PBX)]

    def invites(self) -> list[Request]:
        return [m for m in self.take() if isinstance(m, Request) and m.method == "INVITE"]

    def reply(self, request: Request, status: int, *headers: tuple[str, str],
              to_tag: str | None = None, body: bytes = b"") -> Response:
        response = make_response(request, status, to_tag=to_tag)
        for name, value in headers:
            response.headers.add(name, value)
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        self.net.deliver(response.to_bytes(), PBX)
        return response

    def challenge(self, request: Request) -> None:
        (challenge,) = self.server.challenges(self.net.now)
        self.reply(request, 407, ("Proxy-Authenticate", challenge.to_header()), to_tag="c1")

    def verify(self, request: Request) -> str:
        value = request.headers.get("Proxy-Authorization")
        assert value is not None, "no Proxy-Authorization"
        result, user = self.server.verify(value, "INVITE", self.net.now, uri=str(request.uri))
        assert user == "sipdial"
        return result

    def answer(self, request: Request, tag: str = "dev1") -> Response:
        """The device answers (the PBX relays its 200, Record-Routing itself)."""
        return self.reply(request, 200, ("Contact", "<sip:201@192.168.1.10:5070>"),
                          ("Record-Route", "<sip:127.0.0.11;lr>"), to_tag=tag,
                          body=sdp_answer())


def authorized_invite(pbx: Pbx, first: Request) -> Request:
    """Challenge ``first``; sipdial's next INVITE, checked against the challenge."""
    pbx.challenge(first)
    (again,) = pbx.invites()
    assert pbx.verify(again) == "ok"
    assert again.headers.get("Call-ID") == first.headers.get("Call-ID")
    assert cseq(again).number == cseq(first).number + 1
    return again


# ----------------------------------------------------------------- ringing the user


def test_the_user_is_rung_through_the_pbx_with_callerid_and_auto_answer() -> None:
    net = SimNet(pbx_config())
    pbx = Pbx(net)
    net.create_call(user="201", to=TARGET)  # no device of 201 registered at sipdial
    (invite,) = pbx.invites()
    assert str(invite.uri) == "sip:201@127.0.0.11"
    caller = from_(invite)
    assert caller.display_name == TARGET and str(caller.uri) == f"sip:{TARGET}@127.0.0.11"
    assert TARGET in (invite.headers.get("P-Asserted-Identity") or "")
    assert to(invite).display_name == "Alice"
    assert "answer-after=0" in (invite.headers.get("Call-Info") or "")  # auto-answer
    assert not invite.headers.get_all("Route")  # the URI names the PBX itself
    again = authorized_invite(pbx, invite)
    assert str(again.uri) == "sip:201@127.0.0.11"
    pbx.reply(again, 180, to_tag="dev1")
    (record,) = net.store.calls.values()
    assert record.state == "user_ringing"


def test_a_second_challenge_fails_the_call_without_a_third_invite() -> None:
    net = SimNet(pbx_config())
    pbx = Pbx(net)
    record = net.create_call(user="201", to=TARGET)
    (invite,) = pbx.invites()
    again = authorized_invite(pbx, invite)
    pbx.challenge(again)  # the PBX refuses sipdial's credentials
    assert pbx.invites() == []
    assert record.state == "ended" and record.cause == "failed"
    assert record.events[-1].sip_code == 407


def test_the_pbx_domain_other_than_the_registrar_is_reached_through_a_route() -> None:
    net = SimNet(pbx_config("pbx.example.com"))
    pbx = Pbx(net)
    net.create_call(user="201", to=TARGET)
    (invite,) = pbx.invites()  # sent to the registrar's address...
    assert str(invite.uri) == "sip:201@pbx.example.com"  # ...for the user at the domain
    assert [str(r) for r in invite.headers.get_all("Route")] == ["<sip:127.0.0.11;lr>"]
    assert str(from_(invite).uri) == f"sip:{TARGET}@pbx.example.com"


def test_an_outbound_proxy_is_the_first_hop_of_every_invite_to_the_pbx() -> None:
    """``[sip] outbound_proxy`` (an SBC in front of the PBX): the INVITE goes to the proxy
    with the proxy then the registrar as Route; nothing goes to the PBX directly."""
    text = PBX_CONFIG.format(domain='domain = "pbx.example.com"') \
        + "\n[auth]\nallow_weak_passwords = true\n"
    text = text.replace("[http]", 'outbound_proxy = "sip:127.0.0.12;lr"\n\n[http]', 1)
    net = SimNet(parse_config(text))
    net.create_call(user="201", to=TARGET)
    assert Pbx(net).invites() == []
    (invite,) = [parse(d) for d in net.sent_to(Peer("udp", "127.0.0.12", 5060))]
    assert isinstance(invite, Request) and invite.method == "INVITE"
    assert str(invite.uri) == "sip:201@pbx.example.com"
    assert [str(r) for r in invite.headers.get_all("Route")] == \
        ["<sip:127.0.0.12;lr>", "<sip:127.0.0.11;lr>"]


def test_choosing_a_device_is_refused_in_pbx_mode() -> None:
    net = SimNet(pbx_config())
    with pytest.raises(CallRefused) as info:
        net.create_call(user="201", to=TARGET, device="yealink")
    assert info.value.refusal is Refusal.DEVICE_NOT_REGISTERED
    assert "PBX" in info.value.message


# ----------------------------------------------------------------- connecting the target


def test_refer_to_is_the_target_at_the_pbx_and_its_notify_completes_the_call() -> None:
    net = SimNet(pbx_config())
    pbx = Pbx(net)
    record = net.create_call(user="201", to=TARGET)
    (invite,) = pbx.invites()
    again = authorized_invite(pbx, invite)
    pbx.answer(again)
    sent = pbx.take()
    refer = next(m for m in sent if isinstance(m, Request) and m.method == "REFER")
    assert any(isinstance(m, Request) and m.method == "ACK" for m in sent)
    (refer_to,) = parse_name_addr_list(refer.headers.get("Refer-To") or "")
    assert str(refer_to.uri) == f"sip:{TARGET}@127.0.0.11"  # no x-c2d: sipdial never sees it
    assert str(refer.uri) == "sip:201@192.168.1.10:5070"  # in the dialog, by its route set
    assert [str(r) for r in refer.headers.get_all("Route")] == ["<sip:127.0.0.11;lr>"]
    pbx.reply(refer, 202)
    assert record.state == "user_answered"
    # the phone's INVITE went to the PBX; its NOTIFYs tell the outcome
    phone = Phone(net, "201", None, host="127.0.0.11", port=5060)
    notify = (f"NOTIFY sip:127.0.0.1:5060 SIP/2.0\r\nVia: {phone.via()}\r\n"
              f"Max-Forwards: 70\r\nFrom: {refer.headers.get('To')}\r\n"
              f"To: {refer.headers.get('From')}\r\nCall-ID: {refer.headers.get('Call-ID')}\r\n"
              "CSeq: 2 NOTIFY\r\nEvent: refer\r\nSubscription-State: terminated;reason=noresource"
              "\r\nContact: <sip:201@192.168.1.10:5070>\r\nContent-Type: message/sipfrag\r\n"
              "Content-Length: 16\r\n\r\nSIP/2.0 200 OK\r\n")
    phone.send(notify.encode())
    assert record.state == "ended" and record.cause == "completed"
    assert "connected" in [e.state for e in record.events]


def test_bridge_calls_the_target_through_the_pbx_and_answers_its_challenge() -> None:
    media = FakeMedia()
    net = SimNet(pbx_config(), media=media, prompts=FakePrompts())
    pbx = Pbx(net)
    record = net.create_call(user="201", to=TARGET, mode="bridge")
    (invite,) = pbx.invites()
    again = authorized_invite(pbx, invite)
    pbx.answer(again)
    (target,) = pbx.invites()
    assert str(target.uri) == f"sip:{TARGET}@127.0.0.11"
    assert str(to(target).uri) == f"sip:{TARGET}@127.0.0.11"
    caller = from_(target)
    assert caller.display_name == "Alice" and str(caller.uri) == "sip:201@127.0.0.11"
    assert target.body == sdp_answer()  # the phone's SDP: media flows past sipdial
    assert target.headers.get("Call-ID") != invite.headers.get("Call-ID")
    target_again = authorized_invite(pbx, target)
    pbx.reply(target_again, 180, to_tag="tgt")
    assert record.state == "target_ringing"


def test_from_user_account_puts_the_account_in_every_from_to_the_pbx() -> None:
    """``[upstream] from_user = "account"`` (Asterisk identifies endpoints by the From
    user): both INVITEs carry From sipdial's account; who is shown stays in the display
    name and P-Asserted-Identity."""
    media = FakeMedia()
    config = parse_config(PBX_CONFIG.format(domain='from_user = "account"')
                          + "\n[auth]\nallow_weak_passwords = true\n")
    net = SimNet(config, media=media, prompts=FakePrompts())
    pbx = Pbx(net)
    net.create_call(user="201", to=TARGET, mode="bridge")
    (invite,) = pbx.invites()
    caller = from_(invite)
    assert str(caller.uri) == "sip:sipdial@127.0.0.11" and caller.display_name == TARGET
    assert f"sip:{TARGET}@127.0.0.11" in (invite.headers.get("P-Asserted-Identity") or "")
    pbx.answer(authorized_invite(pbx, invite))
    (target,) = pbx.invites()
    caller = from_(target)
    assert str(caller.uri) == "sip:sipdial@127.0.0.11" and caller.display_name == "Alice"
    assert "sip:201@127.0.0.11" in (target.headers.get("P-Asserted-Identity") or "")


def test_from_user_must_be_target_or_account() -> None:
    with pytest.raises(ConfigError, match=r'upstream\.from_user: expected "target" or '):
        parse_config(PBX_CONFIG.format(domain='from_user = "me"'))


def test_bridge_target_refused_credentials_end_the_call_as_target_failed() -> None:
    media = FakeMedia()
    net = SimNet(pbx_config(), media=media, prompts=FakePrompts())
    pbx = Pbx(net)
    record = net.create_call(user="201", to=TARGET, mode="bridge")
    (invite,) = pbx.invites()
    pbx.answer(authorized_invite(pbx, invite))
    (target,) = pbx.invites()
    pbx.challenge(authorized_invite(pbx, target))
    assert record.state == "ended" and record.cause == "target_failed"


# ----------------------------------------------------------------- users without passwords


def test_users_without_passwords_only_with_upstream() -> None:
    config = pbx_config()
    assert config.users["201"].password is None
    standalone = PBX_CONFIG.format(domain="").split("[upstream]")[0]
    with pytest.raises(ConfigError) as info:
        parse_config(standalone)
    assert str(info.value) == "users[0].password: required key is missing"


def test_weak_password_check_skips_passwordless_users_but_not_weak_ones() -> None:
    check_weak_passwords(parse_config(PBX_CONFIG.format(domain="").replace(
        'password = "1234"\n', "")))  # 201 and 202 without passwords: nothing to guess
    with pytest.raises(ConfigError) as info:
        check_weak_passwords(pbx_config(weak_ok=False))
    assert "users[1].password" in str(info.value)  # 202's "1234"; 201 has none


def test_a_passwordless_user_cannot_register_at_sipdial() -> None:
    net = SimNet(pbx_config())
    phone = Phone(net, "201", "")
    phone.send(phone.register_request())
    challenge = phone.take_response(401)
    auth = phone.authorization(challenge, "REGISTER", "sip:127.0.0.1", password="")
    phone.send(phone.register_request(authorization=auth))
    assert phone.take_response().status != 200
    assert not net.registrar.contacts("201", net.now)
