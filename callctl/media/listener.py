"""The Listener: one call's ears. Inbox → VAD → ASR → endpointing → ``emit(event)``.

How this works: ``run()`` (in its own greenlet) takes items from the call's ``Inbox``. Audio
goes through the VAD; while the caller speaks (plus ``padding_ms`` of pre-roll kept in a
ring) it is fed to the recognizer in the hub's threadpool. Frames that arrive during a
decode wait in the inbox and are fed as one batch next time, so a slow decode never blocks
the hub and the recognizer catches up in bigger steps. Only speech is decoded. Given a
``scheduler`` (``callctl.asr.scheduler``, shared by all calls) each decode first takes one
of its slots: the decode that ends the caller's speech and the final are URGENT and go
before other calls' streaming catch-up.

Phases of a turn: IDLE (no speech) → SPEAKING (SpeechStarted; a new ``Turn`` from
``turn_factory`` on the first one, marked ``speech_start``) → PAUSED (SpeechEnded: the
recognizer is finalized at once and a speculative ``FinalTranscript`` is emitted) → either
SPEAKING again (``TurnResumed``: the speculative text becomes the prefix of the turn) or
committed by ``EndpointPolicy`` (``TurnCommitted``; marks ``speech_end``, ``asr_final``,
``endpoint`` on the turn) → IDLE. A fork that closes or drains mid-turn commits the turn with
reason ``fork_closed``/``fork_drained``. No audio for ``no_audio_timeout_s`` → ``NoAudio``;
the first frame after each (re)connect → ``FirstAudio``.
A recognizer that fails or hangs (``decode_timeout_s``) costs the rest of that turn
(``AsrFailed``); given its ``engine``, the listener drops it (never pooled) and takes a fresh
one for the next turn (``AsrRecovered``: re-apply the grammar); without, ASR stays off.
Fork control events (connected, text, closed...) are passed on to ``emit`` unchanged.

The turn model (``turn_model``, Smart Turn: ``callctl.media.smart_turn``): the listener keeps
the turn's audio (pre-roll, speech and pauses; the last ``smart_turn.WINDOW_S``), and at each
speech end hands it to the model once, in the hub's threadpool (through a URGENT scheduler
slot, like the final; both run at once on two cores), while the speculative final runs. The
verdict (a probability) lands in ``ListenState`` for the policy table; a caller who speaks
again makes it stale. A model that fails or hangs costs only that pause's verdict (the policy
decides as without a model). ``expect_number(True)``: the flow waits for digits. Each commit
writes its decision into ``Turn.endpoint`` (reason, the table's row, probability, CPU, the
silence waited and needed, the verdicts of earlier pauses of the turn).

``emit`` is called on the listener's greenlet and must not block for long (the session
puts the event in its own inbox).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import time
from collections.abc import Callable
from typing import Any, Protocol

import gevent
import numpy as np

from callctl.asr.base import (
    Engine,
    FinalTranscript,
    PartialTranscript,
    Recognition,
    Recognizer,
    Word,
)
from callctl.asr.scheduler import DecodeScheduler, Priority
from callctl.call.timeline import Turn
from callctl.log import get_logger
from callctl.media.audio import (
    AudioFrame,
    FirstAudio,
    ForkClosed,
    ForkConnected,
    ForkDrained,
    Inbox,
)
from callctl.media.smart_turn import WINDOW_S
from callctl.media.vad import SpeechEnded, SpeechStarted, Vad
from callctl.metrics import Metrics
from callctl.turns import (
    Action,
    AsrFailed,
    Decision,
    EndpointPolicy,
    ListenState,
    NoAudio,
    NoInput,
    TurnCommitted,
    TurnResumed,
)

Emit = Callable[[Any], None]


class TurnModel(Protocol):
    """What the listener needs of ``callctl.media.smart_turn.SmartTurn``."""

    name: str

    def timed(self, samples: np.ndarray, rate: int) -> tuple[float, float]: ...


@dataclasses.dataclass(frozen=True)
class AsrRecovered:
    """A fresh recognizer replaced the one that failed; it has no grammar set yet."""

    at: float

#: A gap in arriving audio longer than this counts as silence (the fork stopped sending, e.g.
#: paused). Shorter gaps are arrival jitter or our own late reads under load, which must not
#: end a turn: the audio that follows them says whether the caller was silent.
STALL_GRACE_S = 0.5


class Phase(enum.Enum):
    IDLE = "idle"
    SPEAKING = "speaking"
    PAUSED = "paused"


class Listener:
    """Listens to one call (see module docstring). Construct, then ``gevent.spawn(l.run)``."""

    def __init__(
        self,
        inbox: Inbox,
        recognizer: Recognizer,
        vad: Vad,
        policy: EndpointPolicy,
        emit: Emit,
        turn_factory: Callable[[], Turn],
        padding_ms: int = 200,
        no_audio_timeout_s: float = 5.0,
        decode_timeout_s: float = 30.0,
        call_uuid: str | None = None,
        metrics: Metrics | None = None,
        engine: Engine | None = None,
        scheduler: DecodeScheduler | None = None,
        turn_model: TurnModel | None = None,
    ) -> None:
        self.inbox = inbox
        self.recognizer = recognizer
        self.vad = vad
        self.policy = policy
        self.emit = emit
        self.turn_factory = turn_factory
        self.padding_s = padding_ms / 1000
        self.no_audio_timeout_s = no_audio_timeout_s
        self.decode_timeout_s = decode_timeout_s
        self.metrics = metrics
        self.log = get_logger(call_uuid=call_uuid).bind(component="listener")
        self.phase = Phase.IDLE
        self.turn: Turn | None = None
        self._stopped = False
        self._preroll: collections.deque[AudioFrame] = collections.deque()
        self._preroll_s = 0.0
        self._parts: list[str] = []          # texts of earlier segments of this turn
        self._words: list[Word] = []
        self._partial = ""
        self._speculative: Recognition | None = None
        self._speculative_at = 0.0
        self._speech_start = 0.0
        self._speech_end = 0.0
        self._audio_t = 0.0                  # seconds of audio heard (the stream's own clock)
        self._turn_t0 = 0.0                  # audio time where this turn's decoding started
        self._seg_t0 = 0.0                   # ... and where the current segment's started
        self._seg_audio_s = 0.0              # audio decoded in the current segment
        self._speech_end_audio_t = 0.0
        self._armed_at: float | None = None
        self._last_audio = time.monotonic()
        self._no_audio_reported = False
        self._first_audio_seen = False
        self.engine = engine                 # where a fresh recognizer comes from
        self.scheduler = scheduler           # shared decode slots (None: straight to threads)
        self._asr_ok = True
        self._busy = False                   # a recognizer call is running in a thread
        self._job: Any = None                # ... that one
        self.turn_model = turn_model
        self._expect_number = False
        self._turn_audio: collections.deque[np.ndarray] = collections.deque()
        self._turn_audio_s = 0.0
        self._model_seq = 0                  # which pause the running inference judges
        self._model_pending = False
        self._model_p: float | None = None   # this pause's verdict
        self._model_cpu_ms: float | None = None
        self._model_error: str | None = None
        self._verdicts: list[float | None] = []   # earlier pauses of this turn

    # -- control from the session (any greenlet) -----------------------------------------------

    def stop(self) -> None:
        """Make ``run()`` return within one poll interval."""
        self._stopped = True

    def arm_no_input(self, at: float | None = None) -> None:
        """Start the no-input timer (the bot finished speaking)."""
        self._armed_at = time.monotonic() if at is None else at

    def disarm_no_input(self) -> None:
        self._armed_at = None

    def expect_number(self, expected: bool) -> None:
        """The flow waits for digits (a number read out takes pauses between groups)."""
        self._expect_number = expected

    def release(self, engine: Engine) -> bool:
        """After ``run()`` returned: give the recognizer back to ``engine``'s pool. One that
        failed, hung or is still decoding in a thread is dropped instead (never shared with
        another call). Returns whether it was pooled."""
        if self._busy or not self._asr_ok:
            return False
        engine.release(self.recognizer)
        return True

    # -- main loop ------------------------------------------------------------------------------

    def run(self) -> None:
        """Consume the inbox until ``stop()``. Exceptions end only this call's listener."""
        try:
            while not self._stopped:
                item = self.inbox.get(timeout=self._poll_s())
                batch: list[AudioFrame] = []
                while item is not None:
                    if isinstance(item, AudioFrame):
                        batch.append(item)
                    else:
                        self._audio(batch)
                        batch = []
                        self._control(item)
                    if len(batch) >= 50:
                        break
                    item = self.inbox.get(timeout=0)
                self._audio(batch)
                self._evaluate()
        except gevent.GreenletExit:
            raise
        except (Exception, gevent.Timeout) as e:
            self.log.exception("listener failed", error=str(e))
            self.emit(AsrFailed(f"listener failed: {e}", time.monotonic()))

    def _poll_s(self) -> float:
        return 0.02 if self.phase is not Phase.IDLE else 0.1

    # -- inputs ---------------------------------------------------------------------------------

    def _control(self, ev: Any) -> None:
        if isinstance(ev, ForkConnected) and ev.reconnect and self.phase is not Phase.IDLE:
            self._commit("fork_reconnected")
        if isinstance(ev, ForkConnected):
            self._first_audio_seen = False
            self._last_audio = ev.at
            self._no_audio_reported = False
            self.vad.reset()
        self.emit(ev)
        if isinstance(ev, ForkClosed | ForkDrained) and self.phase is not Phase.IDLE:
            self._commit("fork_closed" if isinstance(ev, ForkClosed) else "fork_drained")
            self.vad.reset()

    def _audio(self, frames: list[AudioFrame]) -> None:
        if not frames:
            return
        if frames[0].rate != self.vad.rate or frames[0].rate != self.recognizer.sample_rate:
            raise ValueError(f"audio at {frames[0].rate} Hz but VAD at {self.vad.rate} Hz and "
                             f"recognizer at {self.recognizer.sample_rate} Hz: media."
                             "sample_rate must match what the listener was built for")
        if not self._first_audio_seen:
            self._first_audio_seen = True
            self.emit(FirstAudio(frames[0].at))
        self._last_audio = frames[-1].at
        self._no_audio_reported = False
        to_decode: list[AudioFrame] = []
        for f in frames:
            self._audio_t += f.duration_s
            for ev in self.vad.feed(f.samples, f.at):
                if isinstance(ev, SpeechStarted):
                    to_decode.extend(self._speech_started(ev, f))
                else:
                    self._decode(to_decode, Priority.URGENT)   # the caller now waits
                    to_decode = []
                    self._speech_end_audio_t = self._audio_t - (f.at - ev.at)
                    self._speech_ended(ev)
            if self.phase is not Phase.IDLE:
                self._keep(f)
            if self.phase is Phase.SPEAKING:
                to_decode.append(f)
            else:
                self._remember(f)
        self._decode(to_decode)

    def _keep(self, f: AudioFrame) -> None:
        """The turn's audio for the turn model: the last ``WINDOW_S`` seconds."""
        if self.turn_model is None:
            return
        self._turn_audio.append(f.samples)
        self._turn_audio_s += f.duration_s
        while self._turn_audio and self._turn_audio_s - len(
                self._turn_audio[0]) / f.rate >= WINDOW_S:
            self._turn_audio_s -= len(self._turn_audio.popleft()) / f.rate

    def _remember(self, f: AudioFrame) -> None:
        self._preroll.append(f)
        self._preroll_s += f.duration_s
        while self._preroll and self._preroll_s - self._preroll[0].duration_s >= self.padding_s:
            self._preroll_s -= self._preroll.popleft().duration_s

    def _speech_started(self, ev: SpeechStarted, current: AudioFrame) -> list[AudioFrame]:
        """Returns the pre-roll to decode before the current frame."""
        self.emit(ev)
        seg_t0 = self._audio_t - current.duration_s - self._preroll_s
        if self.phase is Phase.PAUSED:
            discarded = self._speculative.text if self._speculative else ""
            if self._speculative is not None and self._speculative.text:
                self._parts.append(self._speculative.text)
                self._words.extend(self._speculative.words)
            self._speculative = None
            self._verdicts.append(self._model_p)
            self._model_seq += 1                 # a verdict still running is stale now
            self._model_pending, self._model_p = False, None
            self.emit(TurnResumed(ev.at, discarded))
        else:
            if self.turn_model is not None:
                self._turn_audio = collections.deque(f.samples for f in self._preroll)
                self._turn_audio_s = self._preroll_s
            self.turn = self.turn_factory()
            self.turn.mark("speech_start", ev.at)
            self._speech_start = ev.at
            self._armed_at = None
            self._turn_t0 = seg_t0
        self._seg_t0 = seg_t0
        self.phase = Phase.SPEAKING
        pre = list(self._preroll)
        self._preroll.clear()
        self._preroll_s = 0.0
        return pre

    def _speech_ended(self, ev: SpeechEnded) -> None:
        self.emit(ev)
        self.phase = Phase.PAUSED
        self._speech_end = ev.at
        self._judge_pause()                   # runs beside the final below
        rec = self._final()
        if rec is not None:
            self._speculative = rec
            self._speculative_at = time.monotonic()
            self.emit(FinalTranscript(self._text(rec.text), tuple(self._words) + rec.words,
                                      True, self._speculative_at, rec.decode_s))

    # -- turn model (threadpool) ----------------------------------------------------------------

    def _judge_pause(self) -> None:
        """Start the turn model on this pause's audio (once per pause, off the hub)."""
        self._model_seq += 1
        self._model_pending, self._model_p = False, None
        if self.turn_model is None or not self._turn_audio:
            return
        samples = np.concatenate(list(self._turn_audio))
        self._model_pending = True
        gevent.spawn(self._infer, self.turn_model, self._model_seq, samples, self.vad.rate)

    def _infer(self, model: TurnModel, seq: int, samples: np.ndarray, rate: int) -> None:
        p: float | None = None
        cpu_ms: float | None = None
        error: str | None = None
        try:
            with self.scheduler.slot(Priority.URGENT, self.decode_timeout_s) \
                    if self.scheduler is not None else contextlib.nullcontext():
                job = gevent.get_hub().threadpool.spawn(model.timed, samples, rate)
                p, cpu_s = job.get(timeout=self.decode_timeout_s)
                cpu_ms = round(cpu_s * 1000, 1)
        except gevent.GreenletExit:
            raise
        except (Exception, gevent.Timeout) as e:    # this pause is decided without it
            error = repr(e)[:200]
            self.log.error("turn model failed", error=error)
        if seq != self._model_seq:                   # the caller spoke again meanwhile
            return
        self._model_pending, self._model_p = False, p
        self._model_cpu_ms, self._model_error = cpu_ms, error

    # -- recognizer (threadpool) ----------------------------------------------------------------

    def _run(self, fn: Callable[..., Any], *args: Any,
             priority: Priority = Priority.ROUTINE) -> Any:
        if not self._asr_ok:
            return None
        try:
            with self.scheduler.slot(priority, self.decode_timeout_s) \
                    if self.scheduler is not None else contextlib.nullcontext():
                job = gevent.get_hub().threadpool.spawn(fn, *args)
                self._busy, self._job = True, job
                job.rawlink(self._job_done)     # busy until the thread is really done
                return job.get(timeout=self.decode_timeout_s)
        except (Exception, gevent.Timeout) as e:  # engine error or hung: this turn loses ASR
            self._asr_ok = False
            if self.metrics is not None:
                self.metrics.engine_failures.labels(engine=self.recognizer.engine).inc()
            self.log.error("recognizer failed", error=repr(e))
            self.emit(AsrFailed(repr(e), time.monotonic()))
            return None

    def _job_done(self, job: Any) -> None:
        if job is self._job:
            self._busy = False

    def _recover(self) -> None:
        """Between turns: replace a failed recognizer with a fresh one from ``engine`` (the
        failed one may still be decoding in a thread: it is dropped, never pooled)."""
        if self._asr_ok or self.engine is None:
            return
        try:
            fresh = self.engine.acquire()
        except Exception as e:
            self.log.error("recognizer not replaced", error=repr(e))
            self.engine = None               # do not retry every turn
            return
        self.recognizer, self._job, self._busy, self._asr_ok = fresh, None, False, True
        self.log.warning("recognizer replaced")
        self.emit(AsrRecovered(time.monotonic()))

    def _decode(self, frames: list[AudioFrame],
                priority: Priority = Priority.ROUTINE) -> None:
        if not frames:
            return
        pcm = np.concatenate([f.samples for f in frames]).astype("<i2").tobytes()
        self._seg_audio_s += sum(f.duration_s for f in frames)
        partial = self._run(self.recognizer.accept, pcm, priority=priority)
        if partial is not None:
            self._partial = partial
            self.emit(PartialTranscript(self._text(partial), time.monotonic()))

    def _final(self) -> Recognition | None:
        """Finalize the current segment; word times are shifted to count from the turn's
        first decoded sample (segments after a ``TurnResumed`` line up with the first)."""
        rec: Recognition | None = self._run(self.recognizer.final, priority=Priority.URGENT)
        self._partial = ""
        audio_s, self._seg_audio_s = self._seg_audio_s, 0.0
        if rec is None:
            return None
        if self.metrics is not None and audio_s > 0:
            self.metrics.asr_rtf.labels(engine=self.recognizer.engine).observe(
                rec.decode_s / audio_s)
        shift = self._seg_t0 - self._turn_t0
        if shift and rec.words:
            rec = dataclasses.replace(rec, words=tuple(
                dataclasses.replace(w, start=w.start + shift, end=w.end + shift)
                for w in rec.words))
        return rec

    def _text(self, last: str) -> str:
        return " ".join(p for p in [*self._parts, last] if p)

    # -- endpointing ----------------------------------------------------------------------------

    def _evaluate(self) -> None:
        wall = time.monotonic()
        if (not self._no_audio_reported
                and wall - self._last_audio >= self.no_audio_timeout_s):
            self._no_audio_reported = True
            self.emit(NoAudio(wall - self._last_audio, wall))
        # Silence is measured on the audio's own clock (seconds of audio heard since speech
        # ended), so a backlog or a late read (CPU overload) never makes a short pause look
        # long; wall time counts only once audio stops arriving (fork paused/drained/gone).
        stalled = 0.0
        if len(self.inbox) == 0:
            stalled = max(0.0, wall - self._last_audio - STALL_GRACE_S)
        now = wall if len(self.inbox) == 0 else self._last_audio
        if self.phase is Phase.IDLE:
            state = ListenState(False, None, 0.0, "",
                                None if self._armed_at is None else (now - self._armed_at) * 1000)
        else:
            best = self._speculative.text if self._speculative is not None else self._partial
            state = ListenState(
                speaking=self.phase is Phase.SPEAKING,
                silence_ms=(self._audio_t - self._speech_end_audio_t + stalled) * 1000
                if self.phase is Phase.PAUSED
                else None,
                utterance_ms=(now - self._speech_start) * 1000,
                text=self._text(best),
                waiting_ms=None,
                probability=self._model_p if self.phase is Phase.PAUSED else None,
                model_pending=self._model_pending and self.phase is Phase.PAUSED,
                expect_number=self._expect_number,
            )
        decision = self.policy.decide(state)
        if decision.action is Action.COMMIT:
            self._commit(decision.reason, decision, state.silence_ms)
        elif decision.action is Action.NO_INPUT:
            self._armed_at = None
            self.emit(NoInput(now))

    def _endpoint_record(self, reason: str, decision: Decision | None,
                         silence_ms: float | None) -> dict[str, Any]:
        rec: dict[str, Any] = {"reason": reason}
        if decision is not None and decision.row is not None:
            rec["words"], rec["model"] = decision.row[0].value, decision.row[1].value
            rec["need_ms"] = decision.need_ms
        if silence_ms is not None:
            rec["silence_ms"] = round(silence_ms, 1)
        if self.turn_model is not None:
            rec["probability"] = None if self._model_p is None else round(self._model_p, 4)
            rec["model_cpu_ms"] = self._model_cpu_ms
            if self._model_error:
                rec["model_error"] = self._model_error
            if self._verdicts:
                rec["earlier_pauses"] = [None if p is None else round(p, 4)
                                         for p in self._verdicts]
        return rec

    def _commit(self, reason: str, decision: Decision | None = None,
                silence_ms: float | None = None) -> None:
        now = time.monotonic()
        rec = self._speculative
        final_at = self._speculative_at
        if self.phase is Phase.SPEAKING or rec is None:
            if self.phase is Phase.SPEAKING:  # cut off (max length, fork gone): new onset next
                self._speech_end = now
                self.vad.reset()
            rec = self._final() or Recognition("")
            final_at = time.monotonic()
            self.emit(FinalTranscript(self._text(rec.text), tuple(self._words) + rec.words,
                                      False, final_at, rec.decode_s))
        text = self._text(rec.text)
        words = tuple(self._words) + rec.words
        turn = self.turn if self.turn is not None else self.turn_factory()
        turn.mark("speech_end", self._speech_end)
        turn.mark("asr_final", final_at)
        turn.mark("endpoint", now)
        turn.transcript = text
        turn.endpoint = self._endpoint_record(reason, decision, silence_ms)
        self._model_seq += 1
        self._model_pending, self._model_p, self._model_cpu_ms = False, None, None
        self._model_error, self._verdicts = None, []
        self._turn_audio.clear()
        self._turn_audio_s = 0.0
        self.phase = Phase.IDLE
        self.turn = None
        self._parts, self._words, self._partial = [], [], ""
        self._speculative = None
        self.emit(TurnCommitted(text, words, reason, now, turn))
        self._recover()
