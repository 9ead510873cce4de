"""Helpers shared by the click-to-dial integration tests (failures, fork, pyVoIP, registrar).

* :class:`SippPhone`: a "phone" made of SIPp. SIPp cannot register and then take a call with
  a new Call-ID in one scenario, so one SIPp run REGISTERs (``phone_register.xml``, digest
  via ``-au``/``-ap``) from a fixed local UDP port and exits; a second SIPp (a UAS scenario)
  then binds that same port, which is where sipdial sends requests for the binding (the
  REGISTER's source address, RFC 3581).
* :func:`sipp_trace` / :func:`sipdial_trace`: the SIP messages a SIPp run or sipdial
  (``SIPDIAL_TRACE=1``) sent and received, parsed, for asserting what each peer saw.
* small call-resource helpers (:func:`states`, :func:`events_of`, :func:`final_event`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.peers.ports import LOOPBACK, free_port_both
from tests.peers.sipp import Sipp, scenario_path
from tests.sipdial_proc import Sipdial

TARGET = "+4930123456"
ROUTE_MATCH = "^\\+?[0-9]+$"


def user(uid: str = "201", *, auto_answer: bool = False, name: str = "Alice") -> dict[str, Any]:
    return {"id": uid, "password": f"secret{uid}", "name": name, "auto_answer": auto_answer}


def make_sipdial(tmp_path: Path, dest_port: int | None = None, *,
                 users: list[dict[str, Any]] | None = None, **calls: object) -> Sipdial:
    """A :class:`Sipdial` for users 201 (+202) routing every number to ``dest_port``.

    Without a destination the route points at a port nobody listens on (never used).
    """
    port = dest_port if dest_port is not None else 9  # discard: nothing is routed there
    return Sipdial(tmp_path, users=users or [user("201"), user("202", name="Bob")],
                   routes=[{"match": ROUTE_MATCH, "uri": f"sip:{{number}}@{LOOPBACK}:{port}"}],
                   calls=dict(calls) or None)


# ------------------------------------------------------------------ call resource helpers

def states(call: dict[str, Any]) -> list[str]:
    return [e["state"] for e in call["events"]]


def events_of(call: dict[str, Any], state: str) -> list[dict[str, Any]]:
    return [e for e in call["events"] if e["state"] == state]


def final_event(call: dict[str, Any]) -> dict[str, Any]:
    last: dict[str, Any] = call["events"][-1]
    assert last["state"] == "ended", call
    return last


def place_call(sd: Sipdial, uid: str = "201", to: str = TARGET,
               **extra: object) -> dict[str, Any]:
    status, call = sd.api("POST", "/v1/calls", {"user": uid, "to": to, **extra})
    assert status == 201, call
    assert call["state"] == "calling_user", call
    return dict(call)


def wait_until(check: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something true (bounded): True, a non-empty list, a
    document. An empty list is *not* done (it used to be, so a check for "the CANCEL is in
    the history" passed at once and the test then indexed an empty list)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def registrations(sd: Sipdial, uid: str | None = None) -> list[dict[str, Any]]:
    path = "/v1/registrations" + (f"?user={uid}" if uid else "")
    status, body = sd.api("GET", path)
    assert status == 200, body
    regs = body.get("registrations", body) if isinstance(body, dict) else body
    return list(regs)


# ------------------------------------------------------------------ SIP traces

@dataclass(frozen=True)
class SipMsg:
    direction: str  # "in" (received by the tracing party) or "out" (sent by it)
    text: str
    peer: str = ""  # sipdial traces only: "udp:127.0.0.1:40911"

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def method(self) -> str | None:
        """Request method, or None for a response."""
        first = self.first_line
        return None if first.startswith("SIP/2.0") else first.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        first = self.first_line
        return int(first.split(" ")[1]) if first.startswith("SIP/2.0") else None

    @property
    def cseq_method(self) -> str | None:
        value = self.header("CSeq")
        return value.split()[-1] if value else None

    def header(self, name: str) -> str | None:
        values = self.headers(name)
        return values[0] if values else None

    def headers(self, name: str) -> list[str]:
        head = self.text.split("\n\n", 1)[0]
        out = []
        for line in head.split("\n")[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                out.append(value.strip())
        return out


_SIPP_BLOCK = re.compile(
    r"^-{20,} [^\n]*\n(?:UDP|TCP) message (received|sent) [^\n]*\n\n", re.MULTILINE)


def sipp_trace(sipp: Sipp) -> list[SipMsg]:
    """Messages in a SIPp ``-trace_msg`` file, in order."""
    text = sipp.messages().replace("\r\n", "\n")
    parts = _SIPP_BLOCK.split(text)
    msgs = []
    # parts = [before, dir1, body1, dir2, body2, ...]
    for direction, body in zip(parts[1::2], parts[2::2], strict=True):
        msgs.append(SipMsg("in" if direction == "received" else "out", body.strip("\n") + "\n"))
    return msgs


_SIPDIAL_BLOCK = re.compile(
    r"^\S+ \S+ INFO sipdial\.trace: (recv from|send to) (\S+):\n", re.MULTILINE)
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", re.MULTILINE)


def sipdial_trace(sd: Sipdial) -> list[SipMsg]:
    """Messages in sipdial's SIPDIAL_TRACE log, in order (direction from sipdial's view)."""
    text = sd.log_text()
    msgs = []
    matches = list(_SIPDIAL_BLOCK.finditer(text))
    for m in matches:
        rest = text[m.end():]
        nxt = _LOG_LINE.search(rest)
        body = rest[: nxt.start()] if nxt else rest
        msgs.append(SipMsg("in" if m.group(1) == "recv from" else "out",
                           body.strip("\n") + "\n", m.group(2)))
    return msgs


def requests(msgs: list[SipMsg], method: str, direction: str | None = None) -> list[SipMsg]:
    return [m for m in msgs if m.method == method
            and (direction is None or m.direction == direction)]


def responses(msgs: list[SipMsg], cseq_method: str,
              direction: str | None = None) -> list[SipMsg]:
    return [m for m in msgs if m.status is not None and m.cseq_method == cseq_method
            and (direction is None or m.direction == direction)]


# ------------------------------------------------------------------ SIPp phone

def scenario_variant(workdir: Path, scenario: str, replace: dict[str, str]) -> Path:
    """A copy of a SIPp scenario with text replaced (SIPp reads status codes at load time,
    so they cannot be ``-key`` substitutions)."""
    text = scenario_path(scenario).read_text()
    for old, new in replace.items():
        assert old in text, f"{old!r} not in {scenario}"
        text = text.replace(old, new)
    out = workdir / "scenarios" / scenario
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


class SippPhone:
    """A user's device made of SIPp: :meth:`register`, then :meth:`scenario` for the call.

    >>> phone = SippPhone(tmp_path, sd)                                  # doctest: +SKIP
    >>> phone.register()                                                 # doctest: +SKIP
    >>> uas = phone.scenario("uas_busy.xml").start()                     # doctest: +SKIP
    """

    def __init__(self, workdir: Path, sd: Sipdial, uid: str = "201",
                 password: str | None = None, name: str = "sipp-phone") -> None:
        self.workdir = workdir
        self.sd = sd
        self.uid = uid
        self.password = password or f"secret{uid}"
        self.name = name
        self.port = free_port_both()
        self.registrar: Sipp | None = None
        self.uas: Sipp | None = None

    @property
    def contact(self) -> str:
        return f"sip:{self.uid}@{LOOPBACK}:{self.port}"

    def register(self, timeout: float = 10.0) -> dict[str, Any]:
        reg = Sipp(self.workdir, "phone_register.xml",
                   remote=f"{LOOPBACK}:{self.sd.sip_port('udp')}", port=self.port,
                   service=self.uid, timeout=timeout, name=f"{self.name}-register",
                   extra_args=["-au", self.uid, "-ap", self.password])
        self.registrar = reg
        rc = reg.run(timeout + 5)
        assert rc == 0, reg.report()
        regs = self.sd.wait_registered(self.uid)
        mine = [r for r in regs if r["contact"] == self.contact]
        assert mine, regs
        return dict(mine[0])

    def scenario(self, scenario: str | Path, *, timeout: float = 30.0, **kw: Any) -> Sipp:
        """The UAS SIPp answering the calls sipdial sends to this phone (not started)."""
        kw.setdefault("service", self.uid)
        self.uas = Sipp(self.workdir, scenario, port=self.port, timeout=timeout,
                        name=f"{self.name}-{Path(scenario).stem}", **kw)
        return self.uas

    def stop(self) -> None:
        for sipp in (self.uas, self.registrar):
            if sipp is not None:
                sipp.stop()

    def __enter__(self) -> SippPhone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
