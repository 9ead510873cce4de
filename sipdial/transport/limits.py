"""What a SIP-over-TCP peer may hold of sipdial: connections, file descriptors and time.

A connection costs a file descriptor and up to one message buffer for as long as the peer
keeps it open. Without limits 1,100 idle connections exhaust a ``nofile`` of 1024 and the
HTTP API's accept() fails, and a peer sending a message one byte a minute holds its buffer
for ever. So:

* a message (headers and body) must arrive whole within :attr:`TcpLimits.message_timeout`
  of its first byte, and an accepted connection must bring its first message within that
  time of the accept;
* only complete messages (and RFC 5626 keep-alives) reset the idle timeout;
* one source address holds at most :attr:`TcpLimits.max_per_source` connections;
* all SIP-TCP connections together stay within :attr:`TcpLimits.max_connections`, which
  :func:`tcp_budget` derives from the ``nofile`` limit so that the HTTP listener, RTP, the
  store and webhooks always have descriptors left. Connections beyond a limit are closed
  as soon as they are accepted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = ["TcpLimits", "raise_nofile", "tcp_budget"]

log = logging.getLogger("sipdial.transport")

#: The fewest SIP-TCP connections a budget leaves, however low ``nofile`` is.
MIN_BUDGET = 8


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """Limits on SIP-over-TCP connections (``[sip]`` ``tcp_*`` keys)."""

    #: seconds from the first byte of a message (or from the accept, for a connection's
    #: first message) until the whole message must have arrived; else the connection closes
    message_timeout: float = 5.0
    #: seconds without a complete message or keep-alive after which a connection closes;
    #: longer than the longest registration interval, so registered phones keep theirs
    idle_timeout: float = 3660.0
    #: connections one source IP address may hold (accepted and opened by sipdial)
    max_per_source: int = 64
    #: SIP-TCP connections in all; see :func:`tcp_budget`
    max_connections: int = 10_000


def _nofile() -> tuple[int, int] | None:
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def raise_nofile() -> tuple[int, int] | None:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit where allowed; return the
    ``(soft, hard)`` limits in force afterwards (None where the platform has none)."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        # an unlimited hard limit cannot be the soft one on Linux (fs.nr_open caps it)
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.info("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def tcp_budget(cap: int, reserve: int, nofile: int | None = None) -> int:
    """How many SIP-TCP connections may be open at once: ``cap``, but never more than the
    open-file limit (``nofile``, the soft limit in force if None) minus ``reserve``
    descriptors kept for everything else (HTTP API and its clients, RTP, SQLite, webhooks,
    DNS). A limit too low for the reserve still leaves :data:`MIN_BUDGET` or half of it."""
    if nofile is None:
        limits = _nofile()
        if limits is None:
            return cap
        nofile = limits[0]
    budget = nofile - reserve
    if budget < MIN_BUDGET:
        budget = max(1, min(MIN_BUDGET, nofile // 2))
        log.warning("open-file limit %d leaves no room for %d reserved descriptors: "
                    "SIP-TCP limited to %d connections", nofile, reserve, budget)
    return max(1, min(cap, budget))
