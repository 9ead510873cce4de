"""Digest authentication (sipdial.sip.auth): RFC vectors, server policy, client, parser."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipdial.sip.auth import (
    AuthError,
    Challenge,
    Credentials,
    DigestServer,
    NonceManager,
    answer_challenge,
    digest_response,
    parse_challenges,
    preferred_challenge,
)

# RFC 7616 §3.9.1
RFC7616 = {
    "username": "Mufasa",
    "password": "Circle of Life",
    "realm": "http-auth@example.org",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    "uri": "/dir/index.html",
    "method": "GET",
}
RFC7616_MD5 = "8ca523f5e9506fed4657c9700eebdbec"
RFC7616_SHA256 = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"

SECRET = b"0123456789abcdef0123456789abcdef"
T0 = 1_000_000.0
USERS = {"alice": "wonderland", "bob": 'p"a\\ss, word'}


def _counter_bytes() -> object:
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def make_server(**kwargs: object) -> DigestServer:
    nonces = NonceManager(SECRET, lifetime=300.0)
    return DigestServer("sipdial.test", USERS.get, nonces, **kwargs)  # type: ignore[arg-type]


def h(algorithm: str, text: str) -> str:
    fn = hashlib.sha256 if algorithm.startswith("SHA-256") else hashlib.md5
    return fn(text.encode()).hexdigest()


# ---------------------------------------------------------------------------- RFC vectors


RFC7616_CASES = [("MD5", RFC7616_MD5), ("SHA-256", RFC7616_SHA256)]


@pytest.mark.parametrize(("algorithm", "expected"), RFC7616_CASES)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    v = RFC7616
    got = digest_response(
        algorithm=algorithm,
        username=v["username"],
        realm=v["realm"],
        password=v["password"],
        method=v["method"],
        uri=v["uri"],
        nonce=v["nonce"],
        qop="auth",
        nc="00000001",
        cnonce=v["cnonce"],
    )
    assert got == expected


@pytest.mark.parametrize(("algorithm", "expected"), RFC7616_CASES)
def test_rfc7616_client_answers_rfc_challenge(algorithm: str, expected: str) -> None:
    v = RFC7616
    header = (
        f'Digest realm="{v["realm"]}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{v["nonce"]}", opaque="{v["opaque"]}"'
    )
    challenge = Challenge.parse(header)
    creds = answer_challenge(
        challenge,
        username=v["username"],
        password=v["password"],
        method=v["method"],
        uri=v["uri"],
        cnonce=v["cnonce"],
        nc=1,
    )
    assert creds.response == expected
    assert creds.qop == "auth"
    assert creds.nc == "00000001"
    assert creds.opaque == v["opaque"]
    assert creds.algorithm == algorithm


def test_rfc7616_authorization_header_parses() -> None:
    header = (
        'Digest username="Mufasa",\r\n realm="http-auth@example.org",\r\n'
        ' uri="/dir/index.html",\r\n algorithm=SHA-256,\r\n'
        ' nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\r\n'
        ' nc=00000001,\r\n cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",\r\n'
        ' qop=auth,\r\n'
        ' response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",\r\n'
        ' opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    creds = Credentials.parse(header)
    assert creds.username == "Mufasa"
    assert creds.algorithm == "SHA-256"
    assert creds.nc == "00000001"
    assert creds.qop == "auth"
    assert creds.response == RFC7616_SHA256
    assert creds.opaque == RFC7616["opaque"]


def test_rfc2617_vector() -> None:
    # RFC 2617 §3.5
    header = (
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
        'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    creds = Credentials.parse(header)
    assert creds.algorithm == "MD5"  # default when absent
    expected = digest_response(
        algorithm=creds.algorithm,
        username=creds.username,
        realm=creds.realm,
        password="Circle Of Life",
        method="GET",
        uri=creds.uri,
        nonce=creds.nonce,
        qop=creds.qop,
        nc=creds.nc,
        cnonce=creds.cnonce,
    )
    assert expected == creds.response == "6629fae49393a05397450978507c4ef1"


def test_rfc2069_formula_without_qop() -> None:
    ha1 = h("MD5", "Mufasa:testrealm@host.com:Circle Of Life")
    ha2 = h("MD5", "GET:/dir/index.html")
    expected = h("MD5", f"{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:{ha2}")
    got = digest_response(
        algorithm="md5",
        username="Mufasa",
        realm="testrealm@host.com",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
    )
    assert got == expected


@pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-256-sess"])
def test_sess_formula(algorithm: str) -> None:
    ha1 = h(algorithm, h(algorithm, "u:r:p") + ":N:C")
    ha2 = h(algorithm, "INVITE:sip:x@y")
    expected = h(algorithm, f"{ha1}:N:0000000a:C:auth:{ha2}")
    got = digest_response(
        algorithm=algorithm.lower(),
        username="u",
        realm="r",
        password="p",
        method="INVITE",
        uri="sip:x@y",
        nonce="N",
        qop="auth",
        nc=10,
        cnonce="C",
    )
    assert got == expected


def test_digest_response_rejects_unsupported_options() -> None:
    base = {"username": "u", "realm": "r", "password": "p", "method": "M", "uri": "U", "nonce": "N"}
    with pytest.raises(AuthError, match="auth-int"):
        digest_response(algorithm="MD5", qop="auth-int", nc=1, cnonce="c", **base)
    with pytest.raises(AuthError, match="algorithm"):
        digest_response(algorithm="SHA-512-256", **base)
    with pytest.raises(AuthError, match="cnonce"):
        digest_response(algorithm="MD5-sess", **base)
    with pytest.raises(AuthError, match="nc"):
        digest_response(algorithm="MD5", qop="auth", cnonce="c", **base)


# ---------------------------------------------------------------------------- nonces


def test_nonce_lifecycle() -> None:
    nonces = NonceManager(SECRET, lifetime=300.0)
    nonce = nonces.make(T0)
    assert nonces.check(nonce, T0) == "ok"
    assert nonces.check(nonce, T0 + 299.0) == "ok"
    assert nonces.check(nonce, T0 + 301.0) == "stale"
    assert nonces.check(nonce, T0 - 60.0) == "bad"  # issued "in the future"


def test_nonces_are_unique_and_secret_bound() -> None:
    nonces = NonceManager(SECRET)
    assert nonces.make(T0) != nonces.make(T0)
    other = NonceManager(b"another secret of 32 bytes......")
    assert other.check(nonces.make(T0), T0) == "bad"


def test_tampered_nonce_is_bad() -> None:
    nonces = NonceManager(SECRET, random_bytes=_counter_bytes())  # type: ignore[arg-type]
    nonce = nonces.make(T0)
    for i in range(len(nonce)):
        flipped = "A" if nonce[i] != "A" else "B"
        tampered = nonce[:i] + flipped + nonce[i + 1 :]
        assert nonces.check(tampered, T0) == "bad", i
    assert nonces.check(nonce + "A", T0) == "bad"
    assert nonces.check(nonce[:-1], T0) == "bad"
    assert nonces.check("", T0) == "bad"
    assert nonces.check("é" * len(nonce), T0) == "bad"


def test_nonce_manager_rejects_weak_secret() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        NonceManager(b"short")


# ---------------------------------------------------------------------------- server


def _answer(
    server: DigestServer,
    *,
    username: str = "alice",
    password: str = "wonderland",
    algorithm_index: int = 0,
    method: str = "REGISTER",
    uri: str = "sip:sipdial.test",
    nc: int = 1,
    now: float = T0,
) -> Credentials:
    challenge = server.challenges(now)[algorithm_index]
    return answer_challenge(
        challenge, username=username, password=password, method=method, uri=uri,
        cnonce="client-cnonce", nc=nc,
    )


def test_challenges_sha256_first_then_md5() -> None:
    challenges = make_server().challenges(T0)
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert len({c.nonce for c in challenges}) == 1
    assert all(c.qop == ("auth",) and c.realm == "sipdial.test" for c in challenges)
    assert all(not c.stale and c.opaque is None for c in challenges)
    headers = [c.to_header() for c in challenges]
    assert headers[0].startswith('Digest realm="sipdial.test", nonce="')
    assert "algorithm=SHA-256" in headers[0] and 'qop="auth"' in headers[0]


def test_stale_challenge_and_opaque() -> None:
    challenges = make_server(opaque="op aque").challenges(T0, stale=True)
    assert all(c.stale for c in challenges)
    assert challenges[0].to_header().endswith(', opaque="op aque", stale=true')


@pytest.mark.parametrize("algorithm_index", [0, 1])
def test_verify_ok(algorithm_index: int) -> None:
    server = make_server()
    creds = _answer(server, algorithm_index=algorithm_index)
    assert server.verify(creds.to_header(), "REGISTER", T0 + 1, uri="sip:sipdial.test") == (
        "ok",
        "alice",
    )


def test_verify_password_with_quotes_and_backslash() -> None:
    server = make_server()
    creds = _answer(server, username="bob", password=USERS["bob"])
    assert server.verify(creds.to_header(), "REGISTER", T0) == ("ok", "bob")


def test_wrong_password_is_wrong_and_names_the_user() -> None:
    # "wrong": a password was evaluated (what sipdial.guard counts), not a malformed header
    server = make_server()
    creds = _answer(server, password="WONDERLAND")
    assert server.verify(creds.to_header(), "REGISTER", T0) == ("wrong", "alice")


def test_wrong_method_or_uri_is_bad() -> None:
    server = make_server()
    creds = _answer(server)
    # another method changes the digest: indistinguishable from a wrong password
    assert server.verify(creds.to_header(), "INVITE", T0) == ("wrong", "alice")
    assert server.verify(creds.to_header(), "REGISTER", T0, uri="sip:other.test") == ("bad", None)
    # scheme/host case differences are tolerated
    assert server.verify(creds.to_header(), "REGISTER", T0, uri="SIP:SIPDIAL.TEST")[0] == "ok"


def test_unknown_user_same_challenge_and_same_result() -> None:
    calls: list[str] = []

    def lookup(user: str) -> str | None:
        calls.append(user)
        return USERS.get(user)

    nonces = NonceManager(SECRET, random_bytes=lambda n: b"\x07" * n)
    server = DigestServer("sipdial.test", lookup, nonces)
    # challenges() cannot even see the user: identical for everyone
    assert [c.to_header() for c in server.challenges(T0)] == [
        c.to_header() for c in server.challenges(T0)
    ]
    unknown = _answer(server, username="mallory", password="guess")
    known_wrong = _answer(server, username="alice", password="guess")
    assert server.verify(unknown.to_header(), "REGISTER", T0) == ("wrong", "mallory")
    assert server.verify(known_wrong.to_header(), "REGISTER", T0) == ("wrong", "alice")
    assert calls == ["mallory", "alice"]  # both went through the password lookup path


def test_unknown_user_is_checked_against_dummy_password(monkeypatch: pytest.MonkeyPatch) -> None:
    import sipdial.sip.auth as auth

    seen: list[str] = []
    real = auth.digest_response

    def spy(**kwargs: object) -> str:
        seen.append(str(kwargs["password"]))
        return real(**kwargs)  # type: ignore[arg-type]

    server = make_server()
    creds = _answer(server, username="nobody", password="x")
    monkeypatch.setattr(auth, "digest_response", spy)
    assert server.verify(creds.to_header(), "REGISTER", T0) == ("wrong", "nobody")
    assert len(seen) == 1 and seen[0] not in ("", "x")


def test_unknown_user_cannot_log_in_with_dummy_password() -> None:
    server = make_server()
    dummy = server._dummy_password
    creds = _answer(server, username="nobody", password=dummy)
    assert server.verify(creds.to_header(), "REGISTER", T0) == ("wrong", "nobody")


def test_expired_nonce_with_right_password_is_stale() -> None:
    server = make_server()
    creds = _answer(server, now=T0)
    assert server.verify(creds.to_header(), "REGISTER", T0 + 301) == ("stale", "alice")
    # a wrong password on an expired nonce is still a guess ("stale" would confirm a right one)
    wrong = _answer(server, password="nope", now=T0)
    assert server.verify(wrong.to_header(), "REGISTER", T0 + 301) == ("wrong", "alice")


def test_tampered_or_foreign_nonce_is_bad() -> None:
    server = make_server()
    challenge = server.challenges(T0)[0]
    forged_nonce = challenge.nonce[:-2] + ("AA" if challenge.nonce[-2:] != "AA" else "BB")
    forged = Challenge(challenge.realm, forged_nonce, challenge.algorithm, challenge.qop)
    creds = answer_challenge(
        forged, username="alice", password="wonderland", method="REGISTER",
        uri="sip:sipdial.test", cnonce="c",
    )
    assert server.verify(creds.to_header(), "REGISTER", T0) == ("bad", None)
    rfc = Challenge(challenge.realm, RFC7616["nonce"], "MD5")
    creds = answer_challenge(
        rfc, username="alice", password="wonderland", method="REGISTER", uri="u", cnonce="c"
    )
    assert server.verify(creds.to_header(), "REGISTER", T0) == ("bad", None)


def test_no_qop_response_accepted_although_qop_offered() -> None:
    # pyVoIP / old phones answer RFC 2069 style: no qop, nc, cnonce
    server = make_server()
    challenge = server.challenges(T0)[1]  # MD5
    response = digest_response(
        algorithm="MD5", username="alice", realm="sipdial.test", password="wonderland",
        method="REGISTER", uri="sip:sipdial.test", nonce=challenge.nonce,
    )
    header = (
        f'Digest username="alice",realm="sipdial.test",nonce="{challenge.nonce}",'
        f'uri="sip:sipdial.test",response="{response}",algorithm=MD5'
    )
    assert server.verify(header, "REGISTER", T0) == ("ok", "alice")
    # no counter: a nonce answered without qop is single-use; a replay is re-challenged
    assert server.verify(header, "REGISTER", T0 + 10) == ("stale", "alice")
    assert server.verify(header, "REGISTER", T0 + 400) == ("stale", "alice")


def test_nc_must_increase() -> None:
    server = make_server()
    first = _answer(server, nc=1)
    assert server.verify(first.to_header(), "REGISTER", T0)[0] == "ok"
    assert server.verify(first.to_header(), "REGISTER", T0) == ("stale", "alice")  # replay
    challenge = Challenge(first.realm, first.nonce, first.algorithm)
    third = answer_challenge(
        challenge, username="alice", password="wonderland", method="REGISTER",
        uri="sip:sipdial.test", cnonce="other", nc=3,
    )
    assert server.verify(third.to_header(), "REGISTER", T0)[0] == "ok"
    second = answer_challenge(
        challenge, username="alice", password="wonderland", method="REGISTER",
        uri="sip:sipdial.test", cnonce="other", nc=2,
    )
    assert server.verify(second.to_header(), "REGISTER", T0) == ("stale", "alice")


def test_nc_tracking_is_bounded() -> None:
    server = make_server(max_tracked_nonces=2)
    for i in range(5):
        creds = _answer(server, now=T0 + i)
        assert server.verify(creds.to_header(), "REGISTER", T0 + i)[0] == "ok"
    assert len(server._used) == 2


def test_failed_verification_does_not_advance_nc() -> None:
    server = make_server()
    good = _answer(server, nc=5)
    bad = Credentials(
        good.username, good.realm, good.nonce, good.uri, "0" * 64, good.algorithm,
        "auth", "00000009", "c",
    )
    assert server.verify(bad.to_header(), "REGISTER", T0)[0] == "wrong"
    assert server.verify(good.to_header(), "REGISTER", T0)[0] == "ok"


@pytest.mark.parametrize(
    ("mutation", "value"),
    [
        ("realm", "other.realm"),
        ("algorithm", "SHA-256-sess"),  # not offered by this server
        ("qop", "auth-int"),
    ],
)
def test_mismatched_parameters_are_bad(mutation: str, value: str) -> None:
    server = make_server()
    creds = _answer(server)
    header = creds.to_header()
    old = {"realm": 'realm="sipdial.test"', "algorithm": "algorithm=SHA-256", "qop": "qop=auth"}
    new = {"realm": f'realm="{value}"', "algorithm": f"algorithm={value}", "qop": f"qop={value}"}
    assert old[mutation] in header
    assert server.verify(header.replace(old[mutation], new[mutation]), "REGISTER", T0) == (
        "bad",
        None,
    )


def test_opaque_must_be_echoed_when_configured() -> None:
    server = make_server(opaque="xyz")
    creds = _answer(server)
    assert creds.opaque == "xyz"
    assert server.verify(creds.to_header(), "REGISTER", T0)[0] == "ok"
    without = _answer(server, nc=2).to_header().replace(', opaque="xyz"', "")
    assert "opaque" not in without
    assert server.verify(without, "REGISTER", T0) == ("bad", None)
    changed = _answer(server, nc=3).to_header().replace('opaque="xyz"', 'opaque="xyZ"')
    assert server.verify(changed, "REGISTER", T0) == ("bad", None)


@pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-256-sess"])
def test_server_with_sess_algorithms(algorithm: str) -> None:
    server = make_server(algorithms=(algorithm,))
    creds = _answer(server)
    assert creds.algorithm == algorithm
    assert server.verify(creds.to_header(), "REGISTER", T0) == ("ok", "alice")
    # -sess without qop cannot be computed: rejected, not crashed
    rfc2069 = creds.to_header().split(", cnonce=")[0]
    assert server.verify(rfc2069, "REGISTER", T0) == ("bad", None)


@pytest.mark.parametrize(
    "header", ["", "Basic dXNlcjpwYXNz", "Digest", 'Digest realm="x"', "garbage\x00"]
)
def test_malformed_authorization_is_bad_not_raised(header: str) -> None:
    assert make_server().verify(header, "REGISTER", T0) == ("bad", None)


def test_server_rejects_unknown_algorithm_config() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        make_server(algorithms=("SHA-1",))


# ---------------------------------------------------------------------------- client


def test_client_rfc2069_when_no_qop() -> None:
    challenge = Challenge.parse('Digest realm="trunk", nonce="abc", algorithm=MD5')
    assert challenge.qop == ()
    creds = answer_challenge(
        challenge, username="u", password="p", method="INVITE", uri="sip:1@trunk", cnonce="zz"
    )
    assert creds.qop is None and creds.nc is None and creds.cnonce is None
    ha1, ha2 = h("MD5", "u:trunk:p"), h("MD5", "INVITE:sip:1@trunk")
    assert creds.response == h("MD5", f"{ha1}:abc:{ha2}")
    header = creds.to_header()
    assert "qop" not in header and "nc=" not in header and "cnonce" not in header


def test_client_sess_answer() -> None:
    challenge = Challenge.parse('Digest realm="r", nonce="n", algorithm=SHA-256-sess, qop="auth"')
    creds = answer_challenge(
        challenge, username="u", password="p", method="REGISTER", uri="sip:r", cnonce="c", nc=2
    )
    ha1 = h("SHA-256", h("SHA-256", "u:r:p") + ":n:c")
    ha2 = h("SHA-256", "REGISTER:sip:r")
    assert creds.response == h("SHA-256", f"{ha1}:n:00000002:c:auth:{ha2}")
    assert creds.nc == "00000002"


def test_client_rejects_auth_int_only_and_unknown_algorithm() -> None:
    def answer(challenge: Challenge, nc: int = 1) -> Credentials:
        return answer_challenge(
            challenge, username="u", password="p", method="M", uri="U", cnonce="c", nc=nc
        )

    with pytest.raises(AuthError, match="auth-int"):
        answer(Challenge("r", "n", "MD5", ("auth-int",)))
    with pytest.raises(AuthError, match="algorithm"):
        answer(Challenge("r", "n", "SHA-512-256"))
    with pytest.raises(AuthError, match="nc"):
        answer(Challenge("r", "n"), nc=0)
    with pytest.raises(AuthError, match="cnonce"):
        answer(Challenge("r", "n", "MD5-sess", ()))


def test_preferred_challenge() -> None:
    md5 = Challenge("r", "n", "MD5")
    sha = Challenge("r", "n", "SHA-256")
    sha_no_qop = Challenge("r", "n", "SHA-256", ())
    unknown = Challenge("r", "n", "SHA-512-256")
    auth_int = Challenge("r", "n", "SHA-256", ("auth-int",))
    assert preferred_challenge([md5, sha]) is sha
    assert preferred_challenge([sha_no_qop, md5, sha]) is sha
    assert preferred_challenge([unknown, auth_int, md5]) is md5
    assert preferred_challenge([unknown, auth_int]) is None
    assert preferred_challenge([]) is None


def test_client_against_server_end_to_end_with_preferred() -> None:
    server = make_server()
    headers = [c.to_header() for c in server.challenges(T0)]
    best = preferred_challenge([Challenge.parse(v) for v in reversed(headers)])
    assert best is not None and best.algorithm == "SHA-256"
    creds = answer_challenge(
        best, username="alice", password="wonderland", method="INVITE", uri="sip:x@y", cnonce="q"
    )
    assert server.verify(creds.to_header(), "INVITE", T0 + 5, uri="sip:x@y") == ("ok", "alice")


# ---------------------------------------------------------------------------- parser


def test_parser_tolerates_order_case_whitespace_and_unquoted_values() -> None:
    header = (
        '  dIgEsT   NONCE = "n\\"1" ,REALM="a, \\"b\\""  ,, qop = "AUTH , auth-int",'
        "algorithm=md5-SESS, Stale=TRUE, opaque=tok  "
    )
    c = Challenge.parse(header)
    assert c.realm == 'a, "b"'
    assert c.nonce == 'n"1'
    assert c.qop == ("auth", "auth-int")
    assert c.algorithm == "MD5-sess"
    assert c.stale is True
    assert c.opaque == "tok"


def test_parser_unquoted_uri_and_tabs() -> None:
    creds = Credentials.parse(
        "Digest\tusername=alice,\trealm=r, nonce=n, uri=sip:bob@example.com:5060, response=ABCDEF"
    )
    assert creds.uri == "sip:bob@example.com:5060"
    assert creds.response == "ABCDEF"


def test_parse_challenges_multiple_in_one_value() -> None:
    found = parse_challenges(
        'Digest realm="a", nonce="1", algorithm=SHA-256, Digest realm="a", nonce="1"'
    )
    assert [c.algorithm for c in found] == ["SHA-256", "MD5"]
    with pytest.raises(AuthError, match="one Digest"):
        Challenge.parse('Digest realm="a", nonce="1", Digest realm="b", nonce="2"')
    with pytest.raises(AuthError, match="no Digest"):
        parse_challenges('Other realm="a"')


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("", "empty"),
        ("Basic realm=x", "unsupported auth scheme"),
        ("Digest", "without parameters"),
        ("Digest ,realm=x, nonce=y", "without parameters"),
        ("realm=x", "before the auth scheme"),
        ('Digest realm="x', "unterminated"),
        ('Digest realm="x\\', "unterminated"),
        ('Digest realm="x" nonce="y"', "expected ','"),
        ('Digest realm=, nonce="y"', "missing parameter value"),
        ('Digest realm="x", realm="y", nonce="z"', "duplicate"),
        ('Digest realm="x", nonce="y", stale=maybe', "stale"),
        ('Digest nonce="y"', "missing digest parameter"),
        ('Digest realm="a\x01b", nonce="y"', "control character"),
        ('Digest realm="a"\r\nX-Injected: 1', "CR, LF"),
        ("Digest realm=" + "x" * 9000 + ", nonce=y", "longer than"),
        ('Digest realm="x", nonce="y", algorithm="MD5 "', "token"),
    ],
)
def test_challenge_parse_errors(header: str, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        Challenge.parse(header)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ('Digest username="u", realm="r", nonce="n", uri="u"', "response"),
        ('Digest username="u", realm="r", nonce="n", uri="u", response="xyz"', "hexadecimal"),
        ('Digest username="u", realm="r", nonce="n", uri="u", response="ab", qop=auth', "nc"),
        (
            'Digest username="u", realm="r", nonce="n", uri="u", response="ab", qop=auth, '
            'nc=123456789, cnonce="c"',
            "nc must be",
        ),
    ],
)
def test_credentials_parse_errors(header: str, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        Credentials.parse(header)


def test_auth_error_is_sip_error_and_value_error() -> None:
    from sipdial.sip.errors import SipError

    with pytest.raises(AuthError) as info:
        Challenge.parse("Digest")
    assert isinstance(info.value, SipError) and isinstance(info.value, ValueError)
    assert info.value.status == 400


def test_constructor_refuses_header_injection() -> None:
    with pytest.raises(AuthError, match="control character"):
        Challenge("realm\r\nX: y", "n")
    with pytest.raises(AuthError, match="control character"):
        Credentials("alice\n", "r", "n", "u", "ab")


# ---------------------------------------------------------------------------- round trips & fuzz

_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x7f")
    .filter(lambda ch: ord(ch) >= 0x20 or ch == "\t"),
    max_size=30,
)
TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
_token = st.text(alphabet=TOKEN_ALPHABET, min_size=1, max_size=12)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(
    realm=_text,
    nonce=_text,
    algorithm=st.sampled_from(["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"]),
    qop=st.lists(_token.map(str.lower), max_size=3).map(tuple),
    opaque=st.none() | _text,
    stale=st.booleans(),
)
def test_challenge_round_trip(
    realm: str, nonce: str, algorithm: str, qop: tuple[str, ...], opaque: str | None, stale: bool
) -> None:
    challenge = Challenge(realm, nonce, algorithm, qop, opaque, stale)
    assert Challenge.parse(challenge.to_header()) == challenge


@given(
    username=_text,
    realm=_text,
    nonce=_text,
    uri=_text,
    response=st.text(alphabet="0123456789abcdef", min_size=1, max_size=64),
    with_qop=st.booleans(),
    nc=st.integers(1, 0xFFFFFFFF),
    cnonce=_text,
    opaque=st.none() | _text,
)
def test_credentials_round_trip(
    username: str, realm: str, nonce: str, uri: str, response: str, with_qop: bool,
    nc: int, cnonce: str, opaque: str | None,
) -> None:
    creds = Credentials(
        username, realm, nonce, uri, response, "SHA-256",
        "auth" if with_qop else None,
        f"{nc:08x}" if with_qop else None,
        cnonce if with_qop else None,
        opaque,
    )
    assert Credentials.parse(creds.to_header()) == creds


_header_alphabet = st.sampled_from(list('Digest realm=nonce,"\\ \t\r\nauth=qop-é\x00a1'))


@settings(max_examples=500)
@given(st.text(max_size=80) | st.text(alphabet=_header_alphabet, max_size=80))
def test_fuzz_parsers_raise_only_auth_error(text: str) -> None:
    for parse in (Challenge.parse, Credentials.parse, parse_challenges):
        try:
            parse(text)
        except AuthError:
            pass
    # the server never raises, whatever arrives
    assert make_server().verify(text, "REGISTER", T0)[0] in ("ok", "stale", "bad")


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(_token, st.one_of(_token, _text.map(_quoted))),
        max_size=6,
    )
)
def test_fuzz_well_formed_params_parse_or_report_missing(params: list[tuple[str, str]]) -> None:
    header = "Digest " + ", ".join(f"{k}={v}" for k, v in params)
    try:
        Challenge.parse(header)
    except AuthError as exc:
        assert any(
            word in str(exc)
            for word in ("missing", "duplicate", "stale", "without parameters", "token")
        ), str(exc)


# ---------------------------------------------------------------------------- fast path = scanner

def _scan_or_error(text: str) -> object:
    from sipdial.sip.auth import _scan_auth_header

    try:
        return _scan_auth_header(text)
    except AuthError as exc:
        return ("error", str(exc))


@pytest.mark.parametrize(
    "header",
    [
        'Digest realm="x", nonce="y", algorithm=MD5, qop="auth,auth-int"',
        'Digest username="u",realm="r" , uri=sip:host, nc=00000001, response="ab"',
        ' Digest  realm = "a b" ,nonce=y ',
        'Digest realm="x", REALM="y", nonce="z"',  # duplicate: the scanner's error
        'Digest realm="x", nonce="y", Basic foo=bar',
        'Digest realm="x\\"", nonce="y"',
        'Digest realm="x",, nonce="y"',
        'Digest realm="x" nonce="y"',
        "Digest realm=x=y, nonce=#$&^|",
        'Digest realm="caf\u00e9", nonce="y"',
    ],
)
def test_fast_auth_parser_agrees_with_the_scanner(header: str) -> None:
    from sipdial.sip.auth import _parse_auth_fast, _parse_auth_header

    fast = _parse_auth_fast(header)
    slow = _scan_or_error(header)
    if fast is not None:
        assert fast == slow
    try:
        assert _parse_auth_header(header) == slow
    except AuthError as exc:
        assert slow == ("error", str(exc))


@settings(max_examples=500)
@given(st.text(alphabet=list('Digest realm=nonce,"\\ \t=aé#|\x01'), max_size=60))
def test_fuzz_fast_auth_parser_never_disagrees(text: str) -> None:
    from sipdial.sip.auth import _parse_auth_fast

    for candidate in (text, "Digest " + text, 'Digest realm="r", ' + text):
        fast = _parse_auth_fast(candidate)
        if fast is not None:
            assert fast == _scan_or_error(candidate), candidate
