"""Silero VAD on real speech through G.711: events near the known speech bounds."""

from __future__ import annotations

import numpy as np
import pytest

from callctl.media.vad import SpeechEnded, SpeechStarted, Vad
from callctl.sim.corpus import utterance


def run(vad: Vad, samples: np.ndarray, chunk: int = 160) -> list[SpeechStarted | SpeechEnded]:
    events = []
    for i in range(0, len(samples), chunk):
        part = samples[i:i + chunk]
        events += vad.feed(part, (i + len(part)) / 8000)  # "arrival" time = stream time
    return events


def test_speech_start_and_end_near_known_bounds() -> None:
    u = utterance("I need to book an appointment for next Tuesday.", tail_s=0.6)
    vad = Vad(8000, onset_ms=60, hang_ms=120)
    events = run(vad, u.samples)
    assert [type(e) for e in events] in ([SpeechStarted, SpeechEnded],
                                         [SpeechStarted, SpeechEnded, SpeechStarted, SpeechEnded])
    assert abs(events[0].at - u.speech_start_s) < 0.15
    assert abs(events[-1].at - u.speech_end_s) < 0.2


@pytest.mark.parametrize("chunk", [1, 77, 256, 1000])
def test_chunking_does_not_change_events(chunk: int) -> None:
    u = utterance("Yes.")
    ref = [type(e) for e in run(Vad(8000), u.samples, 160)]
    assert [type(e) for e in run(Vad(8000), u.samples, chunk)] == ref


def test_silence_and_noise_fire_nothing() -> None:
    rng = np.random.default_rng(1)
    noise = (rng.normal(0, 60, 8000 * 2)).astype(np.int16)
    assert run(Vad(8000), np.zeros(8000 * 2, dtype=np.int16)) == []
    assert run(Vad(8000), noise) == []


def test_longer_hang_merges_a_pause() -> None:
    a, b = utterance("Yes."), utterance("Billing.")
    pause = np.zeros(int(0.3 * 8000), dtype=np.int16)
    s = np.concatenate([a.samples, pause, b.samples])
    short = run(Vad(8000, hang_ms=100), s)
    long = run(Vad(8000, hang_ms=1500), s)
    assert sum(isinstance(e, SpeechStarted) for e in short) == 2
    assert sum(isinstance(e, SpeechStarted) for e in long) == 1


def test_reset_and_bad_rate() -> None:
    vad = Vad(16000)
    assert vad.window == 512
    vad.reset()
    with pytest.raises(ValueError):
        Vad(11025)


def test_from_config() -> None:
    from callctl.config import VadConfig

    cfg = VadConfig()
    vad = Vad.from_config(cfg)
    assert (vad.threshold, vad.onset_ms, vad.refine_s) == (cfg.threshold, cfg.onset_ms,
                                                           cfg.refine_end_ms / 1000)
    assert cfg.hang_ms == 0                      # by engine:
    assert Vad.from_config(cfg, engine="vosk").hang_ms == 64
    assert Vad.from_config(cfg, engine="whisper").hang_ms == 120
    assert Vad.from_config(VadConfig(hang_ms=200), engine="vosk").hang_ms == 200


REFINE_TEXTS = ["I would like to talk to billing please.", "Yes that is right.",
                "I moved to a new house last month and need to update my address.",
                "Can you tell me when my next payment is due?", "okay", "uh huh"]


def _end_errors_ms(refine_ms: int, noise_db: float | None = None) -> list[float]:
    """Speech end reported minus the known acoustic end, one per single-segment utterance."""
    errors = []
    for text in REFINE_TEXTS:
        u = utterance(text, noise_db=noise_db)
        ends = [e for e in run(Vad(8000, refine_ms=refine_ms), u.samples)
                if isinstance(e, SpeechEnded)]
        errors.append((ends[-1].at - u.speech_end_s) * 1000)
    return errors


def test_energy_refinement_brings_the_speech_end_to_the_acoustic_end() -> None:
    silero = _end_errors_ms(refine_ms=0)
    refined = _end_errors_ms(refine_ms=96)
    assert sorted(silero)[len(silero) // 2] > 30          # Silero alone lags the real end
    assert all(-40 < e < 30 for e in refined), refined
    assert all(r <= s + 1e-6 for r, s in zip(refined, silero, strict=True))   # only ever earlier
    assert all(s - r <= 96 + 1e-6 for r, s in zip(refined, silero, strict=True))  # bounded


def test_refinement_on_a_noisy_line_stays_within_its_bound() -> None:
    silero = _end_errors_ms(refine_ms=0, noise_db=-40.0)
    refined = _end_errors_ms(refine_ms=96, noise_db=-40.0)
    assert all(0 <= s - r <= 96 + 1e-6 for r, s in zip(refined, silero, strict=True))
    # the speech's own duration stays positive and the event order is unchanged
    u = utterance("Yes that is right.", noise_db=-40.0)
    events = run(Vad(8000, refine_ms=96), u.samples)
    assert [type(e) for e in events][:2] == [SpeechStarted, SpeechEnded]
    assert events[1].at > events[0].at


def test_last_voiced_end_stops_at_the_speech_while_the_hang_runs() -> None:
    u = utterance("okay", tail_s=0.6)
    vad = Vad(8000, hang_ms=120)
    speaking: list[tuple[float, float]] = []
    for i in range(0, len(u.samples), 160):
        at = (i + 160) / 8000
        vad.feed(u.samples[i:i + 160], at)
        if vad.speaking:
            speaking.append((at, vad.last_voiced_end))
    at, last = speaking[-1]                    # the last frame before the speech ended
    assert at - last >= 0.09                   # most of the hang is not counted as speech
    assert last < u.speech_end_s + 0.15        # and the speech ends near the real end
