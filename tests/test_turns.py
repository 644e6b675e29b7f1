"""Endpointing policy: every rule of the table, pair by pair, plus a fuzz of totality."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callctl.config import TurnsConfig
from callctl.turns import Action, Completeness, EndpointPolicy, ListenState, classify

P = EndpointPolicy(endpoint_silence_ms=200, complete_silence_ms=120, trailing_silence_ms=600,
                   max_utterance_ms=15000, no_input_ms=8000)


@pytest.mark.parametrize("text,expected", [
    ("", Completeness.NEUTRAL),
    ("I'd like to talk to billing", Completeness.NEUTRAL),
    ("I'd like to talk to billing.", Completeness.COMPLETE),
    ("What are your opening hours?", Completeness.COMPLETE),
    ("yes", Completeness.COMPLETE),
    ("No", Completeness.COMPLETE),
    ("thank you", Completeness.COMPLETE),
    ("my account number is four five and", Completeness.TRAILING),
    ("I want to um", Completeness.TRAILING),
    ("uh", Completeness.TRAILING),
    ("so", Completeness.TRAILING),
    ("because", Completeness.TRAILING),
    ("I need the", Completeness.TRAILING),
    ("Well, my account number is,", Completeness.TRAILING),
    ("4 5 6 7", Completeness.NEUTRAL),
    # the last word decides in any script, not the last Latin one (Korean model output)
    ("A [5] 도 어 알프 가 끝맺 팀 이다", Completeness.NEUTRAL),
    ("I go to the 가게", Completeness.NEUTRAL),
])
def test_classify(text: str, expected: Completeness) -> None:
    assert classify(text) is expected


@pytest.mark.parametrize("text,silence,action", [
    # neutral: 200 ms
    ("talk to billing", 199, Action.WAIT),
    ("talk to billing", 200, Action.COMMIT),
    # complete: 120 ms
    ("talk to billing.", 119, Action.WAIT),
    ("talk to billing.", 120, Action.COMMIT),
    ("yes", 130, Action.COMMIT),
    # trailing: 600 ms (a comma pause of 350-400 ms must not end the turn, DESIGN §8)
    ("my number is four five and", 400, Action.WAIT),
    ("my number is four five and", 599, Action.WAIT),
    ("my number is four five and", 600, Action.COMMIT),
    ("um", 450, Action.WAIT),
])
def test_silence_needed_depends_on_text(text: str, silence: float, action: Action) -> None:
    d = P.decide(ListenState(False, silence, 2000, text, None))
    assert d.action is action
    if action is Action.WAIT:
        assert d.recheck_ms is not None and d.recheck_ms > 0


def test_speaking_waits_until_max_utterance() -> None:
    assert P.decide(ListenState(True, None, 14999, "and", None)).action is Action.WAIT
    d = P.decide(ListenState(True, None, 15000, "and", None))
    assert (d.action, d.reason) == (Action.COMMIT, "max_utterance")
    # also during a long pause
    assert P.decide(ListenState(False, 50, 15001, "and", None)).action is Action.COMMIT


def test_no_input_only_when_armed_and_no_speech() -> None:
    assert P.decide(ListenState(False, None, 0, "", None)).action is Action.WAIT
    assert P.decide(ListenState(False, None, 0, "", 7999)).action is Action.WAIT
    assert P.decide(ListenState(False, None, 0, "", 8000)).action is Action.NO_INPUT
    # speech started: never no-input
    assert P.decide(ListenState(True, None, 10, "", 9000)).action is Action.WAIT


def test_policy_from_config_defaults() -> None:
    p = EndpointPolicy.from_config(TurnsConfig())
    assert p.required_silence_ms(Completeness.COMPLETE) <= p.required_silence_ms(
        Completeness.NEUTRAL) <= p.required_silence_ms(Completeness.TRAILING)


@given(st.booleans(), st.none() | st.floats(0, 1e6), st.floats(0, 1e6), st.text(max_size=80),
       st.none() | st.floats(0, 1e6))
def test_fuzz_decide_is_total_and_consistent(speaking: bool, silence: float | None,
                                             utt: float, text: str,
                                             waiting: float | None) -> None:
    d = P.decide(ListenState(speaking, silence, utt, text, waiting))
    assert d.action in Action
    if d.action is Action.NO_INPUT:
        assert not speaking and silence is None
    if d.action is Action.COMMIT:
        assert speaking is False or utt >= P.max_utterance_ms
