"""Prompt audio and call-progress tones, decoded and G.711-encoded ONCE at startup.

Every clip (``prompts/<language>/<name>.wav``, built by ``scripts/make-prompts``) and the
optional custom prompt file (any format PyAV/FFmpeg decodes) is decoded, resampled to 8 kHz
mono 16-bit, padded with silence to whole 20 ms frames and encoded to both PCMU and PCMA as
160-byte ``bytes`` frames. A call's prompt is then a list of *references* to those frames:
1,000 calls hearing "to connect to plus 4 9 ..." share one copy of the audio.

Every clip ends in a short pause (part of the file), so a prompt is the plain concatenation
of its clips.

Tones (ringback, busy, failure) are generated here, one cadence cycle each, and shared the
same way; silent parts reuse one silence frame object.
"""

from __future__ import annotations

import array
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import av

from sipdial.media.g711 import pcm_to_alaw, pcm_to_ulaw
from sipdial.media.rtp import PCMA, PCMU, SAMPLES_PER_FRAME
from sipdial.sip import SipError, SipURI, parse_uri

RATE = 8000  #: Hz, G.711
DEFAULT_DIR = Path(__file__).with_name("prompts")  #: shipped clips, one folder per language
#: clip names every language folder must have (``0``..``9`` are the digits)
CLIPS = ("to_connect", "press_1", "plus", "invalid", "goodbye",
         *(str(d) for d in range(10)))

ToneKind = Literal["ringback", "busy", "failure"]

# Cadences as (frequency Hz or 0 for silence, duration in 20 ms frames), one cycle each.
# ringback / busy: 425 Hz as in Germany (ETSI TR 101 041-1 / ITU-T E.180 Suppl. 2), ringback
# 1 s on 4 s off, busy 480 ms on 480 ms off. failure: the special information tone
# (ITU-T E.180 §6: 950, 1400, 1800 Hz, each 330 ± 70 ms, then 1 s silence).
_CADENCES: dict[str, tuple[tuple[int, int], ...]] = {
    "ringback": ((425, 50), (0, 200)),
    "busy": ((425, 24), (0, 24)),
    "failure": ((950, 16), (1400, 16), (1800, 16), (0, 50)),
}
_TONE_PEAK = 2500  # ≈ -19 dBm0 (G.711 0 dBm0 sine peak ≈ 22 300)

_Key = tuple[str, str, int]  # (language, clip name, payload type)


class PromptError(Exception):
    """A prompt file is missing or cannot be decoded (raised at startup, never per call)."""


def decode_audio(path: str | Path) -> array.array[int]:
    """Decode the first audio stream of any file PyAV opens to 8 kHz mono s16 samples."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    pcm = bytearray()
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise PromptError(f"{path}: no audio stream")
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    pcm += bytes(out.planes[0])[: 2 * out.samples]
            for out in resampler.resample(None):  # flush the resampler's delay line
                pcm += bytes(out.planes[0])[: 2 * out.samples]
    except (OSError, av.FFmpegError) as exc:
        raise PromptError(f"{path}: cannot decode: {exc}") from exc
    samples = array.array("h")
    samples.frombytes(bytes(pcm))
    return samples


def _frames(encoded: bytes) -> tuple[bytes, ...]:
    return tuple(encoded[i:i + SAMPLES_PER_FRAME]
                 for i in range(0, len(encoded), SAMPLES_PER_FRAME))


def _encode_both(samples: Sequence[int]) -> dict[int, tuple[bytes, ...]]:
    """PCMU and PCMA frames of ``samples`` (padded with silence to whole frames)."""
    padded = list(samples)
    padded += [0] * (-len(padded) % SAMPLES_PER_FRAME)
    return {PCMU: _frames(pcm_to_ulaw(padded)), PCMA: _frames(pcm_to_alaw(padded))}


def _tone(cadence: tuple[tuple[int, int], ...]) -> dict[int, tuple[bytes, ...]]:
    quiet = [0] * SAMPLES_PER_FRAME
    silence = {PCMU: pcm_to_ulaw(quiet), PCMA: pcm_to_alaw(quiet)}  # one object per law
    out: dict[int, list[bytes]] = {PCMU: [], PCMA: []}
    for freq, count in cadence:
        if freq == 0:
            for pt in out:
                out[pt] += [silence[pt]] * count
            continue
        step = 2 * math.pi * freq / RATE
        samples = [round(_TONE_PEAK * math.sin(step * n))
                   for n in range(count * SAMPLES_PER_FRAME)]
        for pt, frames in _encode_both(samples).items():
            out[pt] += frames
    return {pt: tuple(frames) for pt, frames in out.items()}


def _user_part(number: str) -> str:
    """``sip:+49301@host;x`` / ``tel:+49301;phone-context=..`` -> ``+49301``; else unchanged."""
    if ":" in number:
        try:
            uri = parse_uri(number)
        except SipError:
            pass
        else:
            if isinstance(uri, SipURI):
                return uri.unquote_user() or ""
    return number.split(";", 1)[0]  # "+4930123;ext=5": parameters are not spoken


def _check_pt(payload_type: int) -> None:
    if payload_type not in (PCMU, PCMA):
        raise ValueError(f"no prompt audio for payload type {payload_type} (PCMU/PCMA only)")


class PromptLibrary:
    """All prompt audio, decoded and G.711-encoded ONCE at startup (PyAV), as 160-byte frames."""

    def __init__(self, clips: dict[_Key, tuple[bytes, ...]],
                 custom: dict[int, tuple[bytes, ...]] | None = None) -> None:
        self._clips = clips
        self._custom = custom
        self._tones = {kind: _tone(cadence) for kind, cadence in _CADENCES.items()}
        self.languages: tuple[str, ...] = tuple(sorted({lang for lang, _, _ in clips}))

    @classmethod
    def load(cls, prompts_dir: Path | None = None,
             custom_file: str | None = None) -> PromptLibrary:
        """Every ``<prompts_dir>/<language>/<clip>.wav`` (all of :data:`CLIPS` per language)
        and ``custom_file``; :class:`PromptError` if anything is missing or undecodable."""
        base = DEFAULT_DIR if prompts_dir is None else prompts_dir
        languages = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        if not languages:
            raise PromptError(f"{base}: no prompt languages")
        clips: dict[_Key, tuple[bytes, ...]] = {}
        for lang in languages:
            for name in CLIPS:
                path = base / lang / f"{name}.wav"
                if not path.is_file():
                    raise PromptError(f"{path}: missing (run scripts/make-prompts)")
                for pt, frames in _encode_both(decode_audio(path)).items():
                    clips[lang, name, pt] = frames
        custom = None
        if custom_file is not None:
            custom = _encode_both(decode_audio(custom_file))
        return cls(clips, custom)

    def clip(self, name: str, language: str, payload_type: int) -> Sequence[bytes]:
        """One clip's frames (e.g. ``"invalid"``, ``"goodbye"``); ``ValueError`` if unknown."""
        _check_pt(payload_type)
        try:
            return self._clips[language, name, payload_type]
        except KeyError:
            raise ValueError(f"no prompt clip {name!r} for language {language!r}") from None

    def confirm_prompt(self, number: str, language: str, payload_type: int) -> Sequence[bytes]:
        """"To connect to" + "plus" and the digits of ``number`` one by one + "press 1".

        ``number`` may be a URI (``sip:+4930123@host;user=phone``, ``tel:+4930123``): only its
        user part is spoken. Characters other than ``+`` and 0-9 (spaces, dashes, ...) are not
        spoken. With a custom prompt file configured, that file is the whole prompt. The result
        is a new list of references to the pre-encoded frames (nothing is encoded per call).
        """
        _check_pt(payload_type)
        if self._custom is not None:
            return self._custom[payload_type]
        frames: list[bytes] = list(self.clip("to_connect", language, payload_type))
        for char in _user_part(number):
            if char == "+":
                frames += self._clips[language, "plus", payload_type]
            elif "0" <= char <= "9":
                frames += self._clips[language, char, payload_type]
        frames += self._clips[language, "press_1", payload_type]
        return frames

    def tone(self, kind: str, payload_type: int) -> Sequence[bytes]:
        """One cadence cycle of a call-progress tone, starting with the tone (play with
        ``loop=True`` for ringback; repeat the cycle for a longer busy/failure tone).

        ``"ringback"``: 425 Hz, 1 s on, 4 s off; ``"busy"``: 425 Hz, 0.48 s on, 0.48 s off;
        ``"failure"``: the special information tone, 950, 1400, 1800 Hz (320 ms each), 1 s
        silence. ``ValueError`` for another kind or payload type."""
        _check_pt(payload_type)
        try:
            return self._tones[kind][payload_type]
        except KeyError:
            raise ValueError(f"unknown tone {kind!r}") from None
