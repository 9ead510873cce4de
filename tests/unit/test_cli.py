"""``sipdial`` command line: ``call``, ``calls`` and ``hangup`` against a scripted stdlib HTTP
server, and the rest."""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import threading
import types
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sipdial import cli

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ scripted API server


@dataclass
class Script:
    """What the fake API answers: the POST reply, then one call state per GET of a call; the
    list for GET /v1/calls; the DELETE reply."""

    post_status: int = 201
    post_body: bytes | dict[str, Any] = field(
        default_factory=lambda: timeline(("calling_user", None))
    )
    states: list[dict[str, Any]] = field(default_factory=list)
    get_status: int = 200
    listing: list[dict[str, Any]] = field(default_factory=list)
    delete_status: int = 200
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    polls: int = 0


def call(**fields: Any) -> dict[str, Any]:
    return {"id": "c1", "user": "201", "to": "+4930123456", "cause": None, **fields}


def event_time(second: int) -> str:
    return f"2026-11-21T13:35:{second:02d}.250Z"


def timeline(*steps: tuple[str, int | None], cause: str | None = None) -> dict[str, Any]:
    """A call resource whose events are ``steps`` (state, SIP code), one second apart."""
    events = [
        {"state": state, "time": event_time(i), "sip_code": code, "detail": None}
        for i, (state, code) in enumerate(steps)
    ]
    return call(state=steps[-1][0], cause=cause, events=events)


def local_hms(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S")


class _Handler(BaseHTTPRequestHandler):
    server: _ScriptedServer

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        self.server.script.requests.append((self.command, self.path, dict(self.headers), body))

    def _reply(self, status: int, body: bytes | dict[str, Any]) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self._record()
        script = self.server.script
        self._reply(script.post_status, script.post_body)

    def do_GET(self) -> None:
        self._record()
        script = self.server.script
        if self.path.split("?")[0] == "/v1/calls":
            self._reply(200, {"calls": script.listing})
            return
        if script.get_status != 200:
            self._reply(script.get_status, {"error": {"code": "not_found", "message": "gone"}})
            return
        state = script.states[min(script.polls, len(script.states) - 1)]
        script.polls += 1
        self._reply(200, state)

    def do_DELETE(self) -> None:
        self._record()
        call_id = self.path.rsplit("/", 1)[-1]
        if self.server.script.delete_status != 200:
            body = {"error": {"code": "not_found", "message": f"no call {call_id}"}}
            self._reply(self.server.script.delete_status, body)
            return
        self._reply(200, call(id=call_id, state="ended", cause="cancelled"))

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ScriptedServer(ThreadingHTTPServer):
    script: Script


@pytest.fixture
def api() -> Iterator[tuple[str, Script]]:
    server = _ScriptedServer(("127.0.0.1", 0), _Handler)
    server.script = Script()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.script
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class Run:
    code: int
    out: str
    err: str
    sleeps: list[float]


class FakeTime:
    """Monotonic time that only moves when the CLI sleeps."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._interrupt_after = interrupt_after

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if self._interrupt_after is not None and len(self.sleeps) >= self._interrupt_after:
            raise KeyboardInterrupt
        self.sleeps.append(seconds)
        self.now += seconds


def run(argv: list[str], clock: FakeTime | None = None) -> Run:
    clock = clock or FakeTime()
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, stdout=out, stderr=err, sleep=clock.sleep, monotonic=clock.monotonic)
    return Run(code, out.getvalue(), err.getvalue(), clock.sleeps)


def state_lines(output: str) -> list[str]:
    lines = []
    for line in output.splitlines():
        match = re.fullmatch(r"\d\d:\d\d:\d\d (.*)", line)
        if match:
            lines.append(match.group(1))
    return lines


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIPDIAL_TOKEN", raising=False)


# -------------------------------------------------------------------------------- call


STEPS: list[tuple[str, int | None]] = [
    ("calling_user", None),
    ("user_ringing", 180),
    ("user_answered", 200),
    ("awaiting_confirmation", None),
    ("calling_target", None),
    ("target_ringing", 180),
    ("target_ringing", 183),
    ("connected", 200),
    ("ended", None),
]


def test_call_prints_every_event_and_exits_0_when_completed(api: tuple[str, Script]) -> None:
    url, script = api
    # Polls see 2, 2 (nothing new), 5 (three states passed between polls), 8, all events.
    script.states = [
        timeline(*STEPS[:2]),
        timeline(*STEPS[:2]),
        timeline(*STEPS[:5]),
        timeline(*STEPS[:8]),
        timeline(*STEPS, cause="completed"),
    ]
    result = run(["call", "201", "+49 30 123456", "--server", url + "/"])
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "call c1: 201 -> +4930123456"
    assert lines[1:-1] == [
        f"{local_hms(event_time(i))} {state}" + ("" if code is None else f" {code}")
        for i, (state, code) in enumerate(STEPS)
    ]
    assert lines[-1] == "cause: completed"
    assert result.err == ""
    assert result.sleeps == [cli.POLL_INTERVAL] * 5
    method, path, headers, body = script.requests[0]
    assert (method, path) == ("POST", "/v1/calls")
    assert body == {"user": "201", "to": "+49 30 123456"}
    assert headers["Authorization"] == "Bearer admin-secret"
    assert headers["Content-Type"] == "application/json"
    assert {(m, p) for m, p, _, _ in script.requests[1:]} == {("GET", "/v1/calls/c1")}


def test_call_without_events_prints_state_changes(api: tuple[str, Script]) -> None:
    url, script = api
    script.post_body = call(state="calling_user")
    script.states = [
        call(state="user_ringing"),
        call(state="user_ringing"),
        call(state="connected"),
        call(state="ended", cause="completed"),
    ]
    result = run(["call", "201", "1", "--server", url])
    assert result.code == 0
    assert state_lines(result.out) == ["calling_user", "user_ringing", "connected", "ended"]


def test_call_sends_options_and_token(api: tuple[str, Script]) -> None:
    url, script = api
    script.states = [timeline(("calling_user", None), ("ended", None), cause="completed")]
    argv = ["call", "201", "sip:bob@example.com", "--server", url, "--token", "t0k"]
    argv += ["--device", "desk", "--auto-answer", "--mode", "refer"]
    assert run(argv).code == 0
    _, _, headers, body = script.requests[0]
    assert headers["Authorization"] == "Bearer t0k"
    assert body == {
        "user": "201",
        "to": "sip:bob@example.com",
        "device": "desk",
        "auto_answer": True,
        "mode": "refer",
    }


@pytest.mark.parametrize(
    ("flags", "fields"),
    [
        (["--mode", "bridge"], {"mode": "bridge"}),
        (["--confirm"], {"confirm": True}),
        (["--no-confirm"], {"confirm": False}),
        (["--caller-id", "+4930999"], {"caller_id": "+4930999"}),
        (["--clir"], {"clir": True}),
        (["--device", "sip:201@10.0.0.7:5062"], {"device": "sip:201@10.0.0.7:5062"}),
        (
            ["--mode", "bridge", "--no-confirm", "--caller-id", "555", "--clir"],
            {"mode": "bridge", "confirm": False, "caller_id": "555", "clir": True},
        ),
    ],
)
def test_call_flags_reach_the_body_and_nothing_else_does(
    api: tuple[str, Script], flags: list[str], fields: dict[str, Any]
) -> None:
    url, script = api
    script.post_body = timeline(("ended", None), cause="completed")
    assert run(["call", "201", "+4930123456", "--server", url, *flags]).code == 0
    assert script.requests[0][3] == {"user": "201", "to": "+4930123456", **fields}


def test_call_rejects_an_unknown_mode_before_asking_the_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["call", "201", "1", "--mode", "transfer", "--server", "http://127.0.0.1:9"])
    assert exc.value.code == 2
    assert "invalid choice: 'transfer'" in capsys.readouterr().err


def test_server_without_scheme_means_http(api: tuple[str, Script]) -> None:
    url, script = api
    script.post_body = timeline(("ended", None), cause="completed")
    assert run(["call", "201", "1", "--server", url.removeprefix("http://")]).code == 0
    assert script.requests[0][:2] == ("POST", "/v1/calls")


def test_call_token_from_environment(
    api: tuple[str, Script], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, script = api
    monkeypatch.setenv("SIPDIAL_TOKEN", "from-env")
    script.post_body = timeline(("ended", 403), cause="user_rejected")
    assert run(["call", "201", "1", "--server", url]).code == 1
    assert script.requests[0][2]["Authorization"] == "Bearer from-env"
    assert len(script.requests) == 1  # already ended: no polling


def test_call_that_fails_exits_1_with_its_cause(api: tuple[str, Script]) -> None:
    url, script = api
    script.states = [timeline(("calling_user", None), ("ended", 486), cause="user_busy")]
    result = run(["call", "201", "1", "--server", url])
    assert result.code == 1
    assert state_lines(result.out)[-1] == "ended 486"
    assert result.out.splitlines()[-1] == "cause: user_busy"


def test_api_error_is_printed_with_code_and_exit_2(api: tuple[str, Script]) -> None:
    url, script = api
    script.post_status = 409
    script.post_body = {
        "error": {"code": "user_not_registered", "message": "user 201 has no registered device"}
    }
    result = run(["call", "201", "1", "--server", url])
    assert result.code == 2
    assert result.err == "sipdial: user_not_registered: user 201 has no registered device\n"
    assert result.out == ""


def test_non_json_error_is_still_reported(api: tuple[str, Script]) -> None:
    url, script = api
    script.post_status = 502
    script.post_body = b"<html>bad gateway</html>"
    result = run(["call", "201", "1", "--server", url])
    assert result.code == 2
    assert result.err.startswith("sipdial: http_502: ")


def test_non_json_success_is_an_error(api: tuple[str, Script]) -> None:
    url, script = api
    script.post_body = b"OK"
    result = run(["call", "201", "1", "--server", url])
    assert result.code == 2
    assert result.err.startswith("sipdial: bad_response: ")


def test_error_while_following_the_call_exits_2(api: tuple[str, Script]) -> None:
    url, script = api
    script.get_status = 404
    result = run(["call", "201", "1", "--server", url])
    assert result.code == 2
    assert result.err == "sipdial: not_found: gone\n"


def test_unreachable_server_exits_2(api: tuple[str, Script]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run(["call", "201", "1", "--server", f"http://127.0.0.1:{port}"])
    assert result.code == 2
    assert result.err == f"sipdial: cannot reach sipdial at http://127.0.0.1:{port}: " + (
        "Connection refused\n"
    )
    assert result.out == ""


def test_call_still_up_after_timeout_says_so_and_exits_3(api: tuple[str, Script]) -> None:
    url, script = api
    script.states = [timeline(("calling_user", None), ("target_ringing", 180))]
    result = run(["call", "201", "1", "--server", url, "--timeout", "1"])
    assert result.code == 3
    assert sum(result.sleeps) == pytest.approx(1.0)
    assert script.polls == 4
    assert result.err == (
        "sipdial: timeout: call c1 is STILL UP (target_ringing) after 1 s; "
        f"end it with: sipdial hangup c1 --server {url}\n"
    )
    assert "DELETE" not in [m for m, _, _, _ in script.requests]


def test_hangup_on_timeout_deletes_the_call(api: tuple[str, Script]) -> None:
    url, script = api
    script.states = [timeline(("calling_user", None), ("connected", 200))]
    argv = ["call", "201", "1", "--server", url, "--timeout", "0.5", "--hangup-on-timeout"]
    result = run(argv)
    assert result.code == 1
    assert [(m, p) for m, p, _, _ in script.requests][-1] == ("DELETE", "/v1/calls/c1")
    assert result.err == (
        "sipdial: timeout: hung up call c1 after 0.5 s (was connected, now ended (cancelled))\n"
    )
    assert "STILL UP" not in result.err


def test_hangup_on_timeout_that_fails_still_reports_the_call_up(api: tuple[str, Script]) -> None:
    url, script = api
    script.delete_status = 404
    argv = ["call", "201", "1", "--server", url, "--timeout", "0", "--hangup-on-timeout"]
    result = run(argv)
    assert result.code == 3
    # --timeout 0: the state the POST answered with is the last one seen.
    assert [(m, p) for m, p, _, _ in script.requests] == [
        ("POST", "/v1/calls"),
        ("DELETE", "/v1/calls/c1"),
    ]
    first, second = result.err.splitlines()
    assert first == "sipdial: timeout: could not hang up call c1: not_found: no call c1"
    assert second.startswith("sipdial: timeout: call c1 is STILL UP (calling_user) after 0 s; ")


def test_timeout_must_not_be_negative(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["call", "201", "1", "--timeout", "-1"])
    assert exc.value.code == 2
    assert "must be 0 or more seconds" in capsys.readouterr().err


def test_interrupt_hangs_up_the_call(api: tuple[str, Script]) -> None:
    url, script = api
    script.states = [timeline(("calling_user", None), ("user_ringing", 180))]
    result = run(["call", "201", "1", "--server", url], FakeTime(interrupt_after=2))
    assert result.code == 130
    assert ("DELETE", "/v1/calls/c1") in [(m, p) for m, p, _, _ in script.requests]
    assert "call c1 hung up" in result.err


# ------------------------------------------------------------------------ calls, hangup


LISTING = [
    call(
        id="c2",
        to="+4930999",
        mode="bridge",
        state="connected",
        created_at="2026-11-21T13:40:00.000Z",
    ),
    call(
        id="c1",
        user="202",
        mode="refer",
        state="ended",
        cause="user_busy",
        created_at="2026-11-21T13:35:55.123Z",
    ),
]


def test_calls_prints_one_line_per_call_newest_first(api: tuple[str, Script]) -> None:
    url, script = api
    script.listing = LISTING
    result = run(["calls", "--server", url])
    assert result.code == 0, result.err
    assert [line.split() for line in result.out.splitlines()] == [
        ["ID", "USER", "TO", "MODE", "STATE", "CAUSE", "CREATED"],
        ["c2", "201", "+4930999", "bridge", "connected", "-", "2026-11-21T13:40:00.000Z"],
        ["c1", "202", "+4930123456", "refer", "ended", "user_busy", "2026-11-21T13:35:55.123Z"],
    ]
    # Columns line up: every field of a column starts at the same offset.
    lines = result.out.splitlines()
    columns = zip(lines, ["STATE", "connected", "ended"], strict=True)
    assert {line.index(word) for line, word in columns} == {lines[0].index("STATE")}
    assert script.requests[0][:2] == ("GET", "/v1/calls")
    assert script.requests[0][2]["Authorization"] == "Bearer admin-secret"


def test_calls_filters_reach_the_query(api: tuple[str, Script]) -> None:
    url, script = api
    argv = ["calls", "--server", url, "--user", "201", "--state", "ended", "--limit", "5"]
    assert run([*argv, "--token", "t0k"]).code == 0
    _, path, headers, _ = script.requests[0]
    parsed = urllib.parse.urlsplit(path)
    assert parsed.path == "/v1/calls"
    assert urllib.parse.parse_qs(parsed.query) == {
        "user": ["201"],
        "state": ["ended"],
        "limit": ["5"],
    }
    assert headers["Authorization"] == "Bearer t0k"


def test_calls_json_prints_the_api_document(api: tuple[str, Script]) -> None:
    url, script = api
    script.listing = LISTING
    result = run(["calls", "--server", url, "--json"])
    assert result.code == 0
    assert json.loads(result.out) == {"calls": LISTING}


def test_calls_when_there_are_none(api: tuple[str, Script]) -> None:
    url, _ = api
    result = run(["calls", "--server", url])
    assert (result.code, result.out) == (0, "no calls\n")


@pytest.mark.parametrize("limit", ["0", "-3", "ten"])
def test_calls_limit_must_be_positive(limit: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["calls", "--limit", limit, "--server", "http://127.0.0.1:9"])
    assert exc.value.code == 2
    assert "must be a whole number above 0" in capsys.readouterr().err


def test_hangup_deletes_the_call_and_prints_its_state(api: tuple[str, Script]) -> None:
    url, script = api
    result = run(["hangup", "c7", "--server", url])
    assert result.code == 0, result.err
    assert result.out == "call c7: ended (cancelled)\n"
    assert [(m, p) for m, p, _, _ in script.requests] == [("DELETE", "/v1/calls/c7")]


def test_hangup_of_an_unknown_call_exits_2(api: tuple[str, Script]) -> None:
    url, script = api
    script.delete_status = 404
    result = run(["hangup", "nope", "--server", url])
    assert result.code == 2
    assert result.err == "sipdial: not_found: no call nope\n"
    assert result.out == ""


def test_unreachable_server_for_calls_and_hangup(api: tuple[str, Script]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for argv in (["calls"], ["hangup", "c1"]):
        result = run([*argv, "--server", f"http://127.0.0.1:{port}"])
        assert result.code == 2
        assert result.err.startswith(f"sipdial: cannot reach sipdial at http://127.0.0.1:{port}")


# ------------------------------------------------------------------ serve, check-config


def test_serve_calls_app_serve_and_returns_its_status(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str | None]] = []

    def serve(config_path: str, ready_file: str | None) -> int:
        seen.append((config_path, ready_file))
        return 3

    fake_app = types.ModuleType("sipdial.app")
    fake_app.serve = serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sipdial.app", fake_app)
    assert run(["serve", "--config", "x.toml", "--ready-file", "/tmp/r"]).code == 3
    assert run(["serve"]).code == 3
    assert seen == [("x.toml", "/tmp/r"), ("config/sipdial.toml", None)]


def test_check_config_ok() -> None:
    path = str(ROOT / "config" / "sipdial.toml")
    result = run(["check-config", path])
    assert result.code == 0, result.err
    assert result.out.startswith(f"{path}: OK")


@pytest.mark.parametrize(
    "make_path",
    [
        lambda tmp: tmp / "missing.toml",
        lambda tmp: (tmp / "bad.toml", (tmp / "bad.toml").write_text("[sip\n"))[0],
    ],
)
def test_check_config_error_exits_2(tmp_path: Path, make_path: Callable[[Path], Path]) -> None:
    result = run(["check-config", str(make_path(tmp_path))])
    assert result.code == 2
    assert result.err.startswith("sipdial: ")
    assert result.out == ""


# ------------------------------------------------------------------------ reload

_WAITS_FOR_HUP = ("import signal, sys\n"
                  "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})\n"
                  "print('ready', flush=True)\n"
                  "signal.sigwait({signal.SIGHUP})\n"
                  "print('hup', flush=True)\n")


def test_reload_checks_the_file_then_signals_the_pid_in_the_ready_file(
        tmp_path: Path) -> None:
    server = subprocess.Popen([sys.executable, "-c", _WAITS_FOR_HUP], stdout=subprocess.PIPE,
                              text=True, stdin=subprocess.DEVNULL)
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        ready = tmp_path / "ready.json"
        ready.write_text(json.dumps({"pid": server.pid}))
        result = run(["reload", "--config", str(ROOT / "config" / "sipdial.toml"),
                      "--ready-file", str(ready)])
        assert result.code == 0, result.err
        assert f"sent SIGHUP to {server.pid}" in result.out
        assert server.stdout.readline() == "hup\n"  # the signal arrived
        assert server.wait(10) == 0
    finally:
        server.kill()
        server.wait()


def test_reload_of_a_bad_file_signals_nobody(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[sip\n")
    # no such process: had it been signalled first, the error would say so
    result = run(["reload", "--config", str(bad), "--pid", "999999999"])
    assert result.code == 2
    assert "invalid TOML" in result.err and "SIGHUP" not in result.out
    assert "cannot signal" not in result.err


def test_reload_refuses_pids_that_name_process_groups_or_init(tmp_path: Path) -> None:
    for pid in ("0", "-1", "1"):
        ready = tmp_path / "ready.json"
        ready.write_text(json.dumps({"pid": int(pid)}))
        result = run(["reload", "--config", str(ROOT / "config" / "sipdial.toml"),
                      "--ready-file", str(ready)])
        assert result.code == 2 and "no server's process id" in result.err, pid


def test_reload_checks_the_file_the_server_runs_on(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    ready.write_text(json.dumps({"pid": 999999999, "config": str(tmp_path / "other.toml")}))
    result = run(["reload", "--config", str(ROOT / "config" / "sipdial.toml"),
                  "--ready-file", str(ready)])
    assert result.code == 2 and "the server runs on" in result.err
    (tmp_path / "other.toml").write_text("[sip\n")  # its own file, named by the ready file
    result = run(["reload", "--ready-file", str(ready)])
    assert result.code == 2 and "invalid TOML" in result.err


def test_reload_names_a_ready_file_without_a_pid(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    ready.write_text("{}")
    result = run(["reload", "--config", str(ROOT / "config" / "sipdial.toml"),
                  "--ready-file", str(ready)])
    assert result.code == 2
    assert "no server's pid" in result.err


# ------------------------------------------------------------------------ entry points


def test_python_dash_m_sipdial() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sipdial", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert "check-config" in done.stdout


def test_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2
    assert "usage: sipdial" in capsys.readouterr().err
