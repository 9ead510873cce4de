"""MediaManager over real UDP sockets on 127.0.0.1, with its own Twisted reactor.

Every test gets a fresh (not installed) reactor and drives it with ``iterate()``: each wait
returns as soon as the awaited datagram or callback arrives, and is bounded by ``WAIT``.
The "phone" is a DatagramProtocol on the same reactor.
"""

from __future__ import annotations

import errno
import math
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from sipdial.media.g711 import pcm_to_ulaw
from sipdial.media.ports import MediaPortsExhausted
from sipdial.media.prompt import PromptLibrary
from sipdial.media.rtp import PCMA, PCMU, TELEPHONE_EVENT, RtpSender, parse_rtp
from sipdial.media.transport import MediaManager
from tests.integration.reactor_helpers import Phone, pump

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def prompts() -> PromptLibrary:
    return PromptLibrary.load()






@pytest.fixture
def manager(reactor: Any, prompts: PromptLibrary) -> Iterator[MediaManager]:
    m = MediaManager(reactor, HOST, 0, 0, prompts)
    yield m
    m.stop()


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((HOST, port))
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE
            return True
    return False


def test_open_binds_a_port_and_close_releases_it(reactor: Any, manager: MediaManager) -> None:
    digits: list[str] = []
    host, port = manager.open("a", lambda key, digit, how: digits.append(digit))
    _, other = manager.open("b", lambda key, digit, how: None)
    assert host == HOST and port > 0 and other != port
    assert port_in_use(port) and port_in_use(other)
    with pytest.raises(ValueError):
        manager.open("a", lambda key, digit, how: None)
    manager.close("a")
    manager.close("a")  # twice is harmless
    assert manager.calls == 1
    pump(reactor, lambda: not port_in_use(port), "the port to close")  # at the next iteration


def free_even_range(count: int) -> int:
    """An even port with ``count`` free even ports from it (probed, then released)."""
    for base in range(41000, 60000, 2 * count + 10):
        socks = []
        try:
            for i in range(count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((HOST, base + 2 * i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port range")


def test_port_range_uses_even_ports_skips_busy_ones_and_runs_out(
        reactor: Any, prompts: PromptLibrary) -> None:
    base = free_even_range(3)
    manager = MediaManager(reactor, HOST, base - 1, base + 5, prompts)  # odd min: rounds up
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind((HOST, base + 2))  # someone else has the middle one
        ports = [manager.open(k, lambda key, digit, how: None)[1] for k in ("a", "b")]
        assert ports == [base, base + 4]
        with pytest.raises(MediaPortsExhausted):
            manager.open("c", lambda key, digit, how: None)
    manager.close("a")
    pump(reactor, lambda: not port_in_use(base), "the port to close")
    assert manager.open("c", lambda key, digit, how: None)[1] == base  # freed, reused
    manager.stop()
    with pytest.raises(ValueError):
        MediaManager(reactor, HOST, 10000, 0, prompts)


@pytest.mark.parametrize("pt", [PCMU, PCMA])
def test_play_sends_rtp_from_the_call_port(reactor: Any, manager: MediaManager,
                                           phone: tuple[Phone, int], pt: int) -> None:
    ua, ua_port = phone
    _, our_port = manager.open("call", lambda key, digit, how: None)
    manager.set_remote("call", HOST, ua_port, pt, TELEPHONE_EVENT)
    frames = manager.prompts.confirm_prompt("+49301", "en", pt)[:12]
    done: list[tuple[object, float]] = []
    seen_at_done: list[int] = []

    def on_done(key: object, now: float) -> None:
        done.append((key, now))
        seen_at_done.append(len(ua.received))

    manager.play("call", frames, on_done=on_done)
    pump(reactor, lambda: bool(done) and len(ua.received) >= len(frames), "the prompt")
    packets = [parse_rtp(d) for d, _ in ua.received]
    assert {addr for _, addr in ua.received} == {(HOST, our_port)}  # symmetric RTP
    assert [p.payload for p in packets] == list(frames)
    assert {p.payload_type for p in packets} == {pt}
    assert [p.marker for p in packets] == [1] + [0] * 11
    seq0, ts0 = packets[0].sequence_number, packets[0].timestamp
    assert [p.sequence_number for p in packets] == [(seq0 + i) & 0xFFFF for i in range(12)]
    assert [p.timestamp for p in packets] == [(ts0 + 160 * i) & 0xFFFFFFFF for i in range(12)]
    assert done[0][0] == "call" and len(done) == 1
    assert manager.player.active == 0 and not reactor.getDelayedCalls()  # the tick stopped


def test_many_calls_share_one_timer(reactor: Any, manager: MediaManager,
                                    phone: tuple[Phone, int]) -> None:
    ua, ua_port = phone
    ringback = manager.prompts.tone("ringback", PCMA)
    for k in range(20):
        manager.open(k, lambda key, digit, how: None)
        manager.set_remote(k, HOST, ua_port, PCMA, None)
        manager.play(k, ringback, loop=True)
    assert len(reactor.getDelayedCalls()) == 1  # one LoopingCall, no per-call timers
    pump(reactor, lambda: len(ua.received) >= 60, "three ticks of 20 streams")
    assert len({parse_rtp(d).ssrc for d, _ in ua.received}) == 20
    for k in range(20):
        manager.stop_playing(k)
    pump(reactor, lambda: not reactor.getDelayedCalls(), "the tick to stop")


def test_close_while_playing(reactor: Any, manager: MediaManager,
                             phone: tuple[Phone, int]) -> None:
    ua, ua_port = phone
    manager.open("a", lambda key, digit, how: None)
    manager.set_remote("a", HOST, ua_port, PCMU, None)
    manager.play("a", manager.prompts.tone("busy", PCMU), loop=True)
    pump(reactor, lambda: len(ua.received) >= 2, "busy tone")
    manager.close("a")
    pump(reactor, lambda: not reactor.getDelayedCalls(), "the tick to stop")
    with pytest.raises(KeyError):
        manager.play("a", manager.prompts.tone("busy", PCMU))


def event_packets(sender: RtpSender, event: int) -> list[bytes]:
    """One RFC 4733 key press: 3 packets while pressed, then the end packet 3 times."""
    packets = []
    start = sender.timestamp
    for i, duration in enumerate((160, 320, 480, 640, 640, 640)):
        end = 0x80 if i >= 3 else 0
        payload = struct.pack("!BBH", event, end | 10, duration)
        sender.timestamp = start
        packets.append(sender.packet(payload, samples=0))
    sender.timestamp = start + 800
    sender.new_talkspurt()
    return packets


def test_rfc4733_events_produce_one_digit_each(reactor: Any, manager: MediaManager,
                                               phone: tuple[Phone, int]) -> None:
    ua, ua_port = phone
    digits: list[tuple[object, str, str]] = []
    _, port = manager.open("k", lambda key, digit, how: digits.append((key, digit, how)))
    manager.set_remote("k", HOST, ua_port, PCMA, 96)
    sender = RtpSender(96)
    for packet in [b"junk", b"\x80\xc9\x00\x01" + b"\x00" * 4,  # not RTP, RTCP
                   RtpSender(PCMA).packet(b"\xd5" * 160),  # audio: no in-band detection
                   RtpSender(101).packet(b"\x01\x8a\x00\xa0")]:  # not the negotiated PT
        ua.send(packet, (HOST, port))
    for packet in event_packets(sender, 1) + event_packets(sender, 11):
        ua.send(packet, (HOST, port))
    pump(reactor, lambda: len(digits) >= 2, "two digits")
    ua.send(event_packets(sender, 5)[-1], (HOST, port))
    pump(reactor, lambda: len(digits) >= 3, "the third digit")
    assert digits == [("k", "1", "rfc4733"), ("k", "#", "rfc4733"), ("k", "5", "rfc4733")]


def dtmf_frames(low: float, high: float, ms: int) -> list[bytes]:
    n = 8 * ms
    samples = [round(5000 * (math.sin(2 * math.pi * low * i / 8000)
                             + math.sin(2 * math.pi * high * i / 8000))) for i in range(n)]
    pcm = pcm_to_ulaw(samples)
    return [pcm[i:i + 160] for i in range(0, n, 160)]


def test_inband_digit_when_no_telephone_event_was_negotiated(
        reactor: Any, manager: MediaManager, phone: tuple[Phone, int]) -> None:
    ua, ua_port = phone
    digits: list[tuple[object, str, str]] = []
    _, port = manager.open("k", lambda key, digit, how: digits.append((key, digit, how)))
    manager.set_remote("k", HOST, ua_port, PCMU, None)
    sender = RtpSender(PCMU)
    silence = [b"\xff" * 160] * 5
    for frame in silence + dtmf_frames(852, 1209, 100) + silence:  # "7"
        ua.send(sender.packet(frame), (HOST, port))
    pump(reactor, lambda: bool(digits), "the in-band digit")
    assert digits == [("k", "7", "inband")]


def test_set_remote_rejects_codecs_it_cannot_play(manager: MediaManager) -> None:
    manager.open("x", lambda key, digit, how: None)
    with pytest.raises(ValueError):
        manager.set_remote("x", HOST, 4000, 9, None)  # G.722
    with pytest.raises(ValueError):
        manager.play("x", [b"\xff" * 160])  # no remote yet


def test_symmetric_rtp_latches_to_the_phones_source_and_ignores_others(
        reactor: Any, manager: MediaManager, phone: tuple[Phone, int]) -> None:
    """Behind NAT the SDP names an address that cannot be reached; the prompt must go where
    the phone's RTP comes from, and a third party's packets (injected DTMF) are ignored."""
    natted, natted_port = phone
    stranger = Phone()
    stranger_port = reactor.listenUDP(0, stranger, interface=HOST)
    try:
        digits: list[tuple[object, str, str]] = []
        _, port = manager.open("k", lambda key, digit, how: digits.append((key, digit, how)))
        # the SDP says 127.0.0.1:9 (discard), the phone really sends from natted_port
        manager.set_remote("k", HOST, 9, PCMU, 101)
        natted.send(RtpSender(PCMU).packet(b"\xff" * 160), (HOST, port))
        pump(reactor, lambda: manager._calls["k"].latched is not None, "the latch")
        frames = manager.prompts.confirm_prompt("+49", "en", PCMU)[:3]
        manager.play("k", frames)
        pump(reactor, lambda: len(natted.received) >= 3, "the prompt at the real source")
        for packet in event_packets(RtpSender(101), 1):
            stranger.send(packet, (HOST, port))
        for packet in event_packets(RtpSender(101), 5):
            natted.send(packet, (HOST, port))
        pump(reactor, lambda: bool(digits), "the phone's digit")
        assert digits == [("k", "5", "rfc4733")]  # the stranger's 1 was ignored
        assert natted_port != 9
    finally:
        stranger_port.stopListening()


def test_the_address_the_sdp_names_takes_the_latch_back_from_a_scanner(
        reactor: Any, manager: MediaManager, phone: tuple[Phone, int]) -> None:
    """RTP ports are predictable: a scanner that sends first must not keep the prompt (or
    press 1) once the phone at the address its SDP names speaks."""
    real, real_port = phone
    scanner = Phone()
    scanner_port = reactor.listenUDP(0, scanner, interface=HOST)
    try:
        digits: list[tuple[object, str, str]] = []
        _, port = manager.open("k", lambda key, digit, how: digits.append((key, digit, how)))
        scanner.send(RtpSender(101).packet(b"\x01\x8a\x00\xa0"), (HOST, port))  # before answer
        for _ in range(3):  # loopback delivers at once: the packet is read (and dropped) here
            reactor.iterate(0)
        assert manager._calls["k"].latched is None and digits == []
        manager.set_remote("k", HOST, real_port, PCMU, 101)
        scanner.send(RtpSender(PCMU).packet(b"\xff" * 160), (HOST, port))
        pump(reactor, lambda: manager._calls["k"].latched is not None, "the scanner's latch")
        real.send(RtpSender(PCMU).packet(b"\xff" * 160), (HOST, port))
        pump(reactor, lambda: manager._calls["k"].latched == (HOST, real_port), "the phone")
        manager.play("k", manager.prompts.confirm_prompt("+49", "en", PCMU)[:3])
        pump(reactor, lambda: len(real.received) >= 3, "the prompt at the phone")
        for packet in event_packets(RtpSender(101), 1):
            scanner.send(packet, (HOST, port))
        for packet in event_packets(RtpSender(101), 7):
            real.send(packet, (HOST, port))
        pump(reactor, lambda: bool(digits), "the phone's digit")
        assert digits == [("k", "7", "rfc4733")] and scanner.received == []
    finally:
        scanner_port.stopListening()


def test_oversized_datagrams_are_dropped_and_a_failing_handler_stops_nothing(
        reactor: Any, manager: MediaManager, phone: tuple[Phone, int]) -> None:
    ua, ua_port = phone
    seen: list[str] = []

    def handler(key: object, digit: str, how: str) -> None:
        seen.append(digit)
        raise RuntimeError("the call's bug")

    _, port = manager.open("k", handler)
    manager.set_remote("k", HOST, ua_port, PCMU, 101)
    sender = RtpSender(PCMU)
    ua.send(sender.packet(b"\xff" * 8000), (HOST, port))  # 1 s of audio in one datagram
    ua.send(RtpSender(101).packet(b"\x01\x8a\x00\xa0" * 100), (HOST, port))  # 400-byte event
    events = RtpSender(101)
    for digit in (3, 4):
        for packet in event_packets(events, digit):
            ua.send(packet, (HOST, port))
    pump(reactor, lambda: len(seen) >= 2, "both digits despite the failing handler")
    assert seen == ["3", "4"]


@pytest.mark.parametrize("host, port", [("phone.example.com", 4000), ("::1", 4000),
                                        (HOST, 0), (HOST, 70000)])
def test_set_remote_wants_an_ip_address_of_the_socket_s_family_and_a_port(
        manager: MediaManager, host: str, port: int) -> None:
    manager.open("k", lambda key, digit, how: None)
    with pytest.raises(ValueError):
        manager.set_remote("k", host, port, PCMU, None)
