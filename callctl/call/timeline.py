"""A call's timeline: monotonic timestamps of each hop of each turn.

Contract: ``Turn.mark(name)`` records ``time.monotonic()`` once per name (a second mark of the
same name is ignored, so the first occurrence wins); ``Turn.hops()`` derives the hop durations
named in ``callctl.metrics.HOPS`` from whichever marks exist. Nothing here does I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

#: Marks in the order they happen within one turn.
MARKS = (
    "speech_start",
    "speech_end",
    "endpoint",
    "asr_final",
    "deferred",          # committed over the bot: answered once its prompt had played
    "dialog",
    "tts_first_chunk",
    "playback_cmd",
    "playback_started",
    "playback_interrupted",
)

# hop name -> (from mark, to mark)
HOP_MARKS = {
    "endpoint": ("speech_end", "endpoint"),
    "asr_final": ("speech_end", "asr_final"),
    "dialog": ("asr_final", "dialog"),
    "tts_first_chunk": ("dialog", "tts_first_chunk"),
    "playback_start": ("tts_first_chunk", "playback_cmd"),
    "play_out": ("playback_cmd", "playback_started"),
}


@dataclass
class Turn:
    """One caller turn and the bot's reply to it."""

    index: int
    marks: dict[str, float] = field(default_factory=dict)
    transcript: str = ""
    reply: str = ""
    #: How the listener ended the turn (``callctl.turns``): reason, the table's row, the turn
    #: model's probability and CPU, the silence waited and the silence the row needed.
    endpoint: dict[str, Any] = field(default_factory=dict)

    def mark(self, name: str, at: float | None = None) -> float:
        """Record mark ``name`` (first one wins); returns the recorded time."""
        if name not in MARKS:
            raise ValueError(f"unknown mark {name!r}; allowed: {', '.join(MARKS)}")
        return self.marks.setdefault(name, time.monotonic() if at is None else at)

    def hops(self) -> dict[str, float]:
        """Hop durations in seconds for the hops whose two marks exist."""
        out = {}
        for hop, (a, b) in HOP_MARKS.items():
            if a in self.marks and b in self.marks:
                out[hop] = max(0.0, self.marks[b] - self.marks[a])
        return out

    def turn_latency(self) -> float | None:
        """Caller speech end to reply audio started at the switch, if both are known."""
        if "speech_end" in self.marks and "playback_started" in self.marks:
            return max(0.0, self.marks["playback_started"] - self.marks["speech_end"])
        return None

    def record(self, origin: float) -> dict[str, Any]:
        """A JSON-ready record with marks in ms relative to ``origin`` (the call's start)."""
        return {
            "index": self.index,
            "transcript": self.transcript,
            "reply": self.reply,
            "marks_ms": {k: round((v - origin) * 1000, 1) for k, v in self.marks.items()},
            "hops_ms": {k: round(v * 1000, 1) for k, v in self.hops().items()},
            "endpoint": dict(self.endpoint),
        }
