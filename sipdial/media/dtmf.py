"""DTMF reception, sans-IO: RFC 4733 telephone-events, SIP INFO bodies and in-band tones.

Three independent receivers, one per way a phone may send a key press; none of them does I/O
or reads a clock. Each returns the digit(s) a key press produced, as characters of
``"0123456789*#ABCD"``:

* :class:`Rfc4733Receiver` - the RTP payload of RFC 4733 (telephone-event), fed packet by packet;
* :func:`digit_from_info` - the body of a SIP INFO request (``application/dtmf-relay``,
  ``application/dtmf``);
* :class:`InbandDetector` - a Goertzel filter bank over decoded 8 kHz PCM, for phones that send
  neither.

A call returns ``None`` when nothing completed, normally one digit, and in the rare case that
one input completed two key presses (a lost end packet followed by a new event's end, or a PCM
chunk much longer than the 20 ms frames RTP carries) the digits in order, concatenated.
"""

from __future__ import annotations

import cmath
import math
import operator
from collections import deque
from collections.abc import Sequence

__all__ = ["InbandDetector", "Rfc4733Receiver", "digit_from_info"]

# RFC 4733 DTMF named events 0-15 (0-9, *, #, A-D).
_EVENT_DIGITS = "0123456789*#ABCD"


# --------------------------------------------------------------------------------------------
# RFC 4733 telephone-event
# --------------------------------------------------------------------------------------------

# RFC 4733 §2.3: the payload of one event report.
#
#     0                   1                   2                   3
#     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#    |     event     |E|R| volume    |          duration             |
#    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
_EVENT_REPORT_SIZE = 4
_END_BIT = 0x80

# Ended events are remembered to discard the redundant end reports (RFC 4733 has the final
# packet sent three times) and late packets that arrive after the next event began.
_REMEMBERED_EVENTS = 16

# RFC 4733 long-duration events: an event longer than the 16-bit duration field (8.19 s at
# 8 kHz) is sent as segments; each new segment's timestamp is the previous one + 0xFFFF and
# the previous segment never ends. A segment within one second of saturation counts as one.
_MAX_DURATION = 0xFFFF
_SEGMENT_SLACK = 8000


class Rfc4733Receiver:
    """RFC 4733 telephone-event: one digit per event, on the first packet with the E bit;
    retransmitted end packets (same RTP timestamp) are ignored.

    ``feed`` takes the RTP payload and the RTP timestamp of each packet of the negotiated
    telephone-event payload type. The RTP timestamp identifies the event (all packets of one
    event carry its start time), so two presses of the same key are two events.

    Lost end packets: a packet of a NEW event while the previous one never ended
    reports the previous digit first: the sender moved on, so that key press is over. Its own
    end packets, should they arrive late, are then ignored as duplicates. :meth:`flush` reports
    an event that never ended when the stream stops (the caller decides when, e.g. on a timer or
    when the call leaves the state that listens for digits).

    Events 16 and above (flash, tones of RFC 4734) are not digits and are ignored; a payload
    shorter than one event report is ignored. Only the first event report of a payload is read:
    phones do not pack several DTMF events into one packet. A key held past 8.19 s (sent as
    segments) is one digit.
    """

    __slots__ = ("_ended", "_open_duration", "_open_event", "_open_timestamp")

    def __init__(self) -> None:
        self._open_timestamp: int | None = None  # the event that started and has not ended
        self._open_event = 0
        self._open_duration = 0  # longest duration reported for it so far
        self._ended: deque[int] = deque(maxlen=_REMEMBERED_EVENTS)  # their timestamps

    def feed(self, payload: bytes, timestamp: int) -> str | None:
        """The digit(s) this packet completes, or None (continuation, duplicate, junk)."""
        if len(payload) < _EVENT_REPORT_SIZE:
            return None
        event = payload[0]
        end = bool(payload[1] & _END_BIT)
        duration = (payload[2] << 8) | payload[3]
        timestamp &= 0xFFFFFFFF
        if timestamp in self._ended:
            return None  # a redundant end report, or a late packet of an ended event
        reported = ""
        if self._open_timestamp is not None and timestamp != self._open_timestamp:
            if self._next_segment(self._open_timestamp, event, timestamp):
                self._ended.append(self._open_timestamp)  # same key press continues: no digit
                self._open_timestamp = None
            else:
                reported = self._close_open_event()  # its end packets were lost
        if end:
            self._open_timestamp = None
            self._ended.append(timestamp)
            return (reported + _digit(event)) or None
        if self._open_timestamp is None:
            self._open_timestamp, self._open_event, self._open_duration = timestamp, event, 0
        self._open_duration = max(self._open_duration, duration)
        return reported or None

    def flush(self) -> str | None:
        """Report the open event (one whose end packets never came) and forget it."""
        return self._close_open_event() or None

    def _close_open_event(self) -> str:
        if self._open_timestamp is None:
            return ""
        self._ended.append(self._open_timestamp)
        self._open_timestamp = None
        return _digit(self._open_event)

    def _next_segment(self, open_timestamp: int, event: int, timestamp: int) -> bool:
        """Is this packet the next segment of the open, saturated (long-duration) event?"""
        if event != self._open_event or self._open_duration < _MAX_DURATION - _SEGMENT_SLACK:
            return False
        advance = (timestamp - open_timestamp) & 0xFFFFFFFF
        return abs(advance - _MAX_DURATION) <= _SEGMENT_SLACK


def _digit(event: int) -> str:
    return _EVENT_DIGITS[event] if event < len(_EVENT_DIGITS) else ""


# --------------------------------------------------------------------------------------------
# SIP INFO
# --------------------------------------------------------------------------------------------

_DTMF_RELAY = "application/dtmf-relay"  # Cisco/SIP INFO de-facto format: "Signal=5\r\nDuration=160"
_DTMF = "application/dtmf"  # draft-kaplan / many PBXs: the body is the key itself
_MAX_INFO_BODY = 1024  # a DTMF body is a few dozen bytes; do not parse more


def digit_from_info(content_type: str | None, body: bytes) -> str | None:
    """The key a SIP INFO request carries, or None if it carries none.

    ``application/dtmf-relay``: the ``Signal`` line (key case-insensitive, blanks around ``=``
    tolerated, any line ending); ``application/dtmf``: the whole body. The value may be the key
    (``0``-``9``, ``*``, ``#``, ``A``-``D`` in either case) or its RFC 4733 event number
    (``10`` = ``*``, ``11`` = ``#``, ``12``-``15`` = ``A``-``D``). Media-type parameters are
    ignored; any other content type, or a body without a key, gives None.
    """
    if content_type is None:
        return None
    media_type = content_type.split(";", 1)[0].strip().lower()
    text = body[:_MAX_INFO_BODY].decode("latin-1")
    if media_type == _DTMF:
        return _signal(text)
    if media_type != _DTMF_RELAY:
        return None
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip().lower() == "signal":
            return _signal(value)
    return None


def _signal(value: str) -> str | None:
    value = value.strip().upper()
    if len(value) == 1 and value in _EVENT_DIGITS:
        return value
    if value.isdigit() and value.isascii() and int(value) < len(_EVENT_DIGITS):
        return _EVENT_DIGITS[int(value)]
    return None


# --------------------------------------------------------------------------------------------
# In-band DTMF
# --------------------------------------------------------------------------------------------

_RATE = 8000
_ROWS = (697.0, 770.0, 852.0, 941.0)  # ITU-T Q.23 low group
_COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)  # high group
_KEYPAD = ("123A", "456B", "789C", "*0#D")  # _KEYPAD[row][column]

# The filters run over 10 ms half-blocks; a decision is made every 10 ms over the last two
# (a 20 ms window, 50 % overlap). A window that is one 20 ms frame gives 50 Hz resolution,
# enough for the 70 Hz spacing of the rows; the overlap measures duration to 10 ms.
_HALF = 80
_WINDOW = 2 * _HALF

# Levels are mean powers of 16-bit linear PCM. 0 dBm0 is a sine 3.14 dB below the G.711
# overload level (A-law; 3.17 dB for mu-law), i.e. an amplitude of about 22,700.
_DBM0 = (32768 * 10 ** (-3.14 / 20)) ** 2 / 2


def _db(db: float) -> float:
    return float(10 ** (db / 10))


_MIN_TONE = _DBM0 * _db(-36)  # each tone at least -36 dBm0 (Q.24: operate down to ~ -25 dBm0)
# Twist (Q.24, AT&T): accept the low-group tone up to 8 dB louder than the high-group one
# ("normal"), the high-group tone up to 4 dB louder ("reverse"). The estimates move by about
# 1 dB (leakage between the tones, 1.5 % frequency error), hence the limits are set 1-1.5 dB
# wider; measured: 8 dB / 4 dB always accepted, 10 dB / 5.5 dB never.
_NORMAL_TWIST = _db(9.5)
_REVERSE_TWIST = _db(5)
_RELATIVE_PEAK = _db(8)  # the winning row (column) 8 dB above every other row (column)
# Both tones together hold at least this share of the window's energy (-2 dB, 63 %):
# speech, music and noise spread their energy, a key press puts nearly all of it into two
# frequencies. -2 dB still passes tones 1.5 % off frequency with noise at 15 dB SNR.
_TONE_TO_TOTAL = _db(-2)
# The two half-blocks of a window within 4 dB of each other: a window that a tone fills less
# than ~70 % (a tone starting or ending, speech) does not count. This gate, not the spectrum,
# sets the duration limits below.
_BALANCE = _db(-4)
# Frequency check: the winning column's (row's) power over the 20 ms window relative to its
# mean power over the two 10 ms halves. 1.5 % off frequency costs < 3 dB (column) and
# < 1.2 dB (row), 3.5 % off > 10 dB and > 3 dB.
_COLUMN_ON_FREQUENCY = _db(-6)
_ROW_ON_FREQUENCY = _db(-2)
# A half-block this quiet cannot be half of a detectable window: skip its filters.
_QUIET = _MIN_TONE / 4

# A digit is reported once it is seen in 3 consecutive windows: tones of 40 ms and more are
# always detected, tones shorter than 28 ms never (10 ms half-blocks; in between it depends
# on where the tone falls). The same digit is reported again only after 4 windows without
# it: a pause of 40 ms or more always separates two presses, a dropout of 10 ms inside one
# tone never does.
_HITS_TO_REPORT = 3
_MISSES_TO_RELEASE = 4


def _filters(frequency: float) -> tuple[float, complex, complex]:
    omega = 2 * math.pi * frequency / _RATE
    return 2 * math.cos(omega), cmath.exp(-1j * omega), cmath.exp(-1j * omega * _HALF)


_FILTERS = tuple(_filters(f) for f in _ROWS + _COLUMNS)
_COEFFICIENTS = tuple(f[0] for f in _FILTERS)  # Goertzel 2 cos(w)
_PHASE_1 = tuple(f[1] for f in _FILTERS)  # e^-jw: y = s[N-1] - e^-jw s[N-2]
_PHASE_HALF = tuple(f[2] for f in _FILTERS)  # e^-jwN: aligns the second half-block to the first
_SILENT = (0j,) * 8
_POWER_SCALE = 2 / _WINDOW**2  # |X|^2 -> mean power of the sine (A^2 / 2 over a full window)
_HALF_POWER_SCALE = 1 / _HALF**2  # the mean of two half-blocks' |Y|^2 -> the same


class InbandDetector:
    """Goertzel DTMF detection on 8 kHz PCM for phones that send neither (ITU-T Q.24 limits:
    twist, min duration ~40 ms, one digit per key press).

    ``feed`` takes signed 16-bit samples in chunks of any size (normally one decoded 20 ms RTP
    frame) and returns the digit whose key press was recognised in them, or None. A digit is
    reported once, about 40 ms after the key went down; holding the key reports nothing more.

    A 20 ms window, evaluated every 10 ms, shows a digit when: each tone >= -36 dBm0; twist
    <= 8 dB with the low group louder, <= 4 dB with the high group louder (the Q.24/AT&T
    limits, in spandsp's and Asterisk's sense; the thresholds leave 1-1.5 dB for estimation
    error); the strongest row and column 8 dB above the other rows and columns; the two
    tones hold >= 63 % (-2 dB) of the window's energy; both tones within ~2.5 % of their
    nominal frequency (1.5 % accepted, 3.5 % rejected); and the window's two halves within
    4 dB of each other. Three such windows in a row make a key press (>= 40 ms always,
    < 28 ms never).

    The filters are Goertzel resonators with precomputed coefficients, run over 10 ms
    half-blocks in one unrolled pure-Python loop; a window combines two half-blocks'
    complex outputs, so the 50 % overlap costs no extra filtering. Quiet half-blocks skip
    the filters. The state is per stream: one detector per call leg.
    """

    __slots__ = (
        "_candidate", "_held", "_misses", "_previous", "_previous_energy", "_rest", "_run"
    )

    def __init__(self) -> None:
        self._rest: list[float] = []  # samples not yet filling a half-block
        self._previous: Sequence[complex] = _SILENT  # filter outputs of the last half-block
        self._previous_energy = 0.0  # and its energy
        self._candidate = ""  # the digit the last windows showed, "" for none
        self._run = 0  # consecutive windows showing it
        self._held = ""  # the digit reported and not yet released
        self._misses = 0  # consecutive windows without the held digit

    def feed(self, samples: Sequence[int]) -> str | None:
        """The digit(s) recognised in these samples (normally at most one), or None."""
        data = list(map(float, samples))
        if self._rest:
            data = self._rest + data
        usable = len(data) - len(data) % _HALF
        self._rest = data[usable:]
        reported = ""
        for start in range(0, usable, _HALF):
            digit = self._window(data[start : start + _HALF])
            if digit:
                reported += digit
        return reported or None

    def _window(self, half: list[float]) -> str:
        """Run the filters over one half-block; decide on the window it closes."""
        energy: float = sum(map(operator.mul, half, half))
        outputs = _SILENT if energy < _QUIET * _HALF else _goertzel(half)
        digit = _classify(self._previous, outputs, self._previous_energy, energy)
        self._previous, self._previous_energy = outputs, energy
        return self._track(digit)

    def _track(self, digit: str) -> str:
        """Debounce the per-window decisions into one report per key press."""
        if digit and digit == self._candidate:
            self._run += 1
        else:
            self._candidate, self._run = digit, 1 if digit else 0
        if digit == self._held:
            self._misses = 0
        elif self._held:
            self._misses += 1
            if self._misses >= _MISSES_TO_RELEASE:
                self._held = ""
        if digit and digit != self._held and self._run >= _HITS_TO_REPORT:
            self._held, self._misses = digit, 0
            return digit
        return ""


def _goertzel(half: list[float]) -> tuple[complex, ...]:
    """The eight filter outputs y = s[N-1] - e^-jw s[N-2] over one half-block.

    Unrolled by hand, two samples per turn (the roles of s[n-1] and s[n-2] swap), floats
    only: this loop is most of the detector's cost, ~0.03 us per sample and filter in
    CPython 3.11, ~40 us per 20 ms frame for all eight.
    """
    c0, c1, c2, c3, c4, c5, c6, c7 = _COEFFICIENTS
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0  # s[n-1]
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = 0.0  # s[n-2]
    for x, y in zip(half[0::2], half[1::2], strict=True):
        b0 = x + c0 * a0 - b0
        a0 = y + c0 * b0 - a0
        b1 = x + c1 * a1 - b1
        a1 = y + c1 * b1 - a1
        b2 = x + c2 * a2 - b2
        a2 = y + c2 * b2 - a2
        b3 = x + c3 * a3 - b3
        a3 = y + c3 * b3 - a3
        b4 = x + c4 * a4 - b4
        a4 = y + c4 * b4 - a4
        b5 = x + c5 * a5 - b5
        a5 = y + c5 * b5 - a5
        b6 = x + c6 * a6 - b6
        a6 = y + c6 * b6 - a6
        b7 = x + c7 * a7 - b7
        a7 = y + c7 * b7 - a7
    p = _PHASE_1
    return (
        a0 - p[0] * b0, a1 - p[1] * b1, a2 - p[2] * b2, a3 - p[3] * b3,
        a4 - p[4] * b4, a5 - p[5] * b5, a6 - p[6] * b6, a7 - p[7] * b7,
    )


def _classify(
    first: Sequence[complex], second: Sequence[complex], energy0: float, energy1: float
) -> str:
    """The digit one 20 ms window (two half-blocks' filter outputs and energies) shows, or ""."""
    total = (energy0 + energy1) / _WINDOW
    if total < 2 * _MIN_TONE:
        return ""  # too quiet to hold two tones: silence, the common case
    if min(energy0, energy1) < _BALANCE * max(energy0, energy1):
        return ""  # the level changes within the window: a tone starts or ends, or speech
    # Tone powers measured coherently over the 20 ms window: 50 Hz resolution, for the rows
    # (73-89 Hz apart) and for telling the winning column from its neighbours.
    powers = [
        abs(y0 + w * y1) ** 2 * _POWER_SCALE
        for y0, y1, w in zip(first, second, _PHASE_HALF, strict=True)
    ]
    rows, columns = powers[:4], powers[4:]
    row = max(range(4), key=rows.__getitem__)
    column = max(range(4), key=columns.__getitem__)
    low = rows[row]
    # The column tone's level is the mean of its power over each 10 ms half (100 Hz
    # resolution): a high tone 1.5 % off (25 Hz at 1633 Hz) counts in full.
    y0, y1 = first[4 + column], second[4 + column]
    high = (abs(y0) ** 2 + abs(y1) ** 2) * _HALF_POWER_SCALE
    if low < _MIN_TONE or high < _MIN_TONE:
        return ""
    if low > high * _NORMAL_TWIST or high > low * _REVERSE_TWIST:
        return ""
    if low + high < total * _TONE_TO_TOTAL:
        return ""
    for i in range(4):
        if i != row and rows[i] * _RELATIVE_PEAK > low:
            return ""
        if i != column and columns[i] * _RELATIVE_PEAK > columns[column]:
            return ""
    # Frequency check: a tone on its filter's frequency has the same power measured over
    # the whole window as over its halves; one that is off loses more over the window (the
    # narrower filter). Rejects a row or column tone 3.5 % off even when the other is exact.
    if columns[column] < high * _COLUMN_ON_FREQUENCY:
        return ""
    y0, y1 = first[row], second[row]
    if (abs(y0) ** 2 + abs(y1) ** 2) * _HALF_POWER_SCALE * _ROW_ON_FREQUENCY > low:
        return ""
    return _KEYPAD[row][column]
