"""baresip's ctrl_tcp from the command line: ``python -m lab ctrl HOST:PORT COMMAND [PARAMS]``.

ctrl_tcp speaks netstrings of JSON (``{"command": "hangup", "token": "1"}``), answers
``{"response": true, "ok": ..., "data": ..., "token": "1"}`` and sends events on the same
connection, which are skipped here.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any


class CtrlError(Exception):
    """No answer, or baresip answered ok=false."""


def command(address: str, cmd: str, params: str = "", timeout: float = 5.0) -> str:
    """Run ``cmd`` on the baresip at ``address`` ("host:port"); its answer's ``data``."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise CtrlError(f"{address!r}: expected HOST:PORT of a baresip ctrl_tcp")
    body: dict[str, Any] = {"command": cmd, "token": "lab"}
    if params:
        body["params"] = params
    data = json.dumps(body).encode()
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(b"%d:%s," % (len(data), data))
        buffer = b""
        while time.monotonic() < deadline:
            head, colon, rest = buffer.partition(b":")
            if colon and head.isdigit() and len(rest) > int(head):
                message = json.loads(rest[:int(head)])
                buffer = rest[int(head) + 1:]
                if message.get("response") and message.get("token") == "lab":
                    if not message.get("ok"):
                        raise CtrlError(f"{cmd}: {message.get('data')!r}")
                    return str(message.get("data") or "")
                continue
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
    raise CtrlError(f"no answer to {cmd!r} from {address} within {timeout:.0f} s")
