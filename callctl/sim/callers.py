"""Scripted callers: a caller is a timeline of steps run against one emulated call.

How this works: ``Caller(steps).run(call)`` (or the Caller itself, it is callable) is the
``script`` that ``Switch.place_call`` runs in the call's own greenlet. Each step acts through
the ``SimCall`` (``media.say``, ``dtmf``, ``hangup``, ``wait_answered``, ``heard``) and appends
one frozen ``StepRecord`` to ``caller.log`` with monotonic start/end times; speech steps also
carry the exact speech start/end (from the utterance's measured bounds and the frame times the
media clock promised). Durations in steps are media seconds: they are divided by the media
clock's ``speed``. Turn latency = first ``Heard.start`` after a speech end, minus that end
(``turn_latencies``).

Streamed bot audio (``--playback stream``: the jambonz fork's bidirectional stream) can reach
the caller as several stretches a few frames apart (the module re-buffers after an
underrun); ``join_stream`` joins stretches of ``"stream"`` audio less than
``STREAM_GAP_S`` (media seconds) apart into one, as a listener hears one reply.
``BargeIn`` waits on joined stretches, so "the bot has been audible for 1 s" counts from
the start of the reply, not from the last underrun.

A step that cannot complete (no answer, bot never spoke) is logged with ``ok=False``; a call
that is hung up ends the script quietly. A script never raises into the switch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import gevent
import gevent.event

from callctl.log import get_logger
from callctl.sim import corpus
from callctl.sim.corpus import Utterance
from callctl.sim.interfaces import Heard
from callctl.sim.media import STREAM_GAP_S

__all__ = [
    "BargeIn",
    "Caller",
    "Dtmf",
    "Hangup",
    "Pause",
    "Say",
    "StepRecord",
    "WaitAnswer",
    "WaitForBot",
    "barge_in",
    "barge_in_latencies",
    "dtmf",
    "hangup",
    "join_stream",
    "pause",
    "say",
    "turn_latencies",
    "wait_answer",
    "wait_for_bot",
]

POLL_S = 0.005


class CallerMedia(Protocol):
    """What a caller needs of a call's media: the emulator's ``ChannelMedia`` or the test
    phone's (``callctl.sim.phone.PhoneCall``)."""

    def say(self, samples_8k: Any) -> tuple[float, float]: ...


class SimCallLike(Protocol):
    """What a caller needs from ``callctl.sim.switch.SimCall`` (or a ``PhoneCall``)."""

    @property
    def media(self) -> CallerMedia: ...
    def dtmf(self, digit: str) -> None: ...
    def hangup(self, cause: str = "NORMAL_CLEARING") -> None: ...
    def wait_answered(self, timeout: float) -> bool: ...
    def heard(self) -> list[Heard]: ...


@dataclass(frozen=True)
class WaitAnswer:
    """Wait until the switch answers (ends the script if it does not)."""

    timeout_s: float = 10.0


@dataclass(frozen=True)
class Say:
    """Speak an utterance (or text, synthesized with ``voice`` over the call's codec) and
    return when its audio has been sent."""

    what: Utterance | str
    voice: str = "piper"


@dataclass(frozen=True)
class Pause:
    """Stay silent for ``seconds`` of media time."""

    seconds: float


@dataclass(frozen=True)
class Dtmf:
    """Press ``digits`` one after another, ``gap_s`` media seconds apart."""

    digits: str
    gap_s: float = 0.1


@dataclass(frozen=True)
class BargeIn:
    """Wait until the bot has been audible for ``after_s`` (media seconds) and is still
    talking, then speak over it."""

    what: Utterance | str
    after_s: float = 0.3
    timeout_s: float = 15.0
    voice: str = "piper"


@dataclass(frozen=True)
class WaitForBot:
    """Wait until the bot has answered the last speech and then been silent ``silence_s``."""

    silence_s: float = 0.8
    timeout_s: float = 15.0


@dataclass(frozen=True)
class Hangup:
    """Hang up now, or at ``at_s`` media seconds after the answer."""

    at_s: float | None = None
    cause: str = "NORMAL_CLEARING"


Step = WaitAnswer | Say | Pause | Dtmf | BargeIn | WaitForBot | Hangup


def wait_answer(timeout_s: float = 10.0) -> WaitAnswer:
    """Step: wait for the answer."""
    return WaitAnswer(timeout_s)


def say(what: Utterance | str, voice: str = "piper") -> Say:
    """Step: speak."""
    return Say(what, voice)


def pause(seconds: float) -> Pause:
    """Step: silence."""
    return Pause(seconds)


def dtmf(digits: str, gap_s: float = 0.1) -> Dtmf:
    """Step: key presses."""
    return Dtmf(digits, gap_s)


def barge_in(what: Utterance | str, after_s: float = 0.3, timeout_s: float = 15.0,
             voice: str = "piper") -> BargeIn:
    """Step: talk over the bot."""
    return BargeIn(what, after_s, timeout_s, voice)


def wait_for_bot(silence_s: float = 0.8, timeout_s: float = 15.0) -> WaitForBot:
    """Step: let the bot answer and finish."""
    return WaitForBot(silence_s, timeout_s)


def hangup(at_s: float | None = None, cause: str = "NORMAL_CLEARING") -> Hangup:
    """Step: BYE."""
    return Hangup(at_s, cause)


@dataclass(frozen=True)
class StepRecord:
    """What one step did. Times are ``time.monotonic()``; ``speech_*`` only for speech."""

    index: int
    kind: str                     # wait_answer, say, pause, dtmf, barge_in, wait_for_bot, hangup
    start: float
    end: float
    ok: bool = True
    text: str | None = None
    speech_start: float | None = None
    speech_end: float | None = None
    detail: str = ""


class _CallEnded(Exception):
    """The call was hung up under the script."""


class Caller:
    """A scripted caller; see module doc. ``log`` fills in as the steps run."""

    def __init__(self, steps: Sequence[Step], *, cache_dir: Any = None) -> None:
        self.steps = tuple(steps)
        self.cache_dir = cache_dir
        self.log: list[StepRecord] = []
        self.answered_at: float | None = None
        self.done = gevent.event.Event()
        self.error: str | None = None

    def __call__(self, call: SimCallLike) -> None:
        self.run(call)

    def run(self, call: SimCallLike) -> None:
        """Run every step against ``call`` (blocks this greenlet); never raises."""
        log = get_logger(call_uuid=getattr(call, "uuid", None))
        try:
            for i, step in enumerate(self.steps):
                if not self._step(i, step, call):
                    break
        except _CallEnded:
            pass
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("sim.caller_failed")
        finally:
            self.done.set()

    # -- steps -------------------------------------------------------------------------
    def _speed(self, call: SimCallLike) -> float:
        return float(getattr(call.media, "speed", 1.0))

    def _record(self, rec: StepRecord) -> None:
        self.log.append(rec)

    def _step(self, i: int, step: Step, call: SimCallLike) -> bool:
        speed = self._speed(call)
        t0 = time.monotonic()
        if isinstance(step, WaitAnswer):
            ok = call.wait_answered(step.timeout_s)
            if ok:
                self.answered_at = time.monotonic()
            self._record(StepRecord(i, "wait_answer", t0, time.monotonic(), ok))
            return ok
        if isinstance(step, Say):
            self._say(i, "say", step.what, step.voice, call, t0)
        elif isinstance(step, Pause):
            gevent.sleep(step.seconds / speed)
            self._record(StepRecord(i, "pause", t0, time.monotonic()))
        elif isinstance(step, Dtmf):
            for n, digit in enumerate(step.digits):
                if n:
                    gevent.sleep(step.gap_s / speed)
                call.dtmf(digit)
            self._record(StepRecord(i, "dtmf", t0, time.monotonic(), text=step.digits))
        elif isinstance(step, BargeIn):
            heard = self._wait_bot_talking(call, step.after_s / speed, step.timeout_s)
            if heard is None:
                self._record(StepRecord(i, "barge_in", t0, time.monotonic(), ok=False,
                                        detail="bot never talked"))
                return True
            self._say(i, "barge_in", step.what, step.voice, call, t0,
                      detail=f"bot audio since {heard.start:.6f} ({heard.source})")
        elif isinstance(step, WaitForBot):
            ok, detail = self._wait_bot_done(call, step.silence_s / speed, step.timeout_s)
            self._record(StepRecord(i, "wait_for_bot", t0, time.monotonic(), ok, detail=detail))
        elif isinstance(step, Hangup):
            if step.at_s is not None and self.answered_at is not None:
                gevent.sleep(max(0.0, self.answered_at + step.at_s / speed - time.monotonic()))
            call.hangup(step.cause)
            self._record(StepRecord(i, "hangup", t0, time.monotonic(), text=step.cause))
            return False
        return True

    def _utterance(self, what: Utterance | str, voice: str, call: SimCallLike) -> Utterance:
        if isinstance(what, Utterance):
            return what
        codec = getattr(call, "codec", "PCMU")
        return corpus.utterance(what, voice=voice, codec=codec if codec in ("PCMU", "PCMA")
                                else "PCMU", cache_dir=self.cache_dir)

    def _say(self, i: int, kind: str, what: Utterance | str, voice: str, call: SimCallLike,
             t0: float, detail: str = "") -> None:
        u = self._utterance(what, voice, call)
        speed = self._speed(call)
        try:
            start, end = call.media.say(u.samples)
        except RuntimeError as exc:          # MediaError: the call is gone
            self._record(StepRecord(i, kind, t0, time.monotonic(), False, u.text,
                                    detail=str(exc)))
            raise _CallEnded from exc
        self._record(StepRecord(i, kind, t0, end, True, u.text,
                                speech_start=start + u.speech_start_s / speed,
                                speech_end=start + u.speech_end_s / speed, detail=detail))
        gevent.sleep(max(0.0, end - time.monotonic()))

    def _wait_bot_talking(self, call: SimCallLike, after_s: float, timeout_s: float
                          ) -> Heard | None:
        frame_s = float(getattr(call.media, "frame_s", 0.02))
        gap_s = STREAM_GAP_S / self._speed(call)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = time.monotonic()
            for h in reversed(join_stream(call.heard(), gap_s)):
                if not h.interrupted and now - h.end <= 2.5 * frame_s and \
                        now - h.start >= after_s:
                    return h
            gevent.sleep(POLL_S)
        return None

    def _wait_bot_done(self, call: SimCallLike, silence_s: float, timeout_s: float
                       ) -> tuple[bool, str]:
        spoken = [r.speech_end for r in self.log if r.speech_end is not None]
        since = max(spoken) if spoken else (self.answered_at or 0.0)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = time.monotonic()
            replies = [h for h in call.heard() if h.end > since]
            if replies and now - max(h.end for h in replies) >= silence_s:
                return True, f"bot replied at {replies[0].start:.6f}"
            gevent.sleep(POLL_S)
        return False, "bot did not reply and fall silent in time"


def join_stream(heard: Sequence[Heard], gap_s: float) -> list[Heard]:
    """``heard`` (in order of start) with each run of ``"stream"`` stretches less than
    ``gap_s`` apart (monotonic seconds: ``STREAM_GAP_S / speed``) joined into one stretch:
    start of the first, end and ``interrupted`` of the last. An interrupted stretch ends its
    run (audio after a kill is a new reply). Other sources are returned unchanged."""
    out: list[Heard] = []
    last: int | None = None                      # index in out of the last stream stretch
    for h in heard:
        if h.source != "stream":
            out.append(h)
            continue
        if last is not None and not out[last].interrupted and h.start - out[last].end <= gap_s:
            out[last] = dataclasses.replace(out[last], end=max(out[last].end, h.end),
                                            interrupted=h.interrupted)
        else:
            out.append(h)
            last = len(out) - 1
    return out


def turn_latencies(log: Sequence[StepRecord], heard: Sequence[Heard]) -> list[float | None]:
    """For each plain ``say`` record: seconds from its speech end to the first audio the
    caller heard after it (None if the bot never answered before the next speech)."""
    speech = [r for r in log if r.kind == "say" and r.speech_end is not None]
    out: list[float | None] = []
    for n, rec in enumerate(speech):
        assert rec.speech_end is not None
        limit = speech[n + 1].speech_start if n + 1 < len(speech) else None
        starts = [h.start for h in heard if h.start >= rec.speech_end
                  and (limit is None or h.start < limit)]
        out.append(min(starts) - rec.speech_end if starts else None)
    return out


def barge_in_latencies(log: Sequence[StepRecord], heard: Sequence[Heard]
                       ) -> list[float | None]:
    """For each ``barge_in`` record: seconds from its speech start to the last frame of the
    bot audio it talked over (None if that audio was not interrupted, i.e. played on)."""
    out: list[float | None] = []
    for rec in log:
        if rec.kind != "barge_in" or rec.speech_start is None:
            continue
        t = rec.speech_start
        over = [h for h in heard if h.start <= t <= h.end + 0.1]
        hit = next((h for h in over if h.interrupted), None)
        out.append(hit.end - t if hit is not None else None)
    return out


ScriptFn = Callable[[SimCallLike], None]
