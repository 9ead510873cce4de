"""DTMF reception: RFC 4733 packet sequences, SIP INFO bodies, in-band Goertzel detection."""

from __future__ import annotations

import array
import math
import random
import struct
import wave
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipdial.media import g711
from sipdial.media.dtmf import InbandDetector, Rfc4733Receiver, digit_from_info

KEYS = "0123456789*#ABCD"
ROWS = (697.0, 770.0, 852.0, 941.0)
COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
RATE = 8000
FRAME = 160  # 20 ms
DBM0 = 32768 * 10 ** (-3.14 / 20)  # amplitude of a 0 dBm0 sine in 16-bit PCM


# ---------------------------------------------------------------------------------------------
# RFC 4733
# ---------------------------------------------------------------------------------------------


def event(code: int, duration: int, *, end: bool = False, volume: int = 10) -> bytes:
    """One RFC 4733 §2.3 event report."""
    return struct.pack("!BBH", code, (0x80 if end else 0) | volume, duration)


def key_press(code: int, timestamp: int, *, packets: int = 5, ends: int = 3,
              step: int = 160) -> list[tuple[bytes, int]]:
    """What a phone sends for one key press (RFC 4733): a start packet (with the marker bit,
    not seen here), updates with growing duration every 20 ms, the end report three times
    with the final duration, all with the event's start timestamp."""
    sent = [(event(code, n * step), timestamp) for n in range(packets)]
    sent += [(event(code, packets * step, end=True), timestamp)] * ends
    return sent


def feed_all(receiver: Rfc4733Receiver, packets: Iterable[tuple[bytes, int]]) -> list[str]:
    return [d for payload, ts in packets if (d := receiver.feed(payload, ts)) is not None]


def test_rfc4733_phone_key_press_reports_once_on_first_end_packet() -> None:
    receiver = Rfc4733Receiver()
    results = [receiver.feed(p, ts) for p, ts in key_press(5, 123_456)]
    assert results == [None] * 5 + ["5", None, None]


@pytest.mark.parametrize(("code", "digit"), list(enumerate(KEYS)))
def test_rfc4733_all_sixteen_events(code: int, digit: str) -> None:
    assert feed_all(Rfc4733Receiver(), key_press(code, 1000)) == [digit]


def test_rfc4733_digit_sequence_as_a_phone_sends_it() -> None:
    receiver = Rfc4733Receiver()
    packets: list[tuple[bytes, int]] = []
    ts = 4_000_000_000
    for digit in "1#0*9":
        packets += key_press(KEYS.index(digit), ts)
        ts += 1600  # 100 ms tone + 100 ms pause
    assert "".join(feed_all(receiver, packets)) == "1#0*9"


def test_rfc4733_same_digit_twice_is_two_key_presses() -> None:
    receiver = Rfc4733Receiver()
    packets = key_press(1, 8000) + key_press(1, 8000 + 1600)
    assert feed_all(receiver, packets) == ["1", "1"]


def test_rfc4733_retransmissions_and_reordering_do_not_repeat() -> None:
    receiver = Rfc4733Receiver()
    press = key_press(7, 500)
    start, update, end = press[0], press[2], press[-1]
    packets = [start, start, update, press[1], end, update, end, start, end, end]
    assert feed_all(receiver, packets) == ["7"]


def test_rfc4733_late_end_packet_of_previous_event_is_ignored() -> None:
    receiver = Rfc4733Receiver()
    first, second = key_press(1, 1000), key_press(2, 3000)
    packets = first[:-1] + second[:3] + first[-1:] + second[3:]
    assert feed_all(receiver, packets) == ["1", "2"]


def test_rfc4733_lost_end_packets_report_on_next_event() -> None:
    """All three end reports of '4' are lost: the first packet of the next event (a new
    timestamp) reports it; '4' is not reported again when its end packets turn up late."""
    receiver = Rfc4733Receiver()
    first, second = key_press(4, 1000), key_press(4, 3000)
    results = [receiver.feed(p, ts) for p, ts in first[:5] + second]
    assert results[5] == "4"  # the start packet of the second press
    assert [r for r in results if r] == ["4", "4"]
    assert feed_all(receiver, first[5:]) == []


def test_rfc4733_lost_end_and_only_the_end_of_the_next_event() -> None:
    """Both digits complete in one packet: they come back in order, concatenated."""
    receiver = Rfc4733Receiver()
    first, second = key_press(1, 1000), key_press(2, 3000)
    assert feed_all(receiver, first[:5] + second[5:]) == ["12"]


def test_rfc4733_flush_reports_an_event_that_never_ended() -> None:
    receiver = Rfc4733Receiver()
    assert feed_all(receiver, key_press(9, 1000)[:4]) == []
    assert receiver.flush() == "9"
    assert receiver.flush() is None
    assert feed_all(receiver, key_press(9, 1000)[4:]) == []  # late end packets: already reported


def test_rfc4733_flush_after_a_complete_event_reports_nothing() -> None:
    receiver = Rfc4733Receiver()
    assert feed_all(receiver, key_press(3, 1000)) == ["3"]
    assert receiver.flush() is None


def test_rfc4733_end_packet_only() -> None:
    """All start and update packets lost: the first end report still gives the digit."""
    receiver = Rfc4733Receiver()
    assert feed_all(receiver, key_press(0, 77)[5:]) == ["0"]


def test_rfc4733_non_dtmf_events_are_ignored() -> None:
    receiver = Rfc4733Receiver()
    flash = key_press(16, 1000)  # event 16: hook flash
    assert feed_all(receiver, flash) == []
    assert feed_all(receiver, key_press(200, 3000)) == []
    assert feed_all(receiver, key_press(11, 5000)) == ["#"]


def test_rfc4733_non_dtmf_event_after_an_unended_digit_reports_the_digit() -> None:
    receiver = Rfc4733Receiver()
    packets = key_press(6, 1000)[:3] + key_press(16, 3000)
    assert feed_all(receiver, packets) == ["6"]


def test_rfc4733_timestamp_wraps() -> None:
    receiver = Rfc4733Receiver()
    packets = key_press(1, 0xFFFF_FF00) + key_press(2, 0x0000_0600)
    assert feed_all(receiver, packets) == ["1", "2"]


def test_rfc4733_long_event_in_segments_is_one_digit() -> None:
    """RFC 4733 long-duration events: a key held longer than 8.19 s is sent in segments;
    each new segment's timestamp is the previous one + 0xFFFF, earlier segments never end."""
    receiver = Rfc4733Receiver()
    ts = 10_000
    first = [(event(5, d), ts) for d in range(0, 0xFFFF - 160, 160 * 50)]
    first.append((event(5, 0xFFFF), ts))
    second = key_press(5, ts + 0xFFFF, packets=3)
    assert feed_all(receiver, first + second) == ["5"]


def test_rfc4733_malformed_payloads_are_ignored() -> None:
    receiver = Rfc4733Receiver()
    for junk in (b"", b"\x01", b"\x01\x80", b"\x01\x80\x00"):
        assert receiver.feed(junk, 1000) is None
    assert feed_all(receiver, key_press(8, 2000)) == ["8"]


def test_rfc4733_extra_bytes_after_the_first_report_are_ignored() -> None:
    receiver = Rfc4733Receiver()
    assert receiver.feed(event(2, 800, end=True) + b"\xff\xff\xff", 1000) == "2"


@given(st.lists(st.tuples(st.binary(max_size=12), st.integers(min_value=-(2**40),
                                                              max_value=2**40)), max_size=40))
def test_rfc4733_never_raises_and_reports_only_digits(
    packets: list[tuple[bytes, int]],
) -> None:
    receiver = Rfc4733Receiver()
    for payload, ts in packets:
        result = receiver.feed(payload, ts)
        assert result is None or (result and set(result) <= set(KEYS))
    flushed = receiver.flush()
    assert flushed is None or set(flushed) <= set(KEYS)


def test_rfc4733_packets_as_pyvoip_parses_them() -> None:
    """pyVoIP 1.6.8 builds no telephone-event packets (it only receives them:
    ``RTPMessage`` parses, ``RTPClient.parse_telephone_event`` reports the digit of packets
    with the marker bit). So the RTP packets of a key press are built here, parsed by pyVoIP,
    and the payload and timestamp pyVoIP extracts are fed to the receiver; pyVoIP's own
    receiver must see the same digits."""
    import pyVoIP.VoIP  # noqa: F401  (pyVoIP.RTP needs the package initialised first)
    from pyVoIP.RTP import PayloadType, RTPClient, RTPMessage, TransmitType

    def rtp(payload: bytes, ts: int, seq: int, marker: bool) -> bytes:
        return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 101, seq, ts,
                           0x1234ABCD) + payload

    assoc = {0: PayloadType.PCMU, 101: PayloadType.EVENT}
    pyvoip_digits: list[str] = []
    client = RTPClient(assoc, "127.0.0.1", 0, "127.0.0.1", 0, TransmitType.SENDRECV,
                       dtmf=pyvoip_digits.append)  # never started: no sockets
    receiver = Rfc4733Receiver()
    ours: list[str] = []
    seq, ts = 1, 90_000
    for digit in "90#":
        for i, (payload, event_ts) in enumerate(key_press(KEYS.index(digit), ts)):
            packet = rtp(payload, event_ts, seq, marker=i == 0)
            seq += 1
            message = RTPMessage(packet, assoc)
            assert message.payload_type is PayloadType.EVENT
            if (d := receiver.feed(message.payload, message.timestamp)) is not None:
                ours.append(d)
            client.parse_packet(packet)
        ts += 2400
    assert ours == pyvoip_digits == ["9", "0", "#"]


# ---------------------------------------------------------------------------------------------
# SIP INFO
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "body", "digit"), [
    ("application/dtmf-relay", b"Signal=1\r\nDuration=160\r\n", "1"),
    ("application/dtmf-relay", b"Signal=1\r\nDuration=160", "1"),
    ("application/dtmf-relay", b"signal= 5\nduration=250\n", "5"),
    ("application/dtmf-relay", b"Duration=160\r\nSIGNAL = *\r\n", "*"),
    ("application/dtmf-relay", b"Signal=#\r\nDuration=100\r\n", "#"),
    ("application/dtmf-relay", b"Signal=10\r\nDuration=100\r\n", "*"),
    ("application/dtmf-relay", b"Signal=11\r\nDuration=100\r\n", "#"),
    ("application/dtmf-relay", b"Signal=A\r\n", "A"),
    ("application/dtmf-relay", b"Signal=d\r\n", "D"),
    ("application/dtmf-relay", b"Signal=15\r\n", "D"),
    ("application/dtmf-relay", b"  Signal\t=\t0  \r\n", "0"),
    ("Application/DTMF-Relay; charset=utf-8", b"Signal=7\r\n", "7"),
    ("application/dtmf", b"1", "1"),
    ("application/dtmf", b"#\r\n", "#"),
    ("application/dtmf", b" 11 ", "#"),
    ("APPLICATION/DTMF", b"b", "B"),
])
def test_info_bodies(content_type: str, body: bytes, digit: str) -> None:
    assert digit_from_info(content_type, body) == digit


@pytest.mark.parametrize(("content_type", "body"), [
    (None, b"Signal=1\r\n"),
    ("application/sdp", b"Signal=1\r\n"),
    ("text/plain", b"1"),
    ("application/dtmf-relay", b""),
    ("application/dtmf-relay", b"Duration=160\r\n"),
    ("application/dtmf-relay", b"Signal=\r\n"),
    ("application/dtmf-relay", b"Signal=16\r\n"),  # hook flash: not a key
    ("application/dtmf-relay", b"Signal=12 34\r\n"),
    ("application/dtmf-relay", b"Signal=E\r\n"),
    ("application/dtmf-relay", b"Signals=1\r\n"),
    ("application/dtmf-relay", b"Signal=\xd9\xa1\r\n"),  # not an ASCII digit
    ("application/dtmf", b""),
    ("application/dtmf", b"1 2"),
    ("application/dtmf", b"17"),
    ("application/dtmf", b"\xff\xfe"),
])
def test_info_without_a_key(content_type: str | None, body: bytes) -> None:
    assert digit_from_info(content_type, body) is None


# ---------------------------------------------------------------------------------------------
# In-band
# ---------------------------------------------------------------------------------------------


def level(dbm0: float) -> float:
    return DBM0 * 10 ** (dbm0 / 20)


def sines(freqs: Sequence[tuple[float, float]], ms: float, rng: random.Random) -> list[float]:
    """Sum of sines (frequency, amplitude) with random phases, ``ms`` long."""
    n = round(ms * RATE / 1000)
    phases = [rng.uniform(0, 2 * math.pi) for _ in freqs]
    return [sum(a * math.sin(2 * math.pi * f * i / RATE + p) for (f, a), p in zip(
        freqs, phases, strict=True)) for i in range(n)]


def dtmf(key: str, ms: float, rng: random.Random, *, dbm0: float = -10.0,
         high_minus_low: float = 0.0, off: float = 0.0) -> list[float]:
    """A key's tone pair; ``high_minus_low`` in dB (twist), ``off`` a relative frequency error."""
    row = next(i for i, keys in enumerate(KEYPAD) if key in keys)
    column = KEYPAD[row].index(key)
    low = level(dbm0)
    high = low * 10 ** (high_minus_low / 20)
    return sines([(ROWS[row] * (1 + off), low), (COLUMNS[column] * (1 + off), high)], ms, rng)


def silence(ms: float) -> list[float]:
    return [0.0] * round(ms * RATE / 1000)


def with_noise(signal: Sequence[float], dbm0: float, rng: random.Random) -> list[float]:
    sigma = level(dbm0) / math.sqrt(2)  # white noise of this power
    return [v + rng.gauss(0, sigma) for v in signal]


def pcm(signal: Iterable[float]) -> array.array[int]:
    return array.array("h", (max(-32768, min(32767, round(v))) for v in signal))


def _ulaw_round_trip(sample: int) -> int:
    """G.711 mu-law encode + decode of one sample (ITU-T G.191 reference quantisation)."""
    pcm = sample >> 2  # 14-bit
    magnitude = min(-pcm if pcm < 0 else pcm, 8159) + 33  # biased
    exponent = magnitude.bit_length() - 6
    step = magnitude >> (exponent + 1) & 0x0F
    if exponent > 7:  # beyond the last segment: the largest code
        exponent, step = 7, 0x0F
    value = (((step << 1) + 33) << exponent) - 33
    return -(value << 2) if pcm < 0 else value << 2


def _alaw_round_trip(sample: int) -> int:
    """G.711 A-law encode + decode of one sample (ITU-T G.191 reference quantisation)."""
    pcm = sample >> 3  # 13-bit
    magnitude = pcm if pcm >= 0 else -pcm - 1
    segment = max(0, magnitude.bit_length() - 5)  # 13-bit input: at most 7
    step = (magnitude >> 1 if segment < 2 else magnitude >> segment) & 0x0F
    value = (step << 4) + 8 if segment == 0 else ((step << 4) + 0x108) << (segment - 1)
    return value if pcm >= 0 else -value


def via_ulaw(samples: Sequence[int]) -> Sequence[int]:
    """What a mu-law (PCMU) RTP stream delivers after decoding."""
    return g711.ulaw_to_pcm(g711.pcm_to_ulaw(samples))


def via_alaw(samples: Sequence[int]) -> Sequence[int]:
    """What an A-law (PCMA) RTP stream delivers after decoding."""
    return g711.alaw_to_pcm(g711.pcm_to_alaw(samples))


def test_own_g711_round_trip_matches_sipdial_g711() -> None:
    """The test's own quantisers agree with sipdial.media.g711 on every 16-bit value."""
    everything = array.array("h", range(-32768, 32768))
    assert list(g711.ulaw_to_pcm(g711.pcm_to_ulaw(everything))) == [
        _ulaw_round_trip(s) for s in everything]
    assert list(g711.alaw_to_pcm(g711.pcm_to_alaw(everything))) == [
        _alaw_round_trip(s) for s in everything]


def linear(samples: Sequence[int]) -> Sequence[int]:
    return samples


CODECS: dict[str, Callable[[Sequence[int]], Sequence[int]]] = {
    "linear": linear, "PCMU": via_ulaw, "PCMA": via_alaw,
}


def detect(samples: Sequence[int], chunk: int = FRAME) -> str:
    """All digits the detector reports, fed in ``chunk``-sample pieces (RTP frames)."""
    detector = InbandDetector()
    found = ""
    for start in range(0, len(samples), chunk):
        found += detector.feed(samples[start : start + chunk]) or ""
    return found


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("key", KEYS)
def test_inband_every_key_through_g711(key: str, codec: str) -> None:
    rng = random.Random(f"{key}{codec}")
    signal = silence(rng.uniform(0, 30)) + dtmf(key, 80, rng) + silence(100)
    assert detect(CODECS[codec](pcm(signal))) == key


@pytest.mark.parametrize("key", KEYS)
def test_inband_noise_twist_and_level_within_limits(key: str) -> None:
    """Noise at 20 dB below the tones, normal and reverse twist near Q.24's limits, quiet and
    loud keys, 1.5 % frequency error; through mu-law as a phone would send it."""
    rng = random.Random(key)
    cases = [
        dict(dbm0=-10.0, high_minus_low=0.0, noise=-30.0, off=0.0),
        dict(dbm0=-8.0, high_minus_low=-8.0, noise=-40.0, off=0.0),  # low group 8 dB louder
        dict(dbm0=-14.0, high_minus_low=4.0, noise=-40.0, off=0.0),  # high group 4 dB louder
        dict(dbm0=-8.0, high_minus_low=-7.0, noise=-28.0, off=0.015),
        dict(dbm0=-14.0, high_minus_low=3.0, noise=-34.0, off=-0.015),
        dict(dbm0=-28.0, high_minus_low=0.0, noise=-50.0, off=0.0),  # quiet line
        dict(dbm0=-3.0, high_minus_low=2.0, noise=-40.0, off=0.0),  # loud, pre-emphasised
        dict(dbm0=-10.0, high_minus_low=0.0, noise=-60.0, off=0.015),
        dict(dbm0=-10.0, high_minus_low=0.0, noise=-60.0, off=-0.015),
    ]
    for case in cases:
        tone = dtmf(key, 70, rng, dbm0=case["dbm0"], high_minus_low=case["high_minus_low"],
                    off=case["off"])
        signal = with_noise(silence(40) + tone + silence(80), case["noise"], rng)
        assert detect(via_ulaw(pcm(signal))) == key, case


def test_inband_sequence_with_gaps() -> None:
    rng = random.Random(121)
    signal = silence(50)
    for key in "121":
        signal += dtmf(key, 90, rng) + silence(60)
    assert detect(via_alaw(pcm(with_noise(signal, -35, rng)))) == "121"


def test_inband_same_key_after_a_40ms_pause_is_a_second_press() -> None:
    rng = random.Random(11)
    signal = dtmf("5", 60, rng) + silence(40) + dtmf("5", 60, rng) + silence(60)
    for start in range(0, 160, 20):  # every alignment to the detector's 10 ms blocks
        assert detect(pcm(silence(start / 8) + signal)) == "55", start


def test_inband_held_key_and_short_dropout_report_once() -> None:
    rng = random.Random(1)
    held = dtmf("8", 1500, rng)
    assert detect(pcm(held + silence(40))) == "8"
    interrupted = dtmf("8", 60, rng) + silence(10) + dtmf("8", 60, rng) + silence(60)
    for start in range(0, 160, 20):
        assert detect(pcm(silence(start / 8) + interrupted)) == "8", start


def test_inband_digits_adjacent_without_pause() -> None:
    rng = random.Random(2)
    assert detect(pcm(dtmf("3", 60, rng) + dtmf("6", 60, rng) + silence(40))) == "36"


@pytest.mark.parametrize("chunk", [1, 37, 80, 160, 240, 1000])
def test_inband_any_chunk_size(chunk: int) -> None:
    rng = random.Random(chunk)
    signal = pcm(silence(10) + dtmf("4", 60, rng) + silence(60) + dtmf("2", 60, rng)
                 + silence(60))
    assert detect(signal, chunk) == "42"


def test_inband_one_chunk_with_two_key_presses() -> None:
    rng = random.Random(3)
    detector = InbandDetector()
    signal = pcm(dtmf("7", 60, rng) + silence(60) + dtmf("9", 60, rng) + silence(40))
    assert detector.feed(signal) == "79"
    assert detector.feed([0] * 160) is None


def test_inband_minimum_duration() -> None:
    """>= 40 ms is always a digit, < 28 ms never, wherever the tone starts."""
    rng = random.Random(40)
    for start in range(0, 160, 8):
        lead = silence(start / 8)
        key = KEYS[start % 16]
        assert detect(pcm(lead + dtmf(key, 40, rng) + silence(60))) == key, start
        for ms in (15, 20, 25, 27):
            assert detect(pcm(lead + dtmf(key, ms, rng) + silence(60))) == "", (start, ms)


@pytest.mark.parametrize("key", KEYS)
def test_inband_out_of_limits_is_rejected(key: str) -> None:
    rng = random.Random(key)
    rejected = {
        "normal twist 11 dB": dtmf(key, 100, rng, high_minus_low=-11),
        "reverse twist 6.5 dB": dtmf(key, 100, rng, high_minus_low=6.5),
        "too quiet (-42 dBm0)": dtmf(key, 100, rng, dbm0=-42),
        "3.5 % low": dtmf(key, 100, rng, off=-0.035),
        "3.5 % high": dtmf(key, 100, rng, off=0.035),
        "noise at the tones' level": with_noise(dtmf(key, 100, rng, dbm0=-13), -10, rng),
        "a second row 4 dB down": mix(dtmf(key, 100, rng), second_tone(key, 0, -14, rng)),
        "a second column 4 dB down": mix(dtmf(key, 100, rng), second_tone(key, 1, -14, rng)),
    }
    for what, signal in rejected.items():
        assert detect(pcm(signal + silence(40))) == "", what


def mix(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [x + y for x, y in zip(a, b, strict=True)]


def second_tone(key: str, group: int, dbm0: float, rng: random.Random) -> list[float]:
    """100 ms of the neighbouring row (group 0) or column (group 1) of ``key``'s tone."""
    row = next(i for i, keys in enumerate(KEYPAD) if key in keys)
    column = KEYPAD[row].index(key)
    freq = ROWS[(row + 1) % 4] if group == 0 else COLUMNS[(column + 1) % 4]
    return sines([(freq, level(dbm0))], 100, rng)


@pytest.mark.parametrize("group", ["row", "column"])
def test_inband_one_tone_off_frequency_is_rejected(group: str) -> None:
    """Q.24: tones 3.5 % off must not operate the receiver, even if the other tone is exact
    (a harmonic near one DTMF frequency plus an exact other one)."""
    rng = random.Random(group)
    for key in KEYS:
        for off in (-0.035, 0.035, -0.035, 0.035, -0.04, 0.04):
            signal = silence(rng.uniform(0, 20)) + one_off(key, group == "column", off, rng)
            assert detect(pcm(signal + silence(40))) == "", (key, off)


def one_off(key: str, column: bool, off: float, rng: random.Random) -> list[float]:
    """100 ms of ``key`` with its row or column tone ``off`` (relative) frequency."""
    row = next(i for i, keys in enumerate(KEYPAD) if key in keys)
    low = ROWS[row] * (1 + (0 if column else off))
    high = COLUMNS[KEYPAD[row].index(key)] * (1 + (off if column else 0))
    return sines([(low, level(-10)), (high, level(-10))], 100, rng)


def harmonics(f0: float, levels_db: Sequence[float], ms: float,
              rng: random.Random) -> list[float]:
    return sines([(f0 * (h + 1), level(db)) for h, db in enumerate(levels_db)], ms, rng)


def cadence(on_ms: float, off_ms: float, repeats: int, freqs: Sequence[float],
            rng: random.Random, dbm0: float = -10) -> list[float]:
    tone: list[float] = []
    for _ in range(repeats):
        tone += sines([(f, level(dbm0)) for f in freqs], on_ms, rng) + silence(off_ms)
    return tone


def speech_like(seconds: float, rng: random.Random) -> list[float]:
    """Vowels (glottal pulse train through three formant resonators, drifting pitch) and
    fricatives (filtered noise), 60-300 ms each: a stand-in for talk-off testing."""
    vowels = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
              (570, 840, 2410), (660, 1720, 2410), (440, 1020, 2240), (490, 1350, 1690),
              (700, 1220, 2600), (400, 1600, 2500)]
    out: list[float] = []
    phase = 0.0
    memory = [[0.0, 0.0] for _ in range(3)]
    while len(out) < seconds * RATE:
        n = int(rng.uniform(0.06, 0.3) * RATE)
        voiced = rng.random() < 0.8
        formants = rng.choice(vowels)
        f0, glide = rng.uniform(85, 240), rng.uniform(-0.3, 0.3)
        gain = level(rng.uniform(-25, -5))
        for i in range(n):
            if voiced:
                f = f0 * (1 + glide * i / n)
                phase += f / RATE
                x = 1.0 if phase >= 1.0 else 0.0
                phase %= 1.0
            else:
                x = rng.gauss(0, 0.3)
            y = 0.0
            for k, formant in enumerate(formants):
                r = math.exp(-math.pi * (60 + 40 * k) / RATE)
                c = 2 * r * math.cos(2 * math.pi * formant / RATE)
                m = memory[k]
                v = x + c * m[0] - r * r * m[1]
                m[1], m[0] = m[0], v
                y += v / (k + 1)
            out.append(y)
        # scale the segment to its level
        segment = out[-n:]
        rms = math.sqrt(sum(v * v for v in segment) / n) or 1.0
        out[-n:] = [v * gain / math.sqrt(2) / rms for v in segment]
    return out


def test_inband_talk_off() -> None:
    """Speech-like audio, call-progress tones, single tones and noise produce no digit."""
    rng = random.Random(2024)
    single = [sines([(f, level(-8))], 300, rng) + silence(50) for f in ROWS + COLUMNS]
    signals = {
        "speech-like": speech_like(8, rng),
        "ringback 425 Hz": cadence(1000, 400, 2, [425], rng),
        "busy 425 Hz": cadence(480, 480, 3, [425], rng, dbm0=-3),
        "US dial tone 350+440": cadence(1000, 0, 1, [350, 440], rng),
        "US ringback 440+480": cadence(1000, 0, 1, [440, 480], rng),
        "SIT 950/1400/1800": cadence(330, 30, 3, [950], rng) + cadence(330, 30, 1, [1400], rng)
        + cadence(330, 30, 1, [1800], rng),
        "1004 Hz test tone": cadence(500, 0, 1, [1004], rng),
        "single DTMF tones": [v for s in single for v in s],
        "row pair 697+770": cadence(200, 0, 1, [697, 770], rng),
        # a row tone with its 2nd harmonic near a column (1394 Hz is 4.3 % off 1336 Hz)
        "697 Hz + harmonics": harmonics(697, [-10, -16, -20], 300, rng),
        "770 Hz + 2nd harmonic": harmonics(770, [-10, -13], 300, rng),
        "852 Hz + 2nd harmonic": harmonics(852, [-12, -10], 300, rng),
        "hum 100 Hz + harmonics": harmonics(100, [-10 - 2 * h for h in range(20)], 500, rng),
        # harmonics 4 and 7 of 174.25 Hz are 697 Hz and 1220 Hz (0.9 % off 1209 Hz)
        "voiced 174 Hz": harmonics(174.25, [-14, -16, -14, -10, -16, -18, -10, -20], 500, rng),
        "white noise": with_noise(silence(2000), -10, rng),
        "chirp": [level(-10) * math.sin(2 * math.pi * (300 * t + 1550 * t * t))
                  for t in (i / RATE for i in range(2 * RATE))],
    }
    for what, signal in signals.items():
        assert detect(via_ulaw(pcm(signal))) == "", what


PROMPTS = sorted((Path(__file__).parents[2] / "sipdial" / "media" / "prompts").glob("*/*.wav"))


@pytest.mark.parametrize("gain", [0.5, 1.0, 4.0])
def test_inband_talk_off_on_recorded_prompts(gain: float) -> None:
    assert PROMPTS, "the shipped prompt recordings are missing"
    """sipdial's own prompts (synthetic speech, some of it saying digits) are no key press,
    at any level - the phone may echo them back while we listen."""
    for path in PROMPTS:
        with wave.open(str(path)) as w:
            assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (RATE, 2, 1)
            samples = array.array("h", w.readframes(w.getnframes()))
        assert detect(pcm(v * gain for v in samples)) == "", path.name


@given(st.lists(st.integers(min_value=-32768, max_value=32767), max_size=1200),
       st.integers(min_value=1, max_value=400))
def test_inband_never_raises_and_reports_only_digits(samples: list[int], chunk: int) -> None:
    found = detect(samples, chunk)
    assert set(found) <= set(KEYS)


def test_inband_silence_and_empty_input() -> None:
    detector = InbandDetector()
    assert detector.feed([]) is None
    assert detector.feed([0] * 1600) is None
    assert detector.feed(array.array("h", [32767, -32768] * 800)) is None  # full-scale 4 kHz
