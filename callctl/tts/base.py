"""The synthesizer interface, the audio chunk it yields, and the text side of speaking.

How this works: a reply is cleaned (``clean_text``: SSML-looking tags stripped, typographic
characters mapped to ASCII, symbols and control characters dropped, length capped), then cut
into sentences (``split_sentences``) so the first piece is short and can play while the next is
synthesized. An engine (``Synthesizer``) turns one piece into ``AudioChunk``s of 16-bit mono
PCM at the call's rate (8000 or 16000 Hz); it checks a ``CancelToken`` between chunks, so a
hangup or barge-in stops work that has not started yet. Nothing here does I/O except the two
WAV helpers at the bottom.
"""

from __future__ import annotations

import html
import io
import os
import re
import tempfile
import threading
import unicodedata
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import soxr

from callctl.log import get_logger

#: Rates a call can run at (mod_audio_fork / FreeSWITCH codec rates we support).
RATES = (8000, 16000)
#: Longest reply we speak; longer text is cut at a sentence boundary and the cut is logged.
MAX_CHARS = 1200
#: The first piece of a reply is cut at a comma when its sentence is longer than this.
FIRST_PIECE_CHARS = 60
#: Any later piece is cut at commas (then at word boundaries) when longer than this.
PIECE_CHARS = 180

log = get_logger()


class TtsError(Exception):
    """A synthesizer failed on this text (the engine's fault; try the fallback)."""


class EngineUnavailable(TtsError):
    """An engine cannot be built here: a missing extra, model or binary. ``remedy`` says what
    the operator should install or configure."""

    def __init__(self, engine: str, problem: str, remedy: str) -> None:
        super().__init__(f"tts engine {engine!r} unavailable: {problem}; {remedy}")
        self.engine = engine
        self.remedy = remedy


class Cancelled(TtsError):
    """Synthesis was cancelled (hangup, barge-in, abandoned turn)."""


class CancelToken:
    """A flag shared between the greenlet that wants audio and the thread that makes it.

    ``cancel()`` is safe from any thread or greenlet; engines check ``cancelled`` between
    chunks and stop early. A token never resets."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("synthesis cancelled")


@dataclass(frozen=True)
class AudioChunk:
    """One piece of synthesized speech: signed 16-bit little-endian mono PCM at ``rate``."""

    pcm: bytes
    rate: int
    text: str = ""

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"bad sample rate {self.rate}")
        if len(self.pcm) % 2:
            raise ValueError("16-bit PCM must have an even number of bytes")

    @property
    def samples(self) -> np.ndarray:
        """The audio as an int16 array (a read-only view)."""
        return np.frombuffer(self.pcm, dtype="<i2")

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.rate


class Synthesizer(Protocol):
    """A TTS engine. One instance may serve many calls at once.

    ``engine`` and ``voice`` name what it produces (they are part of the prompt cache key).
    ``synthesize`` yields the audio for ``text`` (already cleaned, one sentence or piece) at
    ``rate`` (one of ``RATES``) as one or more chunks; it raises ``TtsError`` on failure and
    ``Cancelled`` (or simply stops) once ``cancel`` is set. CPU-heavy work must run outside
    the gevent hub (threadpool or subprocess)."""

    engine: str
    voice: str

    def synthesize(
        self, text: str, rate: int, cancel: CancelToken | None = None
    ) -> Iterator[AudioChunk]: ...


def check_rate(rate: int) -> int:
    if rate not in RATES:
        raise ValueError(f"unsupported call rate {rate}; allowed: {', '.join(map(str, RATES))}")
    return rate


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> bytes:
    """Float [-1, 1] or int16 mono samples at ``src_rate`` → int16 LE PCM bytes at ``dst_rate``
    (soxr, high quality)."""
    if samples.dtype == np.int16:
        data = samples.astype(np.float32) / 32768.0
    else:
        data = samples.astype(np.float32, copy=False)
    if src_rate != dst_rate and len(data):
        data = soxr.resample(data, src_rate, dst_rate, quality="HQ")
    return np.clip(np.round(data * 32767.0), -32768, 32767).astype("<i2").tobytes()


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------

_TAG = re.compile(r"<[^<>]{0,500}>")
_BREAK_TAG = re.compile(r"<\s*(break|/p|/s|p|s)\b[^<>]*>", re.IGNORECASE)
_ASCII_MAP = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": ", ", "\u2014": ", ", "\u2015": ", ", "\u2026": "...", "\u00a0": " ",
    "\u2022": ", ", "\u00b7": " ", "\u2009": " ", "\u202f": " ", "\u3000": " ",
})
_SPACES = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|(?<=[.!?][\"')\]])\s+")
_ELLIPSIS = re.compile(r"\.{2,}")
_SPACE_BEFORE_STOP = re.compile(r"\s+([.,!?;:])")
_DOUBLE_STOP = re.compile(r"([.!?,;:])(?:\s*[.,])+")  # "Hi. ." (a removed <break/>)
_COMMA = re.compile(r"(?<=[,;:])\s+")


def clean_text(text: str, max_chars: int = MAX_CHARS) -> str:
    """Make reply text safe to speak; returns "" when nothing speakable is left.

    SSML or HTML tags are removed (their words are never spoken; ``<break>``, ``<p>`` and
    ``<s>`` become a sentence boundary), entities are decoded, typographic punctuation becomes
    ASCII, letters of any script are kept (the engine decides how to say them), symbols,
    emoji and control characters are dropped, and text longer than ``max_chars`` is cut at the
    last sentence end before the cap (or a word boundary) with a warning in the log."""
    if not text:
        return ""
    if "<" in text:
        text = _BREAK_TAG.sub(". ", text)
        text = _TAG.sub(" ", text)
    text = html.unescape(text)
    text = unicodedata.normalize("NFKC", text).translate(_ASCII_MAP)
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch.isspace():
            kept.append(" ")
        elif cat[0] in "LNP" or cat == "Sc" or ch in "%&+=@#'\"":
            kept.append(ch)
        elif cat == "Sm":
            kept.append(" ")
        # Symbols (emoji, dingbats), marks on their own, controls, private use: dropped.
    text = _SPACES.sub(" ", "".join(kept)).strip()
    text = _SPACE_BEFORE_STOP.sub(r"\1", _ELLIPSIS.sub(".", text))
    text = _DOUBLE_STOP.sub(r"\1", text)
    text = text.lstrip(".,;:!? ")
    if not any(ch.isalnum() for ch in text):
        return ""
    if len(text) > max_chars:
        log.warning("tts_text_truncated", chars=len(text), max_chars=max_chars)
        head = text[:max_chars]
        cut = max(head.rfind(". "), head.rfind("! "), head.rfind("? "))
        if cut < max_chars // 2:
            cut = head.rfind(" ")
        text = head[: cut + 1].strip() if cut > 0 else head
    return text


def _cut_long(piece: str, limit: int) -> list[str]:
    """Cut ``piece`` at commas, then at word boundaries, into parts of at most ``limit``
    characters."""
    if len(piece) <= limit:
        return [piece]
    parts: list[str] = []
    current = ""
    for clause in _COMMA.split(piece):
        if current and len(current) + 1 + len(clause) > limit:
            parts.append(current)
            current = clause
        else:
            current = f"{current} {clause}" if current else clause
    parts.append(current)
    out: list[str] = []
    for part in parts:
        while len(part) > limit:
            cut = part.rfind(" ", 0, limit)
            if cut <= 0:  # one "word" longer than the limit: cut it anyway
                out.append(part[:limit])
                part = part[limit:]
            else:
                out.append(part[:cut])
                part = part[cut + 1:]
        out.append(part)
    return [p.strip() for p in out if p.strip()]


def split_sentences(
    text: str, first_chars: int = FIRST_PIECE_CHARS, max_chars: int = PIECE_CHARS
) -> list[str]:
    """Cut cleaned text into speakable pieces, in order, losing no words.

    Pieces are sentences; a sentence longer than ``max_chars`` is cut at commas (then at
    word boundaries); the first piece is cut the same way at ``first_chars`` so the first
    audio of a reply is short and fast to synthesize. Pieces without a letter or digit
    (stray punctuation) are merged into their neighbour."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        sentence = sentence.strip()
        if not sentence:
            continue
        if not any(ch.isalnum() for ch in sentence):
            if pieces:
                pieces[-1] += sentence
            continue
        limit = first_chars if not pieces else max_chars
        cut = _cut_long(sentence, limit)
        if not pieces and len(cut) > 1:
            # Only the first piece needs to be short; re-join the rest of the sentence.
            rest = sentence[len(cut[0]):].strip()
            cut = [cut[0], *_cut_long(rest, max_chars)]
        pieces.extend(cut)
    return pieces


# ---------------------------------------------------------------------------------------------
# WAV files (used by the prompt cache and by file-mode playback)
# ---------------------------------------------------------------------------------------------


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """A complete 16-bit mono WAV file holding ``pcm``."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def write_wav_atomic(path: Path, pcm: bytes, rate: int, mode: int = 0o640,
                     durable: bool = True) -> Path:
    """Write a WAV file so that readers see either nothing or the whole file: write a
    temporary file in the same directory, fsync (only if ``durable``: the prompt cache, not
    throw-away playback files on the critical path), chmod ``mode``, rename over ``path``."""
    data = wav_bytes(pcm, rate)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".wav", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def read_wav(path: Path) -> tuple[bytes, int]:
    """(pcm, rate) of a 16-bit mono WAV file; ``TtsError`` if it is anything else."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise TtsError(f"{path}: not 16-bit mono WAV")
            return w.readframes(w.getnframes()), w.getframerate()
    except (wave.Error, EOFError) as exc:
        raise TtsError(f"{path}: bad WAV file: {exc}") from exc
