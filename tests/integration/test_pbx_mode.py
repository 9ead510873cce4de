"""sipdial beside an office PBX (issue 8 §2, §5): the phones are registered at a real Kamailio
(``registrar`` + ``usrloc``, digest for phones and for sipdial's account), not at sipdial;
sipdial is registered there as an account (``[upstream]``), its user 201 has no password.

A click-to-dial call rings 201 by INVITEing ``sip:201@KAMAILIO`` (Kamailio challenges it,
sipdial answers with its account, Kamailio looks 201 up and relays to baresip); the target
number is routed by Kamailio's config to a SIPp destination. REFER mode: the phone's INVITE
to the Refer-To (the target at Kamailio) goes to Kamailio, which authenticates the phone and
routes it; bridge mode: sipdial INVITEs the target through Kamailio. Both: the phone shows
the target number as the caller, the call ends ``completed``.

Kamailio is started by :class:`tests.peers.kamailio.Kamailio` (the proxy harness) with this
file's own generated config; every request it handles is on one ``KAMLOG`` line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.c2d_helpers import wait_until
from tests.peers.baresip import Baresip
from tests.peers.kamailio import CONFIG_HEAD, Kamailio
from tests.peers.sipp import Sipp
from tests.sipdial_proc import Sipdial

pytestmark = pytest.mark.integration

TARGET = "+4930123456"
ACCOUNT_PASSWORD = "acct-secret-42"
PHONE_PASSWORD = "phone-201-secret"

PBX_CONFIG = CONFIG_HEAD + """loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"

modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 1)
modparam("auth", "secret", "kamailio-test-secret-0123456789")
modparam("rr", "append_fromtag", 1)

request_route {{
    xlog("L_NOTICE", "KAMLOG REQ $rm ci=$ci src=$si:$sp ru=$ru\\n");
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{
                t_relay();
            }}
            exit;
        }}
        xlog("L_NOTICE", "KAMLOG STRAY $rm ci=$ci\\n");
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    # static credentials: sipdial's account and the phone 201
    if ($au == "sipdial") {{
        $avp(pw) = "{account_password}";
    }} else if ($au == "201") {{
        $avp(pw) = "{phone_password}";
    }} else {{
        $avp(pw) = "no-such-user";
    }}
    if (!pv_auth_check("$fd", "$avp(pw)", "0", "0")) {{
        xlog("L_NOTICE", "KAMLOG CHALLENGE $rm ci=$ci au=$au\\n");
        auth_challenge("$fd", "1");
        exit;
    }}
    xlog("L_NOTICE", "KAMLOG AUTHED $rm ci=$ci au=$au\\n");
    {from_check}
    consume_credentials();
    if (is_method("REGISTER")) {{
        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
    if (!is_method("INVITE")) {{
        sl_send_reply("405", "Not here");
        exit;
    }}
    if ($rU =~ "^[+]49") {{
        # the office's outside line: the SIPp destination
        $ru = "sip:" + $rU + "@{host}:{dest_port}";
        xlog("L_NOTICE", "KAMLOG ROUTED ci=$ci au=$au ru=$ru\\n");
        record_route();
        t_relay();
        exit;
    }}
    if (!lookup("location")) {{
        sl_send_reply("404", "Not Found");
        exit;
    }}
    xlog("L_NOTICE", "KAMLOG LOOKUP ci=$ci au=$au ru=$ru\\n");
    record_route();
    t_relay();
}}
"""



@pytest.fixture
def dest(tmp_path: Path) -> Iterator[Sipp]:
    with Sipp.uas(tmp_path, "uas_answer.xml") as sipp:
        sipp.start()
        yield sipp


#: the usual Kamailio rule against spoofed callers: the From user must be the one who
#: authenticated (OpenSIPS/Kamailio sample configs; Asterisk ties From and endpoint alike)
FROM_MUST_BE_AUTH_USER = """if ($au != $fU) {
        xlog("L_NOTICE", "KAMLOG FORBIDDEN $rm ci=$ci au=$au fU=$fU\\n");
        sl_send_reply("403", "Forbidden auth ID");
        exit;
    }"""


def _pbx(tmp_path: Path, dest: Sipp, *, strict_from: bool = False) -> Kamailio:
    return Kamailio(tmp_path, name="pbx", config=PBX_CONFIG, dest_port=dest.port,
                    account_password=ACCOUNT_PASSWORD, phone_password=PHONE_PASSWORD,
                    from_check=FROM_MUST_BE_AUTH_USER if strict_from else "")


@pytest.fixture
def pbx(tmp_path: Path, dest: Sipp) -> Iterator[Kamailio]:
    with _pbx(tmp_path, dest) as kam:
        yield kam


def _sipdial(tmp_path: Path, kam: Kamailio, from_user: str | None = None) -> Sipdial:
    upstream = (f'[upstream]\nregistrar = "sip:{kam.address}"\nusername = "sipdial"\n'
                f'password = "{ACCOUNT_PASSWORD}"\nexpires = 60\nretry_base = 0.5\n'
                "retry_max = 2\n")
    if from_user is not None:
        upstream += f'from_user = "{from_user}"\n'
    # no password: the PBX authenticates 201's phones; no [[routes]]: the PBX routes
    return Sipdial(tmp_path, users=[{"id": "201", "name": "Alice", "auto_answer": True}],
                   routes=[], transports=("udp",), extra=upstream)


def _phone(tmp_path: Path, kam: Kamailio) -> Baresip:
    """baresip 201, registered at Kamailio (not at sipdial), every request through it."""
    return Baresip(tmp_path, user="201", password=PHONE_PASSWORD, registrar=kam.address)


def _report(kam: Kamailio, sd: Sipdial, dest: Sipp) -> str:
    return (f"kamailio:\n{kam.log_text()[-4000:]}\nsipdial:\n{sd.log_text()[-4000:]}\n"
            f"{dest.report()}")


def _registered(sd: Sipdial) -> bool:
    status, body = sd.api("GET", "/healthz", token=None)
    return status == 200 and body.get("upstream", {}).get("state") == "registered"


def _click_to_dial(tmp_path: Path, kam: Kamailio, dest: Sipp, mode: str,
                   from_user: str | None = None) -> None:
    with _sipdial(tmp_path, kam, from_user) as sd, _phone(tmp_path, kam) as phone:
        phone.wait_registered()
        wait_until(lambda: _registered(sd), 10, "sipdial registered at Kamailio")
        status, regs = sd.api("GET", "/v1/registrations?user=201")
        assert status == 200 and regs["registrations"] == [], regs  # not at sipdial
        status, call = sd.api("POST", "/v1/calls", {"user": "201", "to": TARGET,
                                                    "mode": mode})
        assert status == 201, call
        assert call["events"][0]["detail"] == "through the PBX", call
        # the phone rang (auto-answer) showing the target number as the caller
        up = phone.wait_event("CALL_ESTABLISHED", timeout=15)
        assert up["direction"] == "incoming", up
        # the From's user: the target, or sipdial's account (from_user = "account")
        shown = "sipdial" if from_user == "account" else TARGET
        assert shown in str(up.get("peeruri", "")), up
        assert up.get("peerdisplayname") == TARGET, up
        sd.wait_state(call["id"], "connected", timeout=30)
        if mode == "refer":
            # the transferred call runs outside sipdial: done once the NOTIFY says 200
            final = sd.wait_state(call["id"], "ended", timeout=20)
            assert final["cause"] == "completed", final
            phone.wait_event("CALL_ESTABLISHED", timeout=10)  # the phone's call to TARGET
        phone.hangup()
        assert dest.wait(20) == 0, _report(kam, sd, dest)
        final = sd.wait_state(call["id"], "ended", timeout=20)
        assert final["cause"] == "completed", final
        log = kam.log_text()
        report = _report(kam, sd, dest)
        # sipdial's INVITE to 201 was challenged, answered with its account and looked up
        assert "KAMLOG CHALLENGE INVITE" in log and "KAMLOG LOOKUP" in log, report
        routed = [line for line in log.splitlines() if "KAMLOG ROUTED" in line]
        assert len(routed) == 1, report
        # who called the destination: the phone (REFER) or sipdial (bridge)
        assert f"au={'201' if mode == 'refer' else 'sipdial'}" in routed[0], report
        assert "KAMLOG STRAY" not in log, report
    assert "Traceback" not in sd.log_text()


@pytest.mark.timeout(120)
def test_refer_call_beside_kamailio_pbx(tmp_path: Path, pbx: Kamailio, dest: Sipp) -> None:
    _click_to_dial(tmp_path, pbx, dest, "refer")


@pytest.mark.timeout(120)
def test_bridge_call_beside_kamailio_pbx(tmp_path: Path, pbx: Kamailio, dest: Sipp) -> None:
    _click_to_dial(tmp_path, pbx, dest, "bridge")


@pytest.mark.timeout(120)
def test_pbx_that_ties_from_to_credentials_needs_from_user_account(
        tmp_path: Path, dest: Sipp) -> None:
    """A PBX that refuses a From user other than the authenticated one (403): with
    ``from_user = "account"`` both of sipdial's INVITEs pass and the bridged call completes,
    the phone still showing the target number; without it the user's INVITE is refused."""
    with _pbx(tmp_path, dest, strict_from=True) as kam:
        _click_to_dial(tmp_path, kam, dest, "bridge", from_user="account")
        assert "KAMLOG FORBIDDEN" not in kam.log_text()
    with _pbx(tmp_path / "control", dest, strict_from=True) as kam, \
            _sipdial(tmp_path / "control", kam) as sd:
        wait_until(lambda: _registered(sd), 10, "sipdial registered at Kamailio")
        status, call = sd.api("POST", "/v1/calls", {"user": "201", "to": TARGET,
                                                    "mode": "bridge"})
        assert status == 201, call
        final = sd.wait_state(call["id"], "ended", timeout=20)
        assert final["cause"] != "completed", final
        assert "KAMLOG FORBIDDEN INVITE" in kam.log_text(), kam.log_text()[-3000:]
