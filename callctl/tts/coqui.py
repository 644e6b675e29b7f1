"""Coqui TTS engine (optional extra ``pip install callctl[coqui]``); the operator brings the
model.

How this works: ``tts.coqui_model_path`` names a directory holding a Coqui model
(``model.pth`` or ``model_file.pth`` and ``config.json``, as ``tts`` training writes them). The
model is checked first, then the ``TTS`` package is imported, then ``TTS(model_path=…,
config_path=…)`` loads it once per process. Synthesis (``TTS.tts(text)`` → float samples at
``synthesizer.output_sample_rate``) runs in the gevent hub's threadpool and is resampled with
soxr to the call's rate, one chunk per piece of text.

Testing: this engine cannot run offline in CI: no Coqui model ships with the test image and
torchaudio does not load against the local torch. The tests exercise the error paths only
(no model path, a missing model directory, the extra not installed); the synthesis path is
exercised by operators who install the extra and a model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import numpy as np

from callctl.tts.base import (
    AudioChunk,
    CancelToken,
    EngineUnavailable,
    TtsError,
    check_rate,
    resample,
)

_MODEL_NAMES = ("model.pth", "model_file.pth", "best_model.pth", "checkpoint.pth")
_LOCK = threading.Lock()
_MODELS: dict[str, Any] = {}


def find_model(model_path: str) -> tuple[Path, Path]:
    """(checkpoint, config.json) inside ``model_path``; ``EngineUnavailable`` naming the key
    when the path is empty, missing or incomplete."""
    if not model_path:
        raise EngineUnavailable(
            "coqui", "tts.coqui_model_path is empty",
            "set tts.coqui_model_path to a Coqui model directory (model.pth + config.json)",
        )
    root = Path(model_path)
    if not root.is_dir():
        raise EngineUnavailable(
            "coqui", f"tts.coqui_model_path {root} is not a directory",
            "point it at a Coqui model directory (model.pth + config.json)",
        )
    config = root / "config.json"
    checkpoint = next((root / n for n in _MODEL_NAMES if (root / n).is_file()), None)
    if checkpoint is None or not config.is_file():
        raise EngineUnavailable(
            "coqui", f"{root} has no {' / '.join(_MODEL_NAMES)} with a config.json",
            "copy the trained model and its config.json into tts.coqui_model_path",
        )
    return checkpoint, config


def _import_tts() -> Any:
    try:
        from TTS.api import TTS
    except ImportError as exc:
        raise EngineUnavailable(
            "coqui", f"the coqui-tts package is not installed ({exc})",
            "pip install 'callctl[coqui]'",
        ) from exc
    return TTS


class CoquiSynthesizer:
    """Coqui TTS behind the ``Synthesizer`` interface; raises ``EngineUnavailable`` at
    construction when the model or the extra is missing."""

    engine = "coqui"

    def __init__(self, model_path: str) -> None:
        checkpoint, config = find_model(model_path)
        tts_class = _import_tts()
        key = str(checkpoint.resolve())
        with _LOCK:
            model = _MODELS.get(key)
            if model is None:
                try:
                    model = tts_class(model_path=str(checkpoint), config_path=str(config),
                                      progress_bar=False)
                except Exception as exc:
                    raise EngineUnavailable(
                        "coqui", f"cannot load {checkpoint}: {exc}", "check the model files"
                    ) from exc
                _MODELS[key] = model
        self._model = model
        self._infer_lock = threading.Lock()  # torch modules are not re-entrant
        self.voice = checkpoint.parent.name
        self.native_rate = int(model.synthesizer.output_sample_rate)

    def _render(self, text: str, rate: int) -> bytes:
        with self._infer_lock:
            wav = self._model.tts(text=text)
        return resample(np.asarray(wav, dtype=np.float32), self.native_rate, rate)

    def synthesize(
        self, text: str, rate: int, cancel: CancelToken | None = None
    ) -> Iterator[AudioChunk]:
        check_rate(rate)
        if cancel is not None and cancel.cancelled:
            return
        try:
            pcm = gevent.get_hub().threadpool.apply(self._render, (text, rate))
        except Exception as exc:
            raise TtsError(f"coqui synthesis failed: {exc}") from exc
        if cancel is not None and cancel.cancelled:
            return
        yield AudioChunk(pcm=pcm, rate=rate, text=text)
