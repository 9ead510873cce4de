"""ITU-T G.711 μ-law (PCMU) and A-law (PCMA), table-driven.

Decoding is per packet at runtime (in-band DTMF detection), so it is two ``bytes.translate``
calls (high and low byte of each sample) and two slice assignments: C speed, no Python loop.
The 256-entry decode tables are built once at import. Encoding is only done at startup
(prompts, tones) and in tests; it goes through 16384-entry tables built on first use.

The quantisation is the reference one (ITU-T G.191 ``g711.c``): μ-law on 14-bit, A-law on
13-bit magnitudes, with the standard bias and segment ends. Silence encodes as 0xFF (μ-law)
and 0xD5 (A-law).
"""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence
from functools import cache

ULAW_SILENCE = 0xFF  #: μ-law code of sample 0
ALAW_SILENCE = 0xD5  #: A-law code of sample 0

_ULAW_BIAS = 0x84  # 132, added before the segment search (G.711 Table 2a)
_ULAW_CLIP = 8159  # largest 14-bit magnitude
_SEG_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)  # A-law, 13-bit magnitudes
_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)  # μ-law, 14-bit magnitudes


def _ulaw_decode(code: int) -> int:
    u = ~code & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return _ULAW_BIAS - t if u & 0x80 else t - _ULAW_BIAS


def _alaw_decode(code: int) -> int:
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for seg, end in enumerate(ends):
        if value <= end:
            return seg
    return len(ends)


def _ulaw_encode(sample: int) -> int:
    pcm = sample >> 2  # 14-bit
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = _segment(pcm, _SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask


def _alaw_encode(sample: int) -> int:
    pcm = sample >> 3  # 13-bit
    if pcm >= 0:
        mask = 0xD5
    else:
        mask, pcm = 0x55, -pcm - 1
    seg = _segment(pcm, _SEG_END)
    if seg >= 8:
        return 0x7F ^ mask
    low = (pcm >> 1) if seg < 2 else (pcm >> seg)
    return ((seg << 4) | (low & 0x0F)) ^ mask


def _byte_tables(decode: list[int]) -> tuple[bytes, bytes]:
    """(low bytes, high bytes) of the 16-bit two's complement of every decoded code."""
    words = [v & 0xFFFF for v in decode]
    return bytes(w & 0xFF for w in words), bytes(w >> 8 for w in words)


ULAW_TABLE: tuple[int, ...] = tuple(_ulaw_decode(c) for c in range(256))  #: code -> sample
ALAW_TABLE: tuple[int, ...] = tuple(_alaw_decode(c) for c in range(256))  #: code -> sample
_ULAW_LO, _ULAW_HI = _byte_tables(list(ULAW_TABLE))
_ALAW_LO, _ALAW_HI = _byte_tables(list(ALAW_TABLE))
# array("h") is native-endian: put the low byte first on little-endian machines.
_LO_FIRST = sys.byteorder == "little"


def _decode(payload: bytes, lo_table: bytes, hi_table: bytes) -> array.array[int]:
    raw = bytearray(2 * len(payload))
    lo, hi = payload.translate(lo_table), payload.translate(hi_table)
    if _LO_FIRST:
        raw[0::2], raw[1::2] = lo, hi
    else:  # pragma: no cover - big-endian hosts
        raw[0::2], raw[1::2] = hi, lo
    return array.array("h", raw)


def ulaw_to_pcm(payload: bytes) -> array.array[int]:
    """μ-law bytes -> signed 16-bit samples (``array("h")``), one per byte."""
    return _decode(payload, _ULAW_LO, _ULAW_HI)


def alaw_to_pcm(payload: bytes) -> array.array[int]:
    """A-law bytes -> signed 16-bit samples (``array("h")``), one per byte."""
    return _decode(payload, _ALAW_LO, _ALAW_HI)


@cache
def _encode_table(law: str) -> bytes:
    """Code for every 14-bit sample value, indexed by ``(sample + 32768) >> 2``."""
    encode = _ulaw_encode if law == "ulaw" else _alaw_encode
    return bytes(encode((i << 2) - 32768) for i in range(16384))


def _encode(samples: Sequence[int], table: bytes) -> bytes:
    return bytes(table[(min(max(s, -32768), 32767) + 32768) >> 2] for s in samples)


def pcm_to_ulaw(samples: Sequence[int]) -> bytes:
    """Signed 16-bit samples (clipped to the 16-bit range) -> μ-law bytes."""
    return _encode(samples, _encode_table("ulaw"))


def pcm_to_alaw(samples: Sequence[int]) -> bytes:
    """Signed 16-bit samples (clipped to the 16-bit range) -> A-law bytes."""
    return _encode(samples, _encode_table("alaw"))
