"""Helpers for the TTS tests: a real engine that counts its work, and a recorder standing in
for the call's ESL socket (the emulator-backed tests use the real one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from callctl.tts.base import AudioChunk, CancelToken, Synthesizer, read_wav


def check_speech(chunks: list[AudioChunk], rate: int, text: str, min_rms: float = 500,
                 min_peak: float = 5000) -> None:
    """Assert ``chunks`` are plausible speech for the short English ``text`` at ``rate``:
    all at ``rate``, ~1-6 words per second, never silent."""
    assert chunks, "no audio"
    assert all(c.rate == rate for c in chunks)
    audio = np.concatenate([c.samples for c in chunks]).astype(np.float64)
    seconds = len(audio) / rate
    n_words = len(text.split())
    assert n_words / 6 < seconds < n_words / 1 + 1.0, seconds
    assert np.sqrt(np.mean(audio**2)) > min_rms
    assert np.abs(audio).max() > min_peak


class Counting:
    """Wraps a real engine; ``calls`` lists every text it was asked to synthesize and
    ``chunks`` counts the chunks it actually produced."""

    def __init__(self, inner: Synthesizer) -> None:
        self.inner = inner
        self.engine = inner.engine
        self.voice = inner.voice
        self.calls: list[str] = []
        self.chunks = 0

    def synthesize(self, text: str, rate: int, cancel: CancelToken | None = None
                   ) -> Iterator[AudioChunk]:
        self.calls.append(text)
        for chunk in self.inner.synthesize(text, rate, cancel):
            self.chunks += 1
            yield chunk


class RecordingTransport:
    """Records ``play``/``stop_playback``; checks each file is a whole WAV when played."""

    def __init__(self) -> None:
        self.plays: list[tuple[str, str]] = []
        self.stops = 0

    def play(self, path: str, event_uuid: str) -> None:
        pcm, _rate = read_wav(Path(path))
        assert pcm
        self.plays.append((path, event_uuid))

    def stop_playback(self) -> None:
        self.stops += 1
