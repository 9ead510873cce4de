"""A lossy UDP relay on 127.0.0.1 (``tc netem`` is not available in the test container).

:class:`LossyRelay` stands in front of one ``upstream`` address like a NAT that loses
datagrams: whatever a source sends to :attr:`LossyRelay.port` leaves towards ``upstream`` from
a socket of its own for that source, and what ``upstream`` sends back to that socket goes to
the source from :attr:`LossyRelay.port`. Each direction drops datagrams independently with its
own probability and its own seeded RNG, so a run can be repeated exactly (given the same
datagrams in the same order).

Used two ways by tests/integration/test_packet_loss.py:

* phone -> relay -> sipdial: the phone registers through the relay, so sipdial knows it at
  the relay's per-source socket (RFC 3581) and every request to the phone crosses it too;
* sipdial -> relay -> destination: a ``[[routes]]`` URI names the relay's port.

One thread with a selector; :meth:`close` stops it (bounded join). Ports are picked by the
kernel (port 0).
"""

from __future__ import annotations

import random
import selectors
import socket
import threading
from dataclasses import dataclass
from types import TracebackType

LOOPBACK = "127.0.0.1"
_MAX_DATAGRAM = 65535


@dataclass(slots=True)
class RelayStats:
    """Datagrams relayed and dropped, per direction (``up``: towards ``upstream``)."""

    up_sent: int = 0
    up_dropped: int = 0
    down_sent: int = 0
    down_dropped: int = 0


class LossyRelay:
    """Relay datagrams to ``upstream`` and back, dropping ``drop_up`` / ``drop_down`` of
    them (0.0-1.0) with RNGs seeded from ``seed``."""

    def __init__(self, upstream: tuple[str, int], *, drop_up: float = 0.0,
                 drop_down: float = 0.0, seed: int = 0) -> None:
        if not (0.0 <= drop_up <= 1.0 and 0.0 <= drop_down <= 1.0):
            raise ValueError("drop probabilities must be within 0.0-1.0")
        self.upstream = upstream
        self.drop_up = drop_up
        self.drop_down = drop_down
        self._rng_up = random.Random(f"{seed}-up")
        self._rng_down = random.Random(f"{seed}-down")
        self.stats = RelayStats()
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._front.bind((LOOPBACK, 0))
        self._front.setblocking(False)
        self.port: int = self._front.getsockname()[1]
        self._by_source: dict[tuple[str, int], socket.socket] = {}
        self._source_of: dict[socket.socket, tuple[str, int]] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._front, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"lossy-relay-{self.port}",
                                        daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        for sock in [self._front, *self._by_source.values()]:
            sock.close()
        self._selector.close()

    def __enter__(self) -> LossyRelay:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _mask in self._selector.select(0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                self._drain(sock)

    def _drain(self, sock: socket.socket) -> None:
        while True:
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable reported on the socket
                continue
            if sock is self._front:
                self._up(data, (addr[0], addr[1]))
            else:
                self._down(data, sock)

    def _up(self, data: bytes, source: tuple[str, int]) -> None:
        back = self._by_source.get(source)
        if back is None:
            back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            back.bind((LOOPBACK, 0))
            back.setblocking(False)
            self._by_source[source] = back
            self._source_of[back] = source
            self._selector.register(back, selectors.EVENT_READ)
        with self._lock:
            if self._rng_up.random() < self.drop_up:
                self.stats.up_dropped += 1
                return
            self.stats.up_sent += 1
        try:
            back.sendto(data, self.upstream)
        except OSError:
            pass

    def _down(self, data: bytes, back: socket.socket) -> None:
        source = self._source_of[back]
        with self._lock:
            if self._rng_down.random() < self.drop_down:
                self.stats.down_dropped += 1
                return
            self.stats.down_sent += 1
        try:
            self._front.sendto(data, source)
        except OSError:
            pass
