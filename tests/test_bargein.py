"""The barge-in policy table, row by row, plus completeness over every input combination."""

from __future__ import annotations

import itertools

import pytest

from callctl.bargein import (
    RULES,
    Bot,
    Decision,
    Key,
    Length,
    Observation,
    Signal,
    Words,
    classify,
    decide,
    decide_key,
    words_of,
)
from callctl.config import TurnsConfig

CFG = TurnsConfig()                                   # 150 ms, words not required
WORDS2 = TurnsConfig(bargein_min_words=2)             # two real words required
SP, ST, NZ, DT = Signal.SPEECH, Signal.SPEECH_STOPPED, Signal.NOISE, Signal.DTMF
PT = Signal.PAUSE_TIMEOUT
SPK, PSD = Bot.SPEAKING, Bot.PAUSED
CONFIRM = CFG.bargein_confirm_ms

# (rule index, config, observation, expected decision): one concrete case per row.
CASES = [
    (0, CFG, Observation(Bot.SILENT, SP, speech_ms=900, partial="hello there"), Decision.IGNORE),
    (1, CFG, Observation(Bot.CUT, ST, speech_ms=300, partial=""), Decision.RESUME),
    (2, CFG, Observation(Bot.CUT, ST, speech_ms=400, partial="uh huh"), Decision.RESUME),
    (3, CFG, Observation(Bot.CUT, ST, speech_ms=800, partial="I want a refund"),
     Decision.IGNORE),
    (4, CFG, Observation(SPK, SP, interruptible=False, speech_ms=2000,
                         partial="stop talking please"), Decision.IGNORE),
    (5, CFG, Observation(SPK, DT), Decision.INTERRUPT),
    (6, CFG, Observation(SPK, NZ, speech_ms=600), Decision.IGNORE),
    (7, CFG, Observation(SPK, PT, speech_ms=600, partial="wait", pausable=True),
     Decision.IGNORE),
    (8, CFG, Observation(SPK, SP, speech_ms=500, partial="Mhm, okay."), Decision.IGNORE),
    (9, CFG, Observation(SPK, SP, speech_ms=200, partial="wait"), Decision.INTERRUPT),
    (10, CFG, Observation(SPK, SP, speech_ms=0, partial="", pausable=True), Decision.PAUSE),
    (11, CFG, Observation(SPK, SP, speech_ms=80, partial="wait"), Decision.WAIT),
    (12, CFG, Observation(SPK, SP, speech_ms=150, partial=""), Decision.INTERRUPT),
    (13, WORDS2, Observation(SPK, SP, speech_ms=400, partial=""), Decision.WAIT),
    (14, WORDS2, Observation(SPK, SP, speech_ms=400, partial="actually"), Decision.WAIT),
    (15, CFG, Observation(SPK, ST, speech_ms=100, partial="stop"), Decision.INTERRUPT),
    (16, CFG, Observation(SPK, ST, speech_ms=300, partial=""), Decision.INTERRUPT),
    (17, CFG, Observation(SPK, ST, speech_ms=90, partial=""), Decision.IGNORE),
    (18, CFG, Observation(PSD, SP, interruptible=False, speech_ms=900, partial="stop"),
     Decision.UNPAUSE),
    (19, CFG, Observation(PSD, DT), Decision.INTERRUPT),
    (20, CFG, Observation(PSD, SP, speech_ms=250, partial="no wait"), Decision.INTERRUPT),
    (21, CFG, Observation(PSD, ST, speech_ms=120, partial="stop"), Decision.INTERRUPT),
    (22, CFG, Observation(PSD, SP, speech_ms=CONFIRM, partial=""), Decision.INTERRUPT),
    (23, CFG, Observation(PSD, SP, speech_ms=300, partial=""), Decision.WAIT),
    (24, CFG, Observation(PSD, ST, speech_ms=CONFIRM + 100, partial=""), Decision.INTERRUPT),
    (25, CFG, Observation(PSD, ST, speech_ms=400, partial="mhm"), Decision.UNPAUSE),
    (26, WORDS2, Observation(PSD, PT, speech_ms=2500, partial="actually"), Decision.INTERRUPT),
    (27, CFG, Observation(PSD, PT, speech_ms=2500, partial="uh huh yeah"), Decision.UNPAUSE),
    (28, CFG, Observation(PSD, NZ, speech_ms=300), Decision.WAIT),
]


def test_every_rule_has_a_case() -> None:
    assert sorted(c[0] for c in CASES) == list(range(len(RULES)))


@pytest.mark.parametrize("index,cfg,obs,expected", CASES, ids=[r.why[:40] for r in RULES])
def test_rule(index: int, cfg: TurnsConfig, obs: Observation, expected: Decision) -> None:
    verdict = decide(obs, cfg)
    assert (verdict.rule, verdict.decision) == (index, expected), verdict


def test_table_has_no_holes() -> None:
    """Every combination of inputs is decided by some row (first match)."""
    for combo in itertools.product(Bot, (True, False), Signal, Length, Words, (True, False),
                                   (True, False)):
        decide_key(Key(*combo))


def test_backchannels_come_from_config() -> None:
    cfg = TurnsConfig(backchannels=["ja", "genau"])
    obs = Observation(Bot.SPEAKING, SP, speech_ms=500, partial="genau ja")
    assert decide(obs, cfg).decision is Decision.IGNORE
    # "okay" is no backchannel under this config: it interrupts.
    assert decide(Observation(Bot.SPEAKING, SP, speech_ms=500, partial="okay"),
                  cfg).decision is Decision.INTERRUPT


def test_backchannel_plus_real_words_interrupts() -> None:
    obs = Observation(Bot.SPEAKING, SP, speech_ms=700, partial="yeah but no, that's wrong")
    assert decide(obs, CFG).decision is Decision.INTERRUPT


def test_min_words_counts_only_real_words() -> None:
    few = Observation(Bot.SPEAKING, SP, speech_ms=700, partial="okay yeah wait")
    enough = Observation(Bot.SPEAKING, SP, speech_ms=700, partial="okay wait no")
    assert classify(few, WORDS2).words is Words.FEW
    assert decide(few, WORDS2).decision is Decision.WAIT
    assert decide(enough, WORDS2).decision is Decision.INTERRUPT


def test_speech_threshold_is_inclusive() -> None:
    at = Observation(Bot.SPEAKING, SP, speech_ms=CFG.bargein_min_speech_ms)
    below = Observation(Bot.SPEAKING, SP, speech_ms=CFG.bargein_min_speech_ms - 1)
    assert decide(at, CFG).decision is Decision.INTERRUPT
    assert decide(below, CFG).decision is Decision.WAIT


def test_not_interruptible_ignores_dtmf_too() -> None:
    obs = Observation(Bot.SPEAKING, DT, interruptible=False)
    assert decide(obs, CFG).decision is Decision.IGNORE


def test_false_interruption_never_goes_silent() -> None:
    """After a cut, speech that stops without real words always resumes the reply."""
    for partial in ("", "mm", "uh huh", "Okay."):
        for ms in (20, 150, 2000):
            obs = Observation(Bot.CUT, ST, speech_ms=ms, partial=partial)
            assert decide(obs, CFG).decision is Decision.RESUME, (partial, ms)


def test_words_of() -> None:
    assert words_of("Uh-huh, that's RIGHT!") == ["uh", "huh", "that's", "right"]
    assert words_of("  ...  ") == []


def test_pause_path_needs_the_setting_and_a_pausable_playback() -> None:
    """``turns.bargein_pause = false`` or stream playback: the old cut path (WAIT, then CUT)."""
    off = TurnsConfig(bargein_pause=False)
    onset = Observation(SPK, SP, speech_ms=0, partial="", pausable=True)
    assert decide(onset, CFG).decision is Decision.PAUSE
    assert decide(onset, off).decision is Decision.WAIT
    assert decide(Observation(SPK, SP, speech_ms=0), CFG).decision is Decision.WAIT


def test_paused_backchannel_or_nothing_always_unpauses() -> None:
    """A paused bot whose caller said nothing or only acknowledged is never left paused and
    never cut: speech end and the pause bound both carry on."""
    for partial in ("", "mm", "uh huh", "Okay."):
        for ms in (20, 150, CONFIRM - 1):
            for sig in (ST, PT):
                obs = Observation(PSD, sig, speech_ms=ms, partial=partial)
                assert decide(obs, CFG).decision is Decision.UNPAUSE, (partial, ms, sig)


def test_paused_confirmation_by_length_or_words() -> None:
    assert decide(Observation(PSD, SP, speech_ms=CONFIRM - 1), CFG).decision is Decision.WAIT
    assert decide(Observation(PSD, SP, speech_ms=CONFIRM), CFG).decision is Decision.INTERRUPT
    # with words required, length alone never confirms; the words do
    assert decide(Observation(PSD, SP, speech_ms=3000), WORDS2).decision is Decision.WAIT
    assert decide(Observation(PSD, SP, speech_ms=400, partial="no no"),
                  WORDS2).decision is Decision.INTERRUPT
    # backchannel words over a paused bot wait for the end of speech, however long
    assert decide(Observation(PSD, SP, speech_ms=3000, partial="yeah okay"),
                  CFG).decision is Decision.WAIT
