"""Where a referred call goes: a trunk that challenges sipdial (digest as client, RFC 3261
§22.2) and a local user with several devices (forked, first answer wins)."""

from __future__ import annotations

from sipdial.config import parse_config
from sipdial.sip.auth import Challenge, Credentials
from sipdial.sip.message import call_id, cseq, from_
from tests.unit.simnet import BASE_CONFIG, Phone, sdp_answer
from tests.unit.test_clicktodial_flow import Flow


def _config_with_trunk_credentials() -> str:
    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    return text.replace('uri = "sip:{number}@127.0.0.1:5080"',
                        'uri = "sip:{number}@127.0.0.1:5080"\n'
                        'username = "trunkuser"\npassword = "trunkpass"')


def test_trunk_407_is_answered_with_route_credentials() -> None:
    flow = Flow(config=parse_config(_config_with_trunk_credentials()))
    flow.to_refer()
    flow.accept_refer()
    flow.referred_invite()
    first = flow.target_gets_invite()
    challenge = Challenge(realm="trunk", nonce="n0nce", algorithm="MD5", qop=("auth",))
    flow.target.reply(first, 407, to_tag="t407",
                      headers=[("Proxy-Authenticate", challenge.to_header())])
    flow.target.take_request("ACK")  # the transaction ACKs the 407
    second = flow.target_gets_invite()
    assert call_id(second) == call_id(first)
    assert from_(second).tag == from_(first).tag
    assert cseq(second).number == cseq(first).number + 1
    creds = Credentials.parse(second.headers.get("Proxy-Authorization") or "")
    assert (creds.username, creds.realm, creds.nonce, creds.qop) == (
        "trunkuser", "trunk", "n0nce", "auth")
    flow.target_rings()
    flow.target_answers()
    flow.phone_acks_bridge()
    assert flow.state == "connected"


def test_trunk_challenge_without_credentials_fails_the_target() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    flow.referred_invite()
    first = flow.target_gets_invite()
    challenge = Challenge(realm="trunk", nonce="n0nce", algorithm="MD5", qop=("auth",))
    flow.target.reply(first, 407, to_tag="t407",
                      headers=[("Proxy-Authenticate", challenge.to_header())])
    assert flow.answered is not None
    assert flow.answered.take_response().status >= 400  # relayed failure to the phone
    assert flow.cause == "target_failed"


def test_referred_call_to_a_local_user_forks_to_all_devices() -> None:
    flow = Flow()
    desk = Phone(flow.net, "202", "secret202", port=5090, contact_host="192.168.2.10")
    dect = Phone(flow.net, "202", "secret202", port=5091, contact_host="192.168.2.11")
    assert desk.register().status == 200 and dect.register().status == 200
    flow.net.clear()
    flow.create(to="202")
    flow.ring()
    flow.answer()
    flow.take_refer()
    flow.accept_refer()
    flow.referred_invite()  # the phone follows the REFER to sip:202@sipdial
    # both of Bob's devices ring
    desk_invite = desk.take_request("INVITE")
    dect_invite = dect.take_request("INVITE")
    assert call_id(desk_invite) != call_id(dect_invite)
    desk.reply(desk_invite, 180, to_tag="d1")
    dect.reply(dect_invite, 180, to_tag="d2")
    dect.reply(dect_invite, 200, to_tag="d2", body=sdp_answer("10.2.2.2"))
    dect.take_request("ACK")
    cancel = desk.take_request("CANCEL")
    assert cseq(cancel).number == cseq(desk_invite).number
    assert flow.state == "connected"
    assert flow.answered is not None
    relayed = [flow.answered.take_response().status for _ in range(3)]
    assert relayed == [180, 180, 200]  # ringing of both devices, then the answer
