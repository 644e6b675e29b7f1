"""The call state table: every pair, legal or not, checked against the written contract."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callctl.call.state import (
    TRANSITIONS,
    CallState,
    CallStateMachine,
    IllegalTransition,
    Trigger,
)

S, T = CallState, Trigger


def test_happy_path() -> None:
    m = CallStateMachine()
    for trig, want in [(T.ANSWER, S.ANSWERED), (T.SPEAK, S.SPEAKING), (T.LISTEN, S.LISTENING),
                       (T.THINK, S.THINKING), (T.SPEAK, S.SPEAKING), (T.LISTEN, S.LISTENING),
                       (T.TRANSFER, S.TRANSFERRING), (T.HANGUP, S.ENDED)]:
        assert m.fire(trig) is want
    assert m.ended
    assert m.history[0] is S.RINGING and m.history[-1] is S.ENDED


@pytest.mark.parametrize("state", list(CallState))
def test_hangup_legal_everywhere_and_idempotent(state: CallState) -> None:
    m = CallStateMachine(state)
    assert m.fire(T.HANGUP) is S.ENDED
    assert m.fire(T.HANGUP) is S.ENDED


@pytest.mark.parametrize("state", list(CallState))
@pytest.mark.parametrize("trigger", list(Trigger))
def test_every_pair(state: CallState, trigger: Trigger) -> None:
    expected = {
        (S.RINGING, T.ANSWER): S.ANSWERED,
        (S.ANSWERED, T.LISTEN): S.LISTENING, (S.ANSWERED, T.SPEAK): S.SPEAKING,
        (S.ANSWERED, T.TRANSFER): S.TRANSFERRING,
        (S.LISTENING, T.THINK): S.THINKING, (S.LISTENING, T.SPEAK): S.SPEAKING,
        (S.THINKING, T.LISTEN): S.LISTENING, (S.THINKING, T.SPEAK): S.SPEAKING,
        (S.SPEAKING, T.LISTEN): S.LISTENING, (S.SPEAKING, T.THINK): S.THINKING,
        (S.LISTENING, T.TRANSFER): S.TRANSFERRING, (S.THINKING, T.TRANSFER): S.TRANSFERRING,
        (S.SPEAKING, T.TRANSFER): S.TRANSFERRING,
        (S.TRANSFERRING, T.TRANSFER_FAILED): S.LISTENING,
    }
    if trigger is T.HANGUP:
        want: CallState | None = S.ENDED
    else:
        want = expected.get((state, trigger))
    m = CallStateMachine(state)
    assert m.can(trigger) is (want is not None)
    if want is None:
        with pytest.raises(IllegalTransition) as e:
            m.fire(trigger)
        assert state.value in str(e.value) and trigger.value in str(e.value)
        assert m.state is state
    else:
        assert m.fire(trigger) is want
    assert TRANSITIONS.get((state, trigger)) is want


def test_nothing_leaves_ended() -> None:
    for (s, t), to in TRANSITIONS.items():
        if s is S.ENDED:
            assert to is S.ENDED and t is T.HANGUP


@given(st.lists(st.sampled_from(list(Trigger)), max_size=40))
def test_random_walk_stays_in_table(triggers: list[Trigger]) -> None:
    m = CallStateMachine()
    for t in triggers:
        before = m.state
        try:
            after = m.fire(t)
        except IllegalTransition:
            assert m.state is before
            continue
        assert TRANSITIONS[(before, t)] is after
