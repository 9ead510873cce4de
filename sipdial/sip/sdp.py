"""Minimal SDP (RFC 4566) for sipdial's own media offers, sans-IO.

sipdial offers the user's phone a session it can accept: in REFER mode without the prompt the
offer points at sipdial's RTP sink (audio is discarded there); with the prompt and in bridge
mode at the call's own RTP port (:mod:`sipdial.media`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = [
    "CONTENT_TYPE",
    "MediaAnswer",
    "answer_direction",
    "audio_offer",
    "media_address",
    "parse_answer",
]

CONTENT_TYPE = "application/sdp"

_CONNECTION = re.compile(rb"^c=IN IP[46] (\S+)", re.MULTILINE)
_AUDIO = re.compile(rb"^m=audio (\d+) ", re.MULTILINE)


def audio_offer(host: str, port: int, session_id: int, version: int = 1,
                direction: str = "sendrecv") -> bytes:
    """An audio offer with PCMU, PCMA and telephone-event (RFC 4733)."""
    ip = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=sipdial {session_id} {version} IN {ip} {host}",
        "s=sipdial",
        f"c=IN {ip} {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        f"a={direction}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def media_address(body: bytes) -> tuple[str, int] | None:
    """The (host, port) of the first audio stream, or None."""
    conn = _CONNECTION.search(body)
    audio = _AUDIO.search(body)
    if conn is None or audio is None:
        return None
    return conn.group(1).decode("ascii", "replace"), int(audio.group(1))


_DIRECTION = re.compile(rb"^a=(sendrecv|sendonly|recvonly|inactive)\s*$", re.MULTILINE)
_MIRROR = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive",
           "sendrecv": "sendrecv"}


def answer_direction(offer: bytes) -> str:
    """RFC 3264 §6.1: the direction to answer an offer with (hold -> recvonly, ...)."""
    found = _DIRECTION.findall(offer)
    if not found:
        return "sendrecv"
    return _MIRROR[found[-1].decode("ascii")]


_AUDIO_LINE = re.compile(rb"^m=audio (\d+) [A-Z/]+((?: \d+)*)", re.MULTILINE)
_EVENT_MAP = re.compile(rb"^a=rtpmap:(\d+) telephone-event/8000", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class MediaAnswer:
    """What sipdial needs from a peer's SDP to send it G.711 and read its DTMF."""

    host: str
    port: int
    payload_type: int  # 0 (PCMU) or 8 (PCMA): the first of them in the m= line
    event_payload_type: int | None  # telephone-event (RFC 4733), if offered


def parse_answer(body: bytes) -> MediaAnswer | None:
    """The first audio stream of an SDP body; None if it has none we can use: no G.711, port
    0 (rejected) or not a port, or a connection address that is not an IP address (RFC 4566
    allows a host name; sipdial's media does no DNS lookups, 50 a second per call)."""
    conn = _CONNECTION.search(body)
    audio = _AUDIO_LINE.search(body)
    if conn is None or audio is None:
        return None
    port = int(audio.group(1))
    host = conn.group(1).decode("ascii", "replace")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not 0 < port <= 65535 or (ip.version == 6) != conn.group(0).startswith(b"c=IN IP6"):
        return None
    formats = [int(f) for f in audio.group(2).split()]
    g711 = [f for f in formats if f in (0, 8)]
    if not g711:
        return None
    event = _EVENT_MAP.search(body)
    event_pt = int(event.group(1)) if event else None
    if event_pt is not None and event_pt > 127:
        event_pt = None  # not an RTP payload type: no RFC 4733 from this peer
    return MediaAnswer(host, port, g711[0], event_pt)
