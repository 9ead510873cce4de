"""G.711 tables against FFmpeg's pcm_mulaw/pcm_alaw (PyAV), round trips and silence."""

from __future__ import annotations

import array
import bisect
from collections.abc import Callable

import av
import pytest

from sipdial.media import g711

ALL_CODES = bytes(range(256))
ALL_SAMPLES = list(range(-32768, 32768))

Decode = Callable[[bytes], "array.array[int]"]
Encode = Callable[[list[int]], bytes]
LAWS: list[tuple[str, Encode, Decode]] = [
    ("pcm_mulaw", g711.pcm_to_ulaw, g711.ulaw_to_pcm),
    ("pcm_alaw", g711.pcm_to_alaw, g711.alaw_to_pcm),
]


def av_decode(codec: str, data: bytes) -> list[int]:
    ctx = av.CodecContext.create(codec, "r")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate, ctx.layout, ctx.format = 8000, "mono", "s16"
    out: list[int] = []
    for frame in ctx.decode(av.Packet(data)):
        assert isinstance(frame, av.AudioFrame)
        out += array.array("h", bytes(frame.planes[0]))[: frame.samples]
    return out


def av_encode(codec: str, samples: list[int]) -> bytes:
    ctx = av.CodecContext.create(codec, "w")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate, ctx.layout, ctx.format = 8000, "mono", "s16"
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(samples))
    frame.sample_rate, frame.pts = 8000, 0
    frame.planes[0].update(array.array("h", samples).tobytes())
    return b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])


@pytest.mark.parametrize(("codec", "encode", "decode"), LAWS)
def test_decode_table_equals_ffmpeg(codec: str, encode: Encode, decode: Decode) -> None:
    pcm = decode(ALL_CODES)
    assert pcm.typecode == "h" and len(pcm) == 256
    assert list(pcm) == av_decode(codec, ALL_CODES)


@pytest.mark.parametrize(("codec", "encode", "decode"), LAWS)
def test_every_code_round_trips(codec: str, encode: Encode, decode: Decode) -> None:
    again = encode(list(decode(ALL_CODES)))
    if codec == "pcm_mulaw":  # μ-law has two zeros, 0x7F (-0) and 0xFF (+0); 0 encodes as 0xFF
        assert again == ALL_CODES[:0x7F] + b"\xff" + ALL_CODES[0x80:]
    else:
        assert again == ALL_CODES


@pytest.mark.parametrize(("codec", "encode", "decode"), LAWS)
def test_encoder_picks_a_bracketing_level_and_agrees_with_ffmpeg(
        codec: str, encode: Encode, decode: Decode) -> None:
    levels = sorted(set(decode(ALL_CODES)))
    ours = encode(ALL_SAMPLES)
    decoded = decode(ours)
    for x, y in zip(ALL_SAMPLES, decoded, strict=True):  # the level just below or above x
        below = levels[max(bisect.bisect_right(levels, x) - 1, 0)]
        above = levels[min(bisect.bisect_left(levels, x), len(levels) - 1)]
        assert y in (below, above), (x, y)
    # FFmpeg rounds to the nearest level; the G.711 reference encoder uses the standard's
    # decision values, which differ only next to segment boundaries, by one level.
    theirs = av_encode(codec, ALL_SAMPLES)
    assert len(theirs) == len(ours)
    differ = [i for i in range(len(ours)) if ours[i] != theirs[i]]
    assert len(differ) < 0.02 * len(ALL_SAMPLES)
    their_pcm = decode(theirs)
    for i in differ:
        a, b = decoded[i], their_pcm[i]
        assert abs(levels.index(a) - levels.index(b)) == 1, (ALL_SAMPLES[i], a, b)


def test_silence() -> None:
    assert g711.pcm_to_ulaw([0] * 160) == bytes([g711.ULAW_SILENCE]) * 160 == b"\xff" * 160
    assert g711.pcm_to_alaw([0] * 160) == bytes([g711.ALAW_SILENCE]) * 160 == b"\xd5" * 160
    assert set(g711.ulaw_to_pcm(b"\xff" * 160)) == {0}
    assert set(g711.alaw_to_pcm(b"\xd5" * 160)) == {8}  # A-law has no zero level: ±8
    assert av_decode("pcm_alaw", b"\xd5") == [8]


def test_out_of_range_samples_clip() -> None:
    assert g711.pcm_to_ulaw([40000, -40000]) == g711.pcm_to_ulaw([32767, -32768])
    assert g711.pcm_to_alaw([40000, -40000]) == g711.pcm_to_alaw([32767, -32768])
    assert list(g711.ulaw_to_pcm(g711.pcm_to_ulaw([32767, -32768]))) == [32124, -32124]
    assert list(g711.alaw_to_pcm(g711.pcm_to_alaw([32767, -32768]))) == [32256, -32256]


def test_empty() -> None:
    assert g711.pcm_to_ulaw([]) == b"" and len(g711.alaw_to_pcm(b"")) == 0
