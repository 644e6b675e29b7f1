"""Endpointing: when has the caller finished their turn? A pure policy and its events.

How this works: the ``Listener`` describes the moment as a ``ListenState`` (is the caller
speaking, how long since speech ended, how long the turn has lasted, the best text so far,
how long we have waited for input) and ``EndpointPolicy.decide`` answers with a ``Decision``:
wait (and for how long at most), commit the turn, or report no input. Nothing here does I/O
or reads a clock, so every rule is tested as a table.

The silence needed after speech depends on what the recognizer heard (DESIGN.md §8: silence
alone cut turns short at commas on 6–20 % of turns):

| text heard                          | completeness | silence needed          |
| ----------------------------------- | ------------ | ----------------------- |
| ends with a trailing word ("and",   | TRAILING     | ``trailing_silence_ms`` |
|   "um", "the", "because", ...)      |              |                         |
| ends with . ? ! or is a complete    | COMPLETE     | ``complete_silence_ms`` |
|   short answer ("yes", "no", ...)   |              |                         |
| anything else (incl. nothing)       | NEUTRAL      | ``endpoint_silence_ms`` |

Plus: a turn longer than ``max_utterance_ms`` is committed even while speech goes on; with
no speech at all for ``no_input_ms`` after the listener was armed, NO_INPUT.

Speculation: at speech end the listener finalizes the recognizer at once and emits a
speculative ``FinalTranscript`` (so dialog and TTS can start), then waits for the policy to
commit (``TurnCommitted``). If the caller speaks again first, ``TurnResumed`` says: throw the
speculative work away; the final text of the turn will include both parts.
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
_WORD = re.compile(r"[\w']+")      # any script: a Korean model's last word is a word too


class Completeness(enum.Enum):
    COMPLETE = "complete"
    NEUTRAL = "neutral"
    TRAILING = "trailing"


def classify(text: str) -> Completeness:
    """How complete ``text`` (a partial or final transcript) sounds. Pure."""
    stripped = text.strip()
    words = _WORD.findall(stripped.lower())
    if not words:
        return Completeness.NEUTRAL
    if words[-1] in TRAILING_WORDS:
        return Completeness.TRAILING
    if stripped.endswith((",", "-", "...", "…")):
        return Completeness.TRAILING
    if stripped.endswith((".", "?", "!")) or " ".join(words) in COMPLETE_ANSWERS:
        return Completeness.COMPLETE
    return Completeness.NEUTRAL


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


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    recheck_ms: float | None = None   # for WAIT: when the answer can change at the latest


@dataclass(frozen=True)
class EndpointPolicy:
    """The endpointing table (see the module docstring)."""

    endpoint_silence_ms: int = 200
    complete_silence_ms: int = 120
    trailing_silence_ms: int = 600
    max_utterance_ms: int = 15000
    no_input_ms: int = 8000

    @classmethod
    def from_config(cls, cfg: TurnsConfig) -> EndpointPolicy:
        return cls(cfg.endpoint_silence_ms, cfg.complete_silence_ms, cfg.trailing_silence_ms,
                   cfg.max_utterance_ms, cfg.no_input_ms)

    def required_silence_ms(self, completeness: Completeness) -> int:
        return {
            Completeness.COMPLETE: self.complete_silence_ms,
            Completeness.NEUTRAL: self.endpoint_silence_ms,
            Completeness.TRAILING: self.trailing_silence_ms,
        }[completeness]

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
        completeness = classify(s.text)
        need = self.required_silence_ms(completeness)
        if s.silence_ms >= need:
            return Decision(Action.COMMIT, f"silence_{completeness.value}")
        return Decision(Action.WAIT, f"pause_{completeness.value}", need - s.silence_ms)


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
