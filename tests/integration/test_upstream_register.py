"""sipdial registers itself at a real Kamailio registrar that requires digest auth
(issue 8 §2, first bullet): registered, refreshed, shown in /healthz and GET /v1/upstream;
wrong credentials show ``failing`` with back-off; stopping sipdial un-REGISTERs.

Kamailio is started by :class:`tests.peers.kamailio.Kamailio` (the proxy harness) with this
file's own generated config: ``registrar`` + ``usrloc`` (in memory) and ``auth`` with a static
password for the account (``pv_auth_check``), every REGISTER and its outcome on one ``KAMREG``
line of its log. Small lifetimes (``expires = 2``, Kamailio's ``min_expires = 1``) keep the
refresh within the test's time bounds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.c2d_helpers import wait_until
from tests.peers.kamailio import CONFIG_HEAD, Kamailio
from tests.sipdial_proc import Sipdial

PASSWORD = "acct-secret-42"

REGISTRAR_CONFIG = CONFIG_HEAD + """loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"

modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 1)
modparam("registrar", "default_expires", 60)
modparam("auth", "secret", "kamailio-test-secret-0123456789")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (!is_method("REGISTER")) {{
        sl_send_reply("405", "Only REGISTER here");
        exit;
    }}
    $avp(pw) = "{password}";
    if (!pv_auth_check("$fd", "$avp(pw)", "0", "1")) {{
        xlog("L_NOTICE", "KAMREG CHALLENGE ci=$ci cseq=$cs auth=$(hdr(Authorization){{s.len}})\\n");
        auth_challenge("$fd", "1");
        exit;
    }}
    consume_credentials();
    if (!save("location")) {{
        sl_reply_error();
        exit;
    }}
    xlog("L_NOTICE", "KAMREG SAVED ci=$ci cseq=$cs aor=$tu expires=$hdr(Expires)\\n");
}}
"""

_SAVED = re.compile(r"KAMREG SAVED ci=(\S+) cseq=(\d+) aor=(\S+) expires=(\d+)")
_CHALLENGE = re.compile(r"KAMREG CHALLENGE ci=(\S+) cseq=(\d+) auth=(\d*)")



@pytest.fixture
def registrar(tmp_path: Path) -> Iterator[Kamailio]:
    kam = Kamailio(tmp_path, name="registrar", config=REGISTRAR_CONFIG, password=PASSWORD)
    with kam:
        yield kam


def saved(kam: Kamailio) -> list[tuple[str, int, str, int]]:
    return [(ci, int(cs), aor, int(exp)) for ci, cs, aor, exp in _SAVED.findall(kam.log_text())]


def challenges(kam: Kamailio) -> list[tuple[str, int, int]]:
    """(Call-ID, CSeq, length of the Authorization header: 0 when there was none)."""
    return [(ci, int(cs), int(n or 0)) for ci, cs, n in _CHALLENGE.findall(kam.log_text())]


def start_sipdial(tmp_path: Path, kam: Kamailio, password: str) -> Sipdial:
    upstream = (f'[upstream]\nregistrar = "sip:{kam.address}"\nusername = "sipdial"\n'
                f'password = "{password}"\nexpires = 2\nretry_base = 0.5\nretry_max = 2\n')
    return Sipdial(tmp_path, users=[{"id": "201", "password": "secret-201-pw"}], routes=[],
                   extra=upstream).start()


def upstream_health(sd: Sipdial) -> dict[str, Any]:
    """GET /v1/upstream (admin); /healthz, open to anyone, shows the state alone."""
    status, body = sd.api("GET", "/v1/upstream")
    assert status == 200, body
    status, health = sd.api("GET", "/healthz", token=None)
    assert status == 200 and list(health["upstream"]) == ["state"], health
    return dict(body)


def test_sipdial_registers_at_kamailio_with_digest_and_refreshes(
        tmp_path: Path, registrar: Kamailio) -> None:
    sd = start_sipdial(tmp_path, registrar, PASSWORD)
    try:
        up = wait_until(lambda: (h := upstream_health(sd))["state"] == "registered" and h,
                        10, "sipdial registered at Kamailio")
        assert up["aor"] == "sip:sipdial@127.0.0.1"
        assert up["peer"].endswith(f"127.0.0.1:{registrar.port}")
        assert up["last_status"] == 200 and up["failures"] == 0
        # Kamailio challenged the first REGISTER and saved the authenticated one
        first = wait_until(lambda: saved(registrar), 5, "Kamailio saved the binding")
        call_id, cseq, aor, expires = first[0]
        assert cseq == 2  # the second REGISTER, with the answered challenge
        assert aor == "sip:sipdial@127.0.0.1" and expires == 2
        assert (call_id, 1, 0) in challenges(registrar), registrar.log_text()[-2000:]
        # refreshed before the 2 s lifetime runs out, same Call-ID, CSeq counting up
        more = wait_until(lambda: len(s := saved(registrar)) >= 3 and s, 8,
                          "two refreshes saved by Kamailio")
        assert {ci for ci, *_ in more} == {call_id}
        assert [cs for _, cs, *_ in more] == sorted({cs for _, cs, *_ in more})
        assert upstream_health(sd)["state"] == "registered"
        # the admin endpoint shows the same; without a token it is refused
        status, body = sd.api("GET", "/v1/upstream")
        assert status == 200 and body["state"] == "registered", body
        status, body = sd.api("GET", "/v1/upstream", token=None)
        assert status == 401 and body["error"]["code"], body
    finally:
        sd.stop()
    # stopping un-REGISTERs: Kamailio saved Expires: 0 for the same Call-ID
    wait_until(lambda: any(exp == 0 and ci == call_id for ci, _, _, exp in saved(registrar)),
               5, "the un-REGISTER at stop")


def test_wrong_credentials_show_failing_with_back_off(
        tmp_path: Path, registrar: Kamailio) -> None:
    sd = start_sipdial(tmp_path, registrar, "not-the-password")
    try:
        up = wait_until(lambda: (h := upstream_health(sd))["failures"] >= 1 and h,
                        10, "the first failed registration")
        assert up["state"] == "failing"
        assert up["last_status"] == 401
        assert "credentials refused" in up["last_reason"]
        backoff = min(2.0, 0.5 * 2 ** (up["failures"] - 1))  # retry_base 0.5, retry_max 2
        assert up["next_attempt_in"] is not None and up["next_attempt_in"] <= backoff
        later = wait_until(lambda: (h := upstream_health(sd))["failures"] >= 3 and h,
                           10, "three failed attempts (back-off 0.5, 1, 2 s)")
        assert later["state"] == "failing"
        assert later["next_attempt_in"] is not None and later["next_attempt_in"] <= 2
        assert not saved(registrar), "Kamailio must not have saved anything"
        # each attempt: one plain REGISTER, one answered challenge; no retry storm
        attempts = challenges(registrar)
        assert len(attempts) <= 2 * (later["failures"] + 1), attempts
    finally:
        sd.stop()
    assert "Traceback" not in sd.log_text()


def test_standalone_sipdial_has_no_upstream(tmp_path: Path) -> None:
    sd = Sipdial(tmp_path, users=[{"id": "201", "password": "secret-201-pw"}],
                 routes=[]).start()
    try:
        status, body = sd.api("GET", "/healthz", token=None)
        assert status == 200 and "upstream" not in body
        status, body = sd.api("GET", "/v1/upstream")
        assert status == 404 and body["error"]["code"] == "not_configured", body
    finally:
        sd.stop()
