"""Non-speech caller events (``corpus.noise``): deterministic, right length and level, not
silent, silent padding around them, and clear errors for bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

from callctl.sim import corpus


def _event(u: corpus.Utterance) -> np.ndarray:
    return u.samples[round(u.speech_start_s * corpus.RATE):round(u.speech_end_s * corpus.RATE)]


@pytest.mark.parametrize("kind", list(corpus.NOISE_KINDS))
def test_noise_has_its_length_level_and_silent_padding(kind: str) -> None:
    dur, level = corpus.NOISE_KINDS[kind]
    u = corpus.noise(kind, seed=7, lead_s=0.1, tail_s=0.2)
    assert u.samples.dtype == np.int16 and u.voice == "noise" and u.text == f"[noise:{kind}]"
    assert u.speech_start_s == pytest.approx(0.1)
    assert u.speech_end_s - u.speech_start_s == pytest.approx(dur)
    assert u.duration_s == pytest.approx(0.1 + dur + 0.2)
    x = _event(u).astype(np.float64)
    rms_db = 20 * np.log10(np.sqrt(np.mean(x ** 2)) / 32767)
    assert rms_db == pytest.approx(level, abs=1.0)          # G.711 moves it a little
    assert np.count_nonzero(np.abs(x) > 100) > 0.01 * len(x)   # not silent
    assert np.abs(x).max() < 32000                           # not clipped
    lead = u.samples[:round(0.1 * corpus.RATE)]
    tail = u.samples[round(u.speech_end_s * corpus.RATE):]
    assert not lead.any() and not tail.any()


@pytest.mark.parametrize("kind", list(corpus.NOISE_KINDS))
def test_noise_is_deterministic_per_seed(kind: str) -> None:
    a = corpus.noise(kind, seed=1)
    b = corpus.noise(kind, seed=1)
    c = corpus.noise(kind, seed=2)
    assert np.array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)


def test_noise_kinds_differ_in_spectrum() -> None:
    """A thump is low-frequency, clicks are high: the spectral centroids say so."""
    def centroid(kind: str) -> float:
        x = _event(corpus.noise(kind, seed=3, codec="PCMA")).astype(np.float64)
        p = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(len(x), 1 / corpus.RATE)
        return float((f * p).sum() / p.sum())

    assert centroid("thump") < 600 < centroid("cough") < centroid("clicks")


def test_noise_duration_and_level_override() -> None:
    u = corpus.noise("hiss", duration_s=0.2, level_dbfs=-40, lead_s=0, tail_s=0)
    assert len(u.samples) == round(0.2 * corpus.RATE)
    rms_db = 20 * np.log10(np.sqrt(np.mean(u.samples.astype(np.float64) ** 2)) / 32767)
    assert rms_db == pytest.approx(-40, abs=1.0)


def test_noise_rejects_bad_arguments() -> None:
    with pytest.raises(corpus.CorpusError, match="unknown noise kind"):
        corpus.noise("sneeze")
    with pytest.raises(corpus.CorpusError, match="codec"):
        corpus.noise("thump", codec="G722")
    for bad in ({"duration_s": 0.0}, {"duration_s": 9.0}, {"level_dbfs": 3.0},
                {"lead_s": -1.0}):
        with pytest.raises(ValueError):
            corpus.noise("thump", **bad)  # type: ignore[arg-type]
