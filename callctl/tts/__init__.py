"""Text to speech: the synthesizer interface, engines (piper, espeak, flite, coqui), the prompt
cache and the per-turn reply pipeline.

``build(cfg, name)`` constructs an engine by name; engine modules are imported only when
asked for, so a missing optional extra (coqui) costs nothing until it is configured.
``build_speaker(cfg, rate)`` wires the main engine, the fallback and the prompt cache into a
``Speaker`` (one per rate and voice; build it at start-up: loading a voice takes ~0.5 s).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from callctl.config import TtsConfig
from callctl.log import get_logger
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

if TYPE_CHECKING:
    from callctl.metrics import Metrics
    from callctl.tts.speaker import Speaker

__all__ = [
    "AudioChunk", "CancelToken", "Cancelled", "EngineUnavailable", "Synthesizer", "TtsError",
    "build", "build_fallback", "build_speaker", "clean_text", "split_sentences",
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
    if name == "flite":
        from callctl.tts.flite import FliteSynthesizer
        return FliteSynthesizer(cfg.voice if cfg.engine == "flite" else "")
    if name == "coqui":
        from callctl.tts.coqui import CoquiSynthesizer
        return CoquiSynthesizer(cfg.coqui_model_path)
    raise EngineUnavailable(name, "unknown engine", "use piper, espeak, flite or coqui")


def build_fallback(cfg: TtsConfig) -> Synthesizer | None:
    """The fallback engine, or None when ``tts.fallback_engine`` is ``none`` or the same as
    the main engine."""
    if cfg.fallback_engine in ("none", cfg.engine):
        return None
    return build(cfg, cfg.fallback_engine)


def build_speaker(cfg: TtsConfig, rate: int, metrics: Metrics | None = None,
                  voice: str = "") -> Speaker:
    """A ``Speaker`` for calls at ``rate`` with ``voice`` (a route's override; empty:
    ``tts.voice``): main engine, fallback (skipped with a warning when it cannot run here)
    and the prompt cache in ``tts.cache_dir``. Raises ``EngineUnavailable`` for the main
    engine. Call ``speaker.prepare(prompts)`` next to pre-render the route's prompts."""
    from callctl.tts.cache import PromptCache
    from callctl.tts.speaker import Speaker

    if voice:
        cfg = dataclasses.replace(cfg, voice=voice)
    primary = build(cfg)
    try:
        fallback = build_fallback(cfg)
    except EngineUnavailable as exc:
        get_logger().warning("tts_fallback_unavailable", error=str(exc))
        fallback = None
    return Speaker(primary, rate, cfg.deadline_ms, fallback=fallback,
                   cache=PromptCache(cfg.cache_dir, metrics), metrics=metrics)
