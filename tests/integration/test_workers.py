"""``sipdial serve --workers 2`` with real peers on loopback: baresip phones, a SIPp destination.

The two workers share one SIP port and one HTTP port (SO_REUSEPORT). A call belongs to the
worker whose HTTP connection created it; the phone registered at one of them and its
messages arrive at one of them (the kernel's choice by source port), so these tests place
calls until each worker owns some (a call id's first two hex digits name its worker) and
check that each one completes: the registration was replicated, the destination's and
the phone's messages — in REFER mode the referred INVITE too — reached the owner, and the
HTTP API answered for calls of both.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.c2d_helpers import ROUTE_MATCH, TARGET, place_call, user, wait_until
from tests.integration.test_sse import Frame, Stream
from tests.peers.baresip import Baresip
from tests.peers.sipp import LOOPBACK, Sipp
from tests.sipdial_proc import ADMIN, Sipdial

pytestmark = pytest.mark.integration

MAX_TRIES = 16  # calls placed until each worker owns one: all on one worker is 2**-15


def _sipdial(tmp_path: Path, dest_port: int, **calls: object) -> Sipdial:
    return Sipdial(tmp_path, workers=2,
                   users=[user("201", auto_answer=True), user("202", auto_answer=True)],
                   routes=[{"match": ROUTE_MATCH, "uri": f"sip:{{number}}@{LOOPBACK}:{dest_port}"}],
                   calls=dict(calls) or None)


def _worker(call: dict[str, Any]) -> int:
    return int(call["id"][:2], 16)


def _wait_ended(sd: Sipdial, call_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The call resource once ended; a 503 (its worker restarting) or a connection reset
    (the HTTP connection went to the worker as it died) is asked again."""
    def check() -> dict[str, Any] | None:
        try:
            status, call = sd.api("GET", f"/v1/calls/{call_id}")
        except ConnectionError:  # accepted by the worker that was killed just then
            return None
        if status == 503:
            assert call["error"]["code"] == "worker_unavailable", call
            return None
        assert status == 200, call
        return dict(call) if call["state"] == "ended" else None
    result: dict[str, Any] = wait_until(check, timeout, f"call {call_id} ended")
    return result


def _no_errors(sd: Sipdial) -> None:
    log = sd.log_text()
    assert "Traceback" not in log
    assert " ERROR " not in log, [line for line in log.splitlines() if " ERROR " in line]


@pytest.mark.parametrize(("mode", "transport"),
                         [("refer", "udp"), ("bridge", "udp"), ("refer", "tcp")])
def test_calls_owned_by_either_worker_complete(tmp_path: Path, mode: str,
                                               transport: str) -> None:
    """Over TCP the phone's connection is worker 0's: worker 1 sends through it and gets
    what arrives on it for its calls."""
    with Sipp.uas(tmp_path, "uas_answer_then_bye.xml", calls=MAX_TRIES,
                  duration_ms=200, timeout=120) as dest, \
            _sipdial(tmp_path, dest.port) as sd:
        dest.start()
        assert len(sd.info["workers"]) == 2 and sd.info["pid"] == sd.proc.pid  # type: ignore[union-attr]
        with Baresip(tmp_path, user="201", password="secret201", transport=transport,
                     registrar=f"127.0.0.1:{sd.sip_port(transport)}", outbound=False) as phone:
            phone.wait_registered()
            assert sd.wait_registered("201")[0]["transport"] == transport
            done: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
            for _ in range(MAX_TRIES):
                call = place_call(sd, "201", TARGET, mode=mode)
                final = _wait_ended(sd, call["id"])
                assert final["cause"] == "completed", final
                assert "connected" in [e["state"] for e in final["events"]], final
                done[_worker(call)].append(final)
                if done[0] and done[1]:
                    break
            assert done[0] and done[1], "every call landed on one worker"

            # the list is both workers' calls, newest first
            status, listed = sd.api("GET", "/v1/calls?limit=100")
            assert status == 200, listed
            placed = {c["id"] for calls in done.values() for c in calls}
            assert {c["id"] for c in listed["calls"]} == placed
            created = [c["created_at"] for c in listed["calls"]]
            assert created == sorted(created, reverse=True)
            # a user's token sees its own calls at either worker, and only those
            for calls in done.values():
                status, got = sd.api("GET", f"/v1/calls/{calls[0]['id']}", token="tok-201")
                assert status == 200 and got["user"] == "201", got
        _no_errors(sd)


def test_a_dead_worker_is_restarted_its_calls_end_interrupted_the_other_carries_on(
        tmp_path: Path) -> None:
    """kill -9 of the worker holding one connected call, while the other worker holds
    another: the supervisor starts it again, which ends its call ``interrupted``; the other
    call stays up and is hung up normally afterwards."""
    with Sipp.uas(tmp_path, "uas_answer.xml", calls=MAX_TRIES * 2, timeout=120) as dest, \
            _sipdial(tmp_path, dest.port) as sd:
        dest.start()
        registrar = f"127.0.0.1:{sd.sip_port()}"
        with Baresip(tmp_path, user="201", password="secret201", registrar=registrar,
                     outbound=False, name="phone201") as alice, \
                Baresip(tmp_path, user="202", password="secret202", registrar=registrar,
                        outbound=False, name="phone202") as bob:
            alice.wait_registered()
            bob.wait_registered()
            sd.wait_registered("201")
            sd.wait_registered("202")
            first = place_call(sd, "201", TARGET, mode="bridge")
            sd.wait_state(first["id"], "connected", timeout=20)
            second: dict[str, Any] | None = None
            for _ in range(MAX_TRIES):  # a call for 202 on the other worker
                call = place_call(sd, "202", "+4930999888", mode="bridge")
                sd.wait_state(call["id"], "connected", timeout=20)
                if _worker(call) != _worker(first):
                    second = call
                    break
                status, _ = sd.api("DELETE", f"/v1/calls/{call['id']}")
                assert status == 200
                _wait_ended(sd, call["id"])
            assert second is not None, "every call landed on one worker"

            victim = sd.info["workers"][_worker(first)]["pid"]
            os.kill(victim, signal.SIGKILL)
            ended = _wait_ended(sd, first["id"], timeout=30)
            assert ended["cause"] == "interrupted", ended

            status, survivor = sd.api("GET", f"/v1/calls/{second['id']}")
            assert status == 200 and survivor["state"] == "connected", survivor
            # the restarted worker takes new calls (and rings a phone it learnt from the
            # others: its own REGISTERs died with it), and the survivor hangs up normally
            third: dict[str, Any] | None = None
            deadline = time.monotonic() + 60
            while third is None and time.monotonic() < deadline:
                call = place_call(sd, "201", "+4930555444", mode="bridge")
                sd.wait_state(call["id"], "connected", timeout=20)
                sd.api("DELETE", f"/v1/calls/{call['id']}")
                done = _wait_ended(sd, call["id"])
                assert done["cause"] != "interrupted", done
                if _worker(call) == _worker(first):
                    third = call
            assert third is not None
            status, _ = sd.api("DELETE", f"/v1/calls/{second['id']}")
            assert status == 200
            final = _wait_ended(sd, second["id"])
            assert final["cause"] not in ("interrupted", None), final
            assert "connected" in [e["state"] for e in final["events"]]
        log = sd.log_text()
        assert f"worker {_worker(first)} (pid {victim}) died (signal 9)" in log
        # its file's registrations were set aside for the others' current table
        assert f"worker {_worker(first)} started" in log
        assert "rejoining: registrations from the others" in log


def _frames_until(stream: Stream, ended: set[str], timeout: float = 30.0) -> list[Frame]:
    """Frames (events) until every call in ``ended`` has had its call.ended."""
    frames: list[Frame] = []
    waiting = set(ended)
    deadline = time.monotonic() + timeout
    while waiting:
        assert time.monotonic() < deadline, f"no call.ended for {waiting}"
        frame = stream.frame()
        if frame.event is None:
            continue  # a keepalive
        frames.append(frame)
        if frame.event == "call.ended":
            waiting.discard(frame.json["call"]["id"])
    return frames


def test_the_event_stream_has_every_workers_calls_and_resumes_by_cursor(
        tmp_path: Path) -> None:
    """GET /v1/events at either worker: the events of the calls of both, each with a cursor
    (every worker's position) as its SSE id; Last-Event-ID with a cursor resumes after it,
    nothing lost, nothing twice (sipdial.events.merged)."""
    with Sipp.uas(tmp_path, "uas_answer_then_bye.xml", calls=MAX_TRIES,
                  duration_ms=200, timeout=120) as dest, \
            _sipdial(tmp_path, dest.port) as sd:
        dest.start()
        port = sd.info["http"]["port"]
        live = Stream(port, token=ADMIN).opened()
        with Baresip(tmp_path, user="201", password="secret201",
                     registrar=f"127.0.0.1:{sd.sip_port()}", outbound=False) as phone:
            phone.wait_registered()
            sd.wait_registered("201")
            placed: list[str] = []
            for _ in range(MAX_TRIES):
                call = place_call(sd, "201", TARGET, mode="bridge")
                placed.append(call["id"])
                _wait_ended(sd, call["id"])
                if {_worker(c) for c in [{"id": i} for i in placed]} == {0, 1}:
                    break
            assert {int(i[:2], 16) for i in placed} == {0, 1}
            frames = _frames_until(live, set(placed))
        live.close()
        cursors = [tuple(int(x) for x in f.id.split(".")) for f in frames if f.id]
        assert len(cursors) == len(frames) and all(len(c) == 2 for c in cursors)
        for a, b in itertools.pairwise(cursors):
            assert b[0] >= a[0] and b[1] >= a[1] and b != a, (a, b)  # one step each
        ids = [f.json["id"] for f in frames]
        assert len(set(ids)) == len(ids)
        by_call = {f.json["call"]["id"] for f in frames}
        assert set(placed) <= by_call
        for frame in frames:  # the payload id is the event's own: ≡ its worker (mod 2)
            assert frame.json["id"] % 2 == int(frame.json["call"]["id"][:2], 16)

        # resume after the first frame: everything after it, once
        resumed = Stream(port, token=ADMIN, headers={"Last-Event-ID": frames[0].id}).opened()
        again = _frames_until(resumed, set(placed))
        resumed.close()
        assert sorted(f.json["id"] for f in again) == sorted(ids[1:])  # each once
        status, _ = sd.api("GET", "/v1/events", token=None)
        assert status == 401


def test_a_second_sipdial_on_the_same_files_is_refused(tmp_path: Path) -> None:
    """SO_REUSEPORT would let it bind the same ports silently and share the traffic."""
    import subprocess
    import sys

    with _sipdial(tmp_path, 9) as sd:
        second = subprocess.run(
            [sys.executable, "-m", "sipdial", "serve", "--config", str(sd.config_path),
             "--workers", "2"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        assert second.returncode == 2, second
        assert b"another sipdial runs on" in second.stderr
        status, _ = sd.api("GET", "/v1/calls")
        assert status == 200  # the first one is untouched
