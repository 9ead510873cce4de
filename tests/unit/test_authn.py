"""Authenticator policy on top of the digest server: the digest-uri must name the
Request-URI (RFC 3261 §22.4), tolerant of URI parameters phones add."""

from __future__ import annotations

from sipdial.authn import Authenticator
from sipdial.sip.auth import Challenge, answer_challenge
from sipdial.sip.message import Request, Response, parse_message

PASSWORDS = {"201": "secret201"}
PHONE = "10.0.0.1"


def invite(uri: str, authorization: str | None = None) -> Request:
    extra = f"Proxy-Authorization: {authorization}\r\n" if authorization else ""
    msg = parse_message((
        f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
        "From: <sip:201@example.com>;tag=a\r\nTo: <sip:+49301@example.com>\r\n"
        f"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:201@10.0.0.1>\r\n{extra}"
        "Content-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def answer(auth: Authenticator, digest_uri: str) -> str:
    challenge_response = auth.check(invite("sip:+49301@example.com"), 0.0, proxy=True, source=PHONE)
    assert isinstance(challenge_response, Response) and challenge_response.status == 407
    challenge = Challenge.parse(challenge_response.headers.get("Proxy-Authenticate") or "")
    return answer_challenge(challenge, username="201", password="secret201", method="INVITE",
                            uri=digest_uri, cnonce="c0ffee").to_header()


def test_digest_for_this_target_is_accepted_even_with_extra_parameters() -> None:
    auth = Authenticator("example.com", PASSWORDS.get, secret=b"k" * 32)
    value = answer(auth, "sip:+49301@example.com;transport=UDP")
    assert auth.check(invite("sip:+49301@example.com", value), 1.0, proxy=True,
                      source=PHONE) == "201"


def test_digest_captured_for_one_target_is_refused_for_another() -> None:
    auth = Authenticator("example.com", PASSWORDS.get, secret=b"k" * 32)
    value = answer(auth, "sip:+49301@example.com")
    outcome = auth.check(invite("sip:+1900555@example.com", value), 1.0, proxy=True,
                         source=PHONE)
    assert isinstance(outcome, Response) and outcome.status == 407


# ------------------------------------------------------------ password guessing (issue 7 §2)

ATTACKER = "203.0.113.9"


def guess(auth: Authenticator, password: str, now: float, source: str = ATTACKER) -> Response:
    """One INVITE guess with a fresh challenge; returns sipdial's answer (407 unless right)."""
    target = "sip:+49301@example.com"
    challenge_response = auth.check(invite(target), now, proxy=True, source=source)
    assert isinstance(challenge_response, Response)
    challenge = Challenge.parse(challenge_response.headers.get("Proxy-Authenticate") or "")
    value = answer_challenge(challenge, username="201", password=password, method="INVITE",
                             uri=target, cnonce="c0ffee").to_header()
    outcome = auth.check(invite(target, value), now, proxy=True, source=source)
    assert not isinstance(outcome, str), f"{password!r} was accepted"
    return outcome


def shape(response: Response) -> tuple[int, str, list[str], str]:
    challenge = Challenge.parse(response.headers.get("Proxy-Authenticate") or "")
    return (response.status, response.reason, [n for n, _ in response.headers.items()],
            challenge.to_header().replace(challenge.nonce, "-"))


def test_invite_guesses_get_the_same_407_when_blocked_and_right_password_waits() -> None:
    auth = Authenticator("example.com", PASSWORDS.get, secret=b"k" * 32)
    misses = [guess(auth, f"guess{i}", 0.0) for i in range(6)]
    assert not auth.guard.allows(ATTACKER, "201", 0.0)
    blocked = guess(auth, "secret201", 0.5)  # right password, during the back-off: not checked
    assert shape(blocked) == shape(misses[0]) == shape(misses[-1])
    assert shape(blocked)[0] == 407


def test_invite_right_password_works_after_the_lockout() -> None:
    auth = Authenticator("example.com", PASSWORDS.get, secret=b"k" * 32)
    now = 0.0
    for i in range(10):
        now = auth.guard.blocked_until(ATTACKER, "201", now)
        guess(auth, f"guess{i}", now)
    locked = now
    guess(auth, "secret201", locked + 899.0)  # asserts it is not accepted
    target = "sip:+49301@example.com"
    challenge_response = auth.check(invite(target), locked + 900.0, proxy=True, source=ATTACKER)
    assert isinstance(challenge_response, Response)
    challenge = Challenge.parse(challenge_response.headers.get("Proxy-Authenticate") or "")
    value = answer_challenge(challenge, username="201", password="secret201", method="INVITE",
                             uri=target, cnonce="c0ffee").to_header()
    assert auth.check(invite(target, value), locked + 900.0, proxy=True,
                      source=ATTACKER) == "201"


def test_invite_through_simnet_counts_the_phones_address() -> None:
    """The calls room passes the INVITE's source: guesses from one address lock only it."""
    from tests.unit.simnet import Phone, SimNet, ack_for, first_via

    net = SimNet()
    attacker = Phone(net, "201", "wrong-guess", port=5099, host=ATTACKER)
    uri = "sip:+4930123@127.0.0.1"
    answers = []
    for n in range(7):
        first = attacker.request("INVITE", uri, call_id_value=f"g{n}@a", from_tag=f"f{n}",
                                 to_value=f"<{uri}>", cseq_number=1)
        attacker.send(first)
        challenge = attacker.take_response(407)
        attacker.send(ack_for(first, challenge, first_via(first)))
        auth = attacker.authorization(challenge, "INVITE", uri, proxy=True)
        second = attacker.request("INVITE", uri, call_id_value=f"g{n}@a", from_tag=f"f{n}",
                                  to_value=f"<{uri}>", cseq_number=2,
                                  extra=[("Proxy-Authorization", auth)])
        attacker.send(second)
        answers.append(attacker.take_response(407))
        attacker.send(ack_for(second, answers[-1], first_via(second)))
        net.clear()
    assert not net.core.auth.guard.allows(ATTACKER, "201", net.now)
    assert net.core.auth.guard.allows("127.0.0.1", "202", net.now)


def test_http_password_check_shares_the_guard() -> None:
    auth = Authenticator("example.com", PASSWORDS.get, secret=b"k" * 32)
    for i in range(6):
        assert not auth.check_password("201", f"guess{i}", ATTACKER, 0.0)
    assert not auth.check_password("201", "secret201", ATTACKER, 0.5)  # blocked: not checked
    assert auth.check_password("201", "secret201", ATTACKER, 1.0)
    assert not auth.check_password("nobody", "secret201", "192.0.2.1", 1.0)
    # SIP guesses from that source are limited by the same counters
    for i in range(5):  # 6 failures in all from this source
        auth.check_password("202", f"guess{i}", "192.0.2.1", 1.0)
    assert not auth.guard.allows("192.0.2.1", "201", 1.0)
