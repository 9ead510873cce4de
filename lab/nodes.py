"""The lab's programs: their generated configuration, how they start, how they stop.

Each :class:`Program` runs one process in its node's namespace (``ip netns exec``), in its own
session (the terminal's Ctrl-C reaches the lab only, which then stops everyone in order), its
output in ``<workdir>/<name>/*.log``; the kernel kills it if the lab itself is killed.
Readiness is an event, never a sleep: a line in the log (sipdial's ``sipdial ready``,
baresip's ``baresip is ready.``) or the listening socket showing up in the process's own
``/proc/PID/net/udp`` (Kamailio, SIPp), which is the namespace's view.

Kamailio's configuration is the one the integration tests prove (``tests/peers/kamailio.py``:
``record_route``/``loose_route``, ``add_path_received`` with ``use_received``); the baresip
account line and tone file come from ``tests/peers/baresip.py``.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.net import Node

REPO = Path(__file__).resolve().parent.parent
SCENARIO = REPO / "tests" / "peers" / "scenarios" / "uas_answer.xml"
TARGET = "+4930123456"


class ProgramError(Exception):
    """A program is missing, did not start, or exited; the message tells which and why."""


def require(binary: str, package: str) -> str:
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if Path(p).exists()), None)
    if path is None:
        raise ProgramError(f"{binary} not found: install it (Debian: apt-get install {package})")
    return path


@dataclass(frozen=True, slots=True)
class Secrets:
    """Made fresh per run: sipdial refuses the repository's demo secrets off loopback."""

    admin_token: str
    passwords: dict[str, str]

    @classmethod
    def generate(cls) -> Secrets:
        return cls(admin_token="lab-" + os.urandom(8).hex(),
                   passwords={u: f"pw{u}-" + os.urandom(4).hex() for u in ("201", "202")})


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the lab dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG; kept across exec, so ``ip netns exec`` passes it on)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass  # not Linux: a killed lab leaves its programs (namespaces are still removed)


class Program:
    """One process of the lab, started in ``node``'s namespace."""

    def __init__(self, name: str, node: Node, argv: list[str], workdir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.node = node
        self.argv = argv
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / f"{name}.log"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.node.command(self.argv), cwd=self.dir, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=None if self.env is None else {**os.environ, **self.env},
                preexec_fn=_die_with_parent)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` (bounded by ``timeout``); raise with the log's tail if it exits."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc is None or self.proc.poll() is not None:
                raise ProgramError(f"{self.name} exited before {what}:\n"
                                   f"{self.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise ProgramError(f"{self.name}: no {what} within {timeout:.0f} s:\n"
                                   f"{self.log_text()[-2000:]}")
            time.sleep(0.05)

    def wait_log(self, text: str, timeout: float = 20.0) -> None:
        self.wait_for(lambda: text in self.log_text(), timeout, repr(text))

    def wait_bound(self, port: int, timeout: float = 10.0) -> None:
        """Until the process (in its namespace) has a UDP socket on ``port``."""
        self.wait_for(lambda: self._bound(port), timeout, f"UDP port {port} bound")

    def _bound(self, port: int) -> bool:
        assert self.proc is not None
        try:
            table = Path(f"/proc/{self.proc.pid}/net/udp").read_text()
        except OSError:
            return False
        return any(line.split()[1].endswith(f":{port:04X}")
                   for line in table.splitlines()[1:] if line.split())

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM to its process group, SIGKILL after ``grace`` seconds."""
        proc = self.proc
        if proc is None:
            return None
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return proc.returncode


# ---------------------------------------------------------------------------- Kamailio

def kamailio(node: Node, port: int, workdir: Path) -> Program:
    from tests.peers.kamailio import CONFIG, MODULE_DIRS

    binary = require("kamailio", "kamailio")
    mpath = next((d for d in MODULE_DIRS if (d / "tm.so").exists()), None)
    if mpath is None:
        raise ProgramError("kamailio modules not found (Debian: apt-get install kamailio)")
    program = Program("kamailio", node, [], workdir)
    cfg = program.dir / "kamailio.cfg"
    cfg.write_text(CONFIG.format(host=node.ip, port=port, mpath=mpath))
    program.argv = [binary, "-DD", "-E", "-f", str(cfg), "-Y", str(program.dir),
                    "-P", str(program.dir / "kamailio.pid"), "-m", "32", "-M", "8"]
    return program


# ----------------------------------------------------------------------------- sipdial

def sipdial_config(node: Node, sip_port: int, http_port: int, kamailio_uri: str,
                   dest: str, secrets: Secrets, db: Path) -> str:
    lines = [
        "# generated by the lab (python -m lab)",
        "[sip]", f'listen = ["udp:{node.ip}:{sip_port}"]', f'domain = "{node.ip}"',
        f"outbound_proxy = {json.dumps(kamailio_uri)}",
        "[http]", f'listen = "{node.ip}:{http_port}"',
        "[store]", f'url = "sqlite:///{db}"',
        "[api]", f"tokens = {{ {json.dumps(secrets.admin_token)} = \"*\" }}",
    ]
    for user, name in (("201", "Alice"), ("202", "Bob")):
        lines += ["[[users]]", f'id = "{user}"',
                  f"password = {json.dumps(secrets.passwords[user])}",
                  f'name = "{name}"', "auto_answer = true"]
    lines += ["[[routes]]", 'match = "^\\\\+?[0-9]{4,}$"',
              f'uri = "sip:{{number}}@{dest}"']
    return "\n".join(lines) + "\n"


def sipdial(node: Node, config: str, workdir: Path) -> Program:
    program = Program("sipdial", node, [], workdir,
                      env={"SIPDIAL_LOG": os.environ.get("SIPDIAL_LOG", "INFO"),
                           "SIPDIAL_TRACE": os.environ.get("SIPDIAL_TRACE", "1")})
    path = program.dir / "sipdial.toml"
    path.write_text(config)
    program.argv = [sys.executable, "-m", "sipdial", "serve", "--config", str(path)]
    return program


# ----------------------------------------------------------------------------- baresip

def baresip(node: Node, user: str, sip_port: int, ctrl_port: int, registrar: str,
            outbound: str, password: str, workdir: Path) -> Program:
    from tests.peers.baresip import APP_MODULES, MODULE_DIR, MODULES, account_line, write_tone_wav

    binary = require("baresip", "baresip-core")
    program = Program(f"phone{user}", node, [], workdir)
    wav = write_tone_wav(program.dir / "source.wav", 3600)
    (program.dir / "recordings").mkdir(exist_ok=True)
    config = {
        "poll_method": "epoll",
        "sip_listen": f"{node.ip}:{sip_port}",
        "net_interface": node.ip,
        "call_local_timeout": "120",
        "call_max_calls": "4",
        "audio_player": "aubridge,nil",
        "audio_alert": "aubridge,nil",
        "audio_source": f"aufile,{wav}",
        "module_path": str(MODULE_DIR),
        "ctrl_tcp_listen": f"{node.ip}:{ctrl_port}",
        "snd_path": str(program.dir / "recordings"),
        "statmode_default": "off",
        "menu_bell": "no",
    }
    lines = ["# generated by the lab (python -m lab)"]
    lines += [f"{k}\t\t{v}" for k, v in config.items()]
    lines += [f"module\t\t\t{m}" for m in MODULES]
    lines += ["module_tmp\t\taccount.so"]
    lines += [f"module_app\t\t{m}" for m in APP_MODULES]
    (program.dir / "config").write_text("\n".join(lines) + "\n")
    (program.dir / "accounts").write_text(account_line(
        user=user, domain=registrar, password=password, auto_answer=True, regint=300,
        outbound=f"sip:{outbound};transport=udp") + "\n")
    (program.dir / "contacts").write_text("")
    program.argv = [binary, "-f", str(program.dir)]
    return program


# -------------------------------------------------------------------------------- SIPp

def sipp_destination(node: Node, port: int, media_port: int, workdir: Path) -> Program:
    binary = require("sipp", "sip-tester")
    program = Program("destination", node, [], workdir)
    program.argv = [
        binary, "-sf", str(SCENARIO), "-i", node.ip, "-p", str(port), "-t", "u1",
        "-mi", node.ip, "-mp", str(media_port), "-rtp_echo", "-s", "dest", "-d", "1000",
        "-aa", "-nostdin", "-skip_rlimit",
        "-trace_msg", "-message_file", str(program.dir / "messages.log"),
        "-trace_err", "-error_file", str(program.dir / "errors.log"),
    ]
    return program
