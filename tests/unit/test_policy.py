"""Toll-fraud policy (sipdial.calls.policy, issue 10 §2): numbers for time, no I/O; and the
API's answers through the real call engine (tests.unit.simnet)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sipdial.api import ApiError
from sipdial.calls import CallRefused, Refusal
from sipdial.calls.policy import Policy
from sipdial.config import PolicyConfig, parse_config
from tests.unit.simnet import BASE_CONFIG, Phone, SimNet
from tests.unit.test_clicktodial_flow import Flow

T0 = 1000.0


def rule(**kw: Any) -> PolicyConfig:
    for key in ("allow", "deny"):
        if key in kw:
            kw[key] = tuple(re.compile(p) for p in kw[key])
    if "users" in kw:
        kw["users"] = tuple(kw["users"])
    return PolicyConfig(**kw)


def idle(user: str | None) -> int:
    return 0


def test_deny_and_allow_patterns_on_the_destination() -> None:
    policy = Policy([rule(deny=[r"^\+(?!49)", r"^\+49900"]),
                     rule(users=["202"], allow=[r"^\+4930"])])
    assert policy.check("201", "+4921133990312", T0, idle) is None
    refused = policy.check("201", "+44207946000", T0, idle)
    assert refused is not None and refused.forbidden and "policy 1" in refused.message
    assert policy.check("201", "+499001234567", T0, idle) is not None
    assert policy.check("202", "+4930123456", T0, idle) is None
    refused = policy.check("202", "+4921133990312", T0, idle)  # 202 may call Berlin only
    assert refused is not None and refused.forbidden and "policy 2" in refused.message
    assert policy.check("201", "201", T0, idle) is None  # an extension matches no pattern


def test_per_minute_and_per_hour_caps_with_when_to_retry() -> None:
    policy = Policy([rule(max_per_minute=2, max_per_hour=3)])
    for t in (0.0, 10.0):
        assert policy.check("201", "+4930123456", T0 + t, idle) is None
        policy.started("201", T0 + t)
    refused = policy.check("201", "+4930123456", T0 + 20, idle)
    assert refused is not None and not refused.forbidden
    assert refused.retry_after == 40.0  # the first call leaves the minute at T0 + 60
    assert policy.check("202", "+4930123456", T0 + 20, idle) is None  # per user
    assert policy.check("201", "+4930123456", T0 + 60, idle) is None
    policy.started("201", T0 + 60)
    refused = policy.check("201", "+4930123456", T0 + 200, idle)  # 3 in the hour
    assert refused is not None and refused.retry_after == 3400.0 and "hour" in refused.message
    assert policy.check("201", "+4930123456", T0 + 3600, idle) is None


def test_concurrent_cap_per_user_or_shared() -> None:
    running = {"201": 2, "202": 0}

    def in_progress(user: str | None) -> int:
        return sum(running.values()) if user is None else running[user]

    policy = Policy([rule(max_concurrent=2)])
    refused = policy.check("201", "+4930123456", T0, in_progress)
    assert refused is not None and refused.retry_after == 1.0
    assert policy.check("202", "+4930123456", T0, in_progress) is None
    shared = Policy([rule(max_concurrent=2, per="all")])
    assert shared.check("202", "+4930123456", T0, in_progress) is not None


def _flow(policy: str) -> Flow:
    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    return Flow(config=parse_config(text + "\n" + policy))


def _refused(flow: Flow, to: str) -> ApiError:
    errors: list[Any] = []
    flow.net.api.create_call(user="201", to=to, device=None, auto_answer=None,
                             mode=None).addErrback(lambda f: errors.append(f.value))
    (error,) = errors
    assert isinstance(error, ApiError)
    return error


def test_the_api_answers_403_destination_forbidden_before_anyone_is_rung() -> None:
    flow = _flow('[[policy]]\ndeny = ["^\\\\+44"]\n')
    error = _refused(flow, "+44207946000")
    assert (error.status, error.code) == (403, "destination_forbidden")
    assert flow.phone.nothing() and flow.net.store.calls == {}


def test_the_api_answers_429_rate_limited_with_retry_after() -> None:
    flow = _flow('[[policy]]\nusers = ["201"]\nmax_per_minute = 1\n')
    flow.create()
    error = _refused(flow, "+4930123456")
    assert (error.status, error.code) == (429, "rate_limited")
    assert ("Retry-After", "60") in error.headers


@pytest.mark.parametrize("policy, message", [
    ('[[policy]]\nusers = ["999"]\n', 'unknown user "999"'),
    ('[[policy]]\ndeny = ["("]\n', "invalid regular expression"),
    ('[[policy]]\nper = "group"\n', '"user" or "all"'),
    ('[[policy]]\nmax_per_minute = 0\n', "must be > 0"),
])
def test_bad_policies_are_refused_at_start(policy: str, message: str) -> None:
    from sipdial.config import ConfigError

    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(text + "\n" + policy)


def test_a_sip_uri_destination_is_judged_by_its_number() -> None:
    flow = _flow('[[policy]]\ndeny = ["^\\\\+44"]\n')
    error = _refused(flow, "sip:+44207946000@gateway.example.com")
    assert (error.status, error.code) == (403, "destination_forbidden")


def test_a_phone_dialling_through_sipdial_is_held_to_the_same_patterns() -> None:
    """Toll fraud needs only a SIP password: a number a registered phone dials through
    sipdial is completed like the API's and refused by [[policy]] (403 Forbidden)."""
    from tests.unit.simnet import Phone, SimNet, ack_for, first_via

    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    text += '\n[numbers]\ncountry = "49"\narea = "30"\n[[policy]]\ndeny = ["^\\\\+44"]\n'
    net = SimNet(parse_config(text))
    phone = Phone(net, port=5070)
    assert phone.register().status == 200
    net.clear()
    for dialled, status in (("0044207946000", 403), ("+44207946000", 403), ("0", 484)):
        uri = f"sip:{dialled}@127.0.0.1"
        first = phone.request("INVITE", uri, call_id_value=f"out-{dialled}@phone",
                              from_tag="o1", to_value=f"<{uri}>", cseq_number=1)
        phone.send(first)
        challenge = phone.take_response(407)
        phone.send(ack_for(first, challenge, first_via(first)))
        auth = phone.authorization(challenge, "INVITE", uri, proxy=True)
        second = phone.request("INVITE", uri, call_id_value=f"out-{dialled}@phone",
                               from_tag="o1", to_value=f"<{uri}>", cseq_number=2,
                               extra=[("Proxy-Authorization", auth)])
        phone.send(second)
        pending = phone.pending()
        if pending[:1] and pending[0].startswith("100 "):
            phone.take_response(100)
        phone.take_response(status)
    assert not net.inbound.relayed


def test_a_shared_cap_counts_only_the_users_it_names() -> None:
    running = {"201": 2, "202": 0, "203": 5}

    def in_progress(user: str | None) -> int:
        return sum(running.values()) if user is None else running[user]

    shared = Policy([rule(users=["201", "202"], max_concurrent=3, per="all")])
    assert shared.check("202", "+4930123456", T0, in_progress) is None  # 2 of 3, not 7
    running["202"] = 1
    assert shared.check("202", "+4930123456", T0, in_progress) is not None


def test_a_sip_uri_destination_with_separators_is_judged_as_the_number() -> None:
    flow = _flow('[[policy]]\ndeny = ["^\\\\+49900"]\n')
    error = _refused(flow, "sip:+49-900-1234567@gateway.example.com")
    assert (error.status, error.code) == (403, "destination_forbidden")


def _dialling(policy: str) -> SimNet:
    """A net where user 201's phone has dialled +4930999 through sipdial (relayed)."""
    base = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=10)
    net = SimNet(parse_config(base + policy))
    alice = Phone(net, "201", "secret201", port=5071)
    alice.register()
    offer = (b"v=0\r\no=a 1 1 IN IP4 192.168.1.10\r\ns=-\r\nc=IN IP4 192.168.1.10\r\n"
             b"t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")

    def invite(auth: str | None = None) -> None:
        extra = [("Proxy-Authorization", auth)] if auth else []
        alice.send(alice.request("INVITE", "sip:+4930999@127.0.0.1", call_id_value="dial1",
                                 from_tag="d1", to_value="<sip:+4930999@127.0.0.1>",
                                 cseq_number=1 if auth is None else 2, extra=extra,
                                 body=offer, content_type="application/sdp"))

    invite()
    challenge = alice.take_response(407)
    invite(alice.authorization(challenge, "INVITE", "sip:+4930999@127.0.0.1", proxy=True))
    assert net.inbound.relayed, alice.pending()
    return net


def test_a_call_the_phone_dials_through_sipdial_makes_the_user_busy() -> None:
    """Busy awareness and max_concurrent see the calls a user's phone places through
    sipdial (relayed), not only click-to-dial calls."""
    net = _dialling("")
    with pytest.raises(CallRefused) as refused:
        net.create_call(user="201", to="+4930123456", refuse_if_busy=True)
    assert refused.value.refusal is Refusal.USER_BUSY
    Phone(net, "202", "secret202", port=5072).register()
    assert net.create_call(user="202", to="+4930123456", refuse_if_busy=True).user == "202"
    net = _dialling('\n[[policy]]\nmax_concurrent = 1\n')
    with pytest.raises(CallRefused) as refused:
        net.create_call(user="201", to="+4930123456")
    assert refused.value.refusal is Refusal.RATE_LIMITED
