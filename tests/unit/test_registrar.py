"""The registrar through the real endpoint and UA: REGISTER bytes in, responses out, fake clock."""

from __future__ import annotations

import dataclasses
import re

import pytest

from sipdial.sip.message import Response
from sipdial.sip.uri import parse_name_addr_list
from tests.unit.simnet import Phone, SimNet, make_config


@pytest.fixture
def net() -> SimNet:
    return SimNet()


@pytest.fixture
def phone(net: SimNet) -> Phone:
    return Phone(net)


def contacts_of(response: Response) -> list[tuple[str, dict[str, str | None]]]:
    return [(str(c.uri), c.params) for v in response.headers.get_all("Contact")
            for c in parse_name_addr_list(v)]


def authorized_register(phone: Phone, *, contacts: list[str] | None = None,
                        expires: int | None = 3600, cseq_number: int | None = None,
                        call_id_value: str | None = None,
                        extra: list[tuple[str, str]] | None = None) -> Response:
    """REGISTER with credentials for a fresh challenge, using the given CSeq for the second."""
    phone.send(phone.register_request(expires=expires, contacts=contacts,
                                      call_id_value=call_id_value, cseq_number=900))
    challenge = phone.take_response(401)
    auth = phone.authorization(challenge, "REGISTER", "sip:127.0.0.1")
    phone.send(phone.register_request(expires=expires, contacts=contacts, authorization=auth,
                                      cseq_number=cseq_number, call_id_value=call_id_value,
                                      extra=extra))
    return phone.take_response()


# ------------------------------------------------------------ challenge


def _without_nonce(value: str) -> str:
    return re.sub(r'nonce="[^"]*"', 'nonce="-"', value)


def test_challenge_identical_for_known_and_unknown_users(net: SimNet) -> None:
    known = Phone(net, "201", port=5070)
    unknown = Phone(net, "999", port=5070)
    known.send(known.register_request())
    unknown.send(unknown.register_request())
    a = known.take_response(401)
    b = unknown.take_response(401)
    assert (a.status, a.reason) == (b.status, b.reason)
    assert [n for n, _ in a.headers.items()] == [n for n, _ in b.headers.items()]
    different = {"Via", "From", "To", "Call-ID"}  # copied from the two requests
    for (name, va), (_, vb) in zip(a.headers.items(), b.headers.items(), strict=True):
        if name not in different:
            assert _without_nonce(va) == _without_nonce(vb), name
    assert a.headers.get("WWW-Authenticate") != b.headers.get("WWW-Authenticate")  # nonces
    assert "nonce=" in (a.headers.get("WWW-Authenticate") or "")
    assert a.body == b.body


def test_unknown_user_with_any_password_gets_a_challenge_again(net: SimNet) -> None:
    stranger = Phone(net, "999", "whatever")
    response = stranger.register()
    assert response.status == 401  # no user enumeration: the same answer as a bad password
    assert net.registrar.contacts("999", net.now) == []


def test_wrong_password_is_challenged_again(net: SimNet) -> None:
    phone = Phone(net, "201", "wrong")
    assert phone.register().status == 401
    assert net.registrar.contacts("201", net.now) == []


def test_credentials_for_another_user_403(net: SimNet) -> None:
    phone = Phone(net, "201")
    phone.send(phone.register_request())
    challenge = phone.take_response(401)
    auth = phone.authorization(challenge, "REGISTER", "sip:127.0.0.1", username="202",
                               password="secret202")
    phone.send(phone.register_request(authorization=auth))
    assert phone.take_response().status == 403
    assert net.registrar.contacts("201", net.now) == []
    assert net.registrar.contacts("202", net.now) == []


# ------------------------------------------------------------ success


@pytest.mark.parametrize("qop", [True, False], ids=["qop-auth", "no-qop-pyvoip"])
def test_register_md5(net: SimNet, phone: Phone, qop: bool) -> None:
    response = phone.register(qop=qop)
    assert response.status == 200
    assert contacts_of(response) == [("sip:201@192.168.1.10:5070", {"expires": "3600"})]
    assert response.headers.get("Date")
    (binding,) = net.registrar.contacts("201", net.now)
    assert binding.peer == phone.peer  # where the REGISTER came from, not the Contact
    assert binding.contact == "sip:201@192.168.1.10:5070"
    assert binding.expires_at == net.now + 3600
    assert net.changes == [("201", "sip:201@192.168.1.10:5070", False)]


def test_user_agent_stored(net: SimNet) -> None:
    phone = Phone(net, user_agent="baresip v1.0.0 (x86_64/linux)")
    assert phone.register().status == 200
    (binding,) = net.registrar.contacts("201", net.now)
    assert binding.user_agent == "baresip v1.0.0 (x86_64/linux)"
    assert binding.to_json(net.now)["user_agent"] == "baresip v1.0.0 (x86_64/linux)"


def test_several_devices_per_user(net: SimNet) -> None:
    desk = Phone(net, port=5070)
    soft = Phone(net, port=5071, contact_host="10.0.0.9", user_agent="baresip")
    assert desk.register().status == 200
    response = soft.register()
    assert response.status == 200
    assert {c for c, _ in contacts_of(response)} == {
        "sip:201@192.168.1.10:5070", "sip:201@10.0.0.9:5071"}
    peers = {b.peer for b in net.registrar.contacts("201", net.now)}
    assert peers == {desk.peer, soft.peer}


def test_several_contacts_in_one_register(net: SimNet, phone: Phone) -> None:
    response = phone.register(contacts=["<sip:201@10.0.0.1:5070>",
                                        "<sip:201@10.0.0.2:5070>, <sip:201@10.0.0.3:5070>"])
    assert response.status == 200
    assert len(net.registrar.contacts("201", net.now)) == 3


def test_q_ordering(net: SimNet, phone: Phone) -> None:
    response = phone.register(contacts=["<sip:201@10.0.0.1>;q=0.2", "<sip:201@10.0.0.2>;q=0.9",
                                        "<sip:201@10.0.0.3>"])
    assert response.status == 200
    order = [b.contact for b in net.registrar.contacts("201", net.now)]
    assert order == ["sip:201@10.0.0.3", "sip:201@10.0.0.2", "sip:201@10.0.0.1"]
    assert [c for c, _ in contacts_of(response)] == order
    assert [b.q for b in net.registrar.contacts("201", net.now)] == [1.0, 0.9, 0.2]


def test_equal_q_most_recent_first(net: SimNet) -> None:
    a = Phone(net, port=5070, contact_host="10.0.0.1")
    b = Phone(net, port=5071, contact_host="10.0.0.2")
    assert a.register().status == 200
    net.advance(5)
    assert b.register().status == 200
    assert [x.peer for x in net.registrar.contacts("201", net.now)] == [b.peer, a.peer]


def test_contact_expires_param_beats_expires_header(net: SimNet, phone: Phone) -> None:
    response = phone.register(expires=600, contacts=["<sip:201@10.0.0.1>;expires=120",
                                                     "<sip:201@10.0.0.2>"])
    assert response.status == 200
    got = {c: p["expires"] for c, p in contacts_of(response)}
    assert got == {"sip:201@10.0.0.1": "120", "sip:201@10.0.0.2": "600"}


def test_default_expiry_without_any_expires(net: SimNet, phone: Phone) -> None:
    response = phone.register(expires=None)
    assert response.status == 200
    assert contacts_of(response)[0][1]["expires"] == str(
        net.config.sip.default_registration_expires)


def test_interval_too_brief_423_with_min_expires(net: SimNet, phone: Phone) -> None:
    response = phone.register(expires=30)
    assert response.status == 423
    assert response.headers.get("Min-Expires") == str(net.config.sip.min_registration_expires)
    assert net.registrar.contacts("201", net.now) == []


def test_423_leaves_no_partial_update(net: SimNet, phone: Phone) -> None:
    # §10.3 step 7: all bindings of one REGISTER are updated, or none
    response = phone.register(expires=None, contacts=["<sip:201@10.0.0.1>;expires=3600",
                                                      "<sip:201@10.0.0.2>;expires=10"])
    assert response.status == 423
    assert net.registrar.contacts("201", net.now) == []
    assert net.changes == []


def test_max_expires_clamp(net: SimNet, phone: Phone) -> None:
    response = phone.register(expires=999999)
    assert response.status == 200
    maximum = net.config.sip.max_registration_expires
    assert contacts_of(response)[0][1]["expires"] == str(maximum)
    (binding,) = net.registrar.contacts("201", net.now)
    assert binding.expires_at == net.now + maximum


def test_expires_zero_removes_one(net: SimNet, phone: Phone) -> None:
    assert phone.register(contacts=["<sip:201@10.0.0.1>", "<sip:201@10.0.0.2>"]).status == 200
    net.changes.clear()
    response = phone.register(contacts=["<sip:201@10.0.0.1>;expires=0"])
    assert response.status == 200
    assert [c for c, _ in contacts_of(response)] == ["sip:201@10.0.0.2"]
    assert net.changes == [("201", "sip:201@10.0.0.1", True)]


def test_expires_header_zero_removes(net: SimNet, phone: Phone) -> None:
    assert phone.register().status == 200
    response = phone.register(expires=0)
    assert response.status == 200
    assert contacts_of(response) == []
    assert net.registrar.contacts("201", net.now) == []


def test_star_with_expires_zero_removes_all(net: SimNet, phone: Phone) -> None:
    other = Phone(net, port=5071)
    assert phone.register(contacts=["<sip:201@10.0.0.1>", "<sip:201@10.0.0.2>"]).status == 200
    assert other.register().status == 200
    assert len(net.registrar.contacts("201", net.now)) == 3
    response = phone.register(expires=0, contacts=["*"])
    assert response.status == 200
    assert contacts_of(response) == []
    assert net.registrar.contacts("201", net.now) == []
    assert sorted(c for _, c, removed in net.changes if removed) == [
        "sip:201@10.0.0.1", "sip:201@10.0.0.2", "sip:201@192.168.1.10:5071"]


@pytest.mark.parametrize("expires", [60, None])
def test_star_with_other_expires_400(net: SimNet, phone: Phone, expires: int | None) -> None:
    assert phone.register().status == 200
    response = phone.register(expires=expires, contacts=["*"])
    assert response.status == 400
    assert "Wildcard" in response.reason
    assert len(net.registrar.contacts("201", net.now)) == 1


def test_star_with_other_contacts_400(net: SimNet, phone: Phone) -> None:
    assert phone.register().status == 200
    response = phone.register(expires=0, contacts=["*", "<sip:201@10.0.0.1>"])
    assert response.status == 400
    assert "Wildcard" in response.reason
    assert len(net.registrar.contacts("201", net.now)) == 1


def test_register_without_contact_is_a_query(net: SimNet, phone: Phone) -> None:
    assert phone.register().status == 200
    net.changes.clear()
    response = phone.register(contacts=[])
    assert response.status == 200
    assert [c for c, _ in contacts_of(response)] == ["sip:201@192.168.1.10:5070"]
    assert net.changes == []


def test_instance_id_replaces_old_contact(net: SimNet) -> None:
    instance = "<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"
    phone = Phone(net, instance=instance, contact_host="10.0.0.1")
    assert phone.register().status == 200
    # the same device comes back from a new address (new Contact, same +sip.instance)
    moved = Phone(net, instance=instance, contact_host="10.0.0.77", port=5099)
    response = moved.register()
    assert response.status == 200
    (binding,) = net.registrar.contacts("201", net.now)
    assert binding.contact == "sip:201@10.0.0.77:5099"
    assert binding.peer == moved.peer
    assert binding.instance == f'"{instance}"' or binding.instance == instance
    assert ("201", "sip:201@10.0.0.1:5070", True) in net.changes
    (contact,) = contacts_of(response)
    assert contact[1]["+sip.instance"] == f'"{instance}"'


def test_cseq_out_of_order_500(net: SimNet, phone: Phone) -> None:
    response = authorized_register(phone, cseq_number=10)
    assert response.status == 200
    response = authorized_register(phone, cseq_number=5, expires=0)
    assert response.status == 500
    assert len(net.registrar.contacts("201", net.now)) == 1
    # a different Call-ID is another registration: no ordering against the first
    response = authorized_register(phone, cseq_number=1, call_id_value="other@phone")
    assert response.status == 200


def test_cseq_out_of_order_500_for_star(net: SimNet, phone: Phone) -> None:
    assert authorized_register(phone, cseq_number=10).status == 200
    response = authorized_register(phone, cseq_number=10, expires=0, contacts=["*"])
    assert response.status == 500
    assert len(net.registrar.contacts("201", net.now)) == 1


def test_refresh_keeps_one_binding_and_extends_it(net: SimNet, phone: Phone) -> None:
    assert phone.register(expires=600).status == 200
    net.advance(500)
    assert phone.register(expires=600).status == 200
    (binding,) = net.registrar.contacts("201", net.now)
    assert binding.expires_at == net.now + 600
    net.advance(599)
    assert len(net.registrar.contacts("201", net.now)) == 1


# ------------------------------------------------------------ expiry by the clock


def test_expiry_by_clock(net: SimNet, phone: Phone) -> None:
    assert phone.register(contacts=["<sip:201@10.0.0.1>;expires=100",
                                    "<sip:201@10.0.0.2>;expires=300"]).status == 200
    net.changes.clear()
    net.advance(99)
    assert len(net.registrar.contacts("201", net.now)) == 2
    net.advance(1)
    live = net.registrar.contacts("201", net.now)
    assert [b.contact for b in live] == ["sip:201@10.0.0.2"]  # filtered, not yet removed
    assert net.changes == []
    removed = net.registrar.sweep(net.now)
    assert [b.contact for b in removed] == ["sip:201@10.0.0.1"]
    assert net.changes == [("201", "sip:201@10.0.0.1", True)]
    assert net.registrar.sweep(net.now) == []
    net.advance(200)
    assert net.registrar.contacts("201", net.now) == []
    assert [b.contact for b in net.registrar.sweep(net.now)] == ["sip:201@10.0.0.2"]
    assert net.registrar.all(net.now) == []


def test_expired_binding_is_not_called(net: SimNet, phone: Phone) -> None:
    assert phone.register(expires=60).status == 200
    net.advance(61)
    d = net.api.create_call(user="201", to="+4930123", device=None, auto_answer=None,
                            mode=None)
    errors: list[object] = []
    d.addErrback(lambda f: errors.append(f.value))
    assert errors and getattr(errors[0], "status", None) == 409
    assert phone.nothing()


def test_configured_limits_are_used() -> None:
    net = SimNet(make_config())
    phone = Phone(net)
    assert phone.register(expires=59).status == 423
    assert phone.register(expires=60).status == 200


def test_all_lists_bindings_of_every_user(net: SimNet, phone: Phone) -> None:
    bob = Phone(net, "202", "secret202", port=5072)
    assert phone.register().status == 200
    assert bob.register().status == 200
    assert [b.user for b in net.registrar.all(net.now)] == ["201", "202"]


def test_expired_nonce_is_rechallenged_stale(net: SimNet, phone: Phone) -> None:
    phone.send(phone.register_request())
    challenge = phone.take_response(401)
    auth = phone.authorization(challenge, "REGISTER", "sip:127.0.0.1", qop=False)
    phone.send(phone.register_request(authorization=auth))
    assert phone.take_response().status == 200
    net.advance(400)  # past the nonce lifetime
    phone.send(phone.register_request(authorization=auth))
    again = phone.take_response(401)
    assert "stale=true" in (again.headers.get("WWW-Authenticate") or "").lower()


def test_replayed_qop_answer_is_rechallenged(net: SimNet, phone: Phone) -> None:
    phone.send(phone.register_request())
    challenge = phone.take_response(401)
    auth = phone.authorization(challenge, "REGISTER", "sip:127.0.0.1")
    phone.send(phone.register_request(authorization=auth))
    assert phone.take_response().status == 200
    phone.send(phone.register_request(authorization=auth))  # same nc: a replay
    assert phone.take_response().status == 401


# ------------------------------------------------------------ password guessing (issue 7 §2)

ATTACKER_HOST = "203.0.113.9"


def _shape(response: Response) -> tuple[int, str, list[str], list[str]]:
    """What a guesser can compare between two answers: status, reason, header names, and the
    challenge without its nonce."""
    challenge = [_without_nonce(v) for v in response.headers.get_all("WWW-Authenticate")]
    return response.status, response.reason, [n for n, _ in response.headers.items()], challenge


def guess(phone: Phone, password: str, *, qop: bool = True) -> Response:
    phone.send(phone.register_request())
    challenge = phone.take_response(401)
    auth = phone.authorization(challenge, "REGISTER", "sip:127.0.0.1", password=password,
                               qop=qop)
    phone.send(phone.register_request(authorization=auth))
    return phone.take_response()


def test_register_guesses_back_off_and_lock_out_with_the_same_answers(net: SimNet) -> None:
    attacker = Phone(net, "201", port=5099, host=ATTACKER_HOST)
    wrong = [guess(attacker, f"guess{i}") for i in range(6)]  # 5 free, the 6th backs off 1 s
    blocked = guess(attacker, "secret201")  # the right password, during the back-off
    assert blocked.status == 401
    assert _shape(blocked) == _shape(wrong[0])  # indistinguishable from a miss
    assert net.registrar.contacts("201", net.now) == []
    net.advance(1.0)
    assert guess(attacker, "secret201").status == 200  # back-off over: it works again


def test_register_lockout_refuses_the_right_password_until_it_ends(net: SimNet) -> None:
    attacker = Phone(net, "202", port=5099, host=ATTACKER_HOST)
    for i in range(10):
        net.advance(net.core.auth.guard.blocked_until(ATTACKER_HOST, "202", net.now) - net.now)
        assert guess(attacker, f"guess{i}").status == 401
    for _ in range(3):
        net.advance(299.0)
        assert guess(attacker, "secret202").status == 401
    net.advance(900.0 - 3 * 299.0)
    assert guess(attacker, "secret202").status == 200


def test_registered_phone_is_not_locked_out_by_guesses_from_elsewhere(net: SimNet,
                                                                      phone: Phone) -> None:
    assert phone.register().status == 200  # the real phone, from 127.0.0.1
    for n in range(20):  # a distributed guesser: one guess per address
        stranger = Phone(net, "201", port=5099, host=f"203.0.113.{n + 1}")
        net.advance(1.0)
        assert guess(stranger, f"guess{n}").status == 401
    newcomer = Phone(net, "201", port=5099, host="192.0.2.50")
    assert guess(newcomer, "secret201").status == 401  # the account is locked for strangers
    assert phone.register().status == 200  # not for its phone


def test_unknown_account_locks_out_like_a_known_one(net: SimNet) -> None:
    known = Phone(net, "201", port=5099, host="203.0.113.1")
    unknown = Phone(net, "no-such-user", port=5099, host="203.0.113.2")
    answers_known = [_shape(guess(known, f"g{i}")) for i in range(8)]
    answers_unknown = [_shape(guess(unknown, f"g{i}")) for i in range(8)]
    assert answers_known == answers_unknown
    assert not net.core.auth.guard.allows("203.0.113.2", "no-such-user", net.now)


def test_replayed_register_without_qop_is_challenged_again(net: SimNet, phone: Phone) -> None:
    """RFC 2069 (pyVoIP): an Authorization captured off the wire cannot register again."""
    phone.send(phone.register_request())
    challenge = phone.take_response(401)
    captured = phone.authorization(challenge, "REGISTER", "sip:127.0.0.1", qop=False)
    phone.send(phone.register_request(authorization=captured))
    assert phone.take_response().status == 200
    net.advance(10.0)
    replayer = Phone(net, "201", port=phone.peer.port, host=phone.peer.host)  # same address
    replayer.reg_call_id = "replay@attacker"
    replayer.send(replayer.register_request(authorization=captured,
                                            contacts=["<sip:201@203.0.113.9:5099>"]))
    replayed = replayer.take_response()
    assert replayed.status == 401
    assert "stale=true" in (replayed.headers.get("WWW-Authenticate") or "")
    assert [b.contact for b in net.registrar.contacts("201", net.now)] == [phone.contact_uri]


def test_replayed_register_with_qop_same_nc_is_challenged_again(net: SimNet,
                                                                 phone: Phone) -> None:
    phone.send(phone.register_request())
    challenge = phone.take_response(401)
    captured = phone.authorization(challenge, "REGISTER", "sip:127.0.0.1")
    phone.send(phone.register_request(authorization=captured))
    assert phone.take_response().status == 200
    phone.send(phone.register_request(authorization=captured,
                                      contacts=["<sip:201@203.0.113.9:5099>"]))
    replayed = phone.take_response()
    assert replayed.status == 401
    assert [b.contact for b in net.registrar.contacts("201", net.now)] == [phone.contact_uri]


def test_nonce_answered_from_another_address_is_not_evaluated(net: SimNet) -> None:
    """Nonces are bound to the client's address: spoofed guesses with a nonce fetched
    elsewhere get no password checked and leave no counter behind."""
    fetcher = Phone(net, "201", port=5099, host=ATTACKER_HOST)
    fetcher.send(fetcher.register_request())
    challenge = fetcher.take_response(401)
    right = fetcher.authorization(challenge, "REGISTER", "sip:127.0.0.1")
    spoofed = Phone(net, "201", port=5099, host="198.51.100.77")
    spoofed.send(spoofed.register_request(authorization=right))
    assert spoofed.take_response().status == 401  # even the right password
    assert len(net.core.auth.guard) == 0


# ------------------------------------------------------------ workers (sipdial.workers)


def test_a_binding_from_another_worker_is_taken_without_telling_on_change(net: SimNet,
                                                                       phone: Phone) -> None:
    """``serve --workers``: worker A took the REGISTER and tells worker B, whose registrar
    holds it from then on (B can ring the phone) but does not tell the others again."""
    assert authorized_register(phone).status == 200
    [binding] = net.registrar.contacts("201", net.now)
    other = SimNet()
    told: list[bool] = []
    other.registrar.on_change = lambda b, removed: told.append(removed)
    assert other.registrar.replicate(binding, False, net.now)
    assert other.registrar.contacts("201", net.now) == [binding]
    assert other.registrar.knows_peer(binding.peer)
    second = dataclasses.replace(binding, contact="sip:201@10.9.9.9")
    assert other.registrar.replicate(second, False, net.now)  # another contact: kept beside
    refreshed = dataclasses.replace(binding, cseq=binding.cseq + 1,
                                    expires_at=binding.expires_at + 60)
    assert other.registrar.replicate(refreshed, False, net.now)
    # the removal of the binding as it was before that refresh crossed it: not applied
    assert not other.registrar.replicate(binding, True, net.now)
    assert not other.registrar.replicate(binding, False, net.now)  # nor the old version
    restarted = dataclasses.replace(binding, call_id="new", cseq=1,
                                    expires_at=binding.expires_at - 10)
    assert not other.registrar.replicate(restarted, True, net.now)  # other Call-ID: expiry
    assert other.registrar.replicate(refreshed, True, net.now)  # removed there: here too
    assert [b.contact for b in other.registrar.contacts("201", net.now)] == ["sip:201@10.9.9.9"]
    expired = dataclasses.replace(binding, expires_at=net.now - 1)
    assert not other.registrar.replicate(expired, False, net.now)
    unknown = dataclasses.replace(binding, user="999")
    assert not other.registrar.replicate(unknown, False, net.now)
    assert told == []


def test_while_held_a_register_is_answered_503_with_retry_after(net: SimNet,
                                                                phone: Phone) -> None:
    """A rejoining worker (sipdial.workers) until the others' table is there."""
    net.registrar.hold_until = net.now + 3
    phone.send(phone.register_request(expires=3600))
    held = phone.take_response(503)
    assert held.headers.get("Retry-After") == "1"
    net.registrar.hold_until = 0.0
    assert authorized_register(phone).status == 200
