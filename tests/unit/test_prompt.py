"""PromptLibrary: shipped clips, the confirmation prompt, custom prompt files and tones."""

from __future__ import annotations

import array
import math
import shutil
import wave
from collections.abc import Sequence
from pathlib import Path

import av
import pytest

from sipdial.media.g711 import alaw_to_pcm, ulaw_to_pcm
from sipdial.media.prompt import CLIPS, DEFAULT_DIR, PromptError, PromptLibrary, decode_audio
from sipdial.media.rtp import PCMA, PCMU


@pytest.fixture(scope="module")
def lib() -> PromptLibrary:
    return PromptLibrary.load()


def pcm_of(frames: Sequence[bytes], payload_type: int) -> list[int]:
    decode = ulaw_to_pcm if payload_type == PCMU else alaw_to_pcm
    return list(decode(b"".join(frames)))


def power(samples: Sequence[int], freq: float, rate: int = 8000) -> float:
    """Goertzel: signal power at ``freq``."""
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def dominant_frequency(samples: Sequence[int]) -> float:
    """Strongest frequency in 200..3400 Hz: a 10 Hz scan of the first 50 ms (main lobe
    ±20 Hz, so no peak falls between steps), then 1 Hz steps around it over all samples."""
    head = samples[:400]
    coarse = max(range(200, 3401, 10), key=lambda f: power(head, f))
    return max((coarse + d for d in range(-15, 16)), key=lambda f: power(samples, f))


def rms(samples: Sequence[int]) -> float:
    return math.sqrt(sum(x * x for x in samples) / len(samples)) if samples else 0.0


def write_audio(path: Path, codec: str, rate: int, layout: str, freq: float,
                seconds: float) -> None:
    """An audio file in another format (PyAV): a sine of ``freq`` at ``rate``."""
    n, channels = int(rate * seconds), 2 if layout == "stereo" else 1
    pcm = array.array("h", (int(8000 * math.sin(2 * math.pi * freq * i / rate))
                            for i in range(n) for _ in range(channels)))
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        ctx = stream.codec_context
        src = av.AudioFrame(format="s16", layout=layout, samples=n)
        src.sample_rate = rate
        src.planes[0].update(pcm.tobytes())
        resampler = av.AudioResampler(format=ctx.format.name, layout=layout, rate=rate,
                                      frame_size=ctx.frame_size or None)
        for frame in [*resampler.resample(src), *resampler.resample(None)]:
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


# -- shipped clips ---------------------------------------------------------------------------


def test_shipped_wavs_are_8khz_mono_16bit() -> None:
    for lang in ("en", "de"):
        for name in CLIPS:
            with wave.open(str(DEFAULT_DIR / lang / f"{name}.wav")) as w:
                assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
                assert 0.2 < w.getnframes() / 8000 < 3.0, (lang, name)


def test_library_loads_every_clip_for_en_and_de(lib: PromptLibrary) -> None:
    assert lib.languages == ("de", "en")
    for lang in lib.languages:
        for name in CLIPS:
            for pt in (PCMU, PCMA):
                frames = lib.clip(name, lang, pt)
                assert len(frames) >= 10 and all(len(f) == 160 for f in frames)
                assert rms(pcm_of(frames, pt)) > 500, (lang, name)  # speech, not silence
    assert lib.clip("goodbye", "en", PCMU) != lib.clip("goodbye", "de", PCMU)
    assert lib.clip("goodbye", "en", PCMU) != lib.clip("goodbye", "en", PCMA)


# -- the confirmation prompt -----------------------------------------------------------------


def test_confirm_prompt_is_the_clips_in_order(lib: PromptLibrary) -> None:
    names = ["to_connect", "plus", "4", "9", "3", "0", "1", "2", "3", "press_1"]
    prompt = lib.confirm_prompt("+4930123", "de", PCMA)
    assert len(prompt) == sum(len(lib.clip(n, "de", PCMA)) for n in names)
    expected = [f for n in names for f in lib.clip(n, "de", PCMA)]
    assert all(a is b for a, b in zip(prompt, expected, strict=True))
    assert all(len(f) == 160 for f in prompt)


def test_prompt_frames_are_shared_between_calls(lib: PromptLibrary) -> None:
    one = lib.confirm_prompt("+4930123", "en", PCMU)
    two = lib.confirm_prompt("+4930123", "en", PCMU)
    other = lib.confirm_prompt("+1555", "en", PCMU)
    assert one is not two and list(one) == list(two)
    assert all(a is b for a, b in zip(one, two, strict=True))  # the same bytes objects
    head = len(lib.clip("to_connect", "en", PCMU)) + len(lib.clip("plus", "en", PCMU))
    assert all(a is b for a, b in zip(one[:head], other[:head], strict=True))


def test_separators_are_not_spoken(lib: PromptLibrary) -> None:
    assert lib.confirm_prompt("+49 (30) 12-3", "en", PCMU) == lib.confirm_prompt(
        "+4930123", "en", PCMU)
    plain = lib.confirm_prompt("030123", "en", PCMU)
    assert len(plain) == sum(len(lib.clip(n, "en", PCMU))
                             for n in ["to_connect", "0", "3", "0", "1", "2", "3", "press_1"])


@pytest.mark.parametrize("number", ["sip:+4930123@192.0.2.1:5060;user=phone", "tel:+4930123",
                                    "SIPS:+4930123@example.com", "+4930123;ext=5"])
def test_only_the_user_part_of_a_uri_is_spoken(lib: PromptLibrary, number: str) -> None:
    assert lib.confirm_prompt(number, "de", PCMA) == lib.confirm_prompt("+4930123", "de", PCMA)


@pytest.mark.parametrize("call", [
    lambda lib: lib.confirm_prompt("+49", "fr", PCMU),
    lambda lib: lib.confirm_prompt("+49", "en", 18),
    lambda lib: lib.clip("hello", "en", PCMU),
    lambda lib: lib.tone("dial", PCMU),
    lambda lib: lib.tone("busy", 9),
])
def test_unknown_language_clip_tone_or_codec(lib: PromptLibrary, call: object) -> None:
    with pytest.raises(ValueError):
        call(lib)  # type: ignore[operator]


# -- custom prompt file ----------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "codec", "rate", "layout"), [
    ("mp3", "libmp3lame", 44100, "stereo"),
    ("flac", "flac", 48000, "mono"),
    ("ogg", "libopus", 48000, "stereo"),
])
def test_custom_prompt_file_any_format_is_resampled_to_8khz(
        tmp_path: Path, suffix: str, codec: str, rate: int, layout: str) -> None:
    path = tmp_path / f"prompt.{suffix}"
    write_audio(path, codec, rate, layout, freq=1000, seconds=1.0)
    samples = decode_audio(path)
    assert abs(len(samples) - 8000) <= 400  # 1 s at 8 kHz (codec padding aside)
    custom = PromptLibrary.load(custom_file=str(path))
    for pt in (PCMU, PCMA):
        prompt = custom.confirm_prompt("+4930123", "de", pt)
        assert prompt is custom.confirm_prompt("+1", "en", pt)  # the whole prompt, shared
        assert abs(len(prompt) - 50) <= 3 and all(len(f) == 160 for f in prompt)
        middle = pcm_of(prompt[10:30], pt)  # 400 ms away from codec edges
        assert abs(dominant_frequency(middle) - 1000) <= 5
    assert custom.clip("goodbye", "en", PCMA) == PromptLibrary.load().clip("goodbye", "en", PCMA)


def test_undecodable_custom_file(tmp_path: Path) -> None:
    bad = tmp_path / "prompt.wav"
    bad.write_bytes(b"RIFF this is not audio" * 10)
    with pytest.raises(PromptError, match=r"prompt\.wav"):
        PromptLibrary.load(custom_file=str(bad))
    with pytest.raises(PromptError):
        PromptLibrary.load(custom_file=str(tmp_path / "missing.mp3"))


def test_missing_clip_or_directory(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT_DIR, tmp_path / "prompts")
    (tmp_path / "prompts" / "de" / "7.wav").unlink()
    with pytest.raises(PromptError, match=r"7\.wav"):
        PromptLibrary.load(tmp_path / "prompts")
    with pytest.raises(PromptError):
        PromptLibrary.load(tmp_path / "nowhere")


def test_another_prompts_dir_with_one_language(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT_DIR / "en", tmp_path / "en")
    assert PromptLibrary.load(tmp_path).languages == ("en",)


# -- tones -----------------------------------------------------------------------------------


def cadence(frames: Sequence[bytes], pt: int) -> list[tuple[bool, int]]:
    """Run lengths of (tone on, frames) by frame energy."""
    runs: list[tuple[bool, int]] = []
    for frame in frames:
        on = rms(pcm_of([frame], pt)) > 200
        if runs and runs[-1][0] == on:
            runs[-1] = (on, runs[-1][1] + 1)
        else:
            runs.append((on, 1))
    return runs


@pytest.mark.parametrize("pt", [PCMU, PCMA])
def test_ringback_425hz_1s_on_4s_off(lib: PromptLibrary, pt: int) -> None:
    frames = lib.tone("ringback", pt)
    assert cadence(frames, pt) == [(True, 50), (False, 200)]
    assert abs(dominant_frequency(pcm_of(frames[:10], pt)) - 425) <= 3
    assert len({id(f) for f in frames[50:]}) == 1  # the silence is one shared frame
    assert lib.tone("ringback", pt) is frames  # generated once


@pytest.mark.parametrize("pt", [PCMU, PCMA])
def test_busy_425hz_480ms_on_off(lib: PromptLibrary, pt: int) -> None:
    frames = lib.tone("busy", pt)
    assert cadence(frames, pt) == [(True, 24), (False, 24)]
    assert abs(dominant_frequency(pcm_of(frames[:10], pt)) - 425) <= 3


def test_failure_is_the_special_information_tone(lib: PromptLibrary) -> None:
    frames = lib.tone("failure", PCMA)
    assert cadence(frames, PCMA) == [(True, 48), (False, 50)]
    found = [dominant_frequency(pcm_of(frames[i:i + 14], PCMA)) for i in (1, 17, 33)]
    assert [round(f, -1) for f in found] == [950, 1400, 1800]
