"""sipdial.config: the shipped example, defaults, and every validation message."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from sipdial.config import (
    CallsConfig,
    ConfigError,
    ListenAddr,
    StoreConfig,
    load_config,
    parse_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "sipdial.toml"

# A minimal valid file, one entry per section; tests replace or add sections by name.
BASE = {
    "sip": '[sip]\nlisten = ["udp:127.0.0.1:0"]\ndomain = "example.com"\n',
    "http": '[http]\nlisten = "127.0.0.1:0"\n',
    "store": '[store]\nurl = "sqlite:///:memory:"\n',
    "api": '[api]\ntokens = { "admin" = "*", "tok-201" = "201" }\n',
    "users": '[[users]]\nid = "201"\npassword = "pw201"\n',
}


def toml(**sections: str) -> str:
    """BASE with ``sections`` replaced or added; bare ``key = value`` sections go first."""
    texts = {**BASE, **sections}.values()
    return "\n".join(sorted(texts, key=lambda text: text.startswith("[")))


def sip(extra: str = "", listen: str = '["udp:127.0.0.1:0"]') -> str:
    return f'[sip]\nlisten = {listen}\ndomain = "example.com"\n{extra}\n'


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return str(info.value)


# --- the shipped example ---------------------------------------------------------------------


def test_shipped_example_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.source == str(EXAMPLE)
    assert config.sip.listen == (
        ListenAddr("udp", "127.0.0.1", 5060),
        ListenAddr("tcp", "127.0.0.1", 5060),
    )
    assert config.sip.domain == config.sip.realm == "127.0.0.1"
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)
    assert config.store.sqlite_path == "var/sipdial.db"
    assert dict(config.api.tokens) == {"admin-secret": "*", "tok-201": "201"}
    assert list(config.users) == ["201", "202"]
    assert config.users["201"].name == "Alice"
    assert config.users["201"].password == "secret201"
    assert config.users["202"].name == "Bob"
    assert not config.users["201"].auto_answer
    (route,) = config.routes
    assert route.match.search("+4930123") and not route.match.search("12a")
    assert route.target_uri("+4930123") == "sip:+4930123@127.0.0.1:5080"
    assert config.calls == CallsConfig()


def test_shipped_example_documents_every_key() -> None:
    from sipdial.config import _KEYS

    text = EXAMPLE.read_text()
    for schema, keys in _KEYS.items():
        for key in keys:
            if schema == "":
                assert re.search(rf"^(# )?\[\[?{key}\]\]?$", text, re.M), key
            else:
                assert re.search(rf"^(# )?{key} = ", text, re.M), f"{schema}.{key}"


# --- valid input -----------------------------------------------------------------------------


def test_minimal_file_gets_defaults() -> None:
    config = parse_config(toml())
    assert config.source == "<string>"
    assert config.sip.realm == "example.com"
    assert config.sip.user_agent == "sipdial/0.1"
    assert (config.sip.t1, config.sip.t2, config.sip.t4) == (0.5, 4.0, 5.0)
    assert config.sip.min_registration_expires == 60
    assert config.sip.max_registration_expires == 3600
    assert config.sip.default_registration_expires == 3600
    assert config.calls == CallsConfig("refer", 30.0, 60.0, 32.0, 2000)
    assert config.routes == ()
    assert config.auto_answer == ()
    user = config.users["201"]
    assert (user.name, user.auto_answer, user.number) == ("", False, None)


def test_ipv6_listen_addresses() -> None:
    config = parse_config(
        toml(
            sip=sip(listen='["udp:[::1]:5060", "TCP:[2001:db8::1]:0", "tcp:localhost:5061"]'),
            http='[http]\nlisten = "[::1]:8080"\n',
        )
    )
    assert config.sip.listen == (
        ListenAddr("udp", "::1", 5060),
        ListenAddr("tcp", "2001:db8::1", 0),
        ListenAddr("tcp", "localhost", 5061),
    )
    assert (config.http.host, config.http.port) == ("::1", 8080)


def test_all_optional_keys() -> None:
    config = parse_config(
        toml(
            sip=sip(
                'realm = "r"\nuser_agent = "ua"\nt1 = 1\nt2 = 8\nt4 = 2.5\n'
                "min_registration_expires = 30\nmax_registration_expires = 600\n"
                "default_registration_expires = 300"
            ),
            users='[[users]]\nid = "201"\npassword = "p"\nname = "Alice"\nauto_answer = true\n'
            'number = "+4930201"\n',
            routes='[[routes]]\nmatch = "^0"\nuri = "sips:{number}@gw"\nusername = "u"\n'
            'password = "p"\n',
            calls='[calls]\ndefault_mode = "bridge"\nuser_answer_timeout = 5\n'
            "target_answer_timeout = 6.5\nrefer_timeout = 7\nmax_concurrent = 3\n",
            auto_answer='[[auto_answer]]\nvendor = "yealink"\nmatch = "Yealink"\n'
            'headers = { "Alert-Info" = "answer-after=0" }\n',
        )
    )
    assert config.sip.realm == "r" and config.sip.user_agent == "ua"
    assert (config.sip.t1, config.sip.t2, config.sip.t4) == (1.0, 8.0, 2.5)
    assert isinstance(config.sip.t1, float)
    assert config.sip.default_registration_expires == 300
    user = config.users["201"]
    assert (user.name, user.auto_answer, user.number) == ("Alice", True, "+4930201")
    (route,) = config.routes
    assert (route.username, route.password) == ("u", "p")
    assert config.calls == CallsConfig("bridge", 5.0, 6.5, 7.0, 3)
    assert config.auto_answer == (
        {"vendor": "yealink", "match": "Yealink", "headers": {"Alert-Info": "answer-after=0"}},
    )


def test_config_is_immutable_and_hides_secrets() -> None:
    config = parse_config(toml())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.sip.domain = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.users["x"] = config.users["201"]  # type: ignore[index]
    with pytest.raises(TypeError):
        config.api.tokens["x"] = "*"  # type: ignore[index]
    assert "pw201" not in repr(config)
    assert "tok-201" not in repr(config)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/sipdial.db", "var/sipdial.db"),
        ("sqlite:////abs/path.db", "/abs/path.db"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_path(url: str, path: str) -> None:
    config = parse_config(toml(store=f'[store]\nurl = "{url}"\n'))
    assert config.store.sqlite_path == path


def test_sqlite_path_of_other_url() -> None:
    with pytest.raises(ValueError):
        _ = StoreConfig("postgresql://db/sipdial").sqlite_path


def test_load_config_reads_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml())
    assert load_config(path).source == str(path)


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r'^cannot read config file ".*nope.toml": '):
        load_config(path)


# --- every validation message ----------------------------------------------------------------


def aa(vendor: str = '"v"', match: str = '"Phone"', headers: str = '{ A = "b" }') -> str:
    return f"[[auto_answer]]\nvendor = {vendor}\nmatch = {match}\nheaders = {headers}\n"


CASES: list[tuple[str, dict[str, str], str]] = [
    # unknown keys, with did-you-mean
    ("typo", {"sip": sip('domian = "x"')}, 'unknown key "sip.domian" (did you mean "sip.domain"?)'),
    ("unknown", {"sip": sip("colour = 1")}, 'unknown key "sip.colour"'),
    ("section typo", {"calls": "[cals]\n"}, 'unknown key "cals" (did you mean "calls"?)'),
    (
        "user key typo",
        {"users": '[[users]]\nid = "201"\npassword = "p"\n[[users]]\nid = "2"\npasswd = "p"\n'},
        'unknown key "users[1].passwd" (did you mean "users[1].password"?)',
    ),
    (
        "auto_answer key",
        {"auto_answer": '[[auto_answer]]\nvendr = "x"\n'},
        'unknown key "auto_answer[0].vendr" (did you mean "auto_answer[0].vendor"?)',
    ),
    # missing / mistyped
    ("no section", {"http": ""}, "[http]: required section is missing"),
    ("no domain", {"sip": '[sip]\nlisten = ["udp:h:1"]\n'}, "sip.domain: required key is missing"),
    ("section type", {"sip": "sip = 1\n"}, "sip: expected a table, got integer 1"),
    (
        "users type",
        {"users": 'users = "x"\n'},
        'users: expected an array of tables ([[users]]), got string "x"',
    ),
    ("users item", {"users": "users = [1]\n"}, "users[0]: expected a table, got integer 1"),
    (
        "empty domain",
        {"sip": '[sip]\nlisten = ["udp:h:1"]\ndomain = ""\n'},
        "sip.domain: must not be empty",
    ),
    (
        "bad domain",
        {"sip": '[sip]\nlisten = ["udp:h:1"]\ndomain = "a b"\n'},
        'sip.domain: not a valid host name or IP address: "a b"',
    ),
    # sip.listen
    ("no listen", {"sip": sip(listen="[]")}, "sip.listen: at least one listen address is required"),
    (
        "listen type",
        {"sip": sip(listen='"udp:h:1"')},
        'sip.listen: expected an array of strings, got string "udp:h:1"',
    ),
    (
        "listen item type",
        {"sip": sip(listen="[5060]")},
        "sip.listen[0]: expected a string, got integer 5060",
    ),
    (
        "no port",
        {"sip": sip(listen='["udp:h:1", "udp:127.0.0.1"]')},
        'sip.listen[1]: expected "udp|tcp|tls:HOST:PORT", got "udp:127.0.0.1"',
    ),
    (
        "no transport",
        {"sip": sip(listen='["127.0.0.1:5060"]')},
        'sip.listen[0]: expected "udp|tcp|tls:HOST:PORT", got "127.0.0.1:5060"',
    ),
    (
        "tls without a certificate",
        {"sip": sip(listen='["tls:127.0.0.1:5061"]')},
        "sip.tls.certificate: required by the tls: listen address",
    ),
    (
        "sctp",
        {"sip": sip(listen='["sctp:127.0.0.1:5060"]')},
        'sip.listen[0]: expected "udp|tcp|tls:HOST:PORT", got "sctp:127.0.0.1:5060"',
    ),
    (
        "bare ipv6",
        {"sip": sip(listen='["udp:::1:5060"]')},
        'sip.listen[0]: expected "udp|tcp|tls:HOST:PORT", got "udp:::1:5060"',
    ),
    (
        "bad ipv6",
        {"sip": sip(listen='["udp:[zz::1]:5060"]')},
        'sip.listen[0]: invalid IPv6 address "zz::1" in "udp:[zz::1]:5060"',
    ),
    (
        "bad host",
        {"sip": sip(listen='["udp:a_b:5060"]')},
        'sip.listen[0]: invalid host "a_b" in "udp:a_b:5060"',
    ),
    (
        "empty host",
        {"sip": sip(listen='["udp::5060"]')},
        'sip.listen[0]: invalid host "" in "udp::5060"',
    ),
    (
        "port range",
        {"sip": sip(listen='["udp:h:1", "tcp:h:70000"]')},
        "sip.listen[1]: port 70000 out of range 0-65535",
    ),
    (
        "duplicate",
        {"sip": sip(listen='["udp:h:5060", "udp:h:5060"]')},
        'sip.listen[1]: duplicate listen address "udp:h:5060"',
    ),
    # sip timers and expiry
    ("t1 zero", {"sip": sip("t1 = 0")}, "sip.t1: must be > 0, got 0.0"),
    ("t4 negative", {"sip": sip("t4 = -1.5")}, "sip.t4: must be > 0, got -1.5"),
    ("t1 nan", {"sip": sip("t1 = nan")}, "sip.t1: must be > 0, got nan"),
    ("t1 type", {"sip": sip('t1 = "fast"')}, 'sip.t1: expected a number, got string "fast"'),
    ("t1 bool", {"sip": sip("t1 = true")}, "sip.t1: expected a number, got boolean true"),
    ("t2 < t1", {"sip": sip("t1 = 2\nt2 = 1")}, "sip.t2: must be >= sip.t1 (2.0), got 1.0"),
    (
        "expires int",
        {"sip": sip("max_registration_expires = 1.5")},
        "sip.max_registration_expires: expected an integer, got float 1.5",
    ),
    (
        "expires zero",
        {"sip": sip("min_registration_expires = 0")},
        "sip.min_registration_expires: must be > 0, got 0",
    ),
    (
        "min > max",
        {"sip": sip("min_registration_expires = 600\nmax_registration_expires = 60")},
        "sip.min_registration_expires: must be <= sip.max_registration_expires (60), got 600",
    ),
    (
        "default",
        {"sip": sip("default_registration_expires = 30")},
        "sip.default_registration_expires: must be between sip.min_registration_expires (60) "
        "and sip.max_registration_expires (3600), got 30",
    ),
    (
        "user_agent",
        {"sip": sip("user_agent = 1")},
        "sip.user_agent: expected a string, got integer 1",
    ),
    # http
    (
        "http format",
        {"http": '[http]\nlisten = "8080"\n'},
        'http.listen: expected "HOST:PORT" (IPv6 as "[::1]:PORT"), got "8080"',
    ),
    (
        "http ipv6",
        {"http": '[http]\nlisten = "::1:8080"\n'},
        'http.listen: expected "HOST:PORT" (IPv6 as "[::1]:PORT"), got "::1:8080"',
    ),
    (
        "http port",
        {"http": '[http]\nlisten = "[::1]:65536"\n'},
        "http.listen: port 65536 out of range 0-65535",
    ),
    ("http missing", {"http": "[http]\n"}, "http.listen: required key is missing"),
    # store
    (
        "store url",
        {"store": '[store]\nurl = "postgresql://db/sipdial"\n'},
        'store.url: expected "sqlite:///relative/path.db", "sqlite:////absolute/path.db" or '
        '"sqlite:///:memory:", got "postgresql://db/sipdial"',
    ),
    (
        "store empty path",
        {"store": '[store]\nurl = "sqlite:///"\n'},
        'store.url: expected "sqlite:///relative/path.db", "sqlite:////absolute/path.db" or '
        '"sqlite:///:memory:", got "sqlite:///"',
    ),
    # api
    ("no tokens", {"api": "[api]\ntokens = {}\n"}, "api.tokens: at least one token is required"),
    (
        "tokens type",
        {"api": '[api]\ntokens = ["x"]\n'},
        "api.tokens: expected a table of token = user id, got an array",
    ),
    (
        "empty token",
        {"api": '[api]\ntokens = { "a" = "*", " " = "*" }\n'},
        "api.tokens[1]: empty token",
    ),
    (
        "token user type",
        {"api": '[api]\ntokens = { "a" = 201 }\n'},
        "api.tokens[0]: expected a user id string, got integer 201",
    ),
    (
        "token user",
        {"api": '[api]\ntokens = { "a" = "*", "b" = "999" }\n'},
        'api.tokens[1]: unknown user "999" (not in [[users]])',
    ),
    # users
    (
        "duplicate user",
        {"users": '[[users]]\nid = "201"\npassword = "p"\n[[users]]\nid = "201"\npassword = "q"\n'},
        'users[1].id: duplicate user id "201"',
    ),
    (
        "user id",
        {"users": '[[users]]\nid = "2 01"\npassword = "p"\n'},
        'users[0].id: not a valid SIP user name: "2 01"',
    ),
    (
        "user id type",
        {"users": '[[users]]\nid = 201\npassword = "p"\n'},
        "users[0].id: expected a string, got integer 201",
    ),
    (
        "no password",
        {"users": '[[users]]\nid = "201"\n'},
        "users[0].password: required key is missing",
    ),
    (
        "empty password",
        {"users": '[[users]]\nid = "201"\npassword = ""\n'},
        "users[0].password: must not be empty",
    ),
    (
        "auto_answer type",
        {"users": '[[users]]\nid = "201"\npassword = "p"\nauto_answer = "yes"\n'},
        'users[0].auto_answer: expected true or false, got string "yes"',
    ),
    (
        "number",
        {"users": '[[users]]\nid = "201"\npassword = "p"\nnumber = "030-123"\n'},
        'users[0].number: expected digits with an optional leading "+", got "030-123"',
    ),
    # routes
    (
        "regex",
        {"routes": '[[routes]]\nmatch = "^(+"\nuri = "sip:{number}@gw"\n'},
        "routes[0].match: invalid regular expression: nothing to repeat at position 2",
    ),
    (
        "uri scheme",
        {
            "routes": '[[routes]]\nmatch = "^1"\nuri = "sip:{number}@gw"\n'
            '[[routes]]\nmatch = "^2"\nuri = "tel:{number}"\n'
        },
        'routes[1].uri: must start with "sip:" or "sips:", got "tel:{number}"',
    ),
    (
        "uri number",
        {"routes": '[[routes]]\nmatch = "^1"\nuri = "sip:gw"\n'},
        'routes[0].uri: must contain "{number}", got "sip:gw"',
    ),
    (
        "route password",
        {"routes": '[[routes]]\nmatch = "."\nuri = "sip:{number}@gw"\npassword = "p"\n'},
        "routes[0].password: given without routes[0].username",
    ),
    (
        "route match missing",
        {"routes": '[[routes]]\nuri = "sip:{number}@gw"\n'},
        "routes[0].match: required key is missing",
    ),
    # calls
    (
        "mode",
        {"calls": '[calls]\ndefault_mode = "transfer"\n'},
        'calls.default_mode: expected "refer" or "bridge", got "transfer"',
    ),
    (
        "user timeout",
        {"calls": "[calls]\nuser_answer_timeout = 0\n"},
        "calls.user_answer_timeout: must be > 0, got 0.0",
    ),
    (
        "target timeout",
        {"calls": "[calls]\ntarget_answer_timeout = -1\n"},
        "calls.target_answer_timeout: must be > 0, got -1.0",
    ),
    (
        "refer timeout",
        {"calls": "[calls]\nrefer_timeout = inf\n"},
        "calls.refer_timeout: must be > 0, got inf",
    ),
    (
        "max_concurrent",
        {"calls": "[calls]\nmax_concurrent = 0\n"},
        "calls.max_concurrent: must be > 0, got 0",
    ),
    # auto_answer: only types
    (
        "aa vendor",
        {"auto_answer": aa(vendor="1")},
        "auto_answer[0].vendor: expected a string, got integer 1",
    ),
    (
        "aa no match",
        {"auto_answer": '[[auto_answer]]\nvendor = "v"\nheaders = { A = "b" }\n'},
        "auto_answer[0].match: required key is missing",
    ),
    (
        "aa regex",
        {"auto_answer": aa(match='"[a"')},
        "auto_answer[0].match: invalid regular expression: "
        "unterminated character set at position 0",
    ),
    (
        "aa headers",
        {"auto_answer": aa(headers='"Call-Info: x"')},
        "auto_answer[0].headers: expected a table of header name = value, "
        'got string "Call-Info: x"',
    ),
    (
        "aa no headers",
        {"auto_answer": aa(headers="{}")},
        "auto_answer[0].headers: at least one header is required",
    ),
    (
        "aa header value",
        {"auto_answer": aa(headers="{ Call-Info = 1 }")},
        "auto_answer[0].headers.Call-Info: expected a string, got integer 1",
    ),
]


@pytest.mark.parametrize(("sections", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation_error(sections: dict[str, str], message: str) -> None:
    assert error(toml(**sections)) == message


def test_invalid_toml_names_source() -> None:
    with pytest.raises(ConfigError, match=r"^conf\.toml: invalid TOML: "):
        parse_config("[sip\n", "conf.toml")


def test_token_never_in_error_message() -> None:
    message = error(toml(api='[api]\ntokens = { "very-secret" = "nobody" }\n'))
    assert "very-secret" not in message


def test_issue3_keys_confirm_media_webhooks() -> None:
    from sipdial.config import parse_config as _parse

    base = """
[sip]
listen = ["udp:127.0.0.1:5060"]
domain = "127.0.0.1"
[http]
listen = "127.0.0.1:8080"
[store]
url = "sqlite:///:memory:"
[api]
tokens = { "a" = "*" }
[[users]]
id = "201"
password = "p"
confirm = true
language = "de"
clir = true
[calls]
confirm_timeout = 5
[media]
port_min = 10000
port_max = 10100
[[webhooks]]
url = "http://127.0.0.1:9/hook"
secret = "s"
events = ["call.ended"]
"""
    cfg = _parse(base)
    user = cfg.users["201"]
    assert (user.confirm, user.language, user.clir) == (True, "de", True)
    assert cfg.calls.confirm is False and cfg.calls.confirm_timeout == 5.0
    assert (cfg.media.port_min, cfg.media.port_max) == (10000, 10100)
    assert cfg.webhooks[0].events == ("call.ended",)
    for bad, where in [
        (base.replace('language = "de"', 'language = "fr"'), "users[0].language"),
        (base.replace("port_max = 10100", "port_max = 100"), "media.port_max"),
        (base.replace('events = ["call.ended"]', 'events = ["call.exploded"]'),
         "webhooks[0].events[0]"),
        (base.replace('url = "http://127.0.0.1:9/hook"', 'url = "ftp://x"'), "webhooks[0].url"),
    ]:
        with pytest.raises(ConfigError) as exc:
            _parse(bad)
        assert where in str(exc.value)
