"""scripts/demo-phone: the softphone a newcomer tries sipdial with (baresip 1.0 underneath).

Two ways it is used, both against a real sipdial on loopback:

* batch (``--no-tty``, stdin not a terminal), run through its ``#!/usr/bin/env python3``
  line: it registers, a ``POST /v1/calls`` is auto-answered, and SIGTERM to the script (what
  a supervisor sends) ends baresip, which un-registers;
* in a terminal (a pseudo-terminal here), run by this interpreter: the keys the README
  documents do what it says: ``a`` answers, ``1`` confirms sipdial's "press 1" (RFC 4733
  DTMF), Ctrl-C quits, and the terminal is left as it was.

Progress is observed through sipdial's HTTP API, polled with a bounded number of attempts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.integration.c2d_helpers import ROUTE_MATCH, TARGET, place_call, registrations
from tests.peers.baresip import baresip_binary
from tests.peers.ports import LOOPBACK
from tests.sipdial_proc import Sipdial

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "demo-phone"
PASSWORD = "pw-201-not-a-demo-secret"
NOWHERE = 9  # discard port: the referred call goes nowhere, which these tests do not follow
T = TypeVar("T")


@pytest.fixture
def sipdial(tmp_path: Path) -> Iterator[Sipdial]:
    baresip_binary()  # skips without baresip
    sd = Sipdial(tmp_path, users=[{"id": "201", "password": PASSWORD, "name": "Alice"}],
                 routes=[{"match": ROUTE_MATCH, "uri": f"sip:{{number}}@{LOOPBACK}:{NOWHERE}"}])
    with sd:
        yield sd


def poll(check: Callable[[], T | None], what: str, *, attempts: int = 300,
         deadline: float = 15.0, interval: float = 0.05,
         alive: Callable[[], str | None] = lambda: None) -> T:
    """``check()`` until it returns a value: at most ``attempts`` times and ``deadline``
    seconds; ``alive()`` returns a reason to stop early (the phone exited)."""
    end = time.monotonic() + deadline
    for _ in range(attempts):
        result = check()
        if result is not None:
            return result
        dead = alive()
        if dead is not None:
            raise AssertionError(f"{what}: {dead}")
        if time.monotonic() > end:
            break
        time.sleep(interval)
    raise AssertionError(f"no {what} after {attempts} attempts / {deadline} s")


def registered(sd: Sipdial) -> Callable[[], list[dict[str, Any]] | None]:
    return lambda: registrations(sd, "201") or None


def unregistered(sd: Sipdial) -> Callable[[], bool | None]:
    return lambda: True if registrations(sd, "201") == [] else None


def reached(sd: Sipdial, call_id: str, *wanted: str) -> Callable[[], dict[str, Any] | None]:
    """The call once one of its events is in ``wanted`` (fails if it ended without one)."""
    def check() -> dict[str, Any] | None:
        status, call = sd.api("GET", f"/v1/calls/{call_id}")
        assert status == 200, call
        if any(e["state"] in wanted for e in call["events"]):
            return dict(call)
        assert call["state"] != "ended", f"call ended before {wanted}: {call}"
        return None
    return check


# ------------------------------------------------------------------------------ batch mode

def test_batch_phone_registers_answers_and_quits(sipdial: Sipdial, tmp_path: Path) -> None:
    log = tmp_path / "demo-phone.log"
    with log.open("wb") as out:
        phone = subprocess.Popen(
            [str(SCRIPT), "201", "--server", f"{LOOPBACK}:{sipdial.sip_port('udp')}",
             "--password", PASSWORD, "--auto-answer", "--no-tty"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)

    def alive() -> str | None:
        code = phone.poll()
        return None if code is None else f"demo-phone exited {code}:\n{log.read_text()}"

    try:
        (reg,) = poll(registered(sipdial), "registration of 201", alive=alive)
        assert reg["user_agent"].startswith("baresip"), reg
        assert reg["transport"] == "udp" and reg["source"].startswith(f"{LOOPBACK}:"), reg

        call = place_call(sipdial)
        answered = poll(reached(sipdial, call["id"], "user_answered"), "answer", alive=alive)
        assert any(e["state"] == "user_ringing" for e in answered["events"]), answered

        phone.send_signal(signal.SIGTERM)  # to the script only: it passes it on to baresip
        assert phone.wait(timeout=15) == 0, log.read_text()
        poll(unregistered(sipdial), "un-REGISTER on quit")
        assert "terminated by signal" in log.read_text()
    finally:
        if phone.poll() is None:
            os.killpg(phone.pid, signal.SIGKILL)
            phone.wait(5)


# ---------------------------------------------------------------------------- in a terminal

class Terminal:
    """``argv`` on a new pseudo-terminal as its controlling terminal, as in a shell."""

    def __init__(self, argv: list[str]) -> None:
        self.master, self.slave = os.openpty()
        self.before = termios.tcgetattr(self.slave)
        self.pid = os.fork()
        if self.pid == 0:  # child: only exec from here
            try:
                os.close(self.master)
                os.login_tty(self.slave)
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.returncode: int | None = None

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def output(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def exited(self) -> str | None:
        code = self.poll()
        return None if code is None else f"demo-phone exited {code}:\n{self.output()}"

    def close(self) -> None:
        if self.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)  # its session: the script and baresip
            os.waitpid(self.pid, 0)
        os.close(self.slave)
        os.close(self.master)


def test_terminal_keys_answer_confirm_and_quit(sipdial: Sipdial) -> None:
    term = Terminal([sys.executable, str(SCRIPT), "201",
                     "--server", f"{LOOPBACK}:{sipdial.sip_port('udp')}", "--password", PASSWORD])
    try:
        poll(lambda: "keys: a answer" in term.output() or None, "key help", alive=term.exited)
        poll(registered(sipdial), "registration of 201", alive=term.exited)

        call = place_call(sipdial, confirm=True)
        poll(reached(sipdial, call["id"], "user_ringing"), "ringing", alive=term.exited)
        # the phone shows who sipdial is about to connect
        poll(lambda: TARGET in term.output() or None, "the number on the phone",
             alive=term.exited)
        term.type(b"a")
        poll(reached(sipdial, call["id"], "awaiting_confirmation"), "the prompt",
             alive=term.exited)
        term.type(b"1")
        dialled = poll(reached(sipdial, call["id"], "calling_target"), "confirmation",
                       alive=term.exited)
        assert [e["state"] for e in dialled["events"]][:4] == [
            "calling_user", "user_ringing", "user_answered", "awaiting_confirmation"], dialled

        term.type(b"\x03")  # Ctrl-C: the terminal signals the whole foreground group
        assert poll(lambda: term.poll(), "exit after Ctrl-C", deadline=20) == 0, term.output()
        poll(unregistered(sipdial), "un-REGISTER on quit")
        assert termios.tcgetattr(term.slave) == term.before  # echo and line editing back
    finally:
        term.close()
