"""Routes whose host is a name (RFC 3263 through the real resolver): an /etc/hosts name
reaches the destination; a name that does not resolve ends the call as target_failed with
"cannot resolve ..." and no traceback (it used to retransmit into InvalidAddressError and end
as target_no_answer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.c2d_helpers import ROUTE_MATCH, final_event, place_call, user
from tests.peers.baresip import Baresip
from tests.peers.sipp import Sipp
from tests.sipdial_proc import Sipdial

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _sipdial(tmp_path: Path, route_uri: str) -> Sipdial:
    return Sipdial(tmp_path, users=[user("201", auto_answer=True)],
                   routes=[{"match": ROUTE_MATCH, "uri": route_uri}])


def _phone(tmp_path: Path, sd: Sipdial) -> Baresip:
    return Baresip(tmp_path, user="201", password="secret201",
                   registrar=f"127.0.0.1:{sd.sip_port('udp')}", auto_answer=True,
                   outbound=False)


def test_a_route_to_a_hosts_file_name_reaches_the_destination(tmp_path: Path) -> None:
    with Sipp.uas(tmp_path, "uas_answer.xml", timeout=30, duration_ms=1000) as dest, \
            _sipdial(tmp_path, f"sip:{{number}}@localhost:{dest.port}") as sd:
        dest.start()
        with _phone(tmp_path, sd) as phone:
            phone.wait_registered()
            sd.wait_registered("201")
            call = place_call(sd, mode="bridge")
            connected = sd.wait_state(call["id"], "connected", timeout=20)
            assert connected["state"] == "connected"
            phone.hangup()
            final = sd.wait_state(call["id"], "ended", timeout=20)
        assert final["cause"] == "completed", final
        assert dest.wait(20) == 0, dest.report()


def test_a_route_to_a_name_that_does_not_resolve_fails_with_a_clear_cause(
        tmp_path: Path) -> None:
    with _sipdial(tmp_path, "sip:{number}@no-such-trunk.invalid") as sd:
        with _phone(tmp_path, sd) as phone:
            phone.wait_registered()
            sd.wait_registered("201")
            call = place_call(sd, mode="bridge")
            final = sd.wait_state(call["id"], "ended", timeout=30)
    assert final["cause"] == "target_failed", final
    detail = final_event(final)["detail"] or ""
    assert detail.startswith("cannot resolve no-such-trunk.invalid"), final
    log = sd.log_text()
    assert "Traceback" not in log, log[-3000:]
    assert "InvalidAddressError" not in log
