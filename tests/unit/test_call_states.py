"""The click-to-dial state table (sipdial.calls.states)."""

from __future__ import annotations

import pytest

from sipdial.calls.states import (
    TRANSITIONS,
    Action,
    CallState,
    Cause,
    IllegalTransition,
    Input,
    target_failure_input,
    transition,
    user_failure_input,
)


def test_every_path_to_ended_carries_a_cause_and_releases_everything() -> None:
    for (_state, inp), (nxt, cause, actions) in TRANSITIONS.items():
        if nxt is CallState.ENDED:
            assert cause is not None, inp
            assert Action.RELEASE_ALL in actions, inp
        else:
            assert cause is None, inp


def test_nothing_leaves_ended() -> None:
    assert not [key for key in TRANSITIONS if key[0] is CallState.ENDED]
    assert transition(CallState.ENDED, Input.USER_ANSWERED) is None


def test_every_state_is_reachable_from_calling_user() -> None:
    seen = {CallState.CALLING_USER}
    frontier = [CallState.CALLING_USER]
    while frontier:
        state = frontier.pop()
        for (src, _inp), (nxt, _c, _a) in TRANSITIONS.items():
            if src is state and nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(CallState)


def test_every_cause_is_reachable() -> None:
    causes = {cause for (_s, _i), (_n, cause, _a) in TRANSITIONS.items() if cause}
    assert causes == set(Cause)


def test_shutdown_interrupts_every_live_state() -> None:
    for state in CallState:
        if state is CallState.ENDED:
            continue
        row = transition(state, Input.SHUTDOWN)
        assert row is not None and row[:2] == (CallState.ENDED, Cause.INTERRUPTED)


def _walk(path: list[Input]) -> list[tuple[CallState, Cause | None, tuple[Action, ...]]]:
    state = CallState.CALLING_USER
    seen = []
    for inp in path:
        row = transition(state, inp)
        assert row is not None
        state = row[0]
        seen.append(row)
    return seen


def test_happy_refer_path() -> None:
    seen = _walk([Input.USER_RINGING, Input.USER_ANSWERED, Input.NO_CONFIRMATION,
                  Input.TARGET_CALLING, Input.TARGET_RINGING, Input.TARGET_ANSWERED,
                  Input.HANGUP])
    assert [s for s, _c, _a in seen] == [
        CallState.USER_RINGING, CallState.USER_ANSWERED, CallState.USER_ANSWERED,
        CallState.CALLING_TARGET, CallState.TARGET_RINGING, CallState.CONNECTED,
        CallState.ENDED]
    assert seen[1][2] == (Action.CANCEL_OTHER_DEVICES,)
    assert seen[2][2] == (Action.CONNECT_TARGET,)
    assert seen[5][2] == (Action.RELEASE_USER,)
    assert seen[-1][1] is Cause.COMPLETED


def test_confirmation_path_replays_once_then_connects() -> None:
    seen = _walk([Input.USER_ANSWERED, Input.ASK_CONFIRMATION, Input.WRONG_DIGIT,
                  Input.CONFIRMED, Input.TARGET_RINGING, Input.TARGET_ANSWERED])
    assert [s for s, _c, _a in seen] == [
        CallState.USER_ANSWERED, CallState.AWAITING_CONFIRMATION,
        CallState.AWAITING_CONFIRMATION, CallState.CALLING_TARGET, CallState.TARGET_RINGING,
        CallState.CONNECTED]
    assert seen[1][2] == (Action.PLAY_PROMPT,)
    assert seen[2][2] == (Action.REPLAY_PROMPT,)
    assert seen[3][2] == (Action.CONNECT_TARGET,)


def test_not_confirmed_ends_the_call() -> None:
    seen = _walk([Input.USER_ANSWERED, Input.ASK_CONFIRMATION, Input.NOT_CONFIRMED])
    assert seen[-1][:2] == (CallState.ENDED, Cause.NOT_CONFIRMED)


def test_illegal_transition_raises() -> None:
    with pytest.raises(IllegalTransition):
        transition(CallState.CALLING_USER, Input.TARGET_ANSWERED)
    with pytest.raises(IllegalTransition):
        transition(CallState.CONNECTED, Input.USER_ANSWERED)


@pytest.mark.parametrize(("status", "inp"), [
    (486, Input.USER_BUSY), (600, Input.USER_BUSY), (603, Input.USER_REJECTED),
    (480, Input.USER_NO_ANSWER), (408, Input.USER_NO_ANSWER), (487, Input.USER_NO_ANSWER),
    (404, Input.USER_FAILED), (500, Input.USER_FAILED)])
def test_user_failure_mapping(status: int, inp: Input) -> None:
    assert user_failure_input(status) is inp


@pytest.mark.parametrize(("status", "inp"), [
    (486, Input.TARGET_BUSY), (480, Input.TARGET_NO_ANSWER), (404, Input.TARGET_FAILED),
    (503, Input.TARGET_FAILED)])
def test_target_failure_mapping(status: int, inp: Input) -> None:
    assert target_failure_input(status) is inp
