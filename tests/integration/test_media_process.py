"""MediaProcess: the RTP of the SIP process's calls sent and received by a real media process
(``python -m sipdial.media.process``), over real UDP sockets on 127.0.0.1 and a real Unix
stream with descriptor passing; the SIP process's side runs on a private reactor."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from sipdial.media import MediaPortsExhausted, MediaProcess
from sipdial.media.prompt import PromptLibrary
from sipdial.media.rtp import PCMA, PCMU, RtpSender, parse_rtp
from tests.integration.reactor_helpers import Phone, pump
from tests.integration.test_media_transport import (
    HOST,
    event_packets,
    free_even_range,
    port_in_use,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def media(reactor: Any) -> Iterator[MediaProcess]:
    m = MediaProcess(reactor, HOST, 0, 0)
    m.start()
    yield m
    m.stop()


def digits_to(found: list[tuple[str, str, str]]) -> Any:
    return lambda key, digit, how: found.append((key, digit, how))


def test_the_prompt_leaves_from_the_port_in_the_sdp_and_digits_come_back(
        reactor: Any, media: MediaProcess, phone: tuple[Phone, int]) -> None:
    ua, ua_port = phone
    digits: list[tuple[str, str, str]] = []
    host, port = media.open("call", digits_to(digits))
    assert host == HOST and port_in_use(port)
    media.set_remote("call", HOST, ua_port, PCMA, 101)
    media.play_prompt("call", "+49301", "en")
    expected = PromptLibrary.load().confirm_prompt("+49301", "en", PCMA)
    pump(reactor, lambda: len(ua.received) >= 10, "the prompt's first packets")
    packets = [parse_rtp(d) for d, _ in ua.received]
    assert {addr for _, addr in ua.received} == {(HOST, port)}  # symmetric RTP, our port
    assert [p.payload for p in packets[:10]] == list(expected[:10])
    assert {p.payload_type for p in packets} == {PCMA}
    assert packets[0].marker == 1
    sender = RtpSender(101)
    for packet in event_packets(sender, 1):
        ua.send(packet, (HOST, port))
    pump(reactor, lambda: bool(digits), "the key press to come back")
    assert digits == [("call", "1", "rfc4733")]
    media.stop_playing("call")
    media.close("call")
    assert media.calls == 0
    pump(reactor, lambda: not port_in_use(port), "both processes to let the port go")


def test_a_tone_loops_until_stopped(reactor: Any, media: MediaProcess,
                                    phone: tuple[Phone, int]) -> None:
    ua, ua_port = phone
    _, port = media.open("a", digits_to([]))
    with pytest.raises(ValueError, match="set_remote first"):
        media.play_tone("a", "busy", loop=True)
    with pytest.raises(ValueError, match="PCMU/PCMA only"):
        media.set_remote("a", HOST, ua_port, 9, None)
    media.set_remote("a", HOST, ua_port, PCMU, None)
    media.play_tone("a", "busy", loop=True)  # one cycle is 48 packets
    pump(reactor, lambda: len(ua.received) > 60, "the tone's second cycle")
    assert {addr for _, addr in ua.received} == {(HOST, port)}
    media.stop_playing("a")
    # every packet sent before the stop arrives: wait until a further ~100 ms bring nothing
    count = -1
    while count != len(ua.received):
        count = len(ua.received)
        for _ in range(5):
            reactor.iterate(0.02)
    after_stop = len(ua.received)
    for _ in range(10):
        reactor.iterate(0.02)
    assert len(ua.received) == after_stop
    with pytest.raises(KeyError):
        media.set_remote("nothing", HOST, ua_port, PCMU, None)


def test_the_port_range_is_the_sip_process_s_and_runs_out(reactor: Any) -> None:
    base = free_even_range(2)
    media = MediaProcess(reactor, HOST, base, base + 2)
    media.start()
    try:
        assert media.open("a", digits_to([]))[1] == base
        assert media.open("b", digits_to([]))[1] == base + 2
        with pytest.raises(MediaPortsExhausted):
            media.open("c", digits_to([]))
        with pytest.raises(ValueError):
            media.open("a", digits_to([]))
        media.close("a")
        # the media process closes its copy at once: the SIP process can bind the port again
        found: list[int] = []

        def reopened() -> bool:
            try:
                found.append(media.open("c", digits_to([]))[1])
            except MediaPortsExhausted:
                return False
            return True

        pump(reactor, reopened, "the port to be free again")
        assert found == [base]
    finally:
        media.stop()


def test_a_media_process_that_dies_is_started_again_and_keeps_the_calls(
        reactor: Any, media: MediaProcess, phone: tuple[Phone, int]) -> None:
    ua, ua_port = phone
    digits: list[tuple[str, str, str]] = []
    _, port = media.open("call", digits_to(digits))
    media.set_remote("call", HOST, ua_port, PCMU, 101)
    first = media.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    pump(reactor, lambda: media.restarts == 1, "the loss to be noticed")
    pump(reactor, lambda: media.pid not in (None, first), "the restart")
    media.play_tone("call", "ringback", loop=True)  # the new process knows the call
    pump(reactor, lambda: bool(ua.received), "RTP from the new media process")
    assert {addr for _, addr in ua.received} == {(HOST, port)}
    for packet in event_packets(RtpSender(101), 9):
        ua.send(packet, (HOST, port))
    pump(reactor, lambda: bool(digits), "a key press through the new process")
    assert digits == [("call", "9", "rfc4733")]


def test_stop_ends_the_media_process(reactor: Any) -> None:
    media = MediaProcess(reactor, HOST, 0, 0)
    media.start()
    media.open("a", digits_to([]))
    pid = media.pid
    assert pid is not None
    media.stop()
    assert media.pid is None and media.calls == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited and reaped


def test_calls_closed_before_their_socket_was_passed_cost_nothing(reactor: Any) -> None:
    """Open and close in one reactor turn (a call refused right after its media was opened):
    the descriptor is still queued for sending when the call closes. Closing it then made
    the stream fail (EBADF) and restarted the media process; its number could also have gone
    to the next call's socket. Our copy now stays open until the media process says closed."""
    media = MediaProcess(reactor, HOST, 0, 0)
    media.start()
    try:
        ports = []
        for i in range(40):
            ports.append(media.open(f"k{i}", digits_to([]))[1])
            if i % 2:
                media.close(f"k{i}")
        pump(reactor, lambda: all(not port_in_use(p) for p in ports[1::2]),
             "the closed calls' ports to be free")
        assert all(port_in_use(p) for p in ports[0::2])
        assert media.restarts == 0 and media.calls == 20
    finally:
        media.stop()
