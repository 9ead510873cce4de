"""Which RTP port to try next: ``[media] port_min..port_max``, even ports, round robin."""

from __future__ import annotations

from collections.abc import Iterator


class MediaPortsExhausted(Exception):
    """No free RTP port left in ``[media] port_min..port_max``."""


class PortRange:
    """Even ports (RTP, RFC 3550 §11) in ``port_min..port_max`` handed out round robin, so a
    port just released is the last to be reused; 0/0 means an ephemeral port per call."""

    def __init__(self, port_min: int, port_max: int) -> None:
        if port_min > port_max or (port_min == 0) != (port_max == 0):
            raise ValueError(f"bad RTP port range {port_min}..{port_max}")
        self.port_min = port_min + (port_min & 1)
        self.port_max = port_max
        self._next = self.port_min

    def candidates(self) -> Iterator[int]:
        """The ports to try, in order, for one bind (each even port of the range once, from
        where the last bind left off); just ``0`` for an ephemeral port."""
        if self.port_max == 0:
            yield 0
            return
        for _ in range((self.port_max - self.port_min) // 2 + 1):
            port = self._next
            self._next = port + 2 if port + 2 <= self.port_max else self.port_min
            yield port

    def exhausted(self) -> MediaPortsExhausted:
        return MediaPortsExhausted(f"no free RTP port in {self.port_min}..{self.port_max}")
