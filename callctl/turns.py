"""Endpointing: when has the caller finished their turn? A pure policy table and its events.

How this works: the ``Listener`` describes the moment as a ``ListenState`` (is the caller
speaking, how long since speech ended, how long the turn has lasted, the best text so far,
how long we have waited for input, and the turn model's verdict on this pause) and
``EndpointPolicy.decide`` answers with a ``Decision``: wait (and for how long at most),
commit the turn, or report no input. Nothing here does I/O or reads a clock, so every row of
the table is tested.

Two judges of the pause (DESIGN.md §8-9: a 200 ms silence answered callers inside their
sentences at commas and mid-sentence pauses):

- the **words** (``classify`` of the recognizer's text): ANSWER ("yes", "no thanks"),
  COMPLETE (ends with . ? !), TRAILING (ends with "and", "um", "the", "is", a comma, ...),
  NUMBER (a digit string still being read: two or more number words at the end, or one when
  the flow expects digits), else NEUTRAL (also: no text, or a model that gives no English
  words);
- the **turn model** (``callctl.media.smart_turn``: Smart Turn v3.2 on the prosody, run once
  per pause off the hub): OFF (no model, it failed, or this listener does not use it),
  PENDING (running), COMPLETE (probability >= ``turn_model_threshold``) or INCOMPLETE.

The table gives the silence each pair needs (names of ``turns.*`` settings; defaults in ms):

| words \\ model | OFF              | PENDING          | COMPLETE         | INCOMPLETE         |
| -------------- | ---------------- | ---------------- | ---------------- | ------------------ |
| ANSWER         | complete (120)   | model wait (500) | complete         | trailing (600)     |
| COMPLETE       | complete (120)   | model wait (500) | complete         | incomplete (900)   |
| NEUTRAL        | endpoint (200)   | model wait (500) | complete         | incomplete (900)   |
| NUMBER         | number (700)     | number           | number           | incomplete (900)   |
| TRAILING       | trailing (600)   | trailing         | trailing         | incomplete (900)   |

So a confident "complete" ends the turn as soon as its verdict is in (the model runs during
the first ~100-200 ms of the pause); "incomplete" waits up to ``incomplete_silence_ms``; a
verdict still missing after ``turn_model_wait_ms`` of silence (an overloaded machine) is not
waited for any longer (reason ``model_late_*``; a model that failed counts as OFF). The
words win where they are specific: a trailing "and" or a number being read waits whatever
the prosody says, and a short answer the model doubts waits ``trailing_silence_ms``, not the
whole bound ("Okay." is also what Whisper writes at the comma of "Okay, thank you very
much."). Every decision names its row (``Decision.row``) and the listener writes it into
the turn record with the probability and the silence waited.

Plus: a turn longer than ``max_utterance_ms`` is committed even while speech goes on; with
no speech at all for ``no_input_ms`` after the listener was armed, NO_INPUT.

Speculation: at speech end the listener finalizes the recognizer at once and emits a
speculative ``FinalTranscript`` (so dialog and TTS can start) while the turn model runs,
then waits for the policy to commit (``TurnCommitted``). If the caller speaks again first,
``TurnResumed`` says: throw the speculative work away; the final text of the turn will
include both parts. A long wait therefore costs nothing when the turn was complete.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from callctl.asr.base import Word

if TYPE_CHECKING:
    from callctl.call.timeline import Turn
    from callctl.config import TurnsConfig

#: Words after which a speaker is usually not done (English; lower case).
TRAILING_WORDS = frozenset({
    "and", "or", "but", "so", "because", "cause", "um", "uh", "er", "erm", "hmm", "the", "a",
    "an", "to", "of", "for", "with", "my", "your", "our", "is", "are", "was", "if", "that",
    "then", "like", "in", "on", "at", "i", "i'm", "it's", "we", "about", "which", "when",
})
#: Whole answers that are complete on their own.
COMPLETE_ANSWERS = frozenset({
    "yes", "no", "yeah", "yep", "nope", "okay", "ok", "sure", "right", "correct", "thanks",
    "thank you", "bye", "goodbye", "hello", "hi", "agent", "operator", "billing", "help",
    "that's it", "that's all", "no thanks", "yes please",
})
#: Words of a number read out digit by digit or in groups (English; lower case).
NUMBER_WORDS = frozenset({
    "zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty", "thirty", "forty", "fifty", "sixty", "seventy",
    "eighty", "ninety", "hundred", "thousand", "double", "triple",
})
_WORD = re.compile(r"[\w']+")      # any script: a Korean model's last word is a word too


class Completeness(enum.Enum):
    """What the words say about the pause (see the module docstring)."""

    ANSWER = "answer"
    COMPLETE = "complete"
    NEUTRAL = "neutral"
    NUMBER = "number"
    TRAILING = "trailing"


def _is_number(word: str) -> bool:
    return word.isdigit() or word in NUMBER_WORDS


def classify(text: str, expect_number: bool = False) -> Completeness:
    """How complete ``text`` (a partial or final transcript) sounds. Pure. With
    ``expect_number`` (the flow asks for digits) one trailing number word is a NUMBER."""
    stripped = text.strip()
    words = _WORD.findall(stripped.lower())
    if not words:
        return Completeness.NEUTRAL
    if words[-1] in TRAILING_WORDS:
        return Completeness.TRAILING
    if stripped.endswith((",", "-", "...", "…")):
        return Completeness.TRAILING
    if " ".join(words) in COMPLETE_ANSWERS:
        return Completeness.ANSWER
    if stripped.endswith((".", "?", "!")):
        return Completeness.COMPLETE
    run = 0
    for w in reversed(words):
        if not _is_number(w):
            break
        run += 1
    if run >= 2 or (run == 1 and expect_number):
        return Completeness.NUMBER
    return Completeness.NEUTRAL


class ModelVerdict(enum.Enum):
    """The turn model on this pause (see the module docstring)."""

    OFF = "off"
    PENDING = "pending"
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"


class Action(enum.Enum):
    WAIT = "wait"
    COMMIT = "commit"
    NO_INPUT = "no_input"


@dataclass(frozen=True)
class ListenState:
    """The facts the policy decides on. Times in ms; ``None`` = not applicable."""

    speaking: bool
    silence_ms: float | None      # since the last speech ended (None: no speech this turn)
    utterance_ms: float           # since this turn's speech started (0 without speech)
    text: str                     # best text so far (speculative final, else partial)
    waiting_ms: float | None      # since the no-input timer was armed (None: not armed)
    probability: float | None = None   # the turn model on this pause (None: no verdict)
    model_pending: bool = False   # ... it is running
    expect_number: bool = False   # the flow waits for digits


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    recheck_ms: float | None = None   # for WAIT: when the answer can change at the latest
    row: tuple[Completeness, ModelVerdict] | None = None   # the pause's row of the table
    need_ms: float | None = None      # the silence that row needs


#: The table: (words, model) -> the ``EndpointPolicy`` field giving the silence needed.
#: ``None`` for a PENDING cell: wait for the verdict up to ``turn_model_wait_ms``.
TABLE: dict[tuple[Completeness, ModelVerdict], str | None] = {}
for _w, _cells in {
    Completeness.ANSWER: ("complete", None, "complete", "trailing"),
    Completeness.COMPLETE: ("complete", None, "complete", "incomplete"),
    Completeness.NEUTRAL: ("endpoint", None, "complete", "incomplete"),
    Completeness.NUMBER: ("number", "number", "number", "incomplete"),
    Completeness.TRAILING: ("trailing", "trailing", "trailing", "incomplete"),
}.items():
    for _m, _cell in zip(ModelVerdict, _cells, strict=True):
        TABLE[(_w, _m)] = None if _cell is None else f"{_cell}_silence_ms"


@dataclass(frozen=True)
class EndpointPolicy:
    """The endpointing table (see the module docstring)."""

    endpoint_silence_ms: int = 200
    complete_silence_ms: int = 120
    trailing_silence_ms: int = 600
    max_utterance_ms: int = 15000
    no_input_ms: int = 8000
    number_silence_ms: int = 700
    incomplete_silence_ms: int = 900
    turn_model_wait_ms: int = 500
    turn_model_threshold: float = 0.5

    @classmethod
    def from_config(cls, cfg: TurnsConfig) -> EndpointPolicy:
        return cls(cfg.endpoint_silence_ms, cfg.complete_silence_ms, cfg.trailing_silence_ms,
                   cfg.max_utterance_ms, cfg.no_input_ms, cfg.number_silence_ms,
                   cfg.incomplete_silence_ms, cfg.turn_model_wait_ms,
                   cfg.turn_model_threshold)

    def verdict(self, s: ListenState) -> ModelVerdict:
        if s.model_pending:
            return ModelVerdict.PENDING
        if s.probability is None:
            return ModelVerdict.OFF
        return (ModelVerdict.COMPLETE if s.probability >= self.turn_model_threshold
                else ModelVerdict.INCOMPLETE)

    def required_silence_ms(self, completeness: Completeness,
                            model: ModelVerdict = ModelVerdict.OFF) -> int:
        """The silence the table's cell needs. A PENDING cell without a setting waits for
        the verdict up to ``turn_model_wait_ms`` (at least what the OFF cell needs)."""
        cell = TABLE[(completeness, model)]
        if cell is None:
            return max(self.turn_model_wait_ms,
                       self.required_silence_ms(completeness, ModelVerdict.OFF))
        return int(getattr(self, cell))

    def decide(self, s: ListenState) -> Decision:
        """What to do now. Pure; total over all ``ListenState`` values."""
        if not s.speaking and s.silence_ms is None:  # no speech yet in this turn
            if s.waiting_ms is None:
                return Decision(Action.WAIT, "idle")
            if s.waiting_ms >= self.no_input_ms:
                return Decision(Action.NO_INPUT, "no_input")
            return Decision(Action.WAIT, "waiting_for_speech", self.no_input_ms - s.waiting_ms)
        if s.utterance_ms >= self.max_utterance_ms:
            return Decision(Action.COMMIT, "max_utterance")
        if s.speaking or s.silence_ms is None:
            return Decision(Action.WAIT, "speaking", self.max_utterance_ms - s.utterance_ms)
        words = classify(s.text, s.expect_number)
        model = self.verdict(s)
        row = (words, model)
        need = self.required_silence_ms(words, model)
        done = s.silence_ms >= need
        if model is ModelVerdict.OFF:
            name = f"{'silence' if done else 'pause'}_{words.value}"
        elif TABLE[row] is None and done:         # no verdict in time: ended without it
            name = f"model_late_{words.value}"
        else:
            name = f"model_{model.value}_{words.value}"
        if done:
            return Decision(Action.COMMIT, name, None, row, need)
        return Decision(Action.WAIT, name, need - s.silence_ms, row, need)


# ---------------------------------------------------------------------------------------------
# Turn events emitted by the Listener (besides VAD and transcript events).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnResumed:
    """The caller spoke again before the turn committed: drop speculative work."""

    at: float
    discarded_text: str


@dataclass(frozen=True)
class TurnCommitted:
    """The caller's turn is over. ``turn`` carries the timeline marks."""

    text: str
    words: tuple[Word, ...]
    reason: str
    at: float
    turn: Turn


@dataclass(frozen=True)
class NoInput:
    """Armed no-input timer expired without speech."""

    at: float


@dataclass(frozen=True)
class NoAudio:
    """The fork has sent no audio for ``seconds`` (never connected, paused or stalled)."""

    seconds: float
    at: float


@dataclass(frozen=True)
class AsrFailed:
    """The recognizer failed or hung: this turn gets no transcript (the listener takes a fresh
    recognizer for the next turn when it has an engine, else the call gets no more)."""

    error: str
    at: float
