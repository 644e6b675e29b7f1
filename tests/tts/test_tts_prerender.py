"""A speculative reply's sentences are synthesized ahead into memory (``Speaker.prerender``):
never into the prompt cache, used once by ``say(ready=...)`` instead of a second synthesis,
cancellable when the speculation is dropped."""

from __future__ import annotations

from pathlib import Path

import gevent
from ttskit import Counting, RecordingTransport

from callctl.metrics import Metrics
from callctl.playback import FilePlayback
from callctl.tts.cache import PromptCache
from callctl.tts.espeak import EspeakSynthesizer
from callctl.tts.speaker import Speaker

PRIVATE = "Your account number is 4 4 1 7 2 and your balance is 12 dollars."


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def test_prerendered_sentence_is_played_not_synthesized_again(tmp_path: Path,
                                                              metrics: Metrics) -> None:
    engine = Counting(EspeakSynthesizer())
    cache = PromptCache(tmp_path / "cache", metrics)
    speaker = Speaker(engine, 8000, deadline_ms=5000, cache=cache, metrics=metrics)
    speaker.prepare([])
    cached = _files(tmp_path / "cache")
    calls = len(engine.calls)
    ahead = speaker.prerender(PRIVATE)
    assert ahead.wait(10) and ahead.chunks
    assert _files(tmp_path / "cache") == cached        # caller data never reaches the disk
    synthesized = len(engine.calls)
    assert synthesized > calls
    tr = RecordingTransport()
    reply = speaker.say(PRIVATE, FilePlayback(tr, tmp_path / "pb"), ready=ahead)
    assert reply.wait(10) and not reply.failed
    assert len(engine.calls) == synthesized             # not synthesized a second time
    assert len(tr.plays) == len(ahead.chunks)
    # another text's prerender is ignored: that reply is synthesized as usual
    other = speaker.say("Something else.", FilePlayback(tr, tmp_path / "pb"), ready=ahead)
    assert other.wait(10) and len(engine.calls) == synthesized + 1


def test_prerender_of_a_cached_prompt_is_skipped_without_reading_it(tmp_path: Path,
                                                                    metrics: Metrics) -> None:
    engine = Counting(EspeakSynthesizer())
    cache = PromptCache(tmp_path / "cache", metrics)
    speaker = Speaker(engine, 8000, deadline_ms=5000, cache=cache, metrics=metrics)
    speaker.prepare(["Connecting you to billing."])
    reg = metrics.registry
    before = [reg.get_sample_value("callctl_tts_cache_total", {"result": r}) or 0
              for r in ("hit", "miss")]
    calls = len(engine.calls)
    ahead = speaker.prerender("Connecting you to billing.")
    assert ahead.greenlet is None and ahead.chunks is None and len(engine.calls) == calls
    assert [reg.get_sample_value("callctl_tts_cache_total", {"result": r}) or 0
            for r in ("hit", "miss")] == before          # a presence test, not a cache read


def test_dropped_speculation_cancels_its_prerender(tmp_path: Path, metrics: Metrics) -> None:
    speaker = Speaker(EspeakSynthesizer(), 8000, deadline_ms=5000, metrics=metrics)
    ahead = speaker.prerender(" ".join([PRIVATE] * 20))
    gevent.sleep(0)
    ahead.cancel()
    assert ahead.greenlet is not None and ahead.greenlet.dead
    assert ahead.cancel_token.cancelled and ahead.chunks is None
