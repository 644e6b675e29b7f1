"""Endpointing policy: every row of the table (words x turn model), plus a fuzz of totality."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callctl.config import TurnsConfig
from callctl.turns import (
    TABLE,
    Action,
    Completeness,
    EndpointPolicy,
    ListenState,
    ModelVerdict,
    classify,
)

P = EndpointPolicy(endpoint_silence_ms=200, complete_silence_ms=120, trailing_silence_ms=600,
                   max_utterance_ms=15000, no_input_ms=8000)


@pytest.mark.parametrize("text,expected", [
    ("", Completeness.NEUTRAL),
    ("I'd like to talk to billing", Completeness.NEUTRAL),
    ("I'd like to talk to billing.", Completeness.COMPLETE),
    ("What are your opening hours?", Completeness.COMPLETE),
    ("yes", Completeness.ANSWER),
    ("No", Completeness.ANSWER),
    ("thank you", Completeness.ANSWER),
    ("Yes.", Completeness.ANSWER),
    ("my account number is four five and", Completeness.TRAILING),
    ("I want to um", Completeness.TRAILING),
    ("uh", Completeness.TRAILING),
    ("so", Completeness.TRAILING),
    ("because", Completeness.TRAILING),
    ("I need the", Completeness.TRAILING),
    ("Well, my account number is,", Completeness.TRAILING),
    ("4 5 6 7", Completeness.NUMBER),
    ("my account number is four five", Completeness.NUMBER),
    ("four five seven two.", Completeness.COMPLETE),
    ("I have two", Completeness.NEUTRAL),
    ("room 4", Completeness.NEUTRAL),
    # the last word decides in any script, not the last Latin one (Korean model output)
    ("A [5] 도 어 알프 가 끝맺 팀 이다", Completeness.NEUTRAL),
    ("I go to the 가게", Completeness.NEUTRAL),
])
def test_classify(text: str, expected: Completeness) -> None:
    assert classify(text) is expected


@pytest.mark.parametrize("text,expected", [
    ("room 4", Completeness.NUMBER),            # the flow waits for digits: one is enough
    ("I have two", Completeness.NUMBER),
    ("talk to billing", Completeness.NEUTRAL),
    ("yes", Completeness.ANSWER),
])
def test_classify_expecting_a_number(text: str, expected: Completeness) -> None:
    assert classify(text, expect_number=True) is expected


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
    assert p.required_silence_ms(Completeness.NEUTRAL, ModelVerdict.COMPLETE) <= \
        p.required_silence_ms(Completeness.NEUTRAL) < p.required_silence_ms(
            Completeness.NEUTRAL, ModelVerdict.INCOMPLETE)
    assert p.turn_model_wait_ms < p.incomplete_silence_ms


# -- the table, row by row ------------------------------------------------------------------

#: A policy whose every setting differs, so a row that picks the wrong one shows.
T = EndpointPolicy(endpoint_silence_ms=200, complete_silence_ms=120, trailing_silence_ms=600,
                   max_utterance_ms=15000, no_input_ms=8000, number_silence_ms=700,
                   incomplete_silence_ms=900, turn_model_wait_ms=500,
                   turn_model_threshold=0.5)
TEXT = {Completeness.ANSWER: "yes", Completeness.COMPLETE: "I'd like to pay my bill.",
        Completeness.NEUTRAL: "I'd like to pay my bill",
        Completeness.NUMBER: "my account number is four five",
        Completeness.TRAILING: "I'd like to pay my bill and"}
MODEL: dict[ModelVerdict, tuple[float | None, bool]] = {   # (probability, pending)
    ModelVerdict.OFF: (None, False), ModelVerdict.PENDING: (None, True),
    ModelVerdict.COMPLETE: (0.93, False), ModelVerdict.INCOMPLETE: (0.08, False)}
A, C, N, U, R = (Completeness.ANSWER, Completeness.COMPLETE, Completeness.NEUTRAL,
                 Completeness.NUMBER, Completeness.TRAILING)
OFF, PEND, DONE, NOT = (ModelVerdict.OFF, ModelVerdict.PENDING, ModelVerdict.COMPLETE,
                        ModelVerdict.INCOMPLETE)
#: (words, model) -> silence needed (ms), and the commit reason.
ROWS = {
    (A, OFF): (120, "silence_answer"), (A, PEND): (500, "model_late_answer"),
    (A, DONE): (120, "model_complete_answer"), (A, NOT): (600, "model_incomplete_answer"),
    (C, OFF): (120, "silence_complete"), (C, PEND): (500, "model_late_complete"),
    (C, DONE): (120, "model_complete_complete"), (C, NOT): (900, "model_incomplete_complete"),
    (N, OFF): (200, "silence_neutral"), (N, PEND): (500, "model_late_neutral"),
    (N, DONE): (120, "model_complete_neutral"), (N, NOT): (900, "model_incomplete_neutral"),
    (U, OFF): (700, "silence_number"), (U, PEND): (700, "model_pending_number"),
    (U, DONE): (700, "model_complete_number"), (U, NOT): (900, "model_incomplete_number"),
    (R, OFF): (600, "silence_trailing"), (R, PEND): (600, "model_pending_trailing"),
    (R, DONE): (600, "model_complete_trailing"), (R, NOT): (900, "model_incomplete_trailing"),
}


def test_every_cell_of_the_table_is_tested() -> None:
    assert set(ROWS) == set(TABLE) == {(w, m) for w in Completeness for m in ModelVerdict}


@pytest.mark.parametrize("row", list(ROWS), ids=lambda r: f"{r[0].value}-{r[1].value}")
def test_table_row(row: tuple[Completeness, ModelVerdict]) -> None:
    words, model = row
    need, reason = ROWS[row]
    p, pending = MODEL[model]
    assert classify(TEXT[words]) is words

    def at(silence: float) -> object:
        return T.decide(ListenState(False, silence, 2500, TEXT[words], None, p, pending))

    before, after = at(need - 1), at(need)
    assert before.action is Action.WAIT and before.row == row       # type: ignore[attr-defined]
    assert before.recheck_ms == pytest.approx(1)                     # type: ignore[attr-defined]
    assert after.action is Action.COMMIT and after.reason == reason  # type: ignore[attr-defined]
    assert after.row == row and after.need_ms == need                # type: ignore[attr-defined]


@pytest.mark.parametrize("p,verdict", [(0.5, DONE), (0.499, NOT), (1.0, DONE), (0.0, NOT)])
def test_model_threshold(p: float, verdict: ModelVerdict) -> None:
    assert T.verdict(ListenState(False, 10, 100, "", None, p)) is verdict


def test_a_pending_verdict_outranks_a_stale_probability() -> None:
    assert T.verdict(ListenState(False, 10, 100, "", None, 0.9, True)) is ModelVerdict.PENDING


def test_an_unsure_comma_waits_for_the_model_then_for_the_bound() -> None:
    """Whisper's segment punctuation at a comma ("Pay my bill." while the caller goes on):
    without a model it ends the turn at 120 ms; with the model saying incomplete it waits
    900."""
    text = "Pay my bill."
    assert T.decide(ListenState(False, 130, 900, text, None)).action is Action.COMMIT
    assert T.decide(ListenState(False, 130, 900, text, None, None, True)).action is Action.WAIT
    waiting = T.decide(ListenState(False, 450, 900, text, None, 0.1))
    assert waiting.action is Action.WAIT and waiting.recheck_ms == 450
    assert T.decide(ListenState(False, 900, 900, text, None, 0.1)).action is Action.COMMIT


def test_expecting_a_number_waits_on_one_digit() -> None:
    s = ListenState(False, 300, 2000, "it is 4", None, 0.9, False, expect_number=True)
    assert T.decide(s).action is Action.WAIT and T.decide(s).row == (U, DONE)
    assert T.decide(ListenState(False, 300, 2000, "it is 4", None, 0.9)).action is Action.COMMIT


@given(st.booleans(), st.none() | st.floats(0, 1e6), st.floats(0, 1e6), st.text(max_size=80),
       st.none() | st.floats(0, 1e6), st.none() | st.floats(0, 1), st.booleans(), st.booleans())
def test_fuzz_decide_is_total_and_consistent(speaking: bool, silence: float | None,
                                             utt: float, text: str, waiting: float | None,
                                             p: float | None, pending: bool,
                                             number: bool) -> None:
    d = P.decide(ListenState(speaking, silence, utt, text, waiting, p, pending, number))
    assert d.action in Action
    if d.action is Action.NO_INPUT:
        assert not speaking and silence is None
    if d.action is Action.COMMIT:
        assert speaking is False or utt >= P.max_utterance_ms
        # no pause waits past the longest cell of the table
    if d.action is Action.WAIT and silence is not None and not speaking:
        assert silence < max(P.incomplete_silence_ms, P.trailing_silence_ms,
                             P.number_silence_ms)
