"""Live events for a real call: the sipdial process POSTs signed webhooks (the first delivery
fails with 500 and is retried, in order) and streams the same events over SSE, while baresip
and SIPp make a REFER call."""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sipdial.events import verify_signature
from tests.peers.baresip import Baresip
from tests.peers.sipp import Sipp
from tests.sipdial_proc import Sipdial

pytestmark = pytest.mark.integration

SECRET = "hook-secret"
TARGET = "+4930123456"


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.deliveries: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        self.failed_once = False
        self.attempts = 0


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.attempts += 1
        if not self.server.failed_once:
            self.server.failed_once = True  # the very first delivery fails: must be retried
            self.send_response(500)
            self.end_headers()
            return
        self.server.deliveries.put((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _sse_reader(host: str, port: int, out: queue.Queue[dict[str, Any]],
                stop: threading.Event, last_event_id: str | None = None) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Authorization": "Bearer tok-201", "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id  # replay from the database
    conn.request("GET", "/v1/events", headers=headers)
    resp = conn.getresponse()
    assert resp.status == 200
    event: dict[str, Any] = {}
    while not stop.is_set():
        line = resp.fp.readline()
        if not line:
            break
        text = line.decode().rstrip("\r\n")
        if text.startswith("data:"):
            event = json.loads(text[5:].strip())
        elif text == "" and event:
            out.put(event)
            event = {}
    conn.close()


def test_webhooks_and_sse_follow_a_real_call(tmp_path: Path) -> None:
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = (f'[[webhooks]]\nurl = "http://127.0.0.1:{receiver.server_port}/hook"\n'
            f'secret = "{SECRET}"\n')
    sse_events: queue.Queue[dict[str, Any]] = queue.Queue()
    stop = threading.Event()
    try:
        with Sipp.uas(tmp_path, "uas_answer.xml") as dest, \
                Sipdial(tmp_path, users=[{"id": "201", "password": "secret201"}],
                        routes=[{"match": "^\\+?[0-9]+$",
                                 "uri": f"sip:{{number}}@127.0.0.1:{dest.port}"}],
                        extra=hook) as sd:
            dest.start()
            http_info = sd.info["http"]
            threading.Thread(target=_sse_reader, daemon=True, args=(
                http_info["host"], http_info["port"], sse_events, stop)).start()
            with Baresip(tmp_path, user="201", password="secret201",
                         registrar=f"127.0.0.1:{sd.sip_port('udp')}", outbound=False) as phone:
                phone.wait_registered()
                sd.wait_registered("201")
                status, call = sd.api("POST", "/v1/calls", {"user": "201", "to": TARGET})
                assert status == 201, call
                sd.wait_state(call["id"], "connected", timeout=20)
                phone.hangup()
                assert dest.wait(15) == 0
                sd.wait_state(call["id"], "ended", timeout=15)

            names: list[str] = []
            deadline = time.monotonic() + 30
            while "call.ended" not in names:
                headers, body = receiver.deliveries.get(
                    timeout=max(0.1, deadline - time.monotonic()))
                assert verify_signature(SECRET, headers["X-Sipdial-Timestamp"], body,
                                        headers["X-Sipdial-Signature"], time.time())
                doc = json.loads(body)
                assert doc["call"]["id"] == call["id"]
                names.append(doc["event"])
            assert receiver.attempts >= len(names) + 1  # the 500 was retried
            assert names[0] == "call.dialing"  # in order, the failed first one included
            assert names[-1] == "call.ended"
            for expected in ("call.answered", "call.connected"):
                assert expected in names, names
            assert names.index("call.answered") < names.index("call.connected")

            seen: list[str] = []
            while "call.ended" not in seen:
                seen.append(sse_events.get(timeout=10)["event"])
            assert seen == names  # the same events, in the same order, on the stream
    finally:
        stop.set()
        receiver.shutdown()


def test_a_call_cut_by_a_crash_still_gets_its_call_ended_event(tmp_path: Path) -> None:
    import signal
    import sqlite3

    from tests.integration.c2d_helpers import make_sipdial, place_call, wait_until

    def db_state(db: Path, call_id: str) -> str | None:
        if not db.exists():
            return None
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            row = conn.execute("SELECT state FROM calls WHERE id = ?", (call_id,)).fetchone()
        except sqlite3.OperationalError:
            return None
        finally:
            conn.close()
        return None if row is None else str(row[0])

    sd = make_sipdial(tmp_path).start()
    with Baresip(tmp_path, user="201", password="secret201", auto_answer=False,
                 registrar=f"127.0.0.1:{sd.sip_port('udp')}", outbound=False) as phone:
        phone.wait_registered()
        sd.wait_registered("201")
        call = place_call(sd)
        sd.wait_state(call["id"], "user_ringing", timeout=10)
        wait_until(lambda: db_state(sd.db, call["id"]) == "user_ringing", 5, "the DB write")
        assert sd.proc is not None
        sd.proc.send_signal(signal.SIGKILL)
        sd.proc.wait(10)
    sd2 = make_sipdial(tmp_path).start()
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    stop = threading.Event()
    try:
        http_info = sd2.info["http"]
        threading.Thread(target=_sse_reader, daemon=True, args=(
            http_info["host"], http_info["port"], events, stop, "0")).start()
        while True:
            event = events.get(timeout=10)
            if event["event"] == "call.ended" and event["call"]["id"] == call["id"]:
                break
        assert event["cause"] == "interrupted", event
    finally:
        stop.set()
        sd2.stop()
