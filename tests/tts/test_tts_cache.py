"""The content-addressed prompt cache with a real engine (espeak-ng, and Piper once)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ttskit import Counting

from callctl.metrics import Metrics
from callctl.tts.base import CancelToken, TtsError
from callctl.tts.cache import PromptCache, cache_key
from callctl.tts.espeak import EspeakSynthesizer


@pytest.fixture
def engine() -> Counting:
    return Counting(EspeakSynthesizer())


def _count(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("callctl_tts_cache_total", {"result": result}) or 0


def test_key_covers_engine_voice_rate_and_text() -> None:
    base = cache_key("piper", "joe", 8000, "Hello.")
    assert base == cache_key("piper", "joe", 8000, "Hello.")
    others = {cache_key("espeak", "joe", 8000, "Hello."), cache_key("piper", "amy", 8000, "Hello."),
              cache_key("piper", "joe", 16000, "Hello."), cache_key("piper", "joe", 8000, "Hello")}
    assert base not in others and len(others) == 4


def test_hit_skips_synthesis(tmp_path: Path, engine: Counting, metrics: Metrics) -> None:
    cache = PromptCache(tmp_path / "prompts", metrics)
    first = cache.get_or_synthesize(engine, "Welcome to Acme.", 8000)
    second = cache.get_or_synthesize(engine, "Welcome to Acme.", 8000)
    # The same text written differently (SSML, spacing) is the same prompt.
    third = cache.get_or_synthesize(engine, "<speak>Welcome   to Acme.</speak>", 8000)
    assert engine.calls == ["Welcome to Acme."]
    assert first.pcm == second.pcm == third.pcm and first.duration_s > 0.5
    assert (_count(metrics, "miss"), _count(metrics, "hit")) == (1, 2)
    assert cache.size() == 1


def test_rate_is_part_of_the_key(tmp_path: Path, engine: Counting) -> None:
    cache = PromptCache(tmp_path, None)
    a = cache.get_or_synthesize(engine, "Goodbye.", 8000)
    b = cache.get_or_synthesize(engine, "Goodbye.", 16000)
    assert len(engine.calls) == 2 and (a.rate, b.rate) == (8000, 16000)


def test_render_prerenders_once(tmp_path: Path, engine: Counting, metrics: Metrics) -> None:
    cache = PromptCache(tmp_path, metrics)
    prompts = ["Welcome to Acme.", "Your call is important to us.", "", "Goodbye."]
    assert cache.render(engine, iter(prompts), rates=(8000, 16000)) == {
        "cached": 0, "rendered": 6, "failed": 0}
    assert len(engine.calls) == 6
    assert cache.render(engine, prompts, rates=(8000, 16000))["cached"] == 6
    assert len(engine.calls) == 6
    cache.get_or_synthesize(engine, "Goodbye.", 16000)
    assert len(engine.calls) == 6


def test_render_survives_a_failing_engine(tmp_path: Path) -> None:
    bad = EspeakSynthesizer(voice="xx-nonexistent")
    cache = PromptCache(tmp_path, None)
    assert cache.render(bad, ["Hi.", "Bye."]) == {"cached": 0, "rendered": 0, "failed": 2}
    assert cache.size() == 0
    with pytest.raises(TtsError):
        cache.get_or_synthesize(bad, "Hi.", 8000)


def test_damaged_file_is_a_miss_and_is_rewritten(tmp_path: Path, engine: Counting,
                                                 metrics: Metrics) -> None:
    cache = PromptCache(tmp_path, metrics)
    cache.get_or_synthesize(engine, "Hello.", 8000)
    path = cache.path_for(engine, "Hello.", 8000)
    path.write_bytes(b"RIFF garbage")
    chunk = cache.get_or_synthesize(engine, "Hello.", 8000)
    assert len(engine.calls) == 2 and chunk.duration_s > 0.2
    assert cache.get(engine, "Hello.", 8000) is not None


def test_writes_are_atomic_and_leave_no_temp_files(tmp_path: Path, engine: Counting) -> None:
    cache = PromptCache(tmp_path, None)
    cache.render(engine, ["One.", "Two.", "Three."])
    names = [f for _r, _d, files in os.walk(tmp_path) for f in files]
    assert len(names) == 3 and all(n.endswith(".wav") and not n.startswith(".tmp")
                                   for n in names)


def test_cancelled_render_stores_nothing(tmp_path: Path, engine: Counting) -> None:
    cache = PromptCache(tmp_path, None)
    token = CancelToken()
    token.cancel()
    assert cache.render(engine, ["Hello."], cancel=token)["rendered"] == 0
    assert cache.size() == 0


def test_empty_prompt_is_refused(tmp_path: Path, engine: Counting) -> None:
    with pytest.raises(TtsError, match="nothing speakable"):
        PromptCache(tmp_path, None).get_or_synthesize(engine, "  <break/> ", 8000)
    assert engine.calls == []


def test_unusable_cache_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TtsError, match=r"tts\.cache_dir .* cannot be created"):
        PromptCache(blocker / "prompts", None)


def test_cache_write_failure_still_returns_audio(tmp_path: Path, engine: Counting) -> None:
    cache = PromptCache(tmp_path, None)
    shard = cache.path_for(engine, "Hello.", 8000).parent
    shard.write_text("a file where the shard directory should be")  # writes now fail
    chunk = cache.get_or_synthesize(engine, "Hello.", 8000)
    assert chunk.duration_s > 0.2 and cache.size() == 0
