"""Barge-in policy: what caller activity does to the bot's speech, as ONE table. No I/O.

How this works: an ``Observation`` (what the bot is doing, what the caller just did, how
long the caller has spoken, the words of the partial transcript) is reduced by ``classify``
to a ``Key`` of five small enums, using ``turns.bargein_min_speech_ms``,
``turns.bargein_min_words`` and ``turns.backchannels``. ``RULES`` is read top to bottom and
the first row matching the key gives the ``Decision``:

* ``IGNORE``: leave the bot alone (or: not a barge-in matter; turn-taking handles it),
* ``INTERRUPT``: stop playback now (``PlaybackHandle.interrupt()``),
* ``WAIT``: not yet; ask again on the next partial / 20 ms of speech,
* ``RESUME``: the bot was cut but the caller said nothing after all (a cough, a "mhm"):
  repeat the cut sentence and the rest of the reply (``PlaybackHandle.remaining_text()``),
  never leave the line silent.

Every combination of key values is covered by some row (tested), and every row has a test.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from callctl.config import TurnsConfig


class Bot(enum.Enum):
    SILENT = "silent"        # nothing playing
    SPEAKING = "speaking"    # a reply is playing
    CUT = "cut"              # we interrupted the reply; the caller has the floor


class Signal(enum.Enum):
    SPEECH = "speech"                  # caller speech in progress (VAD), maybe with a partial
    SPEECH_STOPPED = "speech_stopped"  # caller speech just ended
    NOISE = "noise"                    # energy the VAD does not call speech
    DTMF = "dtmf"                      # a key press


class Length(enum.Enum):
    SHORT = "short"   # under turns.bargein_min_speech_ms
    LONG = "long"


class Words(enum.Enum):
    NONE = "none"                # nothing recognized (yet)
    BACKCHANNEL = "backchannel"  # only words from turns.backchannels ("mhm", "okay", …)
    FEW = "few"                  # real words, fewer than turns.bargein_min_words
    ENOUGH = "enough"            # at least turns.bargein_min_words real words (≥ 1)


class Decision(enum.Enum):
    IGNORE = "ignore"
    INTERRUPT = "interrupt"
    WAIT = "wait"
    RESUME = "resume"


class Key(NamedTuple):
    bot: Bot
    interruptible: bool
    signal: Signal
    length: Length
    words: Words
    words_required: bool  # turns.bargein_min_words > 0


ANY = None  # wildcard in a rule


class Rule(NamedTuple):
    bot: Bot | None
    interruptible: bool | None
    signal: Signal | None
    length: Length | None
    words: Words | None
    words_required: bool | None
    decision: Decision
    why: str

    def matches(self, key: Key) -> bool:
        return all(want is None or want == got for want, got in zip(self[:6], key, strict=True))


B, S, L, W, D = Bot, Signal, Length, Words, Decision

#: The policy. First matching row wins.
RULES: tuple[Rule, ...] = (
    #     bot         interr signal             length  words          req    -> decision
    Rule(B.SILENT,   ANY,   ANY,               ANY,    ANY,           ANY,   D.IGNORE,
         "nothing is playing; turn-taking handles the caller"),
    Rule(B.CUT,      ANY,   S.SPEECH_STOPPED,  ANY,    W.NONE,        ANY,   D.RESUME,
         "false interruption: speech stopped and nothing was recognized"),
    Rule(B.CUT,      ANY,   S.SPEECH_STOPPED,  ANY,    W.BACKCHANNEL, ANY,   D.RESUME,
         "the caller only acknowledged: carry on from the cut sentence"),
    Rule(B.CUT,      ANY,   ANY,               ANY,    ANY,           ANY,   D.IGNORE,
         "the caller has the floor"),
    Rule(B.SPEAKING, False, ANY,               ANY,    ANY,           ANY,   D.IGNORE,
         "prompt is not interruptible (legal notice)"),
    Rule(B.SPEAKING, True,  S.DTMF,            ANY,    ANY,           ANY,   D.INTERRUPT,
         "a key press barges in"),
    Rule(B.SPEAKING, True,  S.NOISE,           ANY,    ANY,           ANY,   D.IGNORE,
         "non-speech noise never interrupts"),
    Rule(B.SPEAKING, True,  ANY,               ANY,    W.BACKCHANNEL, ANY,   D.IGNORE,
         "backchannels (mhm, okay) never interrupt on their own"),
    Rule(B.SPEAKING, True,  S.SPEECH,          L.SHORT, ANY,          ANY,   D.WAIT,
         "too short to tell speech from a cough"),
    Rule(B.SPEAKING, True,  S.SPEECH,          L.LONG, W.ENOUGH,      ANY,   D.INTERRUPT,
         "long enough and the recognizer heard real words"),
    Rule(B.SPEAKING, True,  S.SPEECH,          L.LONG, W.NONE,        False, D.INTERRUPT,
         "long enough, and speech length alone is configured"),
    Rule(B.SPEAKING, True,  S.SPEECH,          L.LONG, W.NONE,        True,  D.WAIT,
         "long enough, waiting for the recognizer's words"),
    Rule(B.SPEAKING, True,  S.SPEECH,          L.LONG, W.FEW,         ANY,   D.WAIT,
         "long enough, waiting for more words"),
    Rule(B.SPEAKING, True,  S.SPEECH_STOPPED,  ANY,    W.ENOUGH,      ANY,   D.INTERRUPT,
         "a short but real utterance (\"stop\")"),
    Rule(B.SPEAKING, True,  S.SPEECH_STOPPED,  L.LONG, W.NONE,        False, D.INTERRUPT,
         "long speech ended before it was evaluated; length alone is configured"),
    Rule(B.SPEAKING, True,  S.SPEECH_STOPPED,  ANY,    ANY,           ANY,   D.IGNORE,
         "speech ended without enough words (cough, short noise)"),
)


class PolicyError(Exception):
    """No rule matches a key: the table has a hole (our bug)."""


@dataclass(frozen=True)
class Observation:
    """One thing the caller did while the bot is in state ``bot``."""

    bot: Bot
    signal: Signal
    interruptible: bool = True
    speech_ms: int = 0
    partial: str = ""   # the recognizer's words so far for this caller speech


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    key: Key
    rule: int      # index into RULES, for logs and tests
    why: str


_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)


def words_of(text: str) -> list[str]:
    """Lower-case words of a transcript, punctuation dropped."""
    return [w.lower() for w in _WORD.findall(text)]


def backchannel_words(backchannels: Iterable[str]) -> frozenset[str]:
    """Every word appearing in the configured backchannel phrases ("uh huh" → uh, huh)."""
    return frozenset(w for phrase in backchannels for w in words_of(phrase))


def classify(obs: Observation, cfg: TurnsConfig) -> Key:
    words = words_of(obs.partial)
    bc = backchannel_words(cfg.backchannels)
    real = [w for w in words if w not in bc]
    if not words:
        w = Words.NONE
    elif not real:
        w = Words.BACKCHANNEL
    elif len(real) >= max(1, cfg.bargein_min_words):
        w = Words.ENOUGH
    else:
        w = Words.FEW
    length = Length.LONG if obs.speech_ms >= cfg.bargein_min_speech_ms else Length.SHORT
    return Key(obs.bot, obs.interruptible, obs.signal, length, w, cfg.bargein_min_words > 0)


def decide_key(key: Key) -> Verdict:
    for i, rule in enumerate(RULES):
        if rule.matches(key):
            return Verdict(rule.decision, key, i, rule.why)
    raise PolicyError(f"no barge-in rule for {key}")


def decide(obs: Observation, cfg: TurnsConfig) -> Verdict:
    """The policy's answer for ``obs`` under ``cfg``."""
    return decide_key(classify(obs, cfg))
