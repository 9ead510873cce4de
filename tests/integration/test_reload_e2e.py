"""Reloading the configuration without dropping calls (issue 10 §7): a bridged call between
baresip (user 201) and SIPp stays up while ``sipdial reload`` swaps users, tokens and
routes; a file that does not load is refused with the start's message and changes nothing.
With ``--workers 2`` the supervisor tells both workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.c2d_helpers import ROUTE_MATCH, TARGET, place_call, user, wait_until
from tests.peers.baresip import Baresip
from tests.peers.sipp import LOOPBACK, Sipp
from tests.sipdial_proc import Sipdial, config_text

pytestmark = pytest.mark.integration


def _reload(sd: Sipdial) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipdial", "reload", "--config", str(sd.config_path),
         "--pid", str(sd.info["pid"])],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def _wait_log(sd: Sipdial, text: str, count: int) -> None:
    wait_until(lambda: sd.log_text().count(text) >= count or None, 20,
               f"{count} x {text!r} in the log")


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_swaps_users_tokens_and_routes_and_the_call_stays_up(
        tmp_path: Path, workers: int) -> None:
    users: list[dict[str, Any]] = [user("201", auto_answer=True), user("202")]
    with Sipp.uas(tmp_path, "uas_answer.xml", timeout=120) as dest:
        routes = [{"match": ROUTE_MATCH, "uri": f"sip:{{number}}@{LOOPBACK}:{dest.port}"}]
        sd = Sipdial(tmp_path, workers=workers, users=users, routes=routes)
        with sd.start():
            dest.start()
            with Baresip(tmp_path, user="201", password="secret201",
                         registrar=f"127.0.0.1:{sd.sip_port('udp')}", outbound=False):
                sd.wait_registered("201")
                call = place_call(sd, "201", TARGET, mode="bridge")
                sd.wait_state(call["id"], "connected", timeout=20)

                # 202 goes, 203 comes with its own token; tok-201 is withdrawn; a deny
                # policy and a route to nowhere for 0800 numbers
                text = config_text(sd.db, users=[user("201", auto_answer=True), user("203")],
                                   routes=routes)
                text = text.replace('"tok-201" = "201"', '"tok-203" = "203"')
                sd.config_path.write_text(text + '[[policy]]\ndeny = ["^\\\\+49900"]\n')
                done = _reload(sd)
                assert done.returncode == 0, done.stderr
                assert f"sent SIGHUP to {sd.info['pid']}" in done.stdout
                _wait_log(sd, "configuration reloaded from", workers)

                status, body = sd.api("GET", "/v1/calls?user=203", token="tok-203")
                assert status == 200, body
                status, body = sd.api("GET", "/v1/calls", token="tok-201")
                assert status == 401, body
                status, body = sd.api("POST", "/v1/calls", {"user": "202", "to": TARGET})
                assert (status, body["error"]["code"]) == (404, "unknown_user"), body
                status, body = sd.api("POST", "/v1/calls", {"user": "201",
                                                            "to": "+499001234"})
                assert (status, body["error"]["code"]) == (403, "destination_forbidden")

                # the call placed before the reload is still up, and ends normally
                status, now = sd.api("GET", f"/v1/calls/{call['id']}")
                assert (status, now["state"]) == (200, "connected"), now
                status, _ = sd.api("DELETE", f"/v1/calls/{call['id']}")
                assert status == 200
                final = sd.wait_state(call["id"], "ended", timeout=15)
                assert final["cause"] == "cancelled", final

                # a file that does not load: `sipdial reload` says why and sends nothing;
                # a SIGHUP anyway is refused in the log, and nothing changes
                sd.config_path.write_text(text.replace("[api]", "[api\n"))
                done = _reload(sd)
                assert done.returncode == 2
                assert "invalid TOML" in done.stderr, done.stderr
                os.kill(sd.info["pid"], signal.SIGHUP)
                _wait_log(sd, "reload refused", 1)
                status, body = sd.api("GET", "/v1/calls?user=203", token="tok-203")
                assert status == 200, body
    log = sd.log_text()
    assert "Traceback" not in log
