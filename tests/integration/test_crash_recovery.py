"""Events and webhooks after ``kill -9`` under load, three times (issue 7 §3).

A real sipdial process over one SQLite file, two SIPp phones (201 answers every call "486
Busy": those calls end at once; 202 rings and never answers: those calls are in progress at
each kill), and a webhook receiver on 127.0.0.1 that answers slowly (so deliveries are in
flight when sipdial dies). Three times: place calls, and the moment the receiver gets the
n-th POST of the run it SIGKILLs sipdial (while calls are being placed, calls end and other
deliveries are in flight); look at what the database kept, restart on the same database. A
last restart lets every delivery finish. Then, over every POST the receiver got:

* no ``X-Sipdial-Delivery`` id and no event id was used for two different events;
* every call in the database has exactly one ``call.ended``;
* a ``call.ended`` POSTed before a kill is for an end the database had committed, and a call
  whose end was committed before a kill keeps its cause (never logged ``interrupted``);
* every call the API answered ``201`` for is in the database (the 201 waits for the commit).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.c2d_helpers import SippPhone, user, wait_until
from tests.peers.ports import LOOPBACK
from tests.sipdial_proc import Sipdial

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

KILLS = 3
BUSY_CALLS = 12  #: per round, to 201 (ended at once by the phone's 486)
RINGING_CALLS = 4  #: per round, to 202 (still ringing at the kill)
SLOW_CRM = 0.05  #: seconds the receiver takes to answer: deliveries are in flight at the kill


@dataclass(frozen=True)
class Post:
    delivery: str
    body: bytes

    @property
    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.body)
        return doc


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.lock = threading.Lock()
        self.posts: list[Post] = []
        self.busy = 0  #: requests being handled
        self.victim: int | None = None  #: the pid to SIGKILL ...
        self.kill_at = 0  #: ... when this many POSTs have arrived
        self.killed = threading.Event()

    def kill_after(self, pid: int, posts: int) -> None:
        with self.lock:
            self.killed.clear()
            self.victim, self.kill_at = pid, len(self.posts) + posts

    def received(self, post: Post) -> None:
        with self.lock:
            self.posts.append(post)
            if self.victim is not None and len(self.posts) >= self.kill_at:
                os.kill(self.victim, signal.SIGKILL)  # kill -9 right as a POST arrives
                self.victim = None
                self.killed.set()

    def snapshot(self) -> list[Post]:
        with self.lock:
            return list(self.posts)

    def idle(self) -> bool:
        with self.lock:
            return self.busy == 0


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        with self.server.lock:
            self.server.busy += 1
        try:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.server.received(Post(self.headers["X-Sipdial-Delivery"], body))
            time.sleep(SLOW_CRM)  # a slow CRM, not synchronisation
            self.send_response(200)
            self.end_headers()
        except OSError:
            pass  # sipdial died while we answered: it sends this delivery again
        finally:
            with self.server.lock:
                self.server.busy -= 1

    def log_message(self, *args: object) -> None:
        pass


def calls_in(db: Path) -> dict[str, tuple[str, str | None]]:
    """call id -> (state, cause), as a restarted sipdial will find them."""
    conn = sqlite3.connect(db, timeout=5)
    try:
        return {row[0]: (row[1], row[2])
                for row in conn.execute("SELECT id, state, cause FROM calls")}
    finally:
        conn.close()


def pending_deliveries(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=5)
    try:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM webhook_outbox WHERE status = 'pending'").fetchone()
        return int(count)
    finally:
        conn.close()


def test_kill_9_under_load_three_times_loses_and_repeats_nothing(tmp_path: Path) -> None:
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f'[[webhooks]]\nurl = "http://{LOOPBACK}:{receiver.server_port}/hook"\n' \
           'secret = "crash-secret"\n'
    sd = Sipdial(tmp_path, users=[user("201"), user("202", name="Bob")],
                 routes=[{"match": "^\\+?[0-9]+$", "uri": f"sip:{{number}}@{LOOPBACK}:9"}],
                 calls={"user_answer_timeout": 120.0}, extra=hook)
    busy, ringing = SippPhone(tmp_path, sd, "201", name="busy"), \
        SippPhone(tmp_path, sd, "202", name="ringing")
    #: per kill: the POSTs made before it, and what the database had committed at it
    before_kill: list[tuple[list[Post], dict[str, tuple[str, str | None]]]] = []
    placed: list[str] = []
    ringing_ids: list[str] = []
    started = time.monotonic()
    try:
        for kill in range(KILLS):
            sd.start()
            if kill == 0:  # the bindings survive the restarts (the store keeps them)
                busy.register()
                ringing.register()
            for phone, scenario, calls in ((busy, "uas_busy.xml", BUSY_CALLS),
                                           (ringing, "uas_noanswer.xml", RINGING_CALLS)):
                if phone.uas is not None:
                    phone.uas.stop()
                phone.scenario(scenario, calls=calls, timeout=60).start()
            assert sd.proc is not None
            receiver.kill_after(sd.proc.pid, 4 + 3 * kill)
            for i in range(BUSY_CALLS + RINGING_CALLS):
                uid = "202" if i % 4 == 3 else "201"
                try:
                    status, call = sd.api("POST", "/v1/calls", {"user": uid, "to": "+4930123"})
                except OSError:  # killed meanwhile
                    break
                assert status == 201, call
                placed.append(call["id"])
                if uid == "202":
                    ringing_ids.append(call["id"])
            assert receiver.killed.wait(10), "sipdial POSTed too little to be killed"
            sd.proc.wait(10)
            wait_until(receiver.idle, 10, "the receiver to finish the requests it had")
            before_kill.append((receiver.snapshot(), calls_in(sd.db)))

        sd.start()  # the last restart: everything pending goes out
        wait_until(lambda: pending_deliveries(sd.db) == 0 and receiver.idle(), 30,
                   "every delivery to be done")
        final = calls_in(sd.db)
    finally:
        sd.stop()
        busy.stop()
        ringing.stop()
        receiver.shutdown()
    posts = receiver.snapshot()
    elapsed = time.monotonic() - started

    # ids are never used for two different events
    by_delivery: dict[str, bytes] = {}
    by_event: dict[int, tuple[str, str, str]] = {}
    for post in posts:
        assert by_delivery.setdefault(post.delivery, post.body) == post.body, post.delivery
        doc = post.document
        identity = (doc["event"], doc["call"]["id"], doc["time"])
        assert by_event.setdefault(doc["id"], identity) == identity, doc["id"]

    # every call has exactly one call.ended (counted by event, retries of it are one)
    ended: dict[str, set[int]] = defaultdict(set)
    causes: dict[str, str] = {}
    for post in posts:
        doc = post.document
        if doc["event"] == "call.ended":
            ended[doc["call"]["id"]].add(doc["id"])
            causes[doc["call"]["id"]] = doc["cause"]
    assert final, "no call reached the database"
    assert all(state == "ended" for state, _ in final.values()), final
    assert {call_id: len(ended[call_id]) for call_id in final} == dict.fromkeys(final, 1)
    assert {call_id: causes[call_id] for call_id in final} == {
        call_id: cause for call_id, (_state, cause) in final.items()}

    # a call.ended POSTed before a kill was committed; a committed end keeps its cause
    log = sd.log_text()
    interrupted_somewhere = 0
    for posted, committed in before_kill:
        for post in posted:
            doc = post.document
            if doc["event"] == "call.ended":
                assert committed.get(doc["call"]["id"]) == ("ended", doc["cause"]), doc["id"]
        for call_id, (state, cause) in committed.items():
            if state == "ended":
                assert final[call_id] == (state, cause)
            else:
                interrupted_somewhere += 1
    # each call is logged interrupted once if that is how it ended, else never
    for call_id, (_state, cause) in final.items():
        logged = log.count(f"call {call_id} user 201: ended cause=interrupted") + \
            log.count(f"call {call_id} user 202: ended cause=interrupted")
        assert logged == (cause == "interrupted"), (call_id, cause, logged)
    assert interrupted_somewhere > 0, "no call was in progress at a kill: the test saw nothing"
    # 202 never answers: each of its calls was in progress at a kill and ended interrupted
    assert ringing_ids and {final[c] for c in ringing_ids} == {("ended", "interrupted")}
    # a call the API answered 201 for was committed first: none is lost to a kill
    lost = [call_id for call_id in placed if call_id not in final]
    assert lost == [], lost
    print(f"\n{len(placed)} calls placed, {len(final)} in the database, {len(posts)} POSTs "
          f"({len(by_delivery)} deliveries, {len(by_event)} events), {elapsed:.1f} s")
