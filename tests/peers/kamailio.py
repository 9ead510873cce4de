"""Run a real Kamailio 5.6 (Debian ``kamailio``) as a SIP proxy on loopback for tests.

The config is generated: one UDP listener on 127.0.0.1 at a free port, ``record_route`` on
every initial request it relays, ``loose_route`` for in-dialog requests and preloaded routes,
and for REGISTER ``add_path_received()`` (RFC 3327 Path with a ``received`` parameter; the
``path`` module's ``use_received`` then sends requests that come back through that Path to
the address the REGISTER really came from — a NAT in miniature: the phone's Contact need not
be reachable). Kamailio runs in the foreground (``-DD -E``), its log captured; every request
and reply it handles is logged on one ``KAMLOG`` line (:meth:`Kamailio.requests`).

>>> with Kamailio(tmp_path) as kam:                               # doctest: +SKIP
...     kam.uri                                 # "sip:127.0.0.1:PORT;lr"
...     kam.requests()                          # [Hop("REGISTER", call_id, source), ...]
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

from tests.peers.ports import LOOPBACK, free_port, is_free

MODULE_DIRS = (Path("/usr/lib/x86_64-linux-gnu/kamailio/modules"),
               Path("/usr/lib/kamailio/modules"))

#: what every role's config starts with: globals, the listener and the core modules (a role
#: adds its own modules, modparams and routes; ``{host}``, ``{port}``, ``{mpath}`` filled in)
CONFIG_HEAD = """#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
auto_aliases=no
listen=udp:{host}:{port}
alias="{host}:{port}"
mpath="{mpath}"

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "siputils.so"
"""

#: the proxy in front of sipdial: record_route, loose_route, Path
CONFIG = CONFIG_HEAD + """loadmodule "path.so"

modparam("path", "use_received", 1)
modparam("rr", "append_fromtag", 1)

request_route {{
    xlog("L_NOTICE", "KAMLOG REQ $rm ci=$ci src=$si:$sp ru=$ru\\n");
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            xlog("L_NOTICE", "KAMLOG INDIALOG $rm ci=$ci du=$du ru=$ru\\n");
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{
                t_relay();
            }}
            exit;
        }}
        xlog("L_NOTICE", "KAMLOG STRAY $rm ci=$ci\\n");
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("REGISTER")) {{
        add_path_received();
        t_relay();
        exit;
    }}
    # a preloaded Route to us (sipdial's Path or outbound proxy): removed here; with the
    # Path's received= (use_received) the request goes to where the REGISTER came from
    loose_route();
    record_route();
    t_relay();
}}

onreply_route {{
    xlog("L_NOTICE", "KAMLOG REPLY $rs $rm ci=$ci src=$si:$sp\\n");
}}
"""

_LINE = re.compile(r"KAMLOG (REQ|REPLY) (\S+)(?: (\S+))? ci=(\S*) src=(\S+)")


@dataclass(frozen=True, slots=True)
class Hop:
    """One message Kamailio handled: a request (``method``) or a reply (``status``)."""

    kind: str  #: "REQ" | "REPLY"
    method: str  #: the request's method, or the reply's CSeq method
    status: int | None  #: the reply's status
    call_id: str
    source: str  #: "ip:port" it came from


def kamailio_binary() -> str:
    path = shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None)
    if path is None:
        pytest.skip("kamailio not installed (Debian kamailio)")
    return path


def _module_dir() -> Path:
    for d in MODULE_DIRS:
        if (d / "tm.so").exists():
            return d
    pytest.skip("kamailio modules not found")


def _free_port(tcp: bool) -> int:
    """A UDP port that, with ``tcp``, is free on TCP as well (bounded tries)."""
    for _ in range(50):
        port = free_port("udp")
        if not tcp or is_free(port, "tcp"):
            return port
    raise RuntimeError("no port free for both UDP and TCP")


class Kamailio:
    """A Kamailio proxy at 127.0.0.1:``port`` (a free port when None)."""

    def __init__(self, workdir: Path, *, port: int | None = None,
                 name: str = "kamailio", config: str = CONFIG, tcp: bool = False,
                 **params: object) -> None:
        """``config``: a config text (``CONFIG_HEAD`` + a role's modules and routes) with
        ``{host}``, ``{port}``, ``{mpath}`` and any ``params`` to fill in. ``tcp``: also
        listen on TCP at the same port (a port free for both)."""
        self.binary = kamailio_binary()
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self.port = port if port is not None else _free_port(tcp)
        self.config_path = self.dir / "kamailio.cfg"
        text = config.format(host=self.host, port=self.port, mpath=_module_dir(), **params)
        if tcp:
            udp = f"listen=udp:{self.host}:{self.port}\n"
            assert udp in text, "the config has no UDP listener line to add TCP beside"
            text = text.replace(udp, udp + f"listen=tcp:{self.host}:{self.port}\n", 1)
        self.config_path.write_text(text)
        self.log_path = self.dir / "kamailio.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._chunks: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def uri(self) -> str:
        """As a loose-routing outbound proxy / Route: ``sip:127.0.0.1:PORT;lr``."""
        return f"sip:{self.address};lr"

    def start(self, timeout: float = 10.0) -> Kamailio:
        check = subprocess.run([self.binary, "-c", "-f", str(self.config_path)],
                               capture_output=True, timeout=30, check=False)
        if check.returncode != 0:
            raise RuntimeError("kamailio config check failed:\n"
                               + check.stderr.decode(errors="replace")[-3000:])
        self._proc = subprocess.Popen(
            [self.binary, "-DD", "-E", "-f", str(self.config_path),
             "-Y", str(self.dir), "-P", str(self.dir / "kamailio.pid"), "-m", "32", "-M", "8"],
            cwd=self.dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while is_free(self.port, "udp"):  # no readiness signal: poll the bind (bounded)
            if self._proc.poll() is not None:
                raise RuntimeError(f"kamailio exited early:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"kamailio did not bind {self.port}:\n"
                                   f"{self.log_text()[-3000:]}")
            time.sleep(0.02)
        return self

    def _pump(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        with open(self.log_path, "w", encoding="utf-8") as out:
            for raw in proc.stdout:
                line = raw.decode(errors="replace")
                out.write(line)
                with self._lock:
                    self._chunks.append(line)

    def log_text(self) -> str:
        with self._lock:
            return "".join(self._chunks)

    def requests(self, call_id: str | None = None) -> list[Hop]:
        """Every request and reply logged so far (of ``call_id`` when given), in order."""
        hops: list[Hop] = []
        for m in _LINE.finditer(self.log_text()):
            kind, first, second, cid, source = m.groups()
            if call_id is not None and cid != call_id:
                continue
            if kind == "REQ":
                hops.append(Hop(kind, first, None, cid, source))
            else:
                hops.append(Hop(kind, second or "", int(first), cid, source))
        return hops

    def methods(self, call_id: str | None = None) -> list[str]:
        """The requests' methods, in order (replies left out)."""
        return [h.method for h in self.requests(call_id) if h.kind == "REQ"]

    def call_ids(self) -> list[str]:
        seen: dict[str, None] = {}
        for h in self.requests():
            seen.setdefault(h.call_id, None)
        return list(seen)

    def stop(self, timeout: float = 5.0) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
        return proc.returncode

    def __enter__(self) -> Kamailio:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Kamailio {self.address}>"
