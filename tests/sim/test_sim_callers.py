"""Scripted callers against a real media half (clock, playback, Heard) with a tiny bot."""

from __future__ import annotations

import time
import wave
from collections.abc import Iterator
from pathlib import Path

import gevent
import numpy as np
import pytest
from mediakit import RecordingSignals, wait_until

from callctl.sim import callers
from callctl.sim.callers import Caller, StepRecord
from callctl.sim.corpus import Utterance
from callctl.sim.interfaces import Heard
from callctl.sim.media import Media, new_media

SPEED = 4.0


class MediaCall:
    """The SimCall surface over a real Media (our own interface; the switch provides the
    real one)."""

    def __init__(self, tmp_path: Path, answer_after: float | None = 0.0) -> None:
        self.signals = RecordingSignals()
        self.media: Media = new_media(self.signals, speed=SPEED, temp_dir=str(tmp_path))
        self.codec = "PCMU"
        self.answered = gevent.event.Event()
        if answer_after is not None:
            gevent.spawn_later(answer_after, self._answer)

    def _answer(self) -> None:
        self.media.start()
        self.answered.set()

    def wait_answered(self, timeout: float) -> bool:
        return self.answered.wait(timeout)

    def dtmf(self, digit: str) -> None:
        self.signals.dtmf(digit)

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        self.signals.caller_hangup(cause)
        self.media.stop()

    def heard(self) -> list[Heard]:
        return self.media.heard()


def _utt(text: str, speech_s: float, lead: float = 0.1, tail: float = 0.1) -> Utterance:
    t = np.arange(int(8000 * speech_s)) / 8000
    speech = (np.sin(2 * np.pi * 300 * t) * 6000).astype(np.int16)
    samples = np.concatenate([np.zeros(int(8000 * lead), np.int16), speech,
                              np.zeros(int(8000 * tail), np.int16)])
    return Utterance(text, samples, lead, lead + speech_s, "test", "PCMU")


@pytest.fixture
def prompt(tmp_path: Path) -> Path:
    path = tmp_path / "prompt.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((np.ones(8000 * 2, np.int16) * 3000).astype("<i2").tobytes())
    return path


@pytest.fixture
def call(tmp_path: Path) -> Iterator[MediaCall]:
    c = MediaCall(tmp_path)
    yield c
    c.media.stop()


def _bot_reply_after_each_say(c: MediaCall, caller: Caller, prompt: Path,
                              delay_s: float) -> gevent.Greenlet:
    """A bot that starts ``prompt`` ``delay_s`` after each caller speech end."""
    def run() -> None:
        seen = 0
        while not caller.done.is_set():
            says = [r for r in caller.log if r.kind == "say"]
            if len(says) > seen and says[seen].speech_end is not None:
                gevent.sleep(max(0.0, says[seen].speech_end + delay_s - time.monotonic()))
                seen += 1
                gevent.spawn(c.media.play, str(prompt))
            gevent.sleep(0.002)
    return gevent.spawn(run)


def test_turns_are_logged_and_latency_measured(call: MediaCall, prompt: Path) -> None:
    caller = Caller([callers.wait_answer(), callers.pause(0.2),
                     callers.say(_utt("billing please", 0.6)),
                     callers.wait_for_bot(silence_s=0.3),
                     callers.dtmf("45"), callers.hangup()])
    bot = _bot_reply_after_each_say(call, caller, prompt, delay_s=0.1)
    runner = gevent.spawn(caller.run, call)
    assert caller.done.wait(15)
    runner.join(timeout=1)
    bot.kill()
    assert caller.error is None
    kinds = [r.kind for r in caller.log]
    assert kinds == ["wait_answer", "pause", "say", "wait_for_bot", "dtmf", "hangup"]
    assert all(r.ok for r in caller.log)
    say = caller.log[2]
    assert isinstance(say, StepRecord) and say.text == "billing please"
    assert say.speech_start is not None and say.speech_end is not None
    assert say.speech_end - say.speech_start == pytest.approx(0.6 / SPEED, abs=1e-6)
    [latency] = callers.turn_latencies(caller.log, call.heard())
    assert latency is not None and 0.1 <= latency < 0.5        # bot delay + ~30 ms start
    assert call.signals.dtmfs == ["4", "5"]
    assert call.signals.hungup == ["NORMAL_CLEARING"]
    with pytest.raises(AttributeError):
        say.text = "changed"  # type: ignore[misc]


def test_barge_in_waits_for_bot_audio_then_speaks(call: MediaCall, prompt: Path) -> None:
    caller = Caller([callers.wait_answer(),
                     callers.barge_in(_utt("agent", 0.4, lead=0.0), after_s=0.3),
                     callers.hangup()])
    runner = gevent.spawn(caller.run, call)
    wait_until(call.answered.is_set)
    gevent.sleep(0.1)
    player = gevent.spawn(call.media.play, str(prompt))

    def break_on_speech() -> None:             # a bot that stops when the caller speaks
        rec = wait_until(lambda: [r for r in caller.log if r.kind == "barge_in"])[0]
        gevent.sleep(max(0.0, rec.speech_start + 0.05 - time.monotonic()))
        call.media.break_playback()

    gevent.spawn(break_on_speech)
    assert caller.done.wait(15)
    runner.join(timeout=1)
    assert player.get(timeout=5) == "break"
    rec = next(r for r in caller.log if r.kind == "barge_in")
    bot = call.heard()[0]
    assert rec.ok and rec.speech_start is not None
    assert rec.speech_start - bot.start >= 0.3 / SPEED - 0.005  # spoke over, after 0.3 s
    assert rec.speech_start < bot.end                           # while the bot talked
    [latency] = callers.barge_in_latencies(caller.log, call.heard())
    assert latency is not None and 0.0 < latency < 0.5


def test_unanswered_call_ends_the_script(tmp_path: Path) -> None:
    c = MediaCall(tmp_path, answer_after=None)
    caller = Caller([callers.wait_answer(timeout_s=0.05), callers.say("never said")])
    caller.run(c)
    assert [(r.kind, r.ok) for r in caller.log] == [("wait_answer", False)]


def test_call_hung_up_under_the_script_ends_quietly(call: MediaCall) -> None:
    caller = Caller([callers.wait_answer(), callers.pause(0.1),
                     callers.say(_utt("hello", 0.2)), callers.say(_utt("again", 0.2))])
    wait_until(call.answered.is_set)
    gevent.spawn_later(0.01, call.media.stop)
    caller.run(call)
    assert caller.error is None
    assert caller.log[-1].kind == "say" and not caller.log[-1].ok


def test_barge_in_without_bot_audio_is_logged_not_ok(call: MediaCall) -> None:
    caller = Caller([callers.wait_answer(), callers.barge_in(_utt("x", 0.1), timeout_s=0.1),
                     callers.wait_for_bot(timeout_s=0.1), callers.hangup(at_s=0.2)])
    caller.run(call)
    assert [(r.kind, r.ok) for r in caller.log] == [
        ("wait_answer", True), ("barge_in", False), ("wait_for_bot", False), ("hangup", True)]
    assert caller.log[-1].end - caller.log[0].end >= 0.2 / SPEED - 0.005


def test_text_is_synthesized_with_the_corpus(call: MediaCall, tmp_path: Path) -> None:
    caller = Caller([callers.wait_answer(), callers.say("yes", voice="espeak")],
                    cache_dir=tmp_path / "corpus")
    caller.run(call)
    rec = caller.log[-1]
    assert rec.ok and rec.text == "yes"
    assert rec.speech_start is not None and rec.speech_end is not None
    assert rec.speech_end > rec.speech_start
    assert any((tmp_path / "corpus").glob("*.wav"))
    assert callers.turn_latencies(caller.log, call.heard()) == [None]
