"""The ``sipdial`` command: run the server, place a call from a shell, check a config.

``sipdial call`` talks to a running server over HTTP with the standard library only, so it
works from any machine with Python and needs neither Twisted nor the configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

__all__ = ["main"]

DEFAULT_SERVER = "http://127.0.0.1:8080"
DEFAULT_TOKEN = "admin-secret"
POLL_INTERVAL = 0.25
_REQUEST_TIMEOUT = 10.0
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


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
        return _serve(args.config, args.ready_file)
    if args.command == "check-config":
        return _check_config(args.path, out, err)
    client = _Client(args.server.rstrip("/"), args.token)
    return _call(client, args, out, err, sleep, monotonic)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipdial", description="Click-to-dial SIP B2BUA: server, call client, config check."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the SIP B2BUA and its HTTP API")
    serve.add_argument("--config", default="config/sipdial.toml", help="TOML configuration")
    serve.add_argument(
        "--ready-file", help="write this file once SIP and HTTP are listening (for scripts)"
    )

    call = commands.add_parser(
        "call", help="ring USER's phone, then connect it to TO; follow the call until it ends"
    )
    call.add_argument("user", metavar="USER", help="user id (extension) whose phone rings first")
    call.add_argument("to", metavar="TO", help="number or sip: URI to connect the user to")
    call.add_argument("--server", default=DEFAULT_SERVER, help=f"API base URL ({DEFAULT_SERVER})")
    call.add_argument(
        "--token",
        default=os.environ.get("SIPDIAL_TOKEN", DEFAULT_TOKEN),
        help="bearer token (default: $SIPDIAL_TOKEN, else the example config's admin token)",
    )
    call.add_argument("--device", help="ring only this registered device of the user")
    call.add_argument(
        "--auto-answer", action="store_true", help="ask the user's phone to answer by itself"
    )
    call.add_argument("--mode", help='how to connect the target: "refer" (default) or "bridge"')
    call.add_argument(
        "--timeout", type=float, default=120.0, help="stop following the call after SECONDS"
    )

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("path", metavar="PATH")
    return parser


def _serve(config_path: str, ready_file: str | None) -> int:
    # Imported here: the other commands must not need Twisted or the engine.
    from sipdial.app import serve  # type: ignore[import-not-found, unused-ignore]

    return int(serve(config_path, ready_file))


def _check_config(path: str, out: TextIO, err: TextIO) -> int:
    from sipdial.config import ConfigError, load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=err)
        return 2
    print(f"{path}: OK (users: {len(config.users)}, routes: {len(config.routes)})", file=out)
    return 0


# ------------------------------------------------------------------------------ call


class _Failed(Exception):
    """A request that did not succeed; ``str()`` is the line to print after ``error: ``."""


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


def _call(
    client: _Client,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    sleep: Callable[[float], None],
    monotonic: Callable[[], float],
) -> int:
    body: dict[str, Any] = {"user": args.user, "to": args.to}
    if args.device is not None:
        body["device"] = args.device
    if args.auto_answer:
        body["auto_answer"] = True
    if args.mode is not None:
        body["mode"] = args.mode
    deadline = monotonic() + args.timeout
    try:
        call = client.request("POST", "/v1/calls", body, timeout=_REQUEST_TIMEOUT)
    except _Failed as exc:
        print(f"error: {exc}", file=err)
        return 2
    call_id = str(call.get("id"))
    print(f"call {call_id}: {call.get('user')} -> {call.get('to')}", file=out, flush=True)
    path = "/v1/calls/" + urllib.parse.quote(call_id, safe="")
    progress = _Progress(out)
    try:
        while True:
            progress.show(call)
            if call.get("state") == "ended":
                cause = call.get("cause")
                print(f"cause: {cause}", file=out)
                return 0 if cause == "completed" else 1
            remaining = deadline - monotonic()
            if remaining <= 0:
                print(
                    f"error: timeout: call {call_id} still {call.get('state')} "
                    f"after {args.timeout:g} s",
                    file=err,
                )
                return 1
            sleep(min(POLL_INTERVAL, remaining))
            call = client.request("GET", path, timeout=_REQUEST_TIMEOUT)
    except _Failed as exc:
        print(f"error: {exc}", file=err)
        return 2
    except KeyboardInterrupt:
        try:
            client.request("DELETE", path, timeout=_REQUEST_TIMEOUT)
            print(f"call {call_id} hung up", file=err)
        except _Failed as exc:
            print(f"error: could not hang up call {call_id}: {exc}", file=err)
        return 130
