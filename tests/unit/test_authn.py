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
