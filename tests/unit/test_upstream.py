"""sipdial registering itself at an upstream registrar (sipdial/upstream.py), sans-IO.

The registrar is scripted here but checks the digest with sipdial's own server code
(:class:`DigestServer`), so a wrong answer to a challenge would be noticed; time is a number
(SimNet's clock), Timer F and the back-off run on it.
"""

from __future__ import annotations

import logging

import pytest

from sipdial.config import Config, ConfigError, parse_config
from sipdial.sip import (
    DigestServer,
    NonceManager,
    Peer,
    Request,
    cseq,
    make_response,
)
from sipdial.upstream import UPSTREAM_TABLE, UpstreamInput, UpstreamState
from tests.unit.simnet import BASE_CONFIG, SimNet, branch_of, make_config, parse_request
from tests.unit.test_failover import PBX_A, PBX_B, PBX_C, PBX_SRV, FakeDns

REGISTRAR = Peer("udp", "127.0.0.11", 5060)


def upstream_config(registrar: str = "sip:127.0.0.11", *, password: str = "acct-secret",
                    expires: int = 120, extra: str = "") -> Config:
    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    text += (f'\n[upstream]\nregistrar = "{registrar}"\nusername = "sipdial"\n'
             f'password = "{password}"\ndomain = "pbx.example.com"\nexpires = {expires}\n'
             f"retry_base = 10\nretry_max = 60\n{extra}")
    return parse_config(text)


class Registrar:
    """A scripted registrar at ``peer`` that checks digests with sipdial's DigestServer."""

    def __init__(self, net: SimNet, peer: Peer = REGISTRAR, password: str = "acct-secret"):
        self.net = net
        self.peer = peer
        self.seen: set[str] = set()
        self.server = DigestServer("pbx", lambda u: password if u == "sipdial" else None,
                                   NonceManager(b"0123456789abcdef0123"), ("MD5",))

    def _new(self) -> list[Request]:
        """REGISTERs sent since the last look, without retransmissions (Timer E)."""
        fresh = []
        for data in self.net.sent_to(self.peer):
            request = parse_request(data)
            branch = branch_of(request)
            if branch not in self.seen:
                self.seen.add(branch)
                fresh.append(request)
        return fresh

    def take(self) -> Request:
        sent = self._new()
        assert len(sent) == 1, f"expected one REGISTER, got {len(sent)}"
        assert sent[0].method == "REGISTER"
        return sent[0]

    def nothing(self) -> bool:
        return not self._new()

    def reply(self, request: Request, status: int, *headers: tuple[str, str]) -> None:
        response = make_response(request, status, to_tag="reg1")
        for name, value in headers:
            response.headers.add(name, value)
        self.net.deliver(response.to_bytes(), self.peer)

    def challenge(self, request: Request, stale: bool = False) -> None:
        (challenge,) = self.server.challenges(self.net.now, stale=stale)
        self.reply(request, 401, ("WWW-Authenticate", challenge.to_header()))

    def verify(self, request: Request) -> str:
        header = request.headers.get("Authorization")
        assert header is not None, "no Authorization"
        result, user = self.server.verify(header, "REGISTER", self.net.now,
                                          uri=str(request.uri))
        assert user in ("sipdial", None)
        return result

    def accept(self, request: Request, expires: int) -> None:
        contact = request.headers.get("Contact") or ""
        self.reply(request, 200, ("Contact", f"{contact};expires={expires}"))


def started(config: Config, **kw: object) -> SimNet:
    net = SimNet(config, **kw)  # type: ignore[arg-type]
    assert net.core.upstream is not None
    net.core.upstream.start(net.now)
    net.settle()
    return net


def status(net: SimNet) -> dict[str, object]:
    """GET /v1/upstream's body; /healthz (open to anyone) carries its state alone."""
    upstream = net.api.upstream_status()
    assert upstream is not None
    assert net.api.health()["upstream"] == {"state": upstream["state"]}
    return upstream


def register(net: SimNet, registrar: Registrar, expires: int = 120) -> Request:
    """The first REGISTER is challenged, the answer is checked and accepted."""
    first = registrar.take()
    assert "Authorization" not in first.headers
    registrar.challenge(first)
    second = registrar.take()
    assert registrar.verify(second) == "ok"
    registrar.accept(second, expires)
    return second


# ----------------------------------------------------------------- config


def test_standalone_is_the_default_nothing_is_registered() -> None:
    net = SimNet(make_config())
    assert net.config.upstream is None
    assert net.core.upstream is None
    assert "upstream" not in net.api.health()
    net.advance(3600)
    assert not any(b"REGISTER " in data for _, data in net.log)


@pytest.mark.parametrize("extra, message", [
    ('registrar = "http://pbx"', "upstream.registrar: must be a sip: or sips: URI"),
    ('registrar = "sip:"', "upstream.registrar: not a SIP URI"),
    ('username = "a b"', "upstream.username: not a valid SIP user name"),
    ("expires = 0", "upstream.expires: must be > 0"),
    ("retry_base = 10\nretry_max = 5", "upstream.retry_max: must be >= upstream.retry_base"),
    ("expire = 60", 'unknown key "upstream.expire" (did you mean "upstream.expires"?)'),
])
def test_bad_upstream_config_is_refused_with_the_key(extra: str, message: str) -> None:
    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    keys = {"registrar": '"sip:pbx.example.com"', "username": '"sipdial"',
            "password": '"x"'}
    lines = [line for line in extra.split("\n")]
    for key, value in keys.items():
        if not any(line.startswith(key + " ") for line in lines):
            lines.append(f"{key} = {value}")
    with pytest.raises(ConfigError) as info:
        parse_config(text + "\n[upstream]\n" + "\n".join(lines) + "\n")
    assert message in str(info.value)


def test_upstream_config_defaults() -> None:
    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    config = parse_config(text + '\n[upstream]\nregistrar = "sip:pbx.example.com:5070"\n'
                                 'username = "sipdial"\npassword = "s3cr3t-pw"\n')
    assert config.upstream is not None
    assert config.upstream.domain == "pbx.example.com"
    assert config.upstream.expires == 3600
    assert "s3cr3t-pw" not in repr(config.upstream)  # the password is not logged by accident


def test_upstream_outbound_proxy_defaults_to_the_sip_one_and_can_be_its_own() -> None:
    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    text = text.replace("[http]", 'outbound_proxy = "sip:sbc.example.com;lr"\n\n[http]', 1)
    section = ('\n[upstream]\nregistrar = "sip:pbx.example.com"\nusername = "sipdial"\n'
               'password = "s3cr3t-pw"\n')
    inherited = parse_config(text + section).upstream
    assert inherited is not None and inherited.outbound_proxy == "sip:sbc.example.com;lr"
    own = parse_config(text + section + 'outbound_proxy = "<sip:10.0.0.1;lr>"\n').upstream
    assert own is not None and own.outbound_proxy == "sip:10.0.0.1;lr"
    with pytest.raises(ConfigError, match=r"upstream\.outbound_proxy"):
        parse_config(text + section + 'outbound_proxy = "http://x"\n')


def test_register_goes_through_the_outbound_proxy_with_route_to_the_registrar() -> None:
    """RFC 3261 §8.1.2: the REGISTER (and its refreshes) go to the proxy, Route: proxy,
    registrar; the proxy's address gets the digest exchange too."""
    net = started(upstream_config(extra='outbound_proxy = "sip:127.0.0.12;lr"\n'))
    assert net.sent_to(REGISTRAR) == []
    proxy = Registrar(net, Peer("udp", "127.0.0.12", 5060))
    second = register(net, proxy)
    assert str(second.uri) == "sip:pbx.example.com"
    assert [str(r) for r in second.headers.get_all("Route")] == \
        ["<sip:127.0.0.12;lr>", "<sip:127.0.0.11;lr>"]
    assert status(net)["state"] == "registered"
    net.advance(61)
    refresh = proxy.take()
    assert len(refresh.headers.get_all("Route")) == 2


# ----------------------------------------------------------------- registering


def test_registers_with_digest_and_refreshes_at_half_the_lifetime(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sipdial.upstream"):
        net = started(upstream_config())
        registrar = Registrar(net)
        first = registrar.take()
        assert str(first.uri) == "sip:pbx.example.com"
        assert (first.headers.get("From") or "").startswith(
            "<sip:sipdial@pbx.example.com>;tag=")
        assert first.headers.get("To") == "<sip:sipdial@pbx.example.com>"
        assert first.headers.get("Expires") == "120"
        assert "sipdial@127.0.0.1:5060" in (first.headers.get("Contact") or "")
        registrar.challenge(first)
        second = registrar.take()
        assert registrar.verify(second) == "ok"
        assert second.headers.get("Call-ID") == first.headers.get("Call-ID")
        assert cseq(second).number == cseq(first).number + 1
        assert status(net)["state"] == "registering"
        registrar.accept(second, 120)
    up = status(net)
    assert up["state"] == "registered"
    assert up["expires_in"] == 120
    assert up["next_attempt_in"] == 60
    assert up["failures"] == 0 and up["last_status"] == 200
    assert any("registered at sip:127.0.0.11" in r.getMessage() for r in caplog.records)

    net.advance(59)
    assert registrar.nothing(), "refreshed too early"
    net.advance(2)
    refresh = registrar.take()
    assert refresh.headers.get("Call-ID") == first.headers.get("Call-ID")
    assert cseq(refresh).number == cseq(second).number + 1
    assert registrar.verify(refresh) == "ok", "the refresh reuses the nonce with nc + 1"
    assert status(net)["state"] == "registered"  # still, while the refresh is out
    registrar.accept(refresh, 100)  # the registrar may grant less than asked
    assert status(net)["expires_in"] == 100
    assert status(net)["next_attempt_in"] == 50


def test_a_refused_reused_nonce_is_answered_again_when_stale() -> None:
    net = started(upstream_config())
    registrar = Registrar(net)
    register(net, registrar)
    net.advance(61)
    refresh = registrar.take()
    registrar.challenge(refresh, stale=True)
    again = registrar.take()
    assert registrar.verify(again) == "ok"
    registrar.accept(again, 120)
    assert status(net)["state"] == "registered"


def test_wrong_password_fails_with_exponential_back_off() -> None:
    net = started(upstream_config(password="wrong-secret"))
    registrar = Registrar(net)
    delays = []
    for attempt in range(4):
        first = registrar.take()
        registrar.challenge(first)
        second = registrar.take()
        assert registrar.verify(second) == "wrong"
        registrar.challenge(second)  # the registrar refuses the credentials
        assert registrar.nothing(), "a refused answer must not be retried at once"
        up = status(net)
        assert up["state"] == "failing"
        assert up["last_status"] == 401
        assert "credentials refused" in str(up["last_reason"])
        assert up["failures"] == attempt + 1
        delays.append(up["next_attempt_in"])
        assert isinstance(up["next_attempt_in"], float)
        net.advance(up["next_attempt_in"] - 0.5)
        assert registrar.nothing(), "retried before the back-off"
        net.advance(0.5)
    assert delays == [10, 20, 40, 60]  # retry_base 10 doubled, up to retry_max 60


def test_403_then_success_resets_the_back_off() -> None:
    net = started(upstream_config())
    registrar = Registrar(net)
    registrar.reply(registrar.take(), 403)
    assert status(net)["state"] == "failing"
    assert status(net)["last_status"] == 403
    assert status(net)["next_attempt_in"] == 10
    net.advance(10)
    register(net, registrar)
    up = status(net)
    assert up["state"] == "registered" and up["failures"] == 0


def test_no_answer_is_a_timeout_then_back_off() -> None:
    net = started(upstream_config())
    registrar = Registrar(net)
    registrar.take()
    net.advance(31)
    assert status(net)["state"] == "registering"
    net.advance(2)  # Timer F: 64*T1 = 32 s
    up = status(net)
    assert up["state"] == "failing" and up["last_status"] == 408
    assert up["next_attempt_in"] == pytest.approx(10, abs=1)


def test_503_retry_after_is_honoured_within_retry_max() -> None:
    net = started(upstream_config())
    registrar = Registrar(net)
    registrar.reply(registrar.take(), 503, ("Retry-After", "45"))
    assert status(net)["next_attempt_in"] == 45
    net.advance(44)
    assert registrar.nothing()
    net.advance(1)
    registrar.take()


@pytest.mark.parametrize("value", ["\u00b2", "1" * 5000, "-5", "12abc"])
def test_a_retry_after_that_is_no_number_is_ignored(value: str) -> None:
    """Hostile numbers: "²" passes str.isdigit() but int() raises; 5,000 digits pass
    isdigit() but int() refuses them. Either left the machine half-changed before."""
    net = started(upstream_config())
    registrar = Registrar(net)
    registrar.reply(registrar.take(), 503, ("Retry-After", value))
    up = status(net)
    assert up["state"] == "failing" and up["next_attempt_in"] == 10  # retry_base
    net.advance(10)
    registrar.take()


@pytest.mark.parametrize("granted, refresh", [
    ("9" * 10, (2**31 - 1) / 2),  # clamped, a refresh still scheduled
    ("9" * 400, 60),  # no number: the lifetime asked for (120 s)
])
def test_a_huge_granted_lifetime_is_clamped_and_refreshed(granted: str,
                                                          refresh: float) -> None:
    net = started(upstream_config())
    registrar = Registrar(net)
    first = registrar.take()
    registrar.challenge(first)
    second = registrar.take()
    contact = second.headers.get("Contact") or ""
    registrar.reply(second, 200, ("Contact", f"{contact};expires={granted}"),
                    ("Expires", granted))
    up = status(net)
    assert up["state"] == "registered"
    assert up["next_attempt_in"] == refresh


def test_a_2xx_granting_no_lifetime_is_a_failure_not_a_refresh_every_second() -> None:
    net = started(upstream_config())
    registrar = Registrar(net)
    first = registrar.take()
    registrar.challenge(first)
    registrar.accept(registrar.take(), 0)
    up = status(net)
    assert up["state"] == "failing", up
    assert "no lifetime" in str(up["last_reason"])
    net.advance(5)
    assert registrar.nothing()


def test_days_of_failures_keep_retrying_at_retry_max() -> None:
    """The back-off is retry_base * 2**(failures-1): past ~1,024 failures that no longer
    fits a float, and the OverflowError left the machine with no retry timer for good."""
    net = started(upstream_config())
    registrar = Registrar(net)
    reg = net.core.upstream
    assert reg is not None
    reg.failures = 1100  # about four days of a PBX that is down, at retry_max
    registrar.reply(registrar.take(), 403)
    up = status(net)
    assert up["state"] == "failing" and up["next_attempt_in"] == 60  # retry_max
    net.advance(60)
    registrar.take()


def test_423_asks_again_with_min_expires() -> None:
    net = started(upstream_config(expires=30))
    registrar = Registrar(net)
    registrar.reply(registrar.take(), 423, ("Min-Expires", "60"))
    again = registrar.take()
    assert again.headers.get("Expires") == "60"
    registrar.accept(again, 60)
    assert status(net)["state"] == "registered"


def test_stopping_unregisters() -> None:
    net = started(upstream_config())
    registrar = Registrar(net)
    register(net, registrar)
    net.core.shut_down(net.now)
    bye = registrar.take()
    assert bye.headers.get("Expires") == "0"
    assert status(net)["state"] == "stopped"
    net.advance(3600)
    assert registrar.nothing(), "nothing after stopping"


def test_late_response_of_an_earlier_register_is_ignored() -> None:
    net = started(upstream_config())
    registrar = Registrar(net)
    first = registrar.take()
    registrar.challenge(first)
    second = registrar.take()
    registrar.reply(first, 403)  # a stray retransmitted answer to the first REGISTER
    assert status(net)["state"] == "registering"
    registrar.accept(second, 120)
    assert status(net)["state"] == "registered"


def test_a_registrar_sipdial_has_no_transport_for_is_failing_not_a_crash() -> None:
    net = SimNet(upstream_config("sip:127.0.0.11;transport=tcp"))
    del net.endpoint.local[("tcp", 4)]  # sipdial listening on UDP only
    assert net.core.upstream is not None
    net.core.upstream.start(net.now)
    up = status(net)
    assert up["state"] == "failing" and up["last_status"] == 503
    assert "cannot send to" in str(up["last_reason"])
    net.advance(10)
    assert status(net)["failures"] == 2  # retried, and failed the same way


def test_every_state_has_a_stop_row() -> None:
    for state in UpstreamState:
        assert (state, UpstreamInput.STOP) in UPSTREAM_TABLE


# ----------------------------------------------------------------- RFC 3263 fail-over


def _srv_net() -> tuple[SimNet, FakeDns]:
    dns = FakeDns(PBX_SRV, lambda: 0.0)
    net = SimNet(upstream_config("sip:pbx.example.com"), resolver=dns)
    dns.clock = lambda: net.now
    assert net.core.upstream is not None
    net.core.upstream.start(net.now)
    return net, dns


def test_register_fails_over_to_the_next_srv_target_on_503_and_timeout() -> None:
    net, dns = _srv_net()
    assert dns.asked == ["sip:pbx.example.com"]
    a, b, c = (Registrar(net, peer) for peer in (PBX_A, PBX_B, PBX_C))
    a.reply(a.take(), 503)
    b.take()
    net.advance(33)  # Timer F at the second target
    register(net, c)
    up = status(net)
    assert up["state"] == "registered"
    assert up["peer"] == str(PBX_C)
    net.advance(61)
    c.take()  # the refresh goes where the registration is
    assert a.nothing() and b.nothing()


def test_when_every_target_fails_the_retry_resolves_again() -> None:
    net, dns = _srv_net()
    for peer in (PBX_A, PBX_B, PBX_C):
        registrar = Registrar(net, peer)
        registrar.reply(registrar.take(), 503)
    up = status(net)
    assert up["state"] == "failing" and up["last_status"] == 503
    net.advance(10)
    assert dns.asked == ["sip:pbx.example.com"] * 2
    Registrar(net, PBX_A).take()  # the first target again


def test_an_unresolvable_registrar_is_failing_with_the_reason() -> None:
    dns = FakeDns({}, lambda: 0.0)
    net = SimNet(upstream_config("sip:nowhere.example.com"), resolver=dns)
    assert net.core.upstream is not None
    net.core.upstream.start(net.now)
    up = status(net)
    assert up["state"] == "failing" and up["last_status"] == 503
    assert "cannot resolve nowhere.example.com" in str(up["last_reason"])
