"""The per-turn reply pipeline: real engines, deadlines, fallback, cancel on hangup."""

from __future__ import annotations

from pathlib import Path

import gevent
import pytest
from ttskit import Counting, RecordingTransport

from callctl.call.timeline import Turn
from callctl.metrics import Metrics
from callctl.playback import FilePlayback
from callctl.tts.cache import PromptCache
from callctl.tts.espeak import EspeakSynthesizer
from callctl.tts.piper import PiperSynthesizer
from callctl.tts.speaker import Speaker

LONG_REPLY = ("Sure, I can help with that. Your order shipped on Monday from our warehouse. "
              "It should arrive by Thursday afternoon. You will get a text message when it is "
              "out for delivery. Is there anything else I can do for you today?")


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    return PiperSynthesizer()  # the shared voice: loaded once per process


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    return tmp_path / "playback"


def _sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_reply_is_spoken_piece_by_piece(piper: PiperSynthesizer, pdir: Path,
                                        metrics: Metrics) -> None:
    tr = RecordingTransport()
    turn = Turn(1)
    turn.mark("dialog")
    speaker = Speaker(piper, 8000, deadline_ms=5000, metrics=metrics)
    handle = FilePlayback(tr, pdir, turn=turn, metrics=metrics)
    reply = speaker.say(LONG_REPLY, handle, turn)
    assert reply.wait(30)
    assert len(tr.plays) == len(reply.pieces) == 5
    assert reply.sources == ["piper"] * 5 and not reply.failed
    assert reply.pieces[0] == "Sure, I can help with that."
    assert handle.finished and "tts_first_chunk" in turn.marks and "playback_cmd" in turn.marks
    assert _sample(metrics, "callctl_tts_real_time_factor_ratio_count", {"engine": "piper"}) == 5
    assert _sample(metrics, "callctl_hop_seconds_count", {"hop": "tts_first_chunk"}) == 1
    for _path, uuid in tr.plays:
        handle.on_event("CHANNEL_EXECUTE_COMPLETE", {"Application-UUID": uuid})
    assert handle.done and list(pdir.iterdir()) == []


def test_cached_prompt_skips_synthesis(piper: PiperSynthesizer, tmp_path: Path,
                                       metrics: Metrics) -> None:
    engine = Counting(piper)
    cache = PromptCache(tmp_path / "cache", metrics)
    speaker = Speaker(engine, 8000, deadline_ms=5000, cache=cache, metrics=metrics)
    greeting = "Thank you for calling Acme. How can I help?"
    assert speaker.prepare([greeting])["rendered"] == 2  # greeting + "one moment"
    calls = len(engine.calls)
    tr = RecordingTransport()
    reply = speaker.say(greeting, FilePlayback(tr, tmp_path / "pb"))
    assert reply.wait(10)
    assert len(engine.calls) == calls and reply.sources == ["cache"] and len(tr.plays) == 1
    assert _sample(metrics, "callctl_tts_cache_total", {"result": "hit"}) >= 1


def test_slow_engine_falls_back_to_the_fallback_voice(piper: PiperSynthesizer, pdir: Path,
                                                      metrics: Metrics) -> None:
    """Piper cannot make any sentence in 1 ms: every piece comes from espeak instead."""
    speaker = Speaker(piper, 8000, deadline_ms=1, fallback=EspeakSynthesizer(),
                      fallback_deadline_ms=5000, metrics=metrics)
    tr = RecordingTransport()
    reply = speaker.say(LONG_REPLY, FilePlayback(tr, pdir))
    assert reply.wait(30)
    assert reply.sources == ["espeak"] * 5 and len(tr.plays) == 5
    assert _sample(metrics, "callctl_engine_failures_total", {"engine": "piper"}) == 1


def test_failing_engines_play_the_one_moment_prompt(piper: PiperSynthesizer, tmp_path: Path,
                                                    metrics: Metrics) -> None:
    broken = EspeakSynthesizer(voice="xx-nonexistent")
    cache = PromptCache(tmp_path / "cache", metrics)
    speaker = Speaker(piper, 8000, deadline_ms=1, fallback=broken, cache=cache,
                      metrics=metrics, fallback_deadline_ms=5000)
    speaker.prepare()  # renders "One moment, please." with Piper (no deadline at start-up)
    tr = RecordingTransport()
    handle = FilePlayback(tr, tmp_path / "pb")
    reply = speaker.say("Let me check your balance.", handle)
    assert reply.wait(10)
    assert reply.failed and reply.sources == ["one_moment"] and len(tr.plays) == 1
    assert handle.finished
    assert _sample(metrics, "callctl_engine_failures_total", {"engine": "espeak"}) == 1


def test_nothing_works_at_all_ends_the_reply_cleanly(pdir: Path) -> None:
    broken = EspeakSynthesizer(voice="xx-nonexistent")
    speaker = Speaker(broken, 8000, deadline_ms=5000)
    tr = RecordingTransport()
    handle = FilePlayback(tr, pdir)
    reply = speaker.say("Hello.", handle)
    assert reply.wait(10) and reply.failed and tr.plays == [] and handle.done


@pytest.mark.parametrize("text", ["", "   ", "<speak><break time='2s'/></speak>", "\U0001F600"])
def test_unspeakable_reply_plays_nothing(piper: PiperSynthesizer, pdir: Path, text: str
                                         ) -> None:
    engine = Counting(piper)
    handle = FilePlayback(RecordingTransport(), pdir)
    reply = Speaker(engine, 8000, deadline_ms=5000).say(text, handle)
    assert reply.wait(5) and handle.done and engine.calls == [] and not reply.failed


def test_very_long_non_ascii_ssml_reply_is_spoken(pdir: Path) -> None:
    text = "<speak>Caf\u00e9 \u201copen\u201d \u2014 yes. " + "More words here. " * 300 + "</speak>"
    tr = RecordingTransport()
    reply = Speaker(EspeakSynthesizer(), 8000, deadline_ms=5000).say(text, FilePlayback(tr, pdir))
    assert reply.wait(60) and not reply.failed
    assert reply.pieces[0] == 'Caf\u00e9 "open", yes.'
    assert len(reply.text) <= 1200 and len(tr.plays) == len(reply.pieces)


def test_hangup_mid_sentence_leaves_no_synthesis_and_no_files(piper: PiperSynthesizer,
                                                              pdir: Path) -> None:
    engine = Counting(piper)
    tr = RecordingTransport()
    handle = FilePlayback(tr, pdir)
    reply = Speaker(engine, 8000, deadline_ms=5000).say(LONG_REPLY, handle)
    while not tr.plays:
        gevent.sleep(0.005)
    handle.close()  # the caller hung up while the first sentence plays
    assert reply.greenlet is not None and reply.greenlet.dead and reply.cancelled
    produced = engine.chunks
    gevent.sleep(0.5)  # any orphan synthesis would keep producing chunks
    assert engine.chunks == produced and len(engine.calls) < 5
    assert list(pdir.iterdir()) == []
    assert not handle.finished


def test_interrupt_cancels_the_rest_of_the_reply(piper: PiperSynthesizer, pdir: Path) -> None:
    engine = Counting(piper)
    tr = RecordingTransport()
    handle = FilePlayback(tr, pdir)
    reply = Speaker(engine, 8000, deadline_ms=5000).say(LONG_REPLY, handle)
    while not tr.plays:
        gevent.sleep(0.005)
    handle.on_event("CHANNEL_EXECUTE", {"Application-UUID": tr.plays[0][1]})
    assert handle.interrupt()
    assert reply.cancelled and tr.stops == 1
    assert handle.cut_text == "Sure, I can help with that."
    assert reply.remaining_text() == LONG_REPLY
    gevent.sleep(0.3)
    assert len(tr.plays) <= 2 and list(pdir.iterdir()) == []
