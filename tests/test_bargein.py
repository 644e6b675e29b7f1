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

# (rule index, config, observation, expected decision): one concrete case per row.
CASES = [
    (0, CFG, Observation(Bot.SILENT, SP, speech_ms=900, partial="hello there"), Decision.IGNORE),
    (1, CFG, Observation(Bot.CUT, ST, speech_ms=300, partial=""), Decision.RESUME),
    (2, CFG, Observation(Bot.CUT, ST, speech_ms=400, partial="uh huh"), Decision.RESUME),
    (3, CFG, Observation(Bot.CUT, ST, speech_ms=800, partial="I want a refund"),
     Decision.IGNORE),
    (4, CFG, Observation(Bot.SPEAKING, SP, interruptible=False, speech_ms=2000,
                         partial="stop talking please"), Decision.IGNORE),
    (5, CFG, Observation(Bot.SPEAKING, DT), Decision.INTERRUPT),
    (6, CFG, Observation(Bot.SPEAKING, NZ, speech_ms=600), Decision.IGNORE),
    (7, CFG, Observation(Bot.SPEAKING, SP, speech_ms=500, partial="Mhm, okay."),
     Decision.IGNORE),
    (8, CFG, Observation(Bot.SPEAKING, SP, speech_ms=80, partial="wait"), Decision.WAIT),
    (9, CFG, Observation(Bot.SPEAKING, SP, speech_ms=200, partial="wait"), Decision.INTERRUPT),
    (10, CFG, Observation(Bot.SPEAKING, SP, speech_ms=150, partial=""), Decision.INTERRUPT),
    (11, WORDS2, Observation(Bot.SPEAKING, SP, speech_ms=400, partial=""), Decision.WAIT),
    (12, WORDS2, Observation(Bot.SPEAKING, SP, speech_ms=400, partial="actually"),
     Decision.WAIT),
    (13, CFG, Observation(Bot.SPEAKING, ST, speech_ms=100, partial="stop"), Decision.INTERRUPT),
    (14, CFG, Observation(Bot.SPEAKING, ST, speech_ms=300, partial=""), Decision.INTERRUPT),
    (15, CFG, Observation(Bot.SPEAKING, ST, speech_ms=90, partial=""), Decision.IGNORE),
]


def test_every_rule_has_a_case() -> None:
    assert sorted(c[0] for c in CASES) == list(range(len(RULES)))


@pytest.mark.parametrize("index,cfg,obs,expected", CASES, ids=[r.why[:40] for r in RULES])
def test_rule(index: int, cfg: TurnsConfig, obs: Observation, expected: Decision) -> None:
    verdict = decide(obs, cfg)
    assert (verdict.rule, verdict.decision) == (index, expected), verdict


def test_table_has_no_holes() -> None:
    """Every combination of inputs is decided by some row (first match)."""
    for combo in itertools.product(Bot, (True, False), Signal, Length, Words, (True, False)):
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
