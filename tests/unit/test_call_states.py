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
    Phase,
    target_failure_input,
    transition,
    user_failure_input,
)


def test_every_path_to_ended_carries_a_cause_and_releases_everything() -> None:
    for (_phase, inp), (nxt, cause, actions) in TRANSITIONS.items():
        if nxt is Phase.ENDED:
            assert cause is not None, inp
            assert Action.RELEASE_ALL in actions, inp
        else:
            assert cause is None, inp


def test_nothing_leaves_ended() -> None:
    assert not [key for key in TRANSITIONS if key[0] is Phase.ENDED]
    assert transition(Phase.ENDED, Input.USER_ANSWERED) is None


def test_every_state_is_reachable_from_calling_user() -> None:
    seen = {Phase.CALLING_USER}
    frontier = [Phase.CALLING_USER]
    while frontier:
        phase = frontier.pop()
        for (src, _inp), (nxt, _c, _a) in TRANSITIONS.items():
            if src is phase and nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(Phase)
    assert {p.state for p in seen} == set(CallState)


def test_every_cause_is_reachable() -> None:
    """Every cause ends some call: a click-to-dial call's table, or an inbound call's
    (sipdial.calls.incoming) with the causes it takes from the SIP code."""
    from sipdial.calls.incoming import _BY_CODE, INBOUND_TABLE

    causes = {cause for (_s, _i), (_n, cause, _a) in TRANSITIONS.items() if cause}
    causes |= {cause for _state, cause in INBOUND_TABLE.values() if cause}
    causes |= set(_BY_CODE.values())
    assert causes == set(Cause)


def test_shutdown_interrupts_every_live_state() -> None:
    for phase in Phase:
        if phase is Phase.ENDED:
            continue
        row = transition(phase, Input.SHUTDOWN)
        assert row is not None and row[:2] == (Phase.ENDED, Cause.INTERRUPTED)


def test_every_live_phase_takes_cancel_and_failure() -> None:
    """An internal error ends the call from anywhere (IllegalTransition -> FAILED)."""
    for phase in Phase:
        if phase is not Phase.ENDED:
            assert transition(phase, Input.FAILED)[:2] == (Phase.ENDED, Cause.FAILED)  # type: ignore[index]
            assert transition(phase, Input.CANCEL)[:2] == (Phase.ENDED, Cause.CANCELLED)  # type: ignore[index]


def _walk(path: list[Input]) -> list[tuple[CallState, Cause | None, tuple[Action, ...]]]:
    state = Phase.CALLING_USER
    seen = []
    for inp in path:
        row = transition(state, inp)
        assert row is not None
        state = row[0]
        seen.append((row[0].state, row[1], row[2]))
    return seen


def test_happy_refer_path() -> None:
    seen = _walk([Input.USER_RINGING, Input.USER_ANSWERED, Input.NO_CONFIRMATION,
                  Input.TARGET_CALLING, Input.TARGET_RINGING, Input.TARGET_ANSWERED,
                  Input.TARGET_HUNG_UP])
    assert [s for s, _c, _a in seen] == [
        CallState.USER_RINGING, CallState.USER_ANSWERED, CallState.USER_ANSWERED,
        CallState.CALLING_TARGET, CallState.TARGET_RINGING, CallState.CONNECTED,
        CallState.ENDED]
    assert Action.TAKE_DEVICE in seen[1][2]  # ... which CANCELs the other devices
    assert seen[2][2] == (Action.CONNECT_TARGET,)
    assert seen[5][2] == (Action.TARGET_CONNECTED,)
    assert seen[-1][1] is Cause.COMPLETED


def test_confirmation_path_replays_once_then_connects() -> None:
    seen = _walk([Input.USER_ANSWERED, Input.ASK_CONFIRMATION, Input.OTHER_DIGIT,
                  Input.DIGIT_ONE, Input.TARGET_RINGING, Input.TARGET_ANSWERED])
    assert [s for s, _c, _a in seen] == [
        CallState.USER_ANSWERED, CallState.AWAITING_CONFIRMATION,
        CallState.AWAITING_CONFIRMATION, CallState.CALLING_TARGET, CallState.TARGET_RINGING,
        CallState.CONNECTED]
    assert seen[1][2] == (Action.PLAY_PROMPT,)
    assert seen[2][2] == (Action.PLAY_PROMPT,)  # replayed once
    assert Action.CONNECT_TARGET in seen[3][2]


def test_not_confirmed_ends_the_call() -> None:
    seen = _walk([Input.USER_ANSWERED, Input.ASK_CONFIRMATION, Input.CONFIRM_TIMEOUT])
    assert seen[-1][:2] == (CallState.ENDED, Cause.NOT_CONFIRMED)
    seen = _walk([Input.USER_ANSWERED, Input.ASK_CONFIRMATION, Input.OTHER_DIGIT,
                  Input.OTHER_DIGIT])
    assert seen[-1][:2] == (CallState.ENDED, Cause.NOT_CONFIRMED)


def test_hang_up_cause_depends_on_the_state_in_the_table() -> None:
    """The phone hanging up ends a connected call as completed, an unconnected one as
    user_hung_up: the table says so, no input is rewritten outside it."""
    connected = _walk([Input.USER_ANSWERED, Input.NO_CONFIRMATION, Input.TARGET_ANSWERED,
                       Input.PHONE_HUNG_UP])
    assert connected[-1][:2] == (CallState.ENDED, Cause.COMPLETED)
    ringing = _walk([Input.USER_ANSWERED, Input.NO_CONFIRMATION, Input.TARGET_RINGING,
                     Input.PHONE_HUNG_UP])
    assert ringing[-1][:2] == (CallState.ENDED, Cause.USER_HUNG_UP)


def test_illegal_transition_raises() -> None:
    with pytest.raises(IllegalTransition):
        transition(Phase.CALLING_USER, Input.TARGET_ANSWERED)
    with pytest.raises(IllegalTransition):
        transition(Phase.CONNECTED, Input.USER_BUSY)


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
