"""RTP packets out (RFC 3550 §5.1 fixed header, no CSRC/extension) and in (aiortc's parser).

One :class:`RtpSender` per outgoing stream keeps SSRC, sequence number and timestamp; the
initial three are random (RFC 3550 §5.1, §8). Payload types are RFC 3551's static PCMU/PCMA
and the usual dynamic PT for RFC 4733 telephone-event (the PT the peer offered wins).
"""

from __future__ import annotations

import ipaddress
import secrets
import struct
from dataclasses import dataclass, field

from aiortc.rtp import RtpPacket

PCMU = 0  #: G.711 μ-law, RFC 3551 static PT
PCMA = 8  #: G.711 A-law, RFC 3551 static PT
TELEPHONE_EVENT = 101  #: RFC 4733 default dynamic PT
SAMPLES_PER_FRAME = 160  #: 20 ms at 8 kHz

_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence number, timestamp, SSRC
_VERSION = 0x80  # V=2, P=0, X=0, CC=0


@dataclass(slots=True)
class RtpSender:
    """One outgoing RTP stream: random SSRC, random initial sequence and timestamp.

    The first packet of a new sender starts a talkspurt and carries the marker bit
    (RFC 3551 §4.1); :meth:`new_talkspurt` arms it again, e.g. when a new prompt starts.
    """

    payload_type: int  #: 0..127
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))  #: synchronisation source
    seq: int = field(default_factory=lambda: secrets.randbits(16))  #: next sequence number
    timestamp: int = field(default_factory=lambda: secrets.randbits(32))  #: next RTP timestamp
    _marker: bool = field(default=True, init=False, repr=False)  # next packet starts a talkspurt

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"RTP payload type out of range: {self.payload_type}")

    def packet(self, payload: bytes, *, marker: bool = False, samples: int = 160) -> bytes:
        """Header + ``payload``; then ``seq += 1`` and ``timestamp += samples`` (both wrap)."""
        m = 0x80 if (marker or self._marker) else 0
        self._marker = False
        data = _HEADER.pack(_VERSION, m | self.payload_type, self.seq, self.timestamp,
                            self.ssrc) + payload
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        return data

    def new_talkspurt(self) -> None:
        """The next packet gets the marker bit."""
        self._marker = True


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP datagram (aiortc); ``ValueError`` for anything that is not RTP v2.

    RTCP multiplexed on the same port (RFC 5761: second byte 192..223, i.e. PT 64..95 with the
    marker bit) is rejected too.
    """
    if len(data) >= 2 and 192 <= data[1] <= 223:
        raise ValueError("RTCP packet, not RTP")
    try:
        return RtpPacket.parse(data)
    except struct.error as exc:  # defensive: aiortc checks lengths before unpacking
        raise ValueError(f"truncated RTP packet: {exc}") from exc


#: the RTP payloads sipdial reads: G.711 of 10-60 ms (80-480 bytes), RFC 4733 events (4 bytes,
#: a few more with redundancy); anything longer is not worth decoding (in-band detection
#: costs ~60 µs per 160 bytes: a 64 KiB datagram would stall every stream for ~25 ms)
MAX_AUDIO_PAYLOAD = 480
MAX_EVENT_PAYLOAD = 64


def check_remote(host: str, port: int, ipv6: bool) -> None:
    """``ValueError`` unless ``host`` is an IP address of the socket's family and ``port`` a
    port: RTP goes out with the socket's own ``sendto`` 50 times a second, which would look
    a host name up each time."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"RTP remote {host!r} is not an IP address") from None
    if (ip.version == 6) != ipv6:
        raise ValueError(f"RTP remote {host} is not an IPv{6 if ipv6 else 4} address")
    if not 0 < port <= 65535:
        raise ValueError(f"RTP remote port {port} out of range")
