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
* ``PAUSE`` (pause-then-decide, ``turns.bargein_pause`` and a playback that can pause: file
  and stream modes both can): on the first evidence of caller speech the bot's audio is
  paused at once (``PlaybackHandle.pause()``), then decided on: ``INTERRUPT`` once the
  speech lasted ``turns.bargein_confirm_ms`` or the recognizer has real words; ``UNPAUSE``
  (``PlaybackHandle.unpause()``: the audio continues exactly where it stopped) when the
  speech ended with nothing or only backchannel words. Every pause is bounded: the
  ``PAUSE_TIMEOUT`` signal (``turns.bargein_pause_max_ms`` after the pause) always decides.
  Playback that cannot pause, or ``bargein_pause`` off, keeps the cut-then-``RESUME`` path.

A rule field is one value, ``ANY`` (``None``), or a frozenset of accepted values.

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
    PAUSED = "paused"        # the reply is paused at the switch while we decide


class Signal(enum.Enum):
    SPEECH = "speech"                  # caller speech in progress (VAD), maybe with a partial
    SPEECH_STOPPED = "speech_stopped"  # caller speech just ended
    NOISE = "noise"                    # energy the VAD does not call speech
    DTMF = "dtmf"                      # a key press
    PAUSE_TIMEOUT = "pause_timeout"    # turns.bargein_pause_max_ms passed since the pause


class Length(enum.Enum):
    SHORT = "short"          # under turns.bargein_min_speech_ms
    LONG = "long"            # at least turns.bargein_min_speech_ms
    CONFIRMED = "confirmed"  # at least turns.bargein_confirm_ms (and bargein_min_speech_ms)


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
    PAUSE = "pause"
    UNPAUSE = "unpause"


class Key(NamedTuple):
    bot: Bot
    interruptible: bool
    signal: Signal
    length: Length
    words: Words
    words_required: bool  # turns.bargein_min_words > 0
    pausable: bool        # turns.bargein_pause and the playback can pause


ANY = None  # wildcard in a rule


class Rule(NamedTuple):
    bot: Bot | None
    interruptible: bool | None
    signal: Signal | frozenset[Signal] | None
    length: Length | frozenset[Length] | None
    words: Words | frozenset[Words] | None
    words_required: bool | None
    pausable: bool | None
    decision: Decision
    why: str

    def matches(self, key: Key) -> bool:
        return all(want is None or (got in want if isinstance(want, frozenset) else want == got)
                   for want, got in zip(self[:7], key, strict=True))


B, S, L, W, D = Bot, Signal, Length, Words, Decision
LONGER = frozenset({L.LONG, L.CONFIRMED})                 # at least bargein_min_speech_ms
ENDED = frozenset({S.SPEECH_STOPPED, S.PAUSE_TIMEOUT})    # nothing more will be heard

#: The policy. First matching row wins.
RULES: tuple[Rule, ...] = (
    #     bot         interr signal            length   words          req    pause  -> decision
    Rule(B.SILENT,   ANY,   ANY,              ANY,     ANY,           ANY,   ANY,   D.IGNORE,
         "nothing is playing; turn-taking handles the caller"),
    Rule(B.CUT,      ANY,   S.SPEECH_STOPPED, ANY,     W.NONE,        ANY,   ANY,   D.RESUME,
         "false interruption: speech stopped and nothing was recognized"),
    Rule(B.CUT,      ANY,   S.SPEECH_STOPPED, ANY,     W.BACKCHANNEL, ANY,   ANY,   D.RESUME,
         "the caller only acknowledged: carry on from the cut sentence"),
    Rule(B.CUT,      ANY,   ANY,              ANY,     ANY,           ANY,   ANY,   D.IGNORE,
         "the caller has the floor"),
    Rule(B.SPEAKING, False, ANY,              ANY,     ANY,           ANY,   ANY,   D.IGNORE,
         "prompt is not interruptible (legal notice)"),
    Rule(B.SPEAKING, True,  S.DTMF,           ANY,     ANY,           ANY,   ANY,   D.INTERRUPT,
         "a key press barges in"),
    Rule(B.SPEAKING, True,  S.NOISE,          ANY,     ANY,           ANY,   ANY,   D.IGNORE,
         "non-speech noise never interrupts"),
    Rule(B.SPEAKING, True,  S.PAUSE_TIMEOUT,  ANY,     ANY,           ANY,   ANY,   D.IGNORE,
         "a pause timer outlived its pause (already decided)"),
    Rule(B.SPEAKING, True,  ANY,              ANY,     W.BACKCHANNEL, ANY,   ANY,   D.IGNORE,
         "backchannels (mhm, okay) never interrupt on their own"),
    Rule(B.SPEAKING, True,  S.SPEECH,         LONGER,  W.ENOUGH,      ANY,   ANY,   D.INTERRUPT,
         "long enough and the recognizer heard real words"),
    Rule(B.SPEAKING, True,  S.SPEECH,         ANY,     ANY,           ANY,   True,  D.PAUSE,
         "first evidence of speech over the bot: pause it now, decide after"),
    Rule(B.SPEAKING, True,  S.SPEECH,         L.SHORT, ANY,           ANY,   False, D.WAIT,
         "too short to tell speech from a cough"),
    Rule(B.SPEAKING, True,  S.SPEECH,         LONGER,  W.NONE,        False, False, D.INTERRUPT,
         "long enough, and speech length alone is configured"),
    Rule(B.SPEAKING, True,  S.SPEECH,         LONGER,  W.NONE,        True,  False, D.WAIT,
         "long enough, waiting for the recognizer's words"),
    Rule(B.SPEAKING, True,  S.SPEECH,         LONGER,  W.FEW,         ANY,   False, D.WAIT,
         "long enough, waiting for more words"),
    Rule(B.SPEAKING, True,  S.SPEECH_STOPPED, ANY,     W.ENOUGH,      ANY,   ANY,   D.INTERRUPT,
         "a short but real utterance (\"stop\")"),
    Rule(B.SPEAKING, True,  S.SPEECH_STOPPED, LONGER,  W.NONE,        False, False, D.INTERRUPT,
         "long speech ended before it was evaluated; length alone is configured"),
    Rule(B.SPEAKING, True,  S.SPEECH_STOPPED, ANY,     ANY,           ANY,   ANY,   D.IGNORE,
         "speech ended without enough words (cough, short noise, never paused)"),
    Rule(B.PAUSED,   False, ANY,              ANY,     ANY,           ANY,   ANY,   D.UNPAUSE,
         "a prompt that cannot be interrupted is never left paused"),
    Rule(B.PAUSED,   True,  S.DTMF,           ANY,     ANY,           ANY,   ANY,   D.INTERRUPT,
         "a key press confirms the barge-in"),
    Rule(B.PAUSED,   True,  S.SPEECH,         LONGER,  W.ENOUGH,      ANY,   ANY,   D.INTERRUPT,
         "confirmed: the recognizer heard real words"),
    Rule(B.PAUSED,   True,  ENDED,            ANY,     W.ENOUGH,      ANY,   ANY,   D.INTERRUPT,
         "confirmed: the caller said real words (\"stop\")"),
    Rule(B.PAUSED,   True,  S.SPEECH,         L.CONFIRMED, W.NONE,    False, ANY,   D.INTERRUPT,
         "confirmed: speech lasted turns.bargein_confirm_ms"),
    Rule(B.PAUSED,   True,  S.SPEECH,         ANY,     ANY,           ANY,   ANY,   D.WAIT,
         "paused: waiting for words or turns.bargein_confirm_ms"),
    Rule(B.PAUSED,   True,  S.SPEECH_STOPPED, L.CONFIRMED, W.NONE,    False, ANY,   D.INTERRUPT,
         "confirmed: speech as long as bargein_confirm_ms ended before it was judged"),
    Rule(B.PAUSED,   True,  S.SPEECH_STOPPED, ANY,     ANY,           ANY,   ANY,   D.UNPAUSE,
         "speech ended with nothing or only backchannel words: carry on where it stopped"),
    Rule(B.PAUSED,   True,  S.PAUSE_TIMEOUT,  ANY,     W.FEW,         ANY,   ANY,   D.INTERRUPT,
         "pause bound: the caller kept saying real words"),
    Rule(B.PAUSED,   True,  S.PAUSE_TIMEOUT,  ANY,     ANY,           ANY,   ANY,   D.UNPAUSE,
         "pause bound: nothing decided in time, carry on (never paused for ever)"),
    Rule(B.PAUSED,   True,  S.NOISE,          ANY,     ANY,           ANY,   ANY,   D.WAIT,
         "noise while paused: keep waiting (the pause is bounded)"),
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
    pausable: bool = False  # the playback can pause; ANDed with bargein_pause


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
    if obs.speech_ms < cfg.bargein_min_speech_ms:
        length = Length.SHORT
    elif obs.speech_ms >= cfg.bargein_confirm_ms:
        length = Length.CONFIRMED
    else:
        length = Length.LONG
    return Key(obs.bot, obs.interruptible, obs.signal, length, w, cfg.bargein_min_words > 0,
               obs.pausable and cfg.bargein_pause)


def decide_key(key: Key) -> Verdict:
    for i, rule in enumerate(RULES):
        if rule.matches(key):
            return Verdict(rule.decision, key, i, rule.why)
    raise PolicyError(f"no barge-in rule for {key}")


def decide(obs: Observation, cfg: TurnsConfig) -> Verdict:
    """The policy's answer for ``obs`` under ``cfg``."""
    return decide_key(classify(obs, cfg))
