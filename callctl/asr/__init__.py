"""Speech recognition: the recognizer interface and its engines (vosk, whisper).

``build_engine(cfg, metrics, sample_rate)`` loads the configured engine once per process
(a start-up step: a missing or corrupt model raises ``AsrModelError`` naming the path).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callctl.asr.base import AsrModelError, Engine

if TYPE_CHECKING:
    from callctl.config import AsrConfig
    from callctl.metrics import Metrics

__all__ = ["AsrModelError", "build_engine"]


def build_engine(cfg: AsrConfig, metrics: Metrics, sample_rate: int = 8000) -> Engine:
    """The ``[asr]`` engine with its model loaded (blocking, seconds: do it at start-up)."""
    if cfg.engine == "whisper":
        from callctl.asr.whisper import WhisperEngine

        return WhisperEngine(metrics, cfg.whisper_model_path, sample_rate,
                             window_s=cfg.whisper_window_s)
    from callctl.asr.vosk import VoskEngine

    engine = VoskEngine(metrics, cfg.model_path, sample_rate, cfg.pool_size)
    engine.warm(cfg.pool_size)     # no call pays for a fresh recognizer up to pool_size
    return engine
