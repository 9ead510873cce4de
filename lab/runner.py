"""The lab: Kamailio in front of sipdial, two baresip phones and a SIPp destination.

::

    phone 201 (baresip) ─┐                      ┌─ sipdial (B2BUA, HTTP API)
    phone 202 (baresip) ─┼── Kamailio (proxy) ──┤
                         │   record_route, Path └─ destination (SIPp, answers +49...)

The phones register at sipdial through Kamailio (their outbound proxy; Kamailio adds a Path,
so sipdial rings them through it), and sipdial reaches the destination through Kamailio
(``[sip] outbound_proxy``). :meth:`Lab.self_test` places one REFER and one bridge call and
hangs each up from phone 201 (ctrl_tcp), as a user would.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lab import ctrl
from lab.net import NetworkNodes
from lab.nodes import (
    TARGET,
    Program,
    ProgramError,
    Secrets,
    baresip,
    kamailio,
    sipdial,
    sipdial_config,
    sipp_destination,
)

SIP, HTTP, CTRL, MEDIA = 5060, 8080, 4444, 6000


class Lab:
    """Start with :meth:`start`, always :meth:`stop` (it is safe on a half-started lab)."""

    def __init__(self, workdir: Path, network: NetworkNodes, secrets: Secrets | None = None,
                 out: Any = print) -> None:
        self.workdir = workdir
        self.net = network
        self.secrets = secrets or Secrets.generate()
        self.out = out
        self.programs: list[Program] = []
        n = network.nodes
        self.kam = f"{n['kam'].ip}:{network.port('kam', SIP)}"
        self.dest = f"{n['dest'].ip}:{network.port('dest', SIP)}"
        self.sip = f"{n['sd'].ip}:{network.port('sd', SIP)}"
        self.http = f"http://{n['sd'].ip}:{network.port('sd', HTTP)}"
        self.ctrl = {u: f"{n['p' + u].ip}:{network.port('p' + u, CTRL)}" for u in ("201", "202")}

    # ------------------------------------------------------------------ lifecycle

    def _add(self, program: Program) -> Program:
        self.programs.append(program)
        program.start()
        return program

    def start(self) -> None:
        n, net = self.net.nodes, self.net
        kam = self._add(kamailio(n["kam"], net.port("kam", SIP), self.workdir))
        kam.wait_bound(net.port("kam", SIP))
        dest = self._add(sipp_destination(n["dest"], net.port("dest", SIP),
                                          net.port("dest", MEDIA), self.workdir))
        dest.wait_bound(net.port("dest", SIP))
        config = sipdial_config(n["sd"], net.port("sd", SIP), net.port("sd", HTTP),
                                f"sip:{self.kam};lr", self.dest, self.secrets,
                                self.workdir / "sipdial" / "sipdial.db")
        self._add(sipdial(n["sd"], config, self.workdir)).wait_log("sipdial ready: ")
        for user in ("201", "202"):
            node = n["p" + user]
            phone = self._add(baresip(node, user, net.port(node.name, SIP),
                                      net.port(node.name, CTRL), self.sip, self.kam,
                                      self.secrets.passwords[user], self.workdir))
            phone.wait_log("baresip is ready.")
        for user in ("201", "202"):
            self._wait(lambda u=user: self._registered(u), 20, f"phone {user} registered")

    def stop(self) -> None:
        """Phones first (they un-register), then the destination, sipdial, Kamailio; then
        whatever is left in the namespaces is killed and the namespaces are deleted."""
        try:
            for program in reversed(self.programs):
                program.stop(grace=4.0 if program.name.startswith("phone") else 5.0)
        finally:
            self.net.close()

    def dead(self) -> list[Program]:
        return [p for p in self.programs if not p.running]

    # ------------------------------------------------------------------ API

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.http + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.secrets.admin_token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def _registered(self, user: str) -> bool:
        status, body = self.api("GET", f"/v1/registrations?user={user}")
        regs = body.get("registrations", body) if isinstance(body, dict) else body
        return status == 200 and bool(regs)

    def _wait(self, check: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise ProgramError(f"timed out waiting for {what}")
            for program in self.dead():
                raise ProgramError(f"{program.name} exited:\n{program.log_text()[-2000:]}")
            time.sleep(0.1)

    # ------------------------------------------------------------------ self-test

    def call(self, mode: str, timeout: float = 30.0) -> dict[str, Any]:
        """Place a click-to-dial call from 201 to the destination, wait until it is
        connected, hang it up on phone 201, and return the ended call."""
        status, call = self.api("POST", "/v1/calls", {"user": "201", "to": TARGET, "mode": mode})
        if status != 201:
            raise ProgramError(f"POST /v1/calls ({mode}): {status} {call}")
        call_id = call["id"]

        def state(want: str) -> dict[str, Any] | None:
            code, body = self.api("GET", f"/v1/calls/{call_id}")
            if code != 200:
                raise ProgramError(f"GET /v1/calls/{call_id}: {code} {body}")
            if any(e["state"] == want for e in body["events"]) or body["state"] == want:
                return dict(body)
            if body["state"] == "ended":
                raise ProgramError(f"{mode} call ended before {want}: {body}")
            return None

        self._wait(lambda: state("connected"), timeout, f"{mode} call connected")
        ctrl.command(self.ctrl["201"], "hangup")
        ended: dict[str, Any] = self._wait(lambda: state("ended"), 20, f"{mode} call ended")
        return ended

    def self_test(self) -> bool:
        ok = True
        for mode in ("refer", "bridge"):
            try:
                ended = self.call(mode)
            except (ProgramError, ctrl.CtrlError, OSError) as exc:
                self.out(f"lab self-test: {mode} call FAILED: {exc}")
                ok = False
                continue
            cause = ended.get("cause")
            self.out(f"lab self-test: {mode} call {ended['id']} ended, cause {cause}")
            ok = ok and cause == "completed"
        kam = next(p for p in self.programs if p.name == "kamailio").log_text()
        legs = {line.split(" ci=")[1].split()[0] for line in kam.splitlines()
                if "KAMLOG REQ INVITE" in line}
        if "KAMLOG STRAY" in kam or "KAMLOG INDIALOG REFER" not in kam or len(legs) < 5:
            self.out(f"lab self-test: FAILED: not every leg went through Kamailio "
                     f"({len(legs)} INVITE dialogs, stray requests: {'KAMLOG STRAY' in kam})")
            ok = False
        else:
            self.out(f"lab self-test: all {len(legs)} legs went through Kamailio")
        return ok

    # ------------------------------------------------------------------ hints

    def hints(self) -> str:
        token = self.secrets.admin_token
        api = (f"curl -s -H 'Authorization: Bearer {token}' "
               "-H 'Content-Type: application/json'")
        logs = "\n".join(f"  {p.name:<12} {p.log_path}" for p in self.programs)
        where = ("one network namespace each: " + ", ".join(
            sorted({str(p.node.netns) for p in self.programs}))
            if any(p.node.netns for p in self.programs) else "all on 127.0.0.1")
        run_in = ""
        sd_ns = self.net.nodes["sd"].netns
        if sd_ns:
            run_in = f"\nA shell beside sipdial: ip netns exec {sd_ns} bash"
        return f"""
The lab is up ({where}).
  Kamailio      sip:{self.kam}  (proxy: record_route, Path for REGISTER)
  sipdial       sip:{self.sip}  API {self.http}  admin token {token}
  phone 201     ctrl_tcp {self.ctrl['201']}  password {self.secrets.passwords['201']}
  phone 202     ctrl_tcp {self.ctrl['202']}  password {self.secrets.passwords['202']}
  destination   sip:{TARGET}@{self.dest}  (SIPp: answers every call, echoes RTP)
Both phones registered at sipdial through Kamailio and answer by themselves.

Click-to-dial, REFER mode (phone 201 rings, answers, is referred to {TARGET}):
  {api} -X POST {self.http}/v1/calls -d '{{"user": "201", "to": "{TARGET}", "mode": "refer"}}'
Bridge mode (sipdial calls both and bridges them):
  {api} -X POST {self.http}/v1/calls -d '{{"user": "201", "to": "{TARGET}", "mode": "bridge"}}'
Follow the calls:
  {api} {self.http}/v1/calls
  curl -sN -H 'Authorization: Bearer {token}' {self.http}/v1/events
Make phone 201 hang up (baresip's ctrl_tcp; any baresip command works, e.g. reginfo):
  scripts/lab ctrl {self.ctrl['201']} hangup
Logs (sipdial traces every SIP message; Kamailio logs one KAMLOG line per request):
{logs}{run_in}

Ctrl-C stops everything.
"""
