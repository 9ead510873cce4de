"""sipdial.events.names: which live events a call's state change produces."""

from __future__ import annotations

import pytest

from sipdial.calls import CallState
from sipdial.config import EVENT_NAMES
from sipdial.events.names import EVENTS_BY_STATE, EventName, EventSpec, events_for, is_missed

CALL_STATES = tuple(s.value for s in CallState)
N = EventName


def names(previous: str | None, state: str) -> list[tuple[str, str | None]]:
    return [(spec.name.value, spec.leg) for spec in events_for(previous, state)]


def test_names_are_the_ones_the_config_accepts() -> None:
    assert tuple(name.value for name in EventName) == EVENT_NAMES


def test_every_call_state_has_an_event() -> None:
    assert set(EVENTS_BY_STATE) == set(CALL_STATES)


@pytest.mark.parametrize(
    ("previous", "state", "expected"),
    [
        (None, "calling_user", [("call.dialing", "user")]),
        ("calling_user", "user_ringing", [("call.ringing", "user")]),
        ("user_ringing", "user_answered", [("call.answered", "user")]),
        ("calling_user", "user_answered", [("call.answered", "user")]),
        ("user_answered", "calling_target", [("call.dialing", "target")]),
        ("calling_target", "target_ringing", [("call.ringing", "target")]),
        ("user_answered", "target_ringing", [("call.ringing", "target")]),
        ("target_ringing", "connected", [("call.connected", None)]),
        ("connected", "ended", [("call.ended", None)]),
        ("user_ringing", "ended", [("call.ended", None)]),
    ],
)
def test_a_state_entered_maps_to_its_event(
    previous: str | None, state: str, expected: list[tuple[str, str | None]]
) -> None:
    assert names(previous, state) == expected


def test_confirmation_then_dialling_is_confirmed_then_target_dialing() -> None:
    assert names("awaiting_confirmation", "calling_target") == [
        ("call.confirmed", None),
        ("call.dialing", "target"),
    ]


def test_any_live_exit_from_the_confirmation_is_confirmed_first() -> None:
    assert names("awaiting_confirmation", "target_ringing") == [
        ("call.confirmed", None),
        ("call.ringing", "target"),
    ]


def test_ending_while_awaiting_confirmation_is_not_confirmed() -> None:
    assert names("awaiting_confirmation", "ended") == [("call.ended", None)]


def test_awaiting_confirmation_after_user_answered_repeats_nothing() -> None:
    assert names("user_answered", "awaiting_confirmation") == []


def test_awaiting_confirmation_straight_after_ringing_is_answered() -> None:
    assert names("user_ringing", "awaiting_confirmation") == [("call.answered", "user")]


@pytest.mark.parametrize("state", CALL_STATES)
def test_re_entering_a_state_publishes_nothing(state: str) -> None:
    assert events_for(state, state) == ()


def test_unknown_state_publishes_nothing() -> None:
    assert events_for("user_ringing", "bridging") == ()
    assert names("bridging", "connected") == [("call.connected", None)]


def test_only_user_no_answer_is_a_missed_call() -> None:
    assert is_missed("user_no_answer")
    for cause in ("completed", "user_busy", "user_rejected", "target_no_answer", None):
        assert not is_missed(cause)


def test_specs_are_values() -> None:
    assert EventSpec(N.DIALING, "user") == EVENTS_BY_STATE["calling_user"]
    assert EventSpec(N.DIALING, "user") != EVENTS_BY_STATE["calling_target"]
