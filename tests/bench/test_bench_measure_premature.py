"""Premature replies on synthetic caller timelines: bot audio that starts while the caller is
still inside an utterance (in its comma or mid-sentence pause) counts once per utterance, per
scenario; audio already playing when the caller starts, a continuation after a pause and a
reply after the speech end do not. Also the ``--script pauses`` utterances and the report's
premature keys."""

from __future__ import annotations

import numpy as np
import pytest

from callctl.bench.measure import Spoken, premature_counts, premature_replies, turn_latencies
from callctl.bench.report import ReportError, validate
from callctl.bench.runner import (
    PAUSE_GAP_S,
    caller_script,
    empty_pipeline,
    premature_figures,
    spoken_of,
)
from callctl.sim import callers, corpus
from callctl.sim.corpus import Utterance
from callctl.sim.interfaces import Heard


def _pause(start: float, end: float, gap: tuple[float, float]) -> Spoken:
    return Spoken(start, end, "utterance", "I would like to know when", "pause", (gap,))

def test_reply_inside_the_mid_sentence_pause_is_premature() -> None:
    spoken = [_pause(1.0, 4.0, (2.0, 2.6))]
    heard = [Heard(2.4, 5.0, "reply.wav", True)]        # the bot answered 0.4 s into it
    found, n = premature_replies(spoken, heard)
    assert n == {"pause": 1} and len(found) == 1
    assert found[0].scenario == "pause" and found[0].into_gap == pytest.approx(0.4)
    assert (found[0].speech_start, found[0].speech_end) == (1.0, 4.0)
    # it is not this utterance's reply: turn latency waits for audio after the speech end
    assert turn_latencies(spoken, heard) == ([], 1)

def test_reply_after_the_speech_end_is_not_premature() -> None:
    spoken = [_pause(1.0, 4.0, (2.0, 2.6)), Spoken(8.0, 9.0, "utterance", "yes")]
    heard = [Heard(4.3, 6.0, "r1.wav", False), Heard(9.0, 10.0, "r2.wav", False)]
    assert premature_counts(spoken, heard) == {"pause": (0, 1), "plain": (0, 1)}

def test_audio_already_playing_when_the_caller_starts_is_not_premature() -> None:
    """A barge-in talks over audio that started before it; only a new start counts."""
    spoken = [Spoken(2.0, 3.5, "bargein", "wait"), Spoken(6.0, 7.0, "utterance", "hm")]
    heard = [Heard(1.0, 2.2, "a.wav", True),             # cut by the barge-in
             Heard(3.0, 3.8, "b.wav", False)]            # then the bot started again
    counts = premature_counts(spoken, heard)
    assert counts == {"bargein": (1, 1), "plain": (0, 1)}
    found, _ = premature_replies(spoken, heard)
    assert found[0].into_gap is None                     # not inside a known pause

def test_one_count_per_utterance_and_continuations_skipped() -> None:
    spoken = [Spoken(1.0, 5.0, "utterance", "long", "comma", ((2.0, 2.4),)),
              Spoken(10.0, 10.3, "backchannel", "mhm")]
    heard = [Heard(2.1, 2.5, "x.wav", False), Heard(3.0, 3.5, "y.wav", False),
             Heard(9.0, 10.1, "z.wav", False, paused=True),    # paused by the backchannel
             Heard(10.2, 12.0, "z.wav", False)]                # …and continued during it
    found, n = premature_replies(spoken, heard)
    assert n == {"comma": 1} and len(found) == 1 and found[0].start == 2.1
    # backchannels and noise are not utterances: nothing to count there
    assert premature_counts([Spoken(10.0, 10.3, "noise")], heard) == {}

def test_report_figures_per_kind_and_schema() -> None:
    spoken = [_pause(1.0, 4.0, (2.0, 2.6)), Spoken(6.0, 7.0, "utterance", "yes"),
              Spoken(12.0, 13.0, "bargein", "wait")]
    heard = [Heard(2.4, 5.0, "r.wav", True), Heard(7.3, 11.9, "s.wav", False)]
    found, n = premature_replies(spoken, heard)
    fig = premature_figures(found, n)
    assert fig["premature_replies"] == {"hits": 1, "n": 3, "rate": 0.3333}
    assert fig["premature_by_kind"]["pause"] == {"hits": 1, "n": 1, "rate": 1.0}
    assert fig["premature_by_kind"]["plain"]["hits"] == 0
    assert fig["premature_into_pause_ms"]["p50"] == pytest.approx(400.0)
    report = _minimal_report({**empty_pipeline(), **fig})
    validate(report)
    report["premature_by_kind"]["pause"]["hits"] = 2     # more hits than utterances
    with pytest.raises(ReportError, match=r"premature_by_kind\.pause"):
        validate(report)

def _minimal_report(fig: dict[str, object]) -> dict[str, object]:
    return {**fig, "baseline": empty_pipeline(), "config": {}, "machine": {}}

def _utt(text: str, speech_s: float) -> Utterance:
    n = round((0.3 + speech_s + 0.5) * 8000)
    x = np.zeros(n, np.int16)
    x[2400:2400 + round(speech_s * 8000)] = 1000
    return Utterance(text, x, 0.3, 0.3 + speech_s, "piper", "PCMU")

def test_join_puts_a_silent_pause_inside_the_sentence() -> None:
    a, b = _utt("I would like to know", 1.0), _utt("when my package will arrive.", 1.5)
    u = corpus.join(a, b, 0.5)
    assert u.text == "I would like to know when my package will arrive."
    assert u.speech_start_s == pytest.approx(0.3)
    assert u.speech_end_s == pytest.approx(0.3 + 1.0 + 0.5 + 1.5)
    gap = u.samples[round(1.3 * 8000):round(1.8 * 8000)]
    assert not gap.any() and u.samples[round(1.8 * 8000)] == 1000
    with pytest.raises(ValueError):
        corpus.join(a, b, -0.1)

def test_pauses_script_shapes_its_utterances() -> None:
    cache = {}

    def say_(text: str) -> Utterance | str:
        return cache.setdefault(text, _utt(text, 0.8))

    s = caller_script(0, 3, say_, "pauses")
    shapes = [s.shapes[i][0] for i in sorted(s.shapes)]
    assert shapes == ["comma", "pause"]                      # turn 0, turn 1; turn 2 barges
    (_, gaps), = [v for v in s.shapes.values() if v[0] == "pause"]
    (g0, g1), = gaps
    assert g0 == pytest.approx(0.8) and PAUSE_GAP_S[0] <= g1 - g0 <= PAUSE_GAP_S[1]
    again = caller_script(0, 3, say_, "pauses")
    assert again.shapes == s.shapes                          # seeded by caller and turn
    for i in s.shapes:
        step = s.steps[i]
        assert isinstance(step, callers.Say) and isinstance(step.what, Utterance)
    # standard scripts have no shapes; text-only speech gets no pauses
    assert caller_script(0, 3, say_).shapes == {}
    assert all(not g for _, g in caller_script(1, 3, lambda t: t, "pauses").shapes.values())

def test_spoken_of_places_the_pauses_on_the_callers_clock() -> None:
    s = caller_script(0, 2, lambda t: _utt(t, 0.8), "pauses")
    caller = callers.Caller(s.steps)
    i = min(s.shapes)
    caller.log.append(callers.StepRecord(i, "say", 100.0, 103.0, speech_start=100.3,
                                         speech_end=102.5, text="x"))
    (sp,) = spoken_of(caller, s.kinds, s.shapes)
    assert sp.scenario == "comma" and sp.gaps[0][0] == pytest.approx(101.1)
