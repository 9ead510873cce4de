"""Inbound calls from ``[[trunks]]`` (issue 10 §3), sans-IO: a carrier at 192.0.2.10 calls
user 201's number; sipdial rings 201's phone without a challenge, keeps the inbound call's
record (caller, contact) and publishes call.incoming / call.answered / call.ended (missed
unless answered). Live with SIPp and baresip: tests/integration/test_inbound_e2e.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from sipdial.config import ConfigError, parse_config
from sipdial.contacts import Contact, Contacts, Phonebook
from sipdial.events.names import events_for, is_missed
from sipdial.sip import Request
from sipdial.store import CallRecord
from tests.unit.simnet import BASE_CONFIG, Phone, SimNet, sdp_answer

BASE = BASE_CONFIG.format(auto_answer="false", user_answer_timeout=30.0,
                          target_answer_timeout=60.0, refer_timeout=32.0, max_concurrent=10)
TRUNK = ('\n[[trunks]]\nname = "carrier"\nallow_from = ["192.0.2.0/24"]\n'
         'dids = { "+4921133990312" = "201" }\n'
         '\n[numbers]\ncountry = "49"\narea = "211"\nbase = "339903"\n')
OFFER = (b"v=0\r\no=c 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
         b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


@dataclass
class SlowLookup:
    """A contact lookup that answers when the test says so."""

    asked: list[tuple[str, Callable[[Contact | None], None]]] = field(default_factory=list)

    def lookup(self, number: str, done: Callable[[Contact | None], None],
               user: str | None = None) -> None:
        self.asked.append((number, done))


def _net(extra: str = TRUNK, **kw: object) -> SimNet:
    return SimNet(parse_config(BASE + extra), **kw)  # type: ignore[arg-type]


def _carrier(net: SimNet, host: str = "192.0.2.10") -> Phone:
    return Phone(net, "carrier", None, host=host, port=5060, contact_host=host)


def _invite(trunk: Phone, to: str = "+4921133990312", caller: str = "030123456",
            display: str = "Erika") -> Request:
    invite = trunk.request("INVITE", f"sip:{to}@127.0.0.1", call_id_value=trunk.new_id("in"),
                           from_tag="c1", to_value=f"<sip:{to}@127.0.0.1>", cseq_number=1,
                           extra=[("P-Asserted-Identity", f'"{display}" <sip:{caller}@c>')],
                           body=OFFER, content_type="application/sdp")
    trunk.send(invite)
    return invite


def _events(net: SimNet) -> list[tuple[str, str]]:
    """The events published so far, as the hub names them (name, state)."""
    out = []
    previous: dict[str, str | None] = {}
    for call_id, state in net.published:
        record = net.store.calls[call_id]
        for spec in events_for(previous.get(call_id), state, record.direction):
            out.append((spec.name.value, state))
        previous[call_id] = state
    return out


def _record(net: SimNet) -> CallRecord:
    (record,) = [c for c in net.store.calls.values() if c.direction == "inbound"]
    return record


def test_a_trunk_call_rings_the_user_without_a_challenge_and_is_answered() -> None:
    net = _net()
    alice = Phone(net, "201", "secret201", port=5071)
    alice.register()
    trunk = _carrier(net)
    _invite(trunk)
    assert trunk.take_response(100)
    ring = alice.take_request("INVITE")  # no 407 to the carrier
    assert "Erika" in (ring.headers.get("From") or "")
    assert "+4930123456" in (ring.headers.get("From") or "")  # the caller, in E.164
    alice.reply(ring, 180, to_tag="a1")
    assert trunk.take_response(180)
    alice.reply(ring, 200, to_tag="a1", body=sdp_answer())
    assert trunk.take_response(200)
    record = _record(net)
    assert (record.user, record.to, record.caller, record.mode) == (
        "201", "+4921133990312", "+4930123456", "inbound")
    assert record.state == "connected"
    assert _events(net) == [("call.incoming", "calling_user"), ("call.ringing", "user_ringing"),
                            ("call.answered", "connected")]


def test_nobody_answering_is_a_missed_call() -> None:
    net = _net()
    alice = Phone(net, "201", "secret201", port=5071)
    alice.register()
    trunk = _carrier(net)
    invite = _invite(trunk)
    ring = alice.take_request("INVITE")
    alice.reply(ring, 180, to_tag="a1")
    cancel = trunk.request("CANCEL", str(invite.uri), call_id_value=invite.headers.get(
        "Call-ID") or "", from_tag="c1", to_value=invite.headers.get("To") or "",
        cseq_number=1, branch=invite.headers.get_all("Via")[0].split("branch=")[1])
    trunk.send(cancel)
    record = _record(net)
    assert (record.state, record.cause) == ("ended", "caller_cancelled")
    assert is_missed(record.cause, record.direction)
    assert _events(net)[-1] == ("call.ended", "ended")
    assert alice.take_request("CANCEL")


def test_a_user_without_a_registered_phone_misses_it_and_the_carrier_gets_480() -> None:
    net = _net()
    trunk = _carrier(net)
    _invite(trunk)
    assert trunk.take_response(480)
    record = _record(net)
    assert (record.state, record.cause) == ("ended", "target_unavailable")
    assert [name for name, _state in _events(net)] == ["call.incoming", "call.ended"]


def test_unknown_sources_stay_challenged_and_unknown_numbers_are_404() -> None:
    net = _net()
    Phone(net, "201", "secret201", port=5071).register()
    stranger = _carrier(net, host="198.51.100.7")
    _invite(stranger)
    assert stranger.take_response(407)
    trunk = _carrier(net)
    _invite(trunk, to="+4921133990399")
    assert trunk.take_response(404)
    assert not [c for c in net.store.calls.values() if c.direction == "inbound"]


def test_a_users_own_number_and_national_forms_reach_them() -> None:
    config = parse_config(BASE.replace('name = "Bob"', 'name = "Bob"\nnumber = "+4921133990313"')
                          + TRUNK)
    net = SimNet(config)
    bob = Phone(net, "202", "secret202", port=5072)
    bob.register()
    trunk = _carrier(net)
    _invite(trunk, to="021133990313")  # national form of 202's own number
    assert bob.take_request("INVITE")
    assert _record(net).user == "202"


def test_call_incoming_waits_for_the_lookup_but_the_call_does_not() -> None:
    lookup = SlowLookup()
    net = _net(contacts=lookup)
    alice = Phone(net, "201", "secret201", port=5071)
    alice.register()
    trunk = _carrier(net)
    _invite(trunk)
    ring = alice.take_request("INVITE")  # rung at once
    alice.reply(ring, 180, to_tag="a1")
    assert trunk.take_response(100) and trunk.take_response(180)
    assert _events(net) == []  # held for the contact
    (number, done), = lookup.asked
    assert number == "+4930123456"
    done(Contact("Erika Mustermann", "https://crm.example/c/17"))
    assert _record(net).contact == {"name": "Erika Mustermann",
                                    "url": "https://crm.example/c/17"}
    assert [n for n, _s in _events(net)] == ["call.incoming", "call.ringing"]


def test_a_slow_lookup_does_not_hold_call_incoming_past_its_timeout() -> None:
    lookup = SlowLookup()
    net = _net(contacts=lookup)
    Phone(net, "201", "secret201", port=5071).register()
    _invite(_carrier(net))
    net.settle()
    assert _events(net) == []
    net.now += 0.6  # [contacts] lookup_timeout = 0.5
    net.timers.run_due(net.now)
    net.settle()
    assert [n for n, _s in _events(net)] == ["call.incoming"]
    assert _record(net).contact is None
    lookup.asked[0][1](Contact("Too Late"))  # ignored
    assert _record(net).contact is None


def test_the_phonebook_names_the_caller() -> None:
    config = parse_config(BASE + TRUNK)
    book = Phonebook([(Contact("Erika", None), ["030 123456"])], config.numbers)
    net = SimNet(config, contacts=Contacts(book, clock=lambda: 0.0))
    Phone(net, "201", "secret201", port=5071).register()
    _invite(_carrier(net))
    net.settle()
    assert _record(net).contact == {"name": "Erika"}
    assert [n for n, _s in _events(net)] == ["call.incoming"]


@pytest.mark.parametrize(("trunk", "message"), [
    ('name = "x"\ndids = { "1" = "201" }', "allow_from: required"),
    ('name = "x"\nallow_from = ["0.0.0.0/0"]', "would let anyone call"),
    ('name = "x"\nallow_from = ["192.0.2.1"]\ndids = { "12" = "999" }', "unknown user"),
    ('name = "x"\nallow_from = ["192.0.2.1"]\ndids = { "abc" = "201" }', "must be a number"),
    ('name = "x"\nallow_from = ["192.0.2.1"]\ntransports = ["sctp"]', "one of"),
])
def test_bad_trunks_are_refused_at_start(trunk: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse_config(BASE + "\n[[trunks]]\n" + trunk + "\n")


@pytest.mark.parametrize(("status", "cause"), [
    (486, "user_busy"), (603, "user_rejected"), (480, "user_no_answer"), (500, "failed")])
def test_the_phones_refusal_is_the_calls_cause(status: int, cause: str) -> None:
    net = _net()
    alice = Phone(net, "201", "secret201", port=5071)
    alice.register()
    trunk = _carrier(net)
    _invite(trunk)
    ring = alice.take_request("INVITE")
    alice.reply(ring, status, to_tag="a1")
    record = _record(net)
    assert (record.state, record.cause) == ("ended", cause)
    assert is_missed(record.cause, record.direction)


def test_trunks_and_pbx_mode_do_not_go_together() -> None:
    upstream = '\n[upstream]\nregistrar = "sip:pbx.example.com"\nusername = "sd"\n' \
               'password = "a-long-password"\n'
    with pytest.raises(ConfigError, match="not with"):
        parse_config(BASE + TRUNK + upstream)


def _answered(net: SimNet, alice: Phone, trunk: Phone) -> None:
    _invite(trunk)
    ring = alice.take_request("INVITE")
    alice.reply(ring, 200, to_tag="a1", body=sdp_answer())
    assert _record(net).state == "connected"


def test_the_api_hangs_up_an_inbound_call_and_answered_calls_are_not_missed() -> None:
    net = _net()
    alice = Phone(net, "201", "secret201", port=5071)
    alice.register()
    _answered(net, alice, _carrier(net))
    record = _record(net)
    assert net.core.inbound.hang_up(record.id, net.now) is record
    assert (record.state, record.cause) == ("ended", "cancelled")
    assert not is_missed(record.cause, record.direction, answered=True)
    assert net.core.inbound.incoming == {}
    assert any(m.startswith("BYE") for m in alice.pending()), alice.pending()


def test_sweep_and_stop_end_inbound_calls_for_good() -> None:
    net = _net()
    alice = Phone(net, "201", "secret201", port=5071)
    alice.register()
    _answered(net, alice, _carrier(net))
    net.now += 14400 + 1  # [calls] max_duration
    net.core.sweep(net.now)
    assert (_record(net).state, _record(net).cause) == ("ended", "cancelled")
    assert net.core.inbound.incoming == {}
    net2 = _net()
    bob = Phone(net2, "201", "secret201", port=5071)
    bob.register()
    _answered(net2, bob, _carrier(net2))
    net2.core.shut_down(net2.now)
    assert (_record(net2).state, _record(net2).cause) == ("ended", "interrupted")
    assert net2.core.inbound.incoming == {}


def test_a_registered_phone_in_a_trunks_network_is_still_a_phone() -> None:
    net = _net(TRUNK.replace('allow_from = ["192.0.2.0/24"]', 'allow_from = ["127.0.0.0/8"]'))
    alice = Phone(net, "201", "secret201", port=5071)  # 127.0.0.1: in the trunk's network
    alice.register()
    invite = alice.request("INVITE", "sip:+4930999@127.0.0.1", call_id_value="x1",
                           from_tag="f1", to_value="<sip:+4930999@127.0.0.1>", cseq_number=1,
                           body=OFFER, content_type="application/sdp")
    alice.send(invite)
    assert alice.take_response(407)  # challenged like a phone, not a trunk call to 404


def test_a_trunks_transports_and_concurrent_calls_are_limited() -> None:
    net = _net(TRUNK.replace('dids =', 'transports = ["tcp"]\nmax_concurrent = 1\ndids ='))
    Phone(net, "201", "secret201", port=5071).register()
    udp = _carrier(net)
    _invite(udp)
    assert udp.take_response(407)  # over UDP it is no trunk
    net2 = _net(TRUNK.replace('dids =', 'max_concurrent = 1\ndids ='))
    alice = Phone(net2, "201", "secret201", port=5071)
    alice.register()
    first, second = _carrier(net2), _carrier(net2, host="192.0.2.11")
    _invite(first)
    assert alice.take_request("INVITE")
    _invite(second)
    assert second.take_response(503)
