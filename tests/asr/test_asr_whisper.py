"""faster-whisper tiny.en on Piper speech through G.711: English words, loose WER bound; the
encoder window, its fallback to the full 30 s transcribe and its loop guard."""

from __future__ import annotations

import re
from pathlib import Path

import jiwer
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from callctl import config
from callctl.asr import whisper
from callctl.asr.base import AsrModelError
from callctl.asr.whisper import WhisperEngine
from callctl.metrics import Metrics
from callctl.sim import g711
from callctl.sim.corpus import NOISE_KINDS, join, noise, utterance

pytestmark = pytest.mark.slow

SENTENCES = [
    "I'd like to talk to billing.",
    "Technical support, please.",
    "Can I speak to an agent?",
    "What are your opening hours?",
    "I need to book an appointment for next Tuesday.",
    "There is a charge on my bill that I don't recognize.",
]


def norm(s: str) -> str:
    return " ".join(re.findall(r"[a-z']+", s.lower()))


def test_whisper_transcribes_piper_over_pcmu(whisper_engine: WhisperEngine) -> None:
    refs, hyps = [], []
    for text in SENTENCES:
        u = utterance(text, codec="PCMU")
        rec = whisper_engine.acquire()
        rec.accept(u.samples.astype("<i2").tobytes())
        result = rec.final()
        whisper_engine.release(rec)
        refs.append(norm(text))
        hyps.append(norm(result.text))
    wer = jiwer.wer(refs, hyps)
    print(f"whisper tiny.en WER over {len(SENTENCES)} Piper/PCMU utterances: {wer:.3f}")
    assert wer < 0.5, list(zip(refs, hyps, strict=True))


class Spy:
    """Counts the engine's full ``transcribe`` calls (the 30 s path)."""

    def __init__(self, engine: WhisperEngine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        full = engine.model.transcribe

        def counted(*args: object, **kwargs: object) -> object:
            self.calls += 1
            return full(*args, **kwargs)

        monkeypatch.setattr(engine.model, "transcribe", counted)


def test_windowed_decode_gives_the_words(whisper_engine: WhisperEngine,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert whisper_engine.window_s == 10.0
    spy = Spy(whisper_engine, monkeypatch)
    for text in ("I need to book an appointment for next Tuesday.",
                 "Technical support, please.", "Yes."):
        r = whisper_engine.transcribe(utterance(text, codec="PCMU").samples, 8000)
        assert norm(r.text) == norm(text)
        assert r.words == ()                   # the windowed path has no word timings
    assert spy.calls == 0


def test_longer_than_the_window_takes_the_full_transcribe(
        whisper_engine: WhisperEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["I moved to a new house last month and I need to change my address.",
             "My name is John Smith and I am calling about my order.",
             "I would like to know when my package will arrive."]
    long = utterance(texts[0])
    for text in texts[1:]:
        long = join(long, utterance(text), 1.0)
    assert long.duration_s > whisper_engine.window_s
    spy = Spy(whisper_engine, monkeypatch)
    r = whisper_engine.transcribe(long.samples, 8000)
    assert spy.calls == 1
    assert jiwer.wer(norm(" ".join(texts)), norm(r.text)) < 0.3, r.text
    assert r.words and all(w.start <= w.end for w in r.words)
    assert r.words[-1].end > whisper_engine.window_s   # timings across the whole utterance


def test_window_zero_is_the_full_transcribe(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = WhisperEngine(Metrics(CollectorRegistry()), window_s=0)
    spy = Spy(engine, monkeypatch)
    r = engine.transcribe(utterance("Can I speak to an agent?", codec="PCMA").samples, 8000)
    assert spy.calls == 1 and norm(r.text) == "can i speak to an agent"
    assert r.words and all(w.start <= w.end for w in r.words)
    assert engine.transcribe(np.zeros(100, dtype=np.int16), 8000).text == ""
    with pytest.raises(ValueError, match="window_s"):
        WhisperEngine(Metrics(CollectorRegistry()), window_s=0.5)


def test_loop_guard_bounds_silence_and_noise(whisper_engine: WhisperEngine) -> None:
    rng = np.random.default_rng(1)
    n = 8 * 8000                                                # 8 s: inside the window
    cases = {"silence": np.zeros(n, dtype=np.int16)}
    for dbfs in (-30, -50):
        white = rng.normal(0.0, 32767 * 10 ** (dbfs / 20), n)
        cases[f"white {dbfs} dBFS"] = g711.phone_line(
            np.clip(white, -32768, 32767).astype(np.int16), "PCMU")
    for kind in NOISE_KINDS:
        cases[kind] = noise(kind).samples
        cases[f"{kind} 4.5 s"] = noise(kind, duration_s=4.5).samples
    for name, pcm in cases.items():
        text = whisper_engine.transcribe(pcm, 8000).text
        words = norm(text).split()
        assert len(words) <= whisper.max_new_tokens(len(pcm) / 8000), (name, text)
        assert whisper.cut_repeat(text) == text, (name, text)   # no phrase said twice at once
    assert whisper_engine.transcribe(cases["silence"], 8000).text == ""


def test_loop_guard_cuts_a_decode_at_its_bound(whisper_engine: WhisperEngine,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(whisper, "TOKENS_PER_S", 0.0)
    monkeypatch.setattr(whisper, "TOKEN_MARGIN", 3)
    text = "I need to book an appointment for next Tuesday."
    r = whisper_engine.transcribe(utterance(text).samples, 8000)
    assert 1 <= len(norm(r.text).split()) <= 3 and norm(text).startswith(norm(r.text)), r.text


def test_loop_guard_cuts_short_loops_on_a_short_window() -> None:
    """On a 5 s window tiny.en says "Yes. Yes. Yes. Yes. Yes" for "Yes." (bench corpus)."""
    engine = WhisperEngine(Metrics(CollectorRegistry()), window_s=5)
    for codec in ("PCMU", "PCMA"):
        for text in ("Yes.", "No.", "Okay."):
            r = engine.transcribe(utterance(text, codec=codec).samples, 8000)
            assert norm(r.text) == norm(text), (codec, r.text)


def test_window_setting(tmp_path: Path) -> None:
    assert config.load(None, env={}).asr.whisper_window_s == 10.0
    p = tmp_path / "c.toml"
    for bad in ("0.5", "31"):
        p.write_text(f"[asr]\nwhisper_window_s = {bad}\n")
        with pytest.raises(config.ConfigError,
                           match=r"asr\.whisper_window_s: .* must be 0 or between 1 and 30"):
            config.load(p, env={})
    p.write_text("[asr]\nwhisper_window_s = 0\n")
    assert config.load(p, env={}).asr.whisper_window_s == 0


@pytest.mark.parametrize(("text", "cut"), [
    ("Yes. Yes. Yes. Yes. Yes", "Yes."),
    ("What are your opening hours? What are your opening hours?", "What are your opening hours?"),
    ("Sorry. Can you say that again? Sorry. Sorry", "Sorry. Can you say that again? Sorry."),
    (". . . . .", "."),
    ("I need to book an appointment.", "I need to book an appointment."),
    ("", ""),
])
def test_cut_repeat(text: str, cut: str) -> None:
    assert whisper.cut_repeat(text) == cut


def test_cut_repeat_three_times() -> None:
    assert whisper.cut_repeat("No. No. No. No.", 3) == "No."
    assert whisper.cut_repeat("no, no", 3) == "no, no"
    assert whisper.cut_repeat("five five six seven", 3) == "five five six seven"


def test_whisper_missing_model_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(AsrModelError, match=str(tmp_path / "x")):
        WhisperEngine(Metrics(), tmp_path / "x")
    (tmp_path / "model.bin").write_bytes(b"junk")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(AsrModelError, match=str(tmp_path)):
        WhisperEngine(Metrics(), tmp_path)
