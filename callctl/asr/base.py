"""Recognizer interface shared by the ASR engines, and the transcript events.

Contract: an ``Engine`` is built once per process (it loads the model) and hands out
``Recognizer`` objects with ``acquire()``; ``release()`` gives one back for reuse by another
call. A recognizer decodes one stream of mono int16 little-endian PCM at ``sample_rate``:
``accept(pcm)`` feeds audio and returns the current partial text (``None`` if unchanged);
``final()`` ends the utterance, returns its ``Recognition`` and leaves the recognizer ready
for the next utterance of the same call. ``accept``/``final`` are CPU-bound and blocking: call
them through ``gevent.get_hub().threadpool`` (the ``Listener`` does), never on the hub.
One recognizer is used by one greenlet at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class AsrModelError(RuntimeError):
    """A model directory is missing or unusable. The message names the path (start-up error)."""


def require_model_files(path: Path, required: Iterable[str], kind: str, hint: str) -> None:
    """Raise ``AsrModelError`` naming ``path`` unless it is a directory with ``required``."""
    if not path.is_dir():
        raise AsrModelError(f"{kind} model directory {path} does not exist ({hint})")
    missing = [f for f in required if not (path / f).is_file()]
    if missing:
        raise AsrModelError(f"{path} is not a {kind} model directory: missing "
                            + ", ".join(missing))


@dataclass(frozen=True)
class Word:
    """One recognized word with times in seconds from the start of the decoded audio."""

    word: str
    start: float
    end: float
    conf: float


@dataclass(frozen=True)
class Recognition:
    """What ``final()`` returns: the text, word timings if the engine has them, CPU spent."""

    text: str
    words: tuple[Word, ...] = ()
    decode_s: float = 0.0


@dataclass(frozen=True)
class PartialTranscript:
    """The recognizer's current guess for the utterance in progress."""

    text: str
    at: float


@dataclass(frozen=True)
class FinalTranscript:
    """A final result. ``speculative``: computed at speech end before the turn committed;
    it is thrown away (superseded) if the caller resumes."""

    text: str
    words: tuple[Word, ...]
    speculative: bool
    at: float
    decode_s: float


class Recognizer(Protocol):
    """One decoding stream (see module docstring)."""

    engine: str
    sample_rate: int

    def accept(self, pcm: bytes) -> str | None:
        """Feed audio; return the new partial text if it changed, else None. Blocking."""

    def final(self) -> Recognition:
        """Finish the utterance and return it; ready for the next one. Blocking."""

    def reset(self) -> None:
        """Drop any audio not yet finalized."""

    def set_grammar(self, phrases: Sequence[str] | None) -> tuple[str, ...] | None:
        """Restrict recognition to ``phrases`` (None: open vocabulary again), from the next
        utterance on (an utterance in progress keeps its grammar). Safe to call from another
        thread than ``accept``'s. Returns the phrases in effect for the next utterance
        (engines drop what they cannot use; None: open vocabulary). Engines without runtime
        grammars ignore it and return None."""


class Engine(Protocol):
    """A loaded model that hands out recognizers."""

    name: str
    sample_rate: int

    def acquire(self) -> Recognizer:
        """A recognizer for one call (warm from the pool when possible)."""

    def release(self, recognizer: Recognizer) -> None:
        """Give a recognizer back after the call; it is reset before reuse."""
