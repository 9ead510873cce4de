"""Free loopback ports for test peers.

The OS hands out a port when binding to port 0; we read it and close the socket.
There is a small race (someone else may grab the port before the peer binds it),
which is acceptable on a loopback test box; callers that start external
processes should verify the peer actually came up.
"""

from __future__ import annotations

import socket
from typing import Literal

Kind = Literal["udp", "tcp"]

LOOPBACK = "127.0.0.1"


def _bind(kind: Kind, host: str, port: int) -> socket.socket:
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    s = socket.socket(socket.AF_INET, sock_type)
    try:
        if kind == "tcp":
            # Do not leave the port in TIME_WAIT-ish limbo for the real user.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    except OSError:
        s.close()
        raise
    return s


def is_free(port: int, kind: Kind = "udp", host: str = LOOPBACK) -> bool:
    """True if ``port`` can be bound right now for ``kind`` on ``host``."""
    try:
        s = _bind(kind, host, port)
    except OSError:
        return False
    s.close()
    return True


def free_port(kind: Kind = "udp", host: str = LOOPBACK) -> int:
    """A port that is free for ``kind`` ("udp" or "tcp") on ``host``."""
    if kind not in ("udp", "tcp"):
        raise ValueError(f"kind must be 'udp' or 'tcp', not {kind!r}")
    s = _bind(kind, host, 0)
    try:
        return int(s.getsockname()[1])
    finally:
        s.close()


def free_port_both(host: str = LOOPBACK, attempts: int = 50) -> int:
    """A port free for both UDP and TCP on ``host`` (SIP listens on both)."""
    for _ in range(attempts):
        port = free_port("udp", host)
        if is_free(port, "tcp", host):
            return port
    raise RuntimeError(f"no port free on both UDP and TCP at {host} after {attempts} tries")


def reserve_port_both(host: str = LOOPBACK, attempts: int = 50
                      ) -> tuple[int, list[socket.socket]]:
    """A port free for UDP and TCP, kept bound (the sockets) until the caller closes them
    just before its peer binds it: while held, nothing else that binds port 0 meanwhile
    (sipdial starting, its media process) can be handed that port."""
    for _ in range(attempts):
        udp = _bind("udp", host, 0)
        port = int(udp.getsockname()[1])
        try:
            tcp = _bind("tcp", host, port)
        except OSError:
            udp.close()
            continue
        return port, [udp, tcp]
    raise RuntimeError(f"no port free on both UDP and TCP at {host} after {attempts} tries")


def free_port_block(
    count: int,
    kinds: tuple[Kind, ...] = ("udp", "tcp"),
    host: str = LOOPBACK,
    attempts: int = 100,
) -> int:
    """First port of ``count`` consecutive ports free for every kind in ``kinds``.

    Used for peers that bind neighbouring ports (baresip binds SIP TLS on
    sip_port + 1; RTP wants an even port and its RTCP neighbour).
    """
    for _ in range(attempts):
        base = free_port(kinds[0], host)
        if base + count > 65535:
            continue
        if all(is_free(base + i, k, host) for i in range(count) for k in kinds):
            return base
    raise RuntimeError(f"no block of {count} free ports at {host} after {attempts} tries")
