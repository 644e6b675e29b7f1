"""Text to speech: the synthesizer interface, engines (piper, espeak, coqui), the prompt
cache and the per-turn reply pipeline.

``build(cfg, name)`` constructs an engine by name; engine modules are imported only when
asked for, so a missing optional extra (coqui) costs nothing until it is configured.
"""

from __future__ import annotations

from callctl.config import TtsConfig
from callctl.tts.base import (
    AudioChunk,
    Cancelled,
    CancelToken,
    EngineUnavailable,
    Synthesizer,
    TtsError,
    clean_text,
    split_sentences,
)

__all__ = [
    "AudioChunk", "CancelToken", "Cancelled", "EngineUnavailable", "Synthesizer", "TtsError",
    "build", "build_fallback", "clean_text", "split_sentences",
]


def build(cfg: TtsConfig, name: str | None = None) -> Synthesizer:
    """The engine ``name`` (default ``cfg.engine``) configured from ``cfg``. Raises
    ``EngineUnavailable`` with the remedy when it cannot run here."""
    name = name or cfg.engine
    if name == "piper":
        from callctl.tts.piper import PiperSynthesizer
        return PiperSynthesizer(cfg.voice if cfg.engine == "piper" else "")
    if name == "espeak":
        from callctl.tts.espeak import EspeakSynthesizer
        return EspeakSynthesizer(cfg.voice if cfg.engine == "espeak" else "")
    if name == "coqui":
        from callctl.tts.coqui import CoquiSynthesizer
        return CoquiSynthesizer(cfg.coqui_model_path)
    raise EngineUnavailable(name, "unknown engine", "use piper, espeak or coqui")


def build_fallback(cfg: TtsConfig) -> Synthesizer | None:
    """The fallback engine, or None when ``tts.fallback_engine`` is ``none`` or the same as
    the main engine."""
    if cfg.fallback_engine in ("none", cfg.engine):
        return None
    return build(cfg, cfg.fallback_engine)
