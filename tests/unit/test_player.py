"""Player: one shared tick for every stream, driven by a number for time."""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict

import pytest

from sipdial.media.player import FRAME, Datagram, Player
from sipdial.media.rtp import PCMA, PCMU, RtpSender, parse_rtp

T0 = 1000.0
REMOTE = ("192.0.2.10", 40000)


def frames(n: int, tag: int = 0) -> list[bytes]:
    return [bytes([tag, i % 256]) * 80 for i in range(n)]


class Clock:
    """Ticks a player like the LoopingCall does, collecting what each tick returns."""

    def __init__(self, player: Player, now: float = T0) -> None:
        self.player = player
        self.now = now
        self.sent: list[list[Datagram]] = []

    def tick(self, dt: float = FRAME) -> list[Datagram]:
        self.now += dt
        out = self.player.tick(self.now)
        self.sent.append(out)
        return out

    def by_key(self) -> dict[object, list[Datagram]]:
        streams: dict[object, list[Datagram]] = defaultdict(list)
        for out in self.sent:
            for d in out:
                streams[d[0]].append(d)
        return streams


def check_stream(datagrams: list[Datagram], expected: list[bytes], remote: tuple[str, int],
                 pt: int) -> None:
    packets = [parse_rtp(d[2]) for d in datagrams]
    assert all(d[1] == remote for d in datagrams)
    assert [p.payload for p in packets] == expected
    assert all(p.payload_type == pt for p in packets)
    assert len({p.ssrc for p in packets}) == 1
    first = packets[0]
    assert [p.sequence_number for p in packets] == [
        (first.sequence_number + i) & 0xFFFF for i in range(len(packets))]
    assert [p.timestamp for p in packets] == [
        (first.timestamp + 160 * i) & 0xFFFFFFFF for i in range(len(packets))]
    assert [p.marker for p in packets] == [1] + [0] * (len(packets) - 1)


def test_every_stream_gets_one_packet_per_tick_in_order() -> None:
    player, n = Player(), 20
    clips = {k: frames(30, k) for k in range(n)}
    for k in range(n):
        player.play(k, ("127.0.0.1", 30000 + 2 * k), RtpSender(PCMA if k % 2 else PCMU),
                    clips[k])
    assert player.active == n
    clock = Clock(player)
    for _ in range(10):
        out = clock.tick()
        assert sorted(d[0] for d in out) == list(range(n))  # type: ignore[type-var]
    for key, datagrams in clock.by_key().items():
        assert isinstance(key, int)
        check_stream(datagrams, clips[key][:10], ("127.0.0.1", 30000 + 2 * key),
                     PCMA if key % 2 else PCMU)


def test_sequence_and_timestamp_wrap_inside_a_stream() -> None:
    player = Player()
    player.play("a", REMOTE, RtpSender(PCMU, seq=0xFFFE, timestamp=0xFFFFFF00), frames(4))
    clock = Clock(player)
    for _ in range(4):
        clock.tick()
    check_stream(clock.by_key()["a"], frames(4), REMOTE, PCMU)


def test_late_tick_catches_up_and_jitter_neither_drops_nor_doubles() -> None:
    player = Player(max_catchup=5)
    player.play("a", REMOTE, RtpSender(PCMU), frames(100))
    clock = Clock(player)
    assert len(clock.tick()) == 1  # first tick: one frame, starts the grid
    assert len(clock.tick(0.060)) == 3  # 60 ms late -> the 3 slots since
    assert len(clock.tick(0.027)) == 1  # 7 ms late: still the next slot ...
    assert len(clock.tick(0.013)) == 1  # ... and the one after, back on the grid
    assert clock.tick(0.0) == []  # the same instant again: nothing due
    assert len(clock.tick(0.020)) == 1
    assert len(clock.tick(0.500)) == 5  # 25 slots late: capped ...
    assert len(clock.tick(0.020)) == 1  # ... and the grid restarts at that tick
    sent = sum(len(out) for out in clock.sent)
    check_stream(clock.by_key()["a"], frames(100)[:sent], REMOTE, PCMU)  # nothing skipped


def test_a_stream_started_between_late_ticks_gets_one_frame_first() -> None:
    player = Player()
    player.play("a", REMOTE, RtpSender(PCMU), frames(50))
    clock = Clock(player)
    clock.tick()
    player.play("b", REMOTE, RtpSender(PCMU), frames(50))
    out = clock.tick(0.060)
    assert [d[0] for d in out] == ["a", "a", "a", "b"]
    assert [d[0] for d in clock.tick()] == ["a", "b"]


def test_loop_repeats_without_a_new_marker() -> None:
    player = Player()
    player.play("r", REMOTE, RtpSender(PCMA), frames(3), loop=True)
    clock = Clock(player)
    for _ in range(8):
        clock.tick()
    check_stream(clock.by_key()["r"], (frames(3) * 3)[:8], REMOTE, PCMA)
    assert player.active == 1


def test_on_done_once_after_the_last_frame() -> None:
    player, calls = Player(), []
    player.play("a", REMOTE, RtpSender(PCMU), frames(3),
                on_done=lambda key, now: calls.append((key, now)))
    clock = Clock(player)
    clock.tick()
    clock.tick()
    assert calls == [] and player.active == 1
    assert len(clock.tick()) == 1  # the last frame ...
    assert calls == [("a", clock.now)] and player.active == 0  # ... then on_done, same tick
    for _ in range(3):
        assert clock.tick() == []
    assert len(calls) == 1


def test_on_done_can_chain_the_next_prompt_without_a_gap() -> None:
    player = Player()
    sender = RtpSender(PCMU)
    player.play("a", REMOTE, sender, frames(2, 1),
                on_done=lambda key, now: player.play(key, REMOTE, sender, frames(2, 2)))
    clock = Clock(player)
    for _ in range(5):
        clock.tick()
    assert [len(out) for out in clock.sent] == [1, 1, 1, 1, 0]
    packets = [parse_rtp(d[2]) for d in clock.by_key()["a"]]
    assert [p.payload for p in packets] == frames(2, 1) + frames(2, 2)
    assert [p.marker for p in packets] == [1, 0, 1, 0]  # the new prompt is a new talkspurt
    seq0 = packets[0].sequence_number
    assert [p.sequence_number for p in packets] == [(seq0 + i) & 0xFFFF for i in range(4)]


def test_stop_and_replace_never_call_on_done() -> None:
    player, calls = Player(), []
    done = lambda key, now: calls.append(key)  # noqa: E731
    sender = RtpSender(PCMU)
    player.play("a", REMOTE, sender, frames(5), on_done=done)
    player.play("b", REMOTE, RtpSender(PCMU), frames(5), on_done=done)
    clock = Clock(player)
    clock.tick()
    player.stop("a")
    player.stop("unknown")
    assert player.active == 1
    assert [d[0] for d in clock.tick()] == ["b"]
    player.play("b", REMOTE, RtpSender(PCMU), frames(1, 9))  # replaced before its end
    player.play("a", REMOTE, sender, frames(1, 7))
    out = clock.tick()
    assert {d[0]: parse_rtp(d[2]).payload for d in out} == {"b": frames(1, 9)[0],
                                                           "a": frames(1, 7)[0]}
    assert parse_rtp(out[-1][2]).marker == 1
    assert calls == [] and player.active == 0


def test_empty_frames_finish_at_the_next_tick() -> None:
    player, calls = Player(), []
    player.play("e", REMOTE, RtpSender(PCMU), [], on_done=lambda key, now: calls.append(key))
    assert Clock(player).tick() == []
    assert calls == ["e"] and player.active == 0


def test_a_failing_on_done_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    player, calls = Player(), []

    def boom(key: object, now: float) -> None:
        raise RuntimeError("bug")

    player.play("a", REMOTE, RtpSender(PCMU), frames(1), on_done=boom)
    player.play("b", REMOTE, RtpSender(PCMU), frames(1), on_done=lambda k, n: calls.append(k))
    with caplog.at_level(logging.ERROR, "sipdial.media"):
        assert len(Clock(player).tick()) == 2
    assert calls == ["b"] and "on_done" in caplog.text


def test_idle_player_restarts_its_grid() -> None:
    player = Player()
    player.play("a", REMOTE, RtpSender(PCMU), frames(1))
    clock = Clock(player)
    clock.tick()
    assert clock.tick(5.0) == []  # idle
    player.play("a", REMOTE, RtpSender(PCMU), frames(3))
    assert [len(clock.tick(0.011)), len(clock.tick()), len(clock.tick())] == [1, 1, 1]


def test_one_thousand_streams_in_one_tick() -> None:
    player, n = Player(), 1000
    shared = frames(50)
    for k in range(n):
        player.play(k, ("127.0.0.1", 20000 + 2 * k), RtpSender(PCMA), shared)
    clock = Clock(player)
    for _ in range(3):
        out = clock.tick()
        assert len(out) == n and len({d[0] for d in out}) == n
    assert len({parse_rtp(d[2]).ssrc for d in out}) == n  # random SSRC per sender
    assert all(parse_rtp(d[2]).payload == shared[2] for d in out)


def test_max_catchup_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Player(max_catchup=0)


# ------------------------------------------------------------------ phases


def test_phases_spread_the_streams_and_each_still_gets_one_frame_per_20_ms() -> None:
    player = Player(phases=5)
    assert player.interval == pytest.approx(FRAME / 5)
    clips = {k: frames(40, k) for k in range(10)}
    for k, clip in clips.items():
        player.play(str(k), REMOTE, RtpSender(PCMU), clip)
    clock = Clock(player)
    for _ in range(5 * 20):  # 20 frames' worth of 4 ms ticks
        clock.tick(FRAME / 5)
    assert [len(out) for out in clock.sent[:5]] == [2, 2, 2, 2, 2]  # a fifth per tick
    streams = clock.by_key()
    for k, clip in clips.items():
        check_stream(streams[str(k)], clip[:20], REMOTE, PCMU)
    # each stream's packets leave exactly 5 ticks (20 ms) apart
    for k in clips:
        ticks = [i for i, out in enumerate(clock.sent) for d in out if d[0] == str(k)]
        assert {b - a for a, b in itertools.pairwise(ticks)} == {5}


def test_a_new_stream_joins_the_least_busy_phase() -> None:
    player = Player(phases=4)
    clock = Clock(player)
    for k in "abcd":
        player.play(k, REMOTE, RtpSender(PCMU), frames(100), loop=True)
    clock.tick(FRAME / 4)
    player.stop("c")
    player.play("e", REMOTE, RtpSender(PCMU), frames(100), loop=True)  # c's phase is free
    sent = [[d[0] for d in clock.tick(FRAME / 4)] for _ in range(4)]
    assert sent == [["b"], ["e"], ["d"], ["a"]]


def test_a_late_tick_catches_up_every_phase_it_missed() -> None:
    player = Player(phases=4)
    clock = Clock(player)
    for k in "abcd":
        player.play(k, REMOTE, RtpSender(PCMU), frames(100, ord(k)), loop=True)
    for _ in range(4):  # a b c d: each has sent its first frame (the grid starts at a's)
        clock.tick(FRAME / 4)
    out = clock.tick(FRAME / 4 * 6)  # 6 sub-slots: a b c d a b
    assert sorted(d[0] for d in out) == ["a", "a", "b", "b", "c", "d"]
    assert [d[0] for d in clock.tick(FRAME / 4)] == ["c"]  # back on the grid
    # a lag beyond max_catchup frames is forgiven: at most 5 frames each, then a new grid
    out = clock.tick(1.0)
    assert {k: sum(1 for d in out if d[0] == k) for k in "abcd"} == {
        "a": 5, "b": 5, "c": 5, "d": 5}
    assert player.next_due == pytest.approx(clock.now + FRAME / 4)


def test_next_due_follows_the_grid_and_is_none_when_idle() -> None:
    player = Player(phases=2)
    assert player.next_due is None
    player.play("a", REMOTE, RtpSender(PCMU), frames(2))
    clock = Clock(player)
    clock.tick(0.001)
    assert player.next_due == pytest.approx(T0 + 0.001 + FRAME / 2)
    clock.tick(FRAME / 2 - 0.004)  # a little early: still that sub-slot
    assert player.next_due == pytest.approx(T0 + 0.001 + FRAME)
    for _ in range(3):
        clock.tick(FRAME / 2)
    assert player.active == 0
    clock.tick(FRAME / 2)
    assert player.next_due is None


def test_phases_must_be_sensible() -> None:
    with pytest.raises(ValueError):
        Player(phases=0)
    with pytest.raises(ValueError):
        Player(phases=21)
