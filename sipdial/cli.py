"""The ``sipdial`` command: run the server, place and manage calls from a shell, check a config.

``call``, ``calls`` and ``hangup`` talk to a running server over its HTTP API
(:mod:`sipdial.api.http`) with the standard library only, so they work from any machine with
Python and need neither Twisted nor the configuration. Every failure is one line on stderr,
``sipdial: <code>: <message>`` for errors the API answered with.

Exit status (the ``EXIT_*`` constants):

* 0: done; for ``call``, the call ended with cause ``completed``
* 1: ``call``: the call ended with another cause (also after ``--hangup-on-timeout``)
* 2: the API refused the request or could not be reached; a usage error
* 3: ``call``: ``--timeout`` passed and the call is still up (``sipdial hangup ID`` ends it)
* 130: ``call``: interrupted (Ctrl-C); the call was hung up
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from sipdial.vocabulary import CallState, Mode

__all__ = ["main"]

DEFAULT_SERVER = "http://127.0.0.1:8080"
DEFAULT_TOKEN = "admin-secret"
POLL_INTERVAL = 0.25

EXIT_OK = 0
EXIT_CALL_FAILED = 1
EXIT_ERROR = 2
EXIT_STILL_UP = 3
EXIT_INTERRUPTED = 130

_REQUEST_TIMEOUT = 10.0
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: Columns of ``sipdial calls``: (heading, field of the call resource).
_LIST_COLUMNS = (
    ("ID", "id"),
    ("USER", "user"),
    ("TO", "to"),
    ("MODE", "mode"),
    ("STATE", "state"),
    ("CAUSE", "cause"),
    ("CREATED", "created_at"),
)


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> int:
    """Entry point of the ``sipdial`` console script; returns the exit status.

    The keyword arguments exist for tests: where output goes and how time passes.
    """
    args = _parser().parse_args(argv)
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    if args.command == "serve":
        return _serve(args.config, args.ready_file, args.workers)
    if args.command == "check-config":
        return _check_config(args.path, out, err)
    if args.command == "reload":
        return _reload(args.config, args.pid, args.ready_file, out, err)
    client = _Client(_base_url(args.server), args.token)
    try:
        if args.command == "calls":
            return _list_calls(client, args, out)
        if args.command == "hangup":
            return _hangup(client, args.call_id, out)
        return _call(client, args, out, err, sleep, monotonic)
    except _Failed as exc:
        print(f"sipdial: {exc}", file=err)
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipdial",
        description="Click-to-dial SIP B2BUA: server, calls from a shell, config check.",
        epilog="exit status: 0 ok (call completed), 1 call ended otherwise, 2 error, "
        "3 call still up after --timeout, 130 interrupted",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the SIP B2BUA and its HTTP API")
    serve.add_argument("--config", default="config/sipdial.toml", help="TOML configuration")
    serve.add_argument(
        "--ready-file", help="write this file once SIP and HTTP are listening (for scripts)"
    )
    serve.add_argument(
        "--workers", type=_workers, default=1, metavar="N|auto",
        help="worker processes sharing the SIP and HTTP ports (auto: one per core; "
        "default 1, a single process; see sipdial/workers.py)",
    )

    server = argparse.ArgumentParser(add_help=False)
    server.add_argument(
        "--server", default=DEFAULT_SERVER, help=f"API base URL (default: {DEFAULT_SERVER})"
    )
    server.add_argument(
        "--token",
        default=os.environ.get("SIPDIAL_TOKEN", DEFAULT_TOKEN),
        help="bearer token (default: $SIPDIAL_TOKEN, else the example config's admin token)",
    )

    call = commands.add_parser(
        "call",
        parents=[server],
        help="ring USER's phone, then connect it to TO; follow the call until it ends",
    )
    call.add_argument("user", metavar="USER", help="user id (extension) whose phone rings first")
    call.add_argument("to", metavar="TO", help="number or sip: URI to connect the user to")
    call.add_argument("--device", help="ring only this registered device of the user")
    call.add_argument(
        "--auto-answer", action="store_true", help="ask the user's phone to answer by itself"
    )
    call.add_argument(
        "--mode",
        choices=tuple(Mode),
        help="transfer the phone to TO (refer) or call TO and join the two (bridge); "
        "default: the server's",
    )
    call.add_argument(
        "--confirm",
        action=argparse.BooleanOptionalAction,
        help='play "to connect to TO, press 1" and wait for the 1 (or not); default: the server\'s',
    )
    call.add_argument("--caller-id", metavar="NUMBER", help="the number TO sees (bridge mode)")
    call.add_argument(
        "--clir", action="store_true", help="hide the caller's identity from TO (bridge mode)"
    )
    call.add_argument(
        "--timeout",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="stop following the call after SECONDS (120); a call still up is left up "
        "(exit 3) unless --hangup-on-timeout",
    )
    call.add_argument(
        "--hangup-on-timeout",
        action="store_true",
        help="hang the call up when --timeout passes instead of leaving it up",
    )

    calls = commands.add_parser("calls", parents=[server], help="list calls, newest first")
    calls.add_argument("--user", help="only this user's calls")
    calls.add_argument("--state", help="only calls in this state (ended, connected, ...)")
    calls.add_argument("--limit", type=_positive_int, metavar="N", help="at most N calls (50)")
    calls.add_argument("--json", action="store_true", help="print the API's JSON document")

    hangup = commands.add_parser(
        "hangup", parents=[server], help="cancel or hang up a call at any stage"
    )
    hangup.add_argument("call_id", metavar="ID", help="the call's id (as `sipdial calls` shows)")

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("path", metavar="PATH")

    reload = commands.add_parser(
        "reload", help="check the configuration file, then have a running sipdial reload it "
        "(SIGHUP: users, tokens, routes, policy ... without dropping calls)")
    reload.add_argument("--config", help="the file the server runs on, checked first "
                        "(default: the one named in --ready-file, else config/sipdial.toml)")
    which = reload.add_mutually_exclusive_group(required=True)
    which.add_argument("--pid", type=_positive_int, help="the server's process id")
    which.add_argument("--ready-file", help="the server's --ready-file (its pid is in it)")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds: {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"must be a whole number above 0: {text!r}")
    return int(text)


def _base_url(server: str) -> str:
    """``"127.0.0.1:8080/"`` -> ``"http://127.0.0.1:8080"``: a scheme is assumed if missing."""
    url = server if "://" in server else "http://" + server
    return url.rstrip("/")


def _workers(text: str) -> int:
    if text == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError("must be 'auto' or a number from 1 to 64")
    return int(text)


def _serve(config_path: str, ready_file: str | None, workers: int = 1) -> int:
    # Imported here: the other commands must not need Twisted or the engine.
    if workers > 1:
        from sipdial.workers import supervise

        return supervise(config_path, workers, ready_file)
    from sipdial.app import serve  # type: ignore[import-not-found, unused-ignore]

    return int(serve(config_path, ready_file))


def _check_config(path: str, out: TextIO, err: TextIO) -> int:
    from sipdial.app import check_config
    from sipdial.config import ConfigError, load_config

    try:
        config = load_config(path)
        check_config(config)
    except ConfigError as exc:
        print(f"sipdial: {exc}", file=err)
        return EXIT_ERROR
    print(f"{path}: OK (users: {len(config.users)}, routes: {len(config.routes)})", file=out)
    return EXIT_OK


def _reload(path: str | None, pid: int | None, ready_file: str | None, out: TextIO,
            err: TextIO) -> int:
    """Check the server's file like ``check-config`` (a bad file: its error, exit 2,
    nothing sent), then SIGHUP the server (with ``--workers``, the supervisor: it tells
    every worker). What the server applied, and what needs a restart, is in its log."""
    if ready_file is not None:
        try:
            with open(ready_file, encoding="utf-8") as fh:
                info = json.load(fh)
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"sipdial: {ready_file}: no server's pid in it ({exc})", file=err)
            return EXIT_ERROR
        runs_on = info.get("config") if isinstance(info, dict) else None
        if isinstance(runs_on, str):
            if path is not None and os.path.abspath(path) != runs_on:
                print(f"sipdial: the server runs on {runs_on}, not {path}: it would reload "
                      "a file this did not check", file=err)
                return EXIT_ERROR
            path = runs_on
    path = path or "config/sipdial.toml"
    assert pid is not None
    if pid <= 1:  # 0 and -1 signal whole process groups; 1 is init
        print(f"sipdial: {pid} is no server's process id", file=err)
        return EXIT_ERROR
    if _check_config(path, out, err) != EXIT_OK:
        return EXIT_ERROR
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        print(f"sipdial: cannot signal process {pid}: {exc.strerror or exc}", file=err)
        return EXIT_ERROR
    print(f"sent SIGHUP to {pid}: it reloads {path} (its log says what it applied)",
          file=out)
    return EXIT_OK


# ---------------------------------------------------------------------------- client


class _Failed(Exception):
    """A request that did not succeed; ``str()`` is the line to print after ``sipdial: ``."""


@dataclass(frozen=True, slots=True)
class _Client:
    server: str
    token: str

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
        )
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener().open(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise _Failed(_describe_http_error(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, OSError) and reason.strerror:
                reason = reason.strerror  # "Connection refused", not "[Errno 111] ..."
            raise _Failed(f"cannot reach sipdial at {self.server}: {reason}") from None
        try:
            result = json.loads(payload)
        except ValueError:
            raise _Failed(f"bad_response: {method} {path} did not return JSON") from None
        if not isinstance(result, dict):
            raise _Failed(f"bad_response: {method} {path} did not return a JSON object")
        return result

    def _opener(self) -> urllib.request.OpenerDirector:
        # A proxy from the environment has no business with a server on this machine.
        host = urllib.parse.urlsplit(self.server).hostname
        if host in _LOOPBACK_HOSTS:
            return urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return urllib.request.build_opener()


def _describe_http_error(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read())["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError, OSError):
        return f"http_{exc.code}: {exc.reason}"


def _call_path(call_id: str) -> str:
    return "/v1/calls/" + urllib.parse.quote(call_id, safe="")


def _state_and_cause(call: dict[str, Any]) -> str:
    cause = call.get("cause")
    return f"{call.get('state')}" + ("" if cause is None else f" ({cause})")


# ----------------------------------------------------------------------- calls, hangup


def _list_calls(client: _Client, args: argparse.Namespace, out: TextIO) -> int:
    query = {
        name: str(value)
        for name, value in (("user", args.user), ("state", args.state), ("limit", args.limit))
        if value is not None
    }
    path = "/v1/calls" + ("?" + urllib.parse.urlencode(query) if query else "")
    result = client.request("GET", path, timeout=_REQUEST_TIMEOUT)
    calls = result.get("calls")
    if not isinstance(calls, list):
        raise _Failed(f"bad_response: GET {path} has no list of calls")
    if args.json:
        print(json.dumps(result, indent=2), file=out)
        return EXIT_OK
    if not calls:
        print("no calls", file=out)
        return EXIT_OK
    rows = [[heading for heading, _ in _LIST_COLUMNS]]
    for call in calls:
        resource = call if isinstance(call, dict) else {}
        rows.append(
            ["-" if resource.get(key) is None else str(resource[key]) for _, key in _LIST_COLUMNS]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_LIST_COLUMNS))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip(), file=out)
    return EXIT_OK


def _hangup(client: _Client, call_id: str, out: TextIO) -> int:
    call = client.request("DELETE", _call_path(call_id), timeout=_REQUEST_TIMEOUT)
    print(f"call {call.get('id', call_id)}: {_state_and_cause(call)}", file=out)
    return EXIT_OK


# ------------------------------------------------------------------------------ call


class _Progress:
    """Prints what happened to a call since the last look, one line per state entered.

    The call's ``events`` list has every state with its time and SIP status, so nothing is
    missed between two polls; without it, a change of ``state`` is printed when seen.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._events_shown = 0
        self._state_shown: object = None

    def show(self, call: dict[str, Any]) -> None:
        events = call.get("events")
        if isinstance(events, list) and events:
            for event in events[self._events_shown :]:
                if isinstance(event, dict):
                    self._line(
                        _local_time(event.get("time")), event.get("state"), event.get("sip_code")
                    )
            self._events_shown = len(events)
        elif call.get("state") != self._state_shown:
            self._line(time.strftime("%H:%M:%S"), call.get("state"), None)
        self._state_shown = call.get("state")

    def _line(self, when: str, state: object, sip_code: object) -> None:
        code = "" if sip_code is None else f" {sip_code}"
        print(f"{when} {state}{code}", file=self._out, flush=True)


def _local_time(iso: object) -> str:
    """``"2026-11-21T13:35:55.123Z"`` -> ``"14:35:55"`` in local time (now if unreadable)."""
    if isinstance(iso, str):
        try:
            return datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S")
        except ValueError:
            pass
    return time.strftime("%H:%M:%S")


def _call_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /v1/calls document: only what was given, so the server's defaults apply."""
    body: dict[str, Any] = {"user": args.user, "to": args.to}
    optional = {
        "device": args.device,
        "auto_answer": args.auto_answer or None,
        "mode": args.mode,
        "confirm": args.confirm,
        "caller_id": args.caller_id,
        "clir": args.clir or None,
    }
    body.update((name, value) for name, value in optional.items() if value is not None)
    return body


def _call(
    client: _Client,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    sleep: Callable[[float], None],
    monotonic: Callable[[], float],
) -> int:
    deadline = monotonic() + args.timeout
    call = client.request("POST", "/v1/calls", _call_body(args), timeout=_REQUEST_TIMEOUT)
    call_id = str(call.get("id"))
    print(f"call {call_id}: {call.get('user')} -> {call.get('to')}", file=out, flush=True)
    path = _call_path(call_id)
    progress = _Progress(out)
    try:
        while True:
            progress.show(call)
            if call.get("state") == CallState.ENDED:
                cause = call.get("cause")
                print(f"cause: {cause}", file=out)
                return EXIT_OK if cause == "completed" else EXIT_CALL_FAILED
            remaining = deadline - monotonic()
            if remaining <= 0:
                return _timed_out(client, args, call, err)
            sleep(min(POLL_INTERVAL, remaining))
            call = client.request("GET", path, timeout=_REQUEST_TIMEOUT)
    except KeyboardInterrupt:
        try:
            client.request("DELETE", path, timeout=_REQUEST_TIMEOUT)
            print(f"call {call_id} hung up", file=err)
        except _Failed as exc:
            print(f"sipdial: could not hang up call {call_id}: {exc}", file=err)
        return EXIT_INTERRUPTED


def _timed_out(client: _Client, args: argparse.Namespace, call: dict[str, Any], err: TextIO) -> int:
    """``--timeout`` passed with ``call`` not ended: hang it up or say that it is still up."""
    call_id = str(call.get("id"))
    after = f"after {args.timeout:g} s"
    if args.hangup_on_timeout:
        try:
            ended = client.request("DELETE", _call_path(call_id), timeout=_REQUEST_TIMEOUT)
        except _Failed as exc:
            print(f"sipdial: timeout: could not hang up call {call_id}: {exc}", file=err)
        else:
            print(
                f"sipdial: timeout: hung up call {call_id} {after} "
                f"(was {call.get('state')}, now {_state_and_cause(ended)})",
                file=err,
            )
            return EXIT_CALL_FAILED
    hangup = ["sipdial", "hangup", call_id]
    if _base_url(args.server) != DEFAULT_SERVER:
        hangup += ["--server", args.server]
    print(
        f"sipdial: timeout: call {call_id} is STILL UP ({call.get('state')}) {after}; "
        f"end it with: {shlex.join(hangup)}",
        file=err,
    )
    return EXIT_STILL_UP
