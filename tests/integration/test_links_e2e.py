"""Call links with a real phone (issue 10 §4): a link from ``POST /v1/links`` shows its page,
its POST rings baresip (user 201) and connects it to SIPp, once; a second use is 410, also
after a restart. With ``--workers 2`` a link issued by either worker works wherever the
request lands (the issuing worker places the call)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.c2d_helpers import ROUTE_MATCH, user
from tests.peers.baresip import Baresip
from tests.peers.sipp import LOOPBACK, Sipp
from tests.sipdial_proc import Sipdial

pytestmark = pytest.mark.integration

LINKS = '[links]\nsecret = "a-links-secret-of-32-characters-at-least"\n'
MAX_TRIES = 16


def _open(sd: Sipdial, path: str, method: str, html: bool = False) -> tuple[int, bytes]:
    req = urllib.request.Request(sd.http_url + path, method=method, data=b"" if method ==
                                 "POST" else None)
    if html:
        req.add_header("Accept", "text/html")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _worker_of(path: str) -> int:
    payload = path.removeprefix("/c/").split(".")[0]
    nonce = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))[4]
    return int(nonce[:2], 16)


def _issue(sd: Sipdial) -> str:
    status, link = sd.api("POST", "/v1/links", {"user": "201", "to": "+4930123456",
                                                "ttl": 600}, token="tok-201")
    assert status == 201, link
    return str(link["path"])


def _use(sd: Sipdial, path: str) -> dict[str, Any]:
    status, page = _open(sd, path, "GET", html=True)
    assert status == 200 and b'<form method="post">' in page, page
    status, body = _open(sd, path, "POST")
    assert status == 201, body
    call: dict[str, Any] = json.loads(body)
    final = sd.wait_state(call["id"], "ended", timeout=30)
    assert final["cause"] == "completed", final
    assert "connected" in [e["state"] for e in final["events"]], final
    status, body = _open(sd, path, "POST")
    assert (status, json.loads(body)["error"]["code"]) == (410, "link_used")
    return call


@pytest.mark.parametrize("workers", [1, 2])
def test_a_link_rings_the_phone_once(tmp_path: Path, workers: int) -> None:
    with Sipp.uas(tmp_path, "uas_answer_then_bye.xml", calls=MAX_TRIES, duration_ms=300,
                  timeout=120) as dest:
        sd = Sipdial(tmp_path, workers=workers, users=[user("201", auto_answer=True)],
                     routes=[{"match": ROUTE_MATCH,
                              "uri": f"sip:{{number}}@{LOOPBACK}:{dest.port}"}],
                     extra=LINKS)
        with sd.start():
            dest.start()
            with Baresip(tmp_path, user="201", password="secret201",
                         registrar=f"127.0.0.1:{sd.sip_port('udp')}", outbound=False):
                sd.wait_registered("201")
                paths: dict[int, str] = {}
                for _ in range(MAX_TRIES):  # a link of each worker
                    path = _issue(sd)
                    paths.setdefault(_worker_of(path), path)
                    if len(paths) == workers:
                        break
                assert len(paths) == workers, paths
                for worker, path in paths.items():
                    call = _use(sd, path)
                    if workers > 1:  # the issuing worker placed it
                        assert int(call["id"][:2], 16) == worker, (call["id"], worker)
        used = paths[min(paths)]
        with sd.start():  # a restart does not make a used link usable
            status, body = _open(sd, used, "POST")
            assert (status, json.loads(body)["error"]["code"]) == (410, "link_used")
            status, body = _open(sd, used[:-4], "POST")  # a cut-off link is no link
            assert (status, json.loads(body)["error"]["code"]) == (404, "invalid_link")
