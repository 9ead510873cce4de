"""Run a real sipdial process for integration tests: its own config, ephemeral ports.

sipdial listens on port 0 everywhere and reports the ports it got in the "sipdial ready"
log line, which this helper waits for (an event, not a sleep). The HTTP API is then used
exactly as a CRM would use it.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ADMIN = "admin-secret"
MEDIA_PORTS = (20000, 29998)


def config_text(db: Path, *, users: list[dict[str, Any]], routes: list[dict[str, str]],
                calls: dict[str, Any] | None = None, transports: tuple[str, ...] = ("udp", "tcp"),
                host: str = "127.0.0.1", listen: list[str] | None = None,
                sip: dict[str, Any] | None = None, extra: str = "") -> str:
    """``sip`` adds keys to ``[sip]`` (e.g. ``{"t1": 0.1}``: TOML cannot reopen a table);
    ``extra`` is TOML appended at the end (e.g. ``[[webhooks]]`` tables)."""
    h = f"[{host}]" if ":" in host else host
    listen_spec = listen or [f"{t}:{h}:0" for t in transports]
    listen_line = ", ".join(f'"{spec}"' for spec in listen_spec)
    lines = [
        "[sip]", f"listen = [{listen_line}]", f'domain = "{host}"',
        *(f"{key} = {json.dumps(value)}" for key, value in (sip or {}).items()),
        "[http]", f'listen = "{h}:0"',
        "[store]", f'url = "sqlite:///{db}"',
        "[api]", f'tokens = {{ "{ADMIN}" = "*", "tok-201" = "201" }}',
    ]
    for user in users:
        lines.append("[[users]]")
        for key, value in user.items():
            lines.append(f"{key} = {json.dumps(value)}")
    for route in routes:
        lines.append("[[routes]]")
        for key, value in route.items():
            lines.append(f"{key} = {json.dumps(value)}")
    if calls:
        lines.append("[calls]")
        for key, value in calls.items():
            lines.append(f"{key} = {json.dumps(value)}")
    if "[media]" not in extra:
        # RTP below the kernel's ephemeral range: a call's RTP port must not take the port a
        # test peer has just let go of and is about to bind again (SippPhone: REGISTER, then
        # the UAS scenario on the same port)
        lines += ["[media]", f"port_min = {MEDIA_PORTS[0]}", f"port_max = {MEDIA_PORTS[1]}"]
    return "\n".join(lines) + "\n" + extra


class Sipdial:
    def __init__(self, tmp_path: Path, *, workers: int = 1, **config: Any) -> None:
        self.workers = workers  # `sipdial serve --workers N` (1: one process)
        self.dir = tmp_path / "sipdial"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = self.dir / "sipdial.db"
        self.config_path = self.dir / "sipdial.toml"
        self.config_path.write_text(config_text(self.db, **config))
        self.log_path = self.dir / "sipdial.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: RLIMIT_NOFILE (soft and hard) for the process, e.g. 256 to exhaust it cheaply
        self.nofile: int | None = None
        self.info: dict[str, Any] = {}
        self._log: list[str] = []

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 20.0) -> Sipdial:
        env = dict(os.environ, SIPDIAL_LOG=os.environ.get("SIPDIAL_LOG", "DEBUG"),
                   SIPDIAL_TRACE=os.environ.get("SIPDIAL_TRACE", "1"))
        self._log = []  # this run's lines up to "ready" (a restart must not log them again)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sipdial", "serve", "--config", str(self.config_path),
             *(["--workers", str(self.workers)] if self.workers > 1 else [])],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, cwd=self.dir, preexec_fn=self._limits if self.nofile else None)
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        buffer = b""
        while time.monotonic() < deadline:
            if not sel.select(deadline - time.monotonic()):
                break
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                self._log.append(text)
                if "sipdial ready: " in text:
                    self.info = json.loads(text.split("sipdial ready: ", 1)[1])
                    self._drain_in_background(buffer)
                    return self
        self.stop()
        raise RuntimeError("sipdial did not start:\n" + "\n".join(self._log[-40:]))

    def _limits(self) -> None:  # in the child, before exec
        import resource

        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def _drain_in_background(self, rest: bytes = b"") -> None:
        """Copy sipdial's output to ``log_path`` as it comes (``rest``: what was read after
        the ready line). Bytes are taken from the pipe only under ``_pump_lock`` and written
        before it is let go, so :meth:`log_text` can wait for everything sipdial wrote
        before it was asked (no pipe bytes left unread, none held by the pump)."""
        import threading

        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        self._pump_lock = threading.Condition()
        self._pump_fd = fd
        self._pump_done = False
        self._pumped = 0  # bytes taken from the pipe and written to the file
        with open(self.log_path, "ab") as fh:
            fh.write(("\n".join(self._log) + "\n").encode() + rest)
        # the start-up lines are readable before the next line comes

        def pump() -> None:
            sel = selectors.DefaultSelector()
            sel.register(fd, selectors.EVENT_READ)
            with open(self.log_path, "ab") as fh:
                while True:
                    sel.select()  # readable: bytes, or the end (outside the lock)
                    with self._pump_lock:
                        waiting = _unread(fd)
                        chunk = os.read(fd, max(waiting, 1))
                        if not chunk:
                            self._pump_done = True
                            self._pump_lock.notify_all()
                            return
                        fh.write(chunk)
                        fh.flush()
                        self._pumped += len(chunk)
                        self._pump_lock.notify_all()

        threading.Thread(target=pump, daemon=True).start()

    def _caught_up(self) -> None:
        """Return once everything sipdial wrote so far is in ``log_path`` (the pump tells
        each chunk it wrote; at most 5 s)."""
        lock = getattr(self, "_pump_lock", None)
        if lock is None:
            return
        with lock:  # what is in the pipe now, not what sipdial goes on writing meanwhile
            target = self._pumped + _unread(self._pump_fd)
            # bounded: a stuck pump must not hang a test
            lock.wait_for(lambda: self._pump_done or self._pumped >= target, timeout=5.0)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> Sipdial:
        # `with Sipdial(...).start() as sd` is common: a second start() would leave the first
        # process running, orphaned, after the test (three were found alive after a suite)
        if self.proc is not None and self.proc.poll() is None:
            return self
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        self._caught_up()
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "\n".join(self._log)

    # ------------------------------------------------------------ addresses

    def sip_port(self, transport: str = "udp", host: str | None = None) -> int:
        for entry in self.info["sip"]:
            if entry["transport"] == transport and host in (None, entry["host"]):
                return int(entry["port"])
        raise KeyError(transport)

    @property
    def http_url(self) -> str:
        http = self.info["http"]
        host = f"[{http['host']}]" if ":" in http["host"] else http["host"]
        return f"http://{host}:{http['port']}"

    # ------------------------------------------------------------ HTTP API

    def api(self, method: str, path: str, body: dict[str, Any] | None = None,
            token: str | None = ADMIN) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.http_url + path, data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def metrics(self, token: str | None = ADMIN) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                           float]:
        """``GET /metrics`` parsed as Prometheus would: (sample name, sorted labels) ->
        value."""
        from prometheus_client.parser import text_string_to_metric_families

        req = urllib.request.Request(self.http_url + "/metrics")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = resp.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def wait_registered(self, user: str, count: int = 1, timeout: float = 15.0) -> list[Any]:
        return self._wait(lambda: self._registrations(user, count), timeout,
                          f"{count} registration(s) of {user}")

    def _registrations(self, user: str, count: int) -> list[Any] | None:
        status, body = self.api("GET", f"/v1/registrations?user={user}")
        regs = body.get("registrations", body) if isinstance(body, dict) else body
        return regs if status == 200 and len(regs) >= count else None

    def wait_state(self, call_id: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the call resource until it reaches ``state`` (the API has no push yet)."""
        def check() -> dict[str, Any] | None:
            status, call = self.api("GET", f"/v1/calls/{call_id}")
            assert status == 200, call
            if call["state"] == state or any(e["state"] == state for e in call["events"]):
                return dict(call)
            if call["state"] == "ended" and state != "ended":
                raise AssertionError(f"call ended before {state}: {call}")
            return None
        return self._wait(check, timeout, f"call {call_id} state {state}")

    def _wait(self, check: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result is not None:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n--- sipdial log tail:\n"
                                     + "\n".join(self.log_text().splitlines()[-60:]))
            time.sleep(0.05)


def _unread(fd: int) -> int:
    """Bytes waiting in the pipe ``fd`` (FIONREAD); 0 once it is closed and drained."""
    import array
    import fcntl
    import termios

    count = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, count, True)
    except OSError:
        return 0
    return count[0]
