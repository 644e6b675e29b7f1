"""Corpus: real Piper and espeak-ng speech over a G.711 line, exact bounds, disk cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from callctl.sim import corpus


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0


@pytest.mark.parametrize(("voice", "codec"), [("piper", "PCMU"), ("espeak", "PCMA")])
def test_speech_has_plausible_bounds(tmp_path: Path, voice: str, codec: str) -> None:
    u = corpus.utterance("technical support please", voice=voice, codec=codec,
                         lead_s=0.25, tail_s=0.4, cache_dir=tmp_path)
    assert u.samples.dtype == np.int16
    assert u.speech_start_s == pytest.approx(0.25, abs=1e-3)
    assert 0.7 < u.speech_end_s - u.speech_start_s < 3.0
    assert u.duration_s == pytest.approx(u.speech_end_s + 0.4, abs=1e-3)
    s, e = int(u.speech_start_s * 8000), int(u.speech_end_s * 8000)
    lead, speech, tail = u.samples[:s], u.samples[s:e], u.samples[e:]
    assert _rms(speech) > 500              # real speech, not silence
    assert _rms(lead) < 10 and _rms(tail) < 10   # G.711 silence decodes to 0 (μ) or ±8 (A)
    # Speech energy is near both bounds (the trimming did not cut inside the speech).
    assert _rms(u.samples[s:s + 400]) > 20 and _rms(u.samples[e - 400:e]) > 20


def test_cached_on_second_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = corpus.utterance("yes", cache_dir=tmp_path)
    files = sorted(p.suffix for p in tmp_path.iterdir())
    assert files == [".json", ".wav"]
    meta = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert meta["speech_end_s"] == first.speech_end_s

    def no_synthesis(*args: object) -> None:
        raise AssertionError("re-synthesized although cached")

    monkeypatch.setattr(corpus, "_make", no_synthesis)
    second = corpus.utterance("yes", cache_dir=tmp_path)
    assert np.array_equal(first.samples, second.samples)
    assert (second.speech_start_s, second.speech_end_s) == (first.speech_start_s,
                                                            first.speech_end_s)
    with pytest.raises(AssertionError):   # other parameters are another cache entry
        corpus.utterance("yes", codec="PCMA", cache_dir=tmp_path)


def test_noise_fills_the_silence(tmp_path: Path) -> None:
    u = corpus.utterance("no", noise_db=-50, cache_dir=tmp_path)
    lead = u.samples[: int(u.speech_start_s * 8000)]
    assert 30 < _rms(lead) < 300     # -50 dBFS ≈ 104 RMS


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(corpus.CorpusError, match="unknown voice"):
        corpus.utterance("hi", voice="nobody", cache_dir=tmp_path)
    with pytest.raises(corpus.CorpusError, match="unknown codec"):
        corpus.utterance("hi", codec="G722", cache_dir=tmp_path)
    with pytest.raises(corpus.CorpusError, match="empty"):
        corpus.utterance("  ", cache_dir=tmp_path)
    with pytest.raises(corpus.CorpusError, match="silence"):
        corpus.speech_bounds(np.zeros(800), 8000)


def test_script_writes_standard_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(corpus.STANDARD_UTTERANCES) >= 12
    monkeypatch.setenv("CALLCTL_CORPUS_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(corpus, "STANDARD_UTTERANCES", {"yes": "Yes.", "agent": "An agent."})
    assert corpus._main(["--out", str(tmp_path / "out"), "--voice", "espeak"]) == 0
    meta = json.loads((tmp_path / "out" / "agent.json").read_text())
    samples, rate = corpus.read_wav(tmp_path / "out" / "agent.wav")
    assert rate == 8000 and meta["text"] == "An agent."
    assert len(samples) / 8000 == pytest.approx(meta["duration_s"])
