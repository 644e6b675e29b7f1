"""faster-whisper tiny.en on Piper speech through G.711: English words, loose WER bound."""

from __future__ import annotations

import re
from pathlib import Path

import jiwer
import numpy as np
import pytest

from callctl.asr.base import AsrModelError
from callctl.asr.whisper import WhisperEngine
from callctl.metrics import Metrics
from callctl.sim.corpus import utterance

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


def test_whisper_words_and_short_audio(whisper_engine: WhisperEngine) -> None:
    u = utterance("Can I speak to an agent?", codec="PCMA")
    r = whisper_engine.transcribe(u.samples, 8000)
    assert r.words and all(w.start <= w.end for w in r.words)
    assert whisper_engine.transcribe(np.zeros(100, dtype=np.int16), 8000).text == ""


def test_whisper_missing_model_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(AsrModelError, match=str(tmp_path / "x")):
        WhisperEngine(Metrics(), tmp_path / "x")
    (tmp_path / "model.bin").write_bytes(b"junk")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(AsrModelError, match=str(tmp_path)):
        WhisperEngine(Metrics(), tmp_path)
