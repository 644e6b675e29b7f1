"""Smart Turn v3.2: an audio end-of-turn model. The one module that imports onnxruntime for it.

How this works: ``SmartTurn(path)`` loads ``smart-turn-v3.2-cpu.onnx`` (BSD-2-Clause, by
Daily, shipped in the ``pipecat-ai`` wheel; ``callctl models fetch smart-turn-v3.2`` takes it
out of the wheel) into one onnxruntime session with one intra-op thread. ``predict(samples,
rate)`` takes the caller's audio of this turn (int16 or float, any rate), resamples it to
16 kHz with soxr, keeps the last 8 s (zero-padded at the front when shorter), computes
Whisper-style log-mel features (``log_mel``: 80 mel bands × 800 frames of 10 ms) and returns
the model's probability that the turn is complete (0..1). The model judges prosody: a
falling, finished intonation scores high, a voice left hanging mid-sentence low. The input is
always 8 s, so one inference costs the same CPU however short the turn (see README,
Hearing). ``predict`` is plain blocking CPU work: callers run it off the gevent hub (the
listener uses the hub's threadpool, once per pause).

The features are the Whisper feature extractor's (``WhisperFeatureExtractor(chunk_length=8)``
with ``do_normalize=True``, which the model was trained on), written here in numpy: the
waveform normalised to zero mean and unit variance, a centred (reflect-padded) STFT with a
400-sample periodic Hann window and a 160-sample hop, the power spectrum projected on 80
Slaney-normalised mel filters (0-8 kHz, Slaney mel scale), ``log10`` floored at 1e-10, the
last frame dropped, clamped to 8 (log10 units) below the maximum, then ``(x + 4) / 4``.
``load_turn_model(cfg)`` resolves ``turns.turn_model_path`` at start-up.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import soxr

from callctl.asr.base import AsrModelError

if TYPE_CHECKING:
    from callctl.config import Config

MODEL_RATE = 16000
WINDOW_S = 8
N_FFT = 400
HOP = 160
N_MELS = 80
#: What ``callctl models fetch smart-turn-v3.2`` writes into ``asr.models_dir``.
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
MODEL_NAME = "smart-turn-v3.2"
#: ``turns.turn_model_path`` default: ``<asr.models_dir>/MODEL_FILE`` if installed, else off.
AUTO = "auto"


class TurnModelError(AsrModelError):
    """The configured turn model is missing or cannot be loaded (a start-up error: one line
    naming the path and what to do)."""


# -- features ---------------------------------------------------------------------------------


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above."""
    linear = 3.0 * hz / 200.0
    log = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz >= 1000.0, log, linear)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    linear = 200.0 * mel / 3.0
    log = 1000.0 * np.exp((mel - 15.0) * (np.log(6.4) / 27.0))
    return np.where(mel >= 15.0, log, linear)


@lru_cache(maxsize=1)
def mel_filters() -> npt.NDArray[np.float64]:
    """(N_MELS, N_FFT // 2 + 1) triangular filters, Slaney area-normalised, 0 to 8 kHz."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(8000.0)),
                                   N_MELS + 2))
    bins = np.linspace(0.0, MODEL_RATE / 2, N_FFT // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    tri = np.maximum(0.0, np.minimum(rising, falling))
    return tri * (2.0 / (upper - lower))


@lru_cache(maxsize=1)
def _hann() -> npt.NDArray[np.float64]:
    n = np.arange(N_FFT)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)   # periodic


def log_mel(audio: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """Whisper log-mel features (N_MELS, 800) of exactly 8 s of 16 kHz float audio (shorter
    input is zero-padded at the end, longer cut; callers pad at the front, see ``window``)."""
    n = MODEL_RATE * WINDOW_S
    x = np.asarray(audio, dtype=np.float32)[:n]
    if x.size < n:
        x = np.pad(x, (0, n - x.size))
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _hann(), axis=-1)) ** 2        # (frames, bins)
    mel = np.log10(np.maximum(mel_filters() @ power.T, 1e-10))[:, :-1]
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).astype(np.float32)


def window(samples: npt.NDArray[Any], rate: int) -> npt.NDArray[np.float32]:
    """The model's input audio: ``samples`` (int16 or float in -1..1) at 16 kHz, the last
    8 s, zero-padded at the front to exactly 8 s."""
    x = np.asarray(samples)
    x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)
    if rate != MODEL_RATE:
        x = soxr.resample(x, rate, MODEL_RATE, quality="HQ").astype(np.float32)
    n = MODEL_RATE * WINDOW_S
    return x[-n:] if x.size >= n else np.pad(x, (n - x.size, 0))


# -- the model --------------------------------------------------------------------------------


class SmartTurn:
    """One loaded Smart Turn model; ``predict`` is thread-safe (onnxruntime sessions are)."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise TurnModelError(
                f"turn model {self.path} does not exist (run `callctl models fetch "
                f"{MODEL_NAME}`, or set turns.turn_model_path = \"\" for the silence timer "
                "alone)")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        except Exception as e:            # onnxruntime raises its own Fail/InvalidGraph...
            raise TurnModelError(f"turn model {self.path} cannot be loaded: "
                                 f"{str(e).splitlines()[0][:200]}") from e
        inputs = self._session.get_inputs()
        if [i.name for i in inputs] != ["input_features"]:
            raise TurnModelError(f"turn model {self.path} is not a Smart Turn v3 model "
                                 f"(inputs {[i.name for i in inputs]})")
        self.name = self.path.stem

    def predict(self, samples: npt.NDArray[Any], rate: int) -> float:
        """Probability (0..1) that the turn in ``samples`` is complete. Blocking CPU work."""
        features = log_mel(window(samples, rate))[None]
        out = self._session.run(None, {"input_features": features})
        return float(np.asarray(out[0]).reshape(-1)[0])

    def timed(self, samples: npt.NDArray[Any], rate: int) -> tuple[float, float]:
        """``predict`` and the CPU seconds this thread spent on it."""
        t0 = time.thread_time()
        p = self.predict(samples, rate)
        return p, time.thread_time() - t0


def resolve_path(cfg: Config) -> Path | None:
    """Where ``turns.turn_model_path`` points: None when off (``""``, or ``auto`` without
    the model installed in ``asr.models_dir``)."""
    value = cfg.turns.turn_model_path
    if not value:
        return None
    if value == AUTO:
        path = Path(cfg.asr.models_dir) / MODEL_FILE
        return path if path.is_file() else None
    return Path(value)


def load_turn_model(cfg: Config) -> SmartTurn | None:
    """Start-up: the configured turn model, or None when it is off. An explicit path that is
    missing or broken raises ``TurnModelError`` (one line)."""
    path = resolve_path(cfg)
    return None if path is None else SmartTurn(path)
