"""Auto-answer header table (sipdial.calls.autoanswer)."""

from __future__ import annotations

import re

import pytest

from sipdial.calls.autoanswer import (
    DEFAULT_RULES,
    GENERIC_HEADERS,
    AutoAnswerRule,
    auto_answer_headers,
    rules_from_config,
)

URI = "sip:sipdial@192.0.2.10:5060"
ANSWER_MODE = ("Answer-Mode", "Auto")
CALL_INFO = ("Call-Info", f"<{URI}>;answer-after=0")
ALERT_AUTO = ("Alert-Info", "<http://127.0.0.1>;info=alert-autoanswer;delay=0")

# (realistic User-Agent, vendor, headers expected before Answer-Mode)
VENDORS = [
    ("Yealink SIP-T46S 66.86.0.15", "yealink", [CALL_INFO, ALERT_AUTO]),
    ("PolycomVVX-VVX_411-UA/6.4.3.5018", "polycom", [("Alert-Info", "Auto Answer")]),
    ("PolycomSoundPointIP-SPIP_650-UA/4.0.15.1009", "polycom", [("Alert-Info", "Auto Answer")]),
    ("snomD785/10.1.54.13", "snom", [CALL_INFO, ALERT_AUTO]),
    ("Grandstream GXP2170 1.0.11.3", "grandstream", [CALL_INFO, ALERT_AUTO]),
    ("Gigaset N510 IP PRO/42.250.00.000.000", "gigaset", [CALL_INFO, ALERT_AUTO]),
    (
        "Panasonic-KX-UT136/01.133 (0080f0e6c1f3)",
        "panasonic",
        [("Alert-Info", "Intercom"), CALL_INFO],
    ),
    ("Cisco/SPA504G-7.6.2", "cisco", [CALL_INFO]),
    ("Cisco/CP-8841-3PCC-11.3.1", "cisco", [CALL_INFO]),
    ("Linksys/SPA942-6.1.5(a)", "cisco", [CALL_INFO]),
    ("Cisco-CP7960G/8.0", "cisco", [CALL_INFO]),
    ("baresip v1.0.0 (x86_64/linux)", "baresip", [CALL_INFO]),
    ("Fanvil X4U 2.12.1", "fanvil", [CALL_INFO, ALERT_AUTO]),
    ("Aastra 6757i/3.3.1.4305", "aastra-mitel", [ALERT_AUTO, CALL_INFO]),
    ("Mitel 6867i/5.1.0.1024", "aastra-mitel", [ALERT_AUTO, CALL_INFO]),
]


def _vendor_of(user_agent: str) -> str | None:
    for rule in DEFAULT_RULES:
        if rule.pattern.search(user_agent):
            return rule.vendor
    return None


@pytest.mark.parametrize(("user_agent", "vendor", "expected"), VENDORS)
def test_vendor_headers(user_agent: str, vendor: str, expected: list[tuple[str, str]]) -> None:
    assert _vendor_of(user_agent) == vendor
    assert auto_answer_headers(user_agent, local_uri=URI) == [*expected, ANSWER_MODE]


@pytest.mark.parametrize(("user_agent", "vendor", "expected"), VENDORS)
def test_vendor_match_is_case_insensitive(
    user_agent: str, vendor: str, expected: list[tuple[str, str]]
) -> None:
    assert _vendor_of(user_agent.upper()) == vendor
    assert _vendor_of(user_agent.lower()) == vendor


def test_every_vendor_required_by_the_brief_is_covered() -> None:
    vendors = {rule.vendor for rule in DEFAULT_RULES}
    required = {
        "yealink", "polycom", "snom", "grandstream", "gigaset", "panasonic", "cisco", "baresip",
    }
    assert required <= vendors
    assert len(vendors) == len(DEFAULT_RULES)  # one rule per vendor, no shadowed duplicates


@pytest.mark.parametrize(
    "user_agent",
    [
        None,
        "",
        "Zoiper rv2.10.8.2",
        "MicroSIP/3.21.3",
        "Cisco-SIPGateway/IOS-15.x",
        "Asterisk PBX 18.0",
    ],
)
def test_unknown_or_missing_user_agent_gets_generic_set(user_agent: str | None) -> None:
    headers = auto_answer_headers(user_agent, local_uri=URI)
    assert headers == [CALL_INFO, ALERT_AUTO, ANSWER_MODE]
    assert [(n, v.replace("{uri}", URI)) for n, v in GENERIC_HEADERS] == [CALL_INFO, ALERT_AUTO]


def test_answer_mode_always_last_and_once() -> None:
    for user_agent, _, _ in VENDORS:
        headers = auto_answer_headers(user_agent, local_uri=URI)
        assert headers[-1] == ANSWER_MODE
        assert sum(1 for name, _ in headers if name.lower() == "answer-mode") == 1


def test_uri_placeholder_is_substituted_literally() -> None:
    uri = "sips:dial{er}@[2001:db8::1]:5061;transport=tls"
    headers = auto_answer_headers("Yealink SIP-T54W 96.85.0.5", local_uri=uri)
    assert headers[0] == ("Call-Info", f"<{uri}>;answer-after=0")
    assert all("{uri}" not in value for _, value in headers)


@pytest.mark.parametrize("bad", ["", "sip:a>b", "sip:a\r\nX: y"])
def test_unusable_local_uri_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="local_uri"):
        auto_answer_headers("Yealink", local_uri=bad)


def test_override_rules_take_precedence() -> None:
    overrides = rules_from_config(
        [
            {
                "vendor": "yealink-lab",
                "match": r"SIP-T46S",
                "headers": {"Alert-Info": "<{uri}>;info=alert-autoanswer", "X-Intercom": "1"},
            }
        ]
    )
    rules = (*overrides, *DEFAULT_RULES)
    assert auto_answer_headers("Yealink SIP-T46S 66.86.0.15", local_uri=URI, rules=rules) == [
        ("Alert-Info", f"<{URI}>;info=alert-autoanswer"),
        ("X-Intercom", "1"),
        ANSWER_MODE,
    ]
    # other Yealink models still fall through to the default rule
    assert auto_answer_headers("Yealink SIP-T54W 96.85.0.5", local_uri=URI, rules=rules) == [
        CALL_INFO,
        ALERT_AUTO,
        ANSWER_MODE,
    ]


def test_override_setting_answer_mode_is_not_duplicated() -> None:
    rules = rules_from_config(
        [{"vendor": "x", "match": "acme", "headers": {"answer-mode": "Manual"}}]
    )
    assert auto_answer_headers("ACME phone", local_uri=URI, rules=rules) == [
        ("answer-mode", "Manual")
    ]


def test_rules_without_match_fall_back_to_generic() -> None:
    rules = rules_from_config([{"vendor": "x", "match": "^acme", "headers": {"A": "b"}}])
    assert auto_answer_headers("Yealink", local_uri=URI, rules=rules) == [
        CALL_INFO,
        ALERT_AUTO,
        ANSWER_MODE,
    ]


def test_rules_from_config_builds_rules() -> None:
    (rule,) = rules_from_config(
        [{"vendor": " acme ", "match": r"acme\s+\d+", "headers": {"Call-Info": "<{uri}>;x=1"}}]
    )
    expected_pattern = re.compile(r"acme\s+\d+", re.IGNORECASE)
    assert rule == AutoAnswerRule("acme", expected_pattern, (("Call-Info", "<{uri}>;x=1"),))
    assert rule.pattern.search("ACME   42")
    assert rules_from_config([]) == ()


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ("nope", "must be a list"),
        (["nope"], r"rule #1: expected a table"),
        ([{"match": "a", "headers": {"A": "b"}}], r"rule #1: 'vendor'"),
        ([{"vendor": "", "match": "a", "headers": {"A": "b"}}], "'vendor'"),
        ([{"vendor": "v", "headers": {"A": "b"}}], r"rule #1 \(v\): 'match'"),
        ([{"vendor": "v", "match": "(", "headers": {"A": "b"}}], "invalid 'match' regular"),
        ([{"vendor": "v", "match": "a"}], "'headers' must be"),
        ([{"vendor": "v", "match": "a", "headers": {}}], "'headers' must be"),
        ([{"vendor": "v", "match": "a", "headers": ["A: b"]}], "'headers' must be"),
        ([{"vendor": "v", "match": "a", "headers": {"Bad Name": "b"}}], "invalid header name"),
        ([{"vendor": "v", "match": "a", "headers": {"A:": "b"}}], "invalid header name"),
        ([{"vendor": "v", "match": "a", "headers": {"A": 1}}], "must be a string"),
        ([{"vendor": "v", "match": "a", "headers": {"A": "b\r\nX: y"}}], "control character"),
        ([{"vendor": "v", "match": "a", "headers": {"A": "b"}, "mtach": "x"}], "unknown key"),
        (
            [{"vendor": "ok", "match": "a", "headers": {"A": "b"}}, {"vendor": "v2"}],
            r"rule #2 \(v2\)",
        ),
    ],
)
def test_rules_from_config_errors(entries: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rules_from_config(entries)  # type: ignore[arg-type]


def test_default_rule_values_are_wire_safe() -> None:
    for rule in DEFAULT_RULES:
        assert rule.pattern.flags & re.IGNORECASE
        assert rule.headers
        for name, value in rule.headers:
            assert re.fullmatch(r"[A-Za-z-]+", name)
            assert "\r" not in value and "\n" not in value
