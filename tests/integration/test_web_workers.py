"""The web page's session with ``sipdial serve --workers 2``: the page's requests reach
either worker, and what the other worker holds (its calls, its webhook counts) is asked
there with the same session — so the page sees every call, and hangs up calls of either
worker, without being signed out. A registered baresip phone of user 201 that never
answers; the calls are cancelled before they reach a target."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.c2d_helpers import ROUTE_MATCH, TARGET, user
from tests.peers.baresip import Baresip
from tests.sipdial_proc import Sipdial

pytestmark = pytest.mark.integration


class Browser:
    """What the page does: sign in with the SIP account, then the cookie and the CSRF
    token on each request (a new connection each time: either worker answers)."""

    def __init__(self, sd: Sipdial, user: str, password: str) -> None:
        self.host, port = sd.http_url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)
        self.cookie = ""
        status, body, headers = self.request("POST", "/v1/session",
                                             {"user": user, "password": password})
        assert status == 201, body
        self.cookie = headers["Set-Cookie"].split(";")[0]
        self.csrf = body["csrf"]

    def request(self, method: str, path: str, body: Any = None
                ) -> tuple[int, Any, http.client.HTTPMessage]:
        headers = {"Accept": "application/json", "Sec-Fetch-Site": "same-origin",
                   "Origin": f"http://{self.host}:{self.port}"}
        if self.cookie:
            headers["Cookie"] = self.cookie
            headers["X-CSRF-Token"] = getattr(self, "csrf", "")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null"), response.headers
        finally:
            conn.close()


def test_a_session_sees_and_hangs_up_every_workers_calls(tmp_path: Path) -> None:
    with Sipdial(tmp_path, workers=2, users=[user("201")],
                 routes=[{"match": ROUTE_MATCH, "uri": "sip:{number}@127.0.0.1:9"}]) as sd, \
            Baresip(tmp_path, user="201", password="secret201",
                    registrar=f"127.0.0.1:{sd.sip_port('udp')}", outbound=False,
                    auto_answer=False) as phone:
        phone.wait_registered()
        sd.wait_registered("201")
        page = Browser(sd, "201", "secret201")
        by_worker: dict[str, str] = {}
        for _ in range(24):  # the kernel spreads connections over the workers at random
            status, call, _ = page.request("POST", "/v1/calls", {"user": "201", "to": TARGET})
            assert status == 201, call
            by_worker.setdefault(call["id"][:2], call["id"])
            if len(by_worker) == 2:
                break
        assert sorted(by_worker) == ["00", "01"], by_worker  # 2**-23 to fail by chance
        status, listed, _ = page.request("GET", "/v1/calls?limit=100")
        assert status == 200 and "unavailable_workers" not in listed, listed
        assert set(by_worker.values()) <= {c["id"] for c in listed["calls"]}
        for call_id in by_worker.values():  # one of them is the other worker's
            for _ in range(3):
                status, call, _ = page.request("GET", f"/v1/calls/{call_id}")
                assert status == 200, call
        status, listed, _ = page.request("GET", "/v1/calls?limit=100")
        for call in listed["calls"]:
            if call["state"] != "ended":
                status, ended, _ = page.request("DELETE", f"/v1/calls/{call['id']}")
                assert status == 200, ended
        status, listed, _ = page.request("GET", "/v1/calls?limit=100")
        assert all(c["state"] == "ended" for c in listed["calls"]), listed
        assert "unavailable_workers" not in listed, listed
        # an administrator's session: the webhook counts of both workers
        admin = Browser.__new__(Browser)
        admin.host, admin.port, admin.cookie = page.host, page.port, ""
        status, body, headers = admin.request("POST", "/v1/session", {"token": "admin-secret"})
        assert status == 201, body
        admin.cookie, admin.csrf = headers["Set-Cookie"].split(";")[0], body["csrf"]
        status, hooks, _ = admin.request("GET", "/v1/webhooks")
        assert status == 200 and "unavailable_workers" not in hooks, hooks
