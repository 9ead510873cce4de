"""RTP sender: header fields (checked with aiortc's parser), increments, wrap, marker, SSRC."""

from __future__ import annotations

import pytest
from aiortc.rtp import RtpPacket

from sipdial.media.rtp import PCMA, PCMU, TELEPHONE_EVENT, RtpSender, parse_rtp

PAYLOAD = bytes(range(160))


def test_header_fields_parse_back_with_aiortc() -> None:
    sender = RtpSender(PCMA, ssrc=0xDEADBEEF, seq=1234, timestamp=987654321)
    data = sender.packet(PAYLOAD)
    assert len(data) == 12 + 160 and data[0] == 0x80  # V=2, no padding/extension/CSRC
    packet = RtpPacket.parse(data)
    assert packet.version == 2
    assert packet.payload_type == PCMA
    assert packet.sequence_number == 1234
    assert packet.timestamp == 987654321
    assert packet.ssrc == 0xDEADBEEF
    assert packet.marker == 1  # a new sender starts a talkspurt
    assert packet.payload == PAYLOAD
    assert packet.csrc == [] and packet.padding_size == 0


def test_sequence_and_timestamp_advance_per_packet() -> None:
    sender = RtpSender(PCMU, ssrc=1, seq=100, timestamp=5000)
    packets = [parse_rtp(sender.packet(PAYLOAD)) for _ in range(5)]
    assert [p.sequence_number for p in packets] == [100, 101, 102, 103, 104]
    assert [p.timestamp for p in packets] == [5000, 5160, 5320, 5480, 5640]
    assert (sender.seq, sender.timestamp) == (105, 5800)
    parse_rtp(sender.packet(b"\x00" * 80, samples=80))
    assert sender.timestamp == 5880


def test_sequence_wraps_at_16_bits_and_timestamp_at_32() -> None:
    sender = RtpSender(PCMU, ssrc=1, seq=0xFFFE, timestamp=0xFFFFFFFF - 200)
    packets = [parse_rtp(sender.packet(PAYLOAD)) for _ in range(3)]
    assert [p.sequence_number for p in packets] == [0xFFFE, 0xFFFF, 0]
    assert [p.timestamp for p in packets] == [0xFFFFFFFF - 200, 0xFFFFFFFF - 40, 119]


def test_marker_only_on_the_first_packet_of_a_talkspurt() -> None:
    sender = RtpSender(PCMA)
    markers = [parse_rtp(sender.packet(PAYLOAD)).marker for _ in range(4)]
    sender.new_talkspurt()
    markers += [parse_rtp(sender.packet(PAYLOAD)).marker for _ in range(3)]
    markers.append(parse_rtp(sender.packet(PAYLOAD, marker=True)).marker)
    markers.append(parse_rtp(sender.packet(PAYLOAD)).marker)
    assert markers == [1, 0, 0, 0, 1, 0, 0, 1, 0]


def test_ssrc_sequence_and_timestamp_are_random_per_sender() -> None:
    senders = [RtpSender(PCMU) for _ in range(64)]
    # 64 random 32-bit values collide with probability ~5e-7
    assert len({s.ssrc for s in senders}) == 64
    assert len({s.timestamp for s in senders}) == 64
    assert len({s.seq for s in senders}) > 32  # 16 bits: a few collisions are possible
    assert all(0 <= s.ssrc < 2**32 and 0 <= s.seq < 2**16 for s in senders)


def test_telephone_event_payload_type() -> None:
    packet = parse_rtp(RtpSender(TELEPHONE_EVENT).packet(b"\x01\x8a\x03\x20", samples=0))
    assert packet.payload_type == 101 and packet.payload == b"\x01\x8a\x03\x20"


@pytest.mark.parametrize("junk", [
    b"",
    b"\x80\x00\x00",  # shorter than the fixed header
    b"\x00" * 12,  # version 0
    b"\x40" + b"\x00" * 11,  # version 1
    b"\x81\xc8\x00\x0c" + b"\x00" * 48,  # RTCP sender report (RFC 5761 mux)
    b"\x8f\x00" + b"\x00" * 20,  # CSRC count 15, truncated
])
def test_parse_rejects_junk(junk: bytes) -> None:
    with pytest.raises(ValueError):
        parse_rtp(junk)


def test_payload_type_out_of_range() -> None:
    with pytest.raises(ValueError):
        RtpSender(128)
