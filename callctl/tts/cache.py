"""Content-addressed prompt cache: fixed prompts are synthesized once, then read from disk.

How this works: the key is ``sha256`` of (engine, voice, rate, cleaned text); the audio is a
16-bit mono WAV at ``<cache_dir>/<key[:2]>/<key>.wav``. Writes are atomic (temp file in the
same directory, then rename), so a reader never sees half a prompt and two processes
rendering the same prompt both end with one good file. ``render(texts)`` pre-renders a
route's greeting and static replies at start-up or while a call rings. Every lookup counts
``callctl_tts_cache_total{result=hit|miss}``. A damaged file counts as a miss and is
rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from callctl.log import get_logger
from callctl.metrics import Metrics
from callctl.tts.base import (
    AudioChunk,
    Cancelled,
    CancelToken,
    Synthesizer,
    TtsError,
    clean_text,
    read_wav,
    write_wav_atomic,
)

log = get_logger()


def cache_key(engine: str, voice: str, rate: int, text: str) -> str:
    """The hex sha256 naming the audio of ``text`` (already cleaned) in this voice and rate."""
    blob = json.dumps([engine, voice, int(rate), text], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class PromptCache:
    """Prompt audio on disk. Safe to share between calls (greenlets) and processes."""

    def __init__(self, cache_dir: str | Path, metrics: Metrics | None = None) -> None:
        self.dir = Path(cache_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as exc:
            raise TtsError(f"tts.cache_dir {self.dir} cannot be created: {exc}") from exc
        self.metrics = metrics

    def path_for(self, synth: Synthesizer, text: str, rate: int) -> Path:
        key = cache_key(synth.engine, synth.voice, rate, clean_text(text))
        return self.dir / key[:2] / f"{key}.wav"

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.tts_cache.labels(result=result).inc()

    def get(self, synth: Synthesizer, text: str, rate: int) -> AudioChunk | None:
        """The cached audio of ``text``, or None (a miss). Counts the lookup."""
        path = self.path_for(synth, text, rate)
        try:
            pcm, file_rate = read_wav(path)
        except FileNotFoundError:
            self._count("miss")
            return None
        except (TtsError, OSError) as exc:
            log.warning("tts_cache_bad_file", path=str(path), error=str(exc))
            self._count("miss")
            return None
        if file_rate != rate or not pcm:
            self._count("miss")
            return None
        self._count("hit")
        return AudioChunk(pcm=pcm, rate=rate, text=clean_text(text))

    def put(self, synth: Synthesizer, text: str, rate: int, pcm: bytes) -> Path:
        """Store ``pcm`` as the audio of ``text``; returns the file path."""
        path = self.path_for(synth, text, rate)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        return write_wav_atomic(path, pcm, rate)

    def get_or_synthesize(
        self, synth: Synthesizer, text: str, rate: int, cancel: CancelToken | None = None
    ) -> AudioChunk:
        """Cached audio, or synthesize the whole text now, store it and return it. Raises
        ``TtsError`` (or ``Cancelled``) and stores nothing when synthesis does not finish."""
        hit = self.get(synth, text, rate)
        if hit is not None:
            return hit
        cleaned = clean_text(text)
        if not cleaned:
            raise TtsError("nothing speakable in prompt text")
        parts = [c.pcm for c in synth.synthesize(cleaned, rate, cancel)]
        if cancel is not None and cancel.cancelled:
            raise Cancelled("prompt rendering cancelled")
        pcm = b"".join(parts)
        if not pcm:
            raise TtsError(f"{synth.engine} produced no audio for {cleaned[:40]!r}")
        try:
            self.put(synth, cleaned, rate, pcm)
        except OSError as exc:  # disk full, read-only: the call still gets its audio
            log.warning("tts_cache_write_failed", dir=str(self.dir), error=str(exc))
        return AudioChunk(pcm=pcm, rate=rate, text=cleaned)

    def render(
        self, synth: Synthesizer, texts: Iterable[str], rates: Iterable[int] = (8000,),
        cancel: CancelToken | None = None,
    ) -> dict[str, int]:
        """Pre-render every text at every rate (start-up, or while a call rings). Returns
        counts ``{"cached": n, "rendered": n, "failed": n}``; a failure is logged and the
        rest still render (a call then falls back at run time)."""
        counts = {"cached": 0, "rendered": 0, "failed": 0}
        texts = list(texts)
        for rate in rates:
            for text in texts:
                if cancel is not None and cancel.cancelled:
                    return counts
                if not clean_text(text):
                    continue
                if self.path_for(synth, text, rate).is_file():
                    counts["cached"] += 1
                    continue
                try:
                    self.get_or_synthesize(synth, text, rate, cancel)
                    counts["rendered"] += 1
                except Cancelled:
                    return counts
                except TtsError as exc:
                    counts["failed"] += 1
                    log.warning("tts_prerender_failed", engine=synth.engine, error=str(exc))
        return counts

    def size(self) -> int:
        """Number of cached prompts (for tests and `callctl` diagnostics)."""
        return sum(1 for _root, _dirs, files in os.walk(self.dir)
                   for f in files if f.endswith(".wav") and not f.startswith(".tmp-"))
