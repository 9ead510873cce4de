"""What a phone heard, and audio to send: helpers for the media integration tests.

baresip's ``sndfile`` module dumps what it decoded to ``dump-*-dec.wav`` (8 kHz, mono, S16LE)
while the call runs; the WAV header's sizes are only right once the file is closed, so
:func:`read_pcm` takes every sample after the ``data`` chunk header. Tones are recognised with
the Goertzel algorithm (pure Python: the recordings are a few seconds long).
"""

from __future__ import annotations

import array
import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.integration.c2d_helpers import wait_until

RATE = 8000


def read_pcm(path: Path) -> array.array[int]:
    """Signed 16-bit mono samples of a WAV file, also while it is still being written."""
    raw = path.read_bytes()
    pos = 12  # RIFF header
    while pos + 8 <= len(raw):
        chunk, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        if chunk == b"fmt ":
            channels, rate = struct.unpack("<HI", raw[pos + 10:pos + 16])
            width = struct.unpack("<H", raw[pos + 22:pos + 24])[0] // 8
            assert (channels, rate, width) == (1, RATE, 2), (path, channels, rate, width)
        if chunk == b"data":
            data = raw[pos + 8:]
            samples = array.array("h")
            samples.frombytes(data[: len(data) // 2 * 2])
            return samples
        pos += 8 + size + (size & 1)
    return array.array("h")


def recording(phone: Any) -> Path:
    """The largest ``dec`` dump of a :class:`~tests.peers.baresip.Baresip` (what it heard)."""
    paths: list[Path] = phone.recordings()
    assert paths, f"{phone.name} recorded nothing"
    return max(paths, key=lambda p: p.stat().st_size)


def recorded_seconds(phone: Any) -> float:
    paths = phone.recordings()
    return max((p.stat().st_size - 44) / (2 * RATE) for p in paths) if paths else 0.0


def wait_recorded(phone: Any, seconds: float, timeout: float) -> None:
    """Until the phone has recorded ``seconds`` of audio (bounded)."""
    wait_until(lambda: recorded_seconds(phone) >= seconds, timeout,
               f"{seconds} s of audio recorded by {phone.name}")


# ------------------------------------------------------------------ analysis

def rms(samples: Sequence[int]) -> float:
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def tone_fraction(samples: Sequence[int], freq: float, rate: int = RATE) -> float:
    """Share of the window's energy at ``freq`` (Goertzel): ~1 for a pure tone at ``freq``,
    ~0 for silence or other frequencies (bin width = rate / len(samples))."""
    n = len(samples)
    energy = sum(s * s for s in samples)
    if n == 0 or energy == 0:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * power / (n * energy)


def windows(samples: Sequence[int], seconds: float, rate: int = RATE) -> list[Sequence[int]]:
    size = int(seconds * rate)
    return [samples[i:i + size] for i in range(0, len(samples) - size + 1, size)]


def tone_share(samples: Sequence[int], freq: float, *, window: float = 0.04,
               min_rms: float = 200.0, min_fraction: float = 0.5) -> float:
    """Fraction of ``window``-second windows that are audible and dominated by ``freq``."""
    wins = windows(samples, window)
    if not wins:
        return 0.0
    hits = sum(1 for w in wins if rms(w) >= min_rms and tone_fraction(w, freq) >= min_fraction)
    return hits / len(wins)


def audible_share(samples: Sequence[int], *, window: float = 0.04,
                  min_rms: float = 200.0) -> float:
    wins = windows(samples, window)
    return sum(1 for w in wins if rms(w) >= min_rms) / len(wins) if wins else 0.0


def envelope(samples: Sequence[int], frame: int = 160) -> list[float]:
    """RMS per 20 ms frame."""
    return [rms(samples[i:i + frame]) for i in range(0, len(samples) - frame + 1, frame)]


def best_correlation(signal: Sequence[float], template: Sequence[float],
                     max_lag: int) -> float:
    """Highest normalised (Pearson) correlation of ``template`` with a same-length slice of
    ``signal`` starting at 0..max_lag."""
    n = len(template)
    mt = sum(template) / n
    dt = [t - mt for t in template]
    st = math.sqrt(sum(d * d for d in dt))
    best = -1.0
    for lag in range(0, min(max_lag, len(signal) - n) + 1):
        seg = signal[lag:lag + n]
        ms = sum(seg) / n
        ds = [s - ms for s in seg]
        ss = math.sqrt(sum(d * d for d in ds))
        if ss == 0 or st == 0:
            continue
        best = max(best, sum(a * b for a, b in zip(ds, dt, strict=True)) / (ss * st))
    return best


# ------------------------------------------------------------------ generation

DTMF_FREQS = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "4": (770, 1209), "5": (770, 1336),
    "6": (770, 1477), "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "*": (941, 1209),
    "0": (941, 1336), "#": (941, 1477),
}


def dtmf_samples(digit: str, seconds: float, amplitude: float = 0.35,
                 rate: int = RATE) -> list[float]:
    """A DTMF key press as floats in [-1, 1] (both tones at ``amplitude``)."""
    low, high = DTMF_FREQS[digit]
    return [amplitude * (math.sin(2 * math.pi * low * i / rate)
                         + math.sin(2 * math.pi * high * i / rate))
            for i in range(int(seconds * rate))]


def tone_samples(freq: float, seconds: float, amplitude: float = 0.5,
                 rate: int = RATE) -> list[float]:
    return [amplitude * math.sin(2 * math.pi * freq * i / rate)
            for i in range(int(seconds * rate))]


def to_u8(samples: Sequence[float]) -> bytes:
    """Floats in [-1, 1] as 8-bit unsigned linear PCM (what pyVoIP's write_audio takes)."""
    return bytes(max(0, min(255, round(128 + 127 * s))) for s in samples)


def to_s16(samples: Sequence[float]) -> array.array[int]:
    return array.array("h", (max(-32768, min(32767, round(32767 * s))) for s in samples))
