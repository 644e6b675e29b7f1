"""The dialog loop of one call: fork → listener (VAD, ASR, endpointing) → dialog → TTS →
playback, with barge-in (``callctl.conversation_bargein``).

How this works: ``Voice`` (``callctl.voice``, the engines every call shares) builds one
``Conversation`` per answered call (``Voice(call)``). Its three hooks run in the call's own
greenlet:

- ``on_start``: store the call, open the dialog, start the fork (bidirectional when
  ``playback.mode = "stream"``) and the ``Listener`` (its events come back through the call's
  inbox), speak the opening prompts.
- ``on_event``: listener events (speech start/end, partial, speculative final, turn
  resumed/committed, no input, fork text frames such as stream-mode ``mark`` echoes), speaker
  posts (``ChunkReady``/``ReplySynthesized``), streamed dialog parts (``PartReady``/
  ``PartsDone``, ``callctl.dialog.pump``), ``PlayedOut``, timers and ESL events (playback
  progress, DTMF).
- ``on_end``: cancel synthesis and dialog streams, stop playback and the listener, return the
  recognizer to the pool, close the fork, mark the call ended in the store. Runs once.

Speaking: one reply = one ``Utterance`` = one ``PlaybackHandle``. Its sentences (one per
``Prompt``) are synthesized one after another by the ``Speaker`` into that handle (sentence
*n + 1* is synthesized while *n* plays); the handle is finished once the dialog said the reply
is complete. A prompt with a prerecorded ``audio`` file is played from it (its text is
synthesized instead when the file is unusable). Scripted flows answer instantly
(``Proposal.reply()`` on the call's greenlet). The LLM streams: a ``Pump`` posts each part as
it completes, so TTS starts on the first sentence while the model is still writing the rest.
Webhook actions are posted on their own greenlet (``callctl.dialog.webhook``).

Turns: the speculative final transcript is answered at once (flows: the reply is computed and
its sentences synthesized ahead into memory; LLM: the request is sent and its parts are held
back) while the endpoint timer runs; the committed turn then plays it (or drops it when the
transcript changed). A turn committed while the bot is still speaking was judged not to be a
barge-in: a backchannel or noise is dropped, real words (too few to interrupt, or over a
prompt that cannot be interrupted) are answered once the reply has played. A cut reply that
ends the dialog (transfer, hangup) is carried out at once.

Stream playback falls back to file playback for the rest of a call (``stream_off``, logged
``conversation.stream_fallback``, counted in ``callctl_playback_fallbacks_total``) when the
channel will not write the frames the module plays the stream into (``CallSession
.writes_idle_frames`` false: it arrived answered without ``send_silence_when_idle``), or when
a streamed reply that was neither cut nor paused ended without any playout mark of the call
ever having come back (the caller heard nothing): that reply is said again from its start.

Contract: a subclass may swap ``listener_class`` (same constructor) or override a step
(``callctl.bench.baseline``); everything else only posts to the call's inbox.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import gevent
import numpy as np

from callctl.asr.base import FinalTranscript, PartialTranscript, Recognizer
from callctl.bargein import Bot, Signal, words_of
from callctl.call.control import CallControlError
from callctl.call.session import CallSession, TimerFired
from callctl.call.state import CallState, Trigger
from callctl.call.timeline import Turn
from callctl.conversation_bargein import BARGEIN_TIMER, PAUSE_TIMER, BargeIn
from callctl.dialog import LlmEngine
from callctl.dialog.base import (
    Action,
    CallContext,
    DialogEngine,
    DialogError,
    Dtmf,
    EmitEvent,
    Hangup,
    Prompt,
    Proposal,
    Reply,
    ReplyPart,
    SetVar,
    Speech,
    Transfer,
    TurnInput,
    Webhook,
)
from callctl.dialog.base import NoInput as DialogNoInput
from callctl.dialog.base import NoMatch as DialogNoMatch
from callctl.dialog.pump import PartReady, PartsDone, Pump
from callctl.dialog.webhook import post_webhook
from callctl.esl.adapter import EslEvent
from callctl.log import get_logger
from callctl.media.audio import ForkConnected, ForkText
from callctl.media.listener import AsrRecovered, Listener
from callctl.media.vad import SpeechEnded, SpeechStarted, Vad
from callctl.ownership import LEASE_LOST_CAUSE
from callctl.playback import FilePlayback, PlaybackError, PlaybackHandle, StreamPlayback
from callctl.resume import RESUMED_FIELDS, flow_node, resume_reply
from callctl.store.base import CallRecord, TurnRecord
from callctl.tts.base import AudioChunk, TtsError, read_wav, resample
from callctl.tts.speaker import ChunkReady, Prerender, ReplySynthesized
from callctl.tts.speaker import Reply as SpokenReply
from callctl.turns import AsrFailed, NoAudio, NoInput, TurnCommitted, TurnResumed

if TYPE_CHECKING:
    from callctl.voice import Voice

DIGIT_TIMER = "digits"
FORK_TIMER = "fork"
FORK_WAIT_S = 3.0     # stream mode: how long the opening waits for the fork to connect
FORK_CHECK_TIMER = "fork_check"
FORK_RESTARTS = 2     # a fork gone for good is started again this often, then the call is
#                       released to the dialplan (its fallback: hold prompt, human queue)


@dataclass(frozen=True, eq=False)
class PlayedOut:
    """``handle`` is done (played out, cut, or failed); posted by its watcher greenlet."""

    must_deliver: ClassVar[bool] = True    # never dropped by a full call inbox
    handle: PlaybackHandle


@dataclass(frozen=True)
class Line:
    """One sentence of a reply: synthesized from ``text``, or the prerecorded ``audio`` file
    (16-bit mono WAV; ``text`` is its transcript, spoken instead when the file is unusable)."""

    text: str
    audio: str | None = None


@dataclass(eq=False)
class Utterance:
    """One reply being spoken: its handle, its sentences in order, and synthesis progress."""

    handle: PlaybackHandle
    turn: Turn | None
    pump: Pump | None = None                             # the streamed reply it speaks
    sentences: list[Line] = field(default_factory=list)  # every sentence started
    queue: deque[Line] = field(default_factory=deque)    # sentences not yet started
    current: SpokenReply | None = None                   # the sentence in synthesis
    piece_sentence: list[int] = field(default_factory=list)   # handle piece -> sentence
    complete: bool = False                               # no more sentences will come

    def remaining(self) -> list[Line]:
        """The cut sentence and everything after it (what to say after a false barge-in)."""
        cut = self.handle.cut_index
        if cut is None:
            return []
        if cut < len(self.piece_sentence):
            start = self.piece_sentence[cut]
        elif self.current is not None and self.current.text:
            start = len(self.sentences) - 1
        else:
            start = len(self.sentences)
        return [*self.sentences[start:], *self.queue]


class Conversation(BargeIn):
    """One call's dialog loop (module docstring). Every method runs in the call's greenlet."""

    #: The listener built for each call (a subclass may swap it, e.g. ``callctl.bench``'s
    #: cloud-style baseline; same constructor).
    listener_class: type[Listener] = Listener

    def __init__(self, voice: Voice, call: CallSession) -> None:
        self.v = voice
        self.call = call
        self.cfg = voice.cfg
        self.log = get_logger(call_uuid=call.uuid, component="conversation")
        self.origin = time.monotonic()
        self.record = CallRecord(uuid=call.uuid, node=self.cfg.daemon.node_id, state="answered",
                                 caller=call.caller, did=call.did, route=call.route_label,
                                 started_at=time.time(), answered_at=time.time())
        self.dialog: DialogEngine | None = None
        self.streaming = False         # the dialog's replies stream (LLM)
        self.recognizer: Recognizer | None = None
        self.vad: Vad | None = None
        self.listener: Listener | None = None
        self.listener_g: gevent.Greenlet[Any, Any] | None = None
        self.handle: PlaybackHandle | None = None
        self.utt: Utterance | None = None
        self.cut: PlaybackHandle | None = None       # the handle the caller just cut
        self.played: PlaybackHandle | None = None    # the handle whose end was handled
        self.pump: Pump | None = None               # the live streamed reply
        self.spec_pump: Pump | None = None          # a speculative streamed reply
        self.pending: list[Transfer | Hangup] = []   # terminal action once the reply played
        self.deferred: tuple[TurnInput, Turn | None] | None = None
        self.spec: tuple[str, Proposal, Reply] | None = None
        self.ahead: dict[str, Prerender] = {}     # speculative sentences synthesized ahead
        self.opening: Reply | None = None             # stream mode: waiting for the fork
        self.helpers: list[gevent.Greenlet[Any, Any]] = []
        self.turns = 0
        self.partial = ""
        self.onset: float | None = None
        self.judge_at_final: tuple[int, float] | None = None   # (speech ms, onset) to judge
        self.digits = ""
        self.first_audio = False
        self.latency_done: set[int] = set()
        self.ended = False
        self.fork_url = ""
        self.fork_restarts = 0                     # fork started again after it was lost
        self.stream_off: str | None = None         # why stream playback was given up
        self.marks_seen = 0                        # playout marks the fork echoed, this call

    @property
    def spoken(self) -> SpokenReply | None:
        """The sentence being synthesized now (None between sentences)."""
        return self.utt.current if self.utt is not None else None

    # -- hooks ------------------------------------------------------------------------------

    def on_start(self, call: CallSession) -> None:
        v = self.v
        flow = call.route.flow or self.cfg.routing.default_flow
        ctx = CallContext(call.uuid, call.caller, call.did, flow, call.route.language)
        self.dialog = v.dialogs.engine(flow, ctx)
        self.streaming = isinstance(self.dialog, LlmEngine)
        rec = call.resume_from        # stored state after a daemon restart (callctl.resume)
        first = resume_reply(self.dialog, rec, self.cfg.dialog.resume_prompt, self.log) \
            if rec is not None else None
        if first is not None and rec is not None:
            self.turns = rec.turns
            self.record = self._with(**{**{k: getattr(rec, k) for k in RESUMED_FIELDS},
                                        "state": "answered"})
            self.log.info("conversation.resumed", flow_node=rec.flow_node, turns=rec.turns,
                          was_node=rec.node)
            try:                      # the dead daemon's fork bug is still on the channel
                call.control.audio_fork_stop()
            except CallControlError:
                pass
        else:
            v.store.call_started(self.record)
            v.store.call_answered(self.record)
        url, inbox = v.forks.register(call.uuid, v.rate)
        self.fork_url = url
        assert v.asr is not None
        self.recognizer = v.asr.acquire()
        self.vad = v.acquire_vad()
        self.listener = self.listener_class(
            inbox, self.recognizer, self.vad, v.policy,
            emit=self._from_listener, turn_factory=self._new_turn,
            padding_ms=self.cfg.asr.padding_ms,
            no_audio_timeout_s=self.cfg.media.no_audio_timeout_s, call_uuid=call.uuid,
            metrics=v.metrics, engine=v.asr, scheduler=v.decoder, turn_model=v.turn_model)
        self.listener_g = gevent.spawn(self.listener.run)
        if self.cfg.playback.mode == "stream" and not call.writes_idle_frames:
            self._stream_fallback("no_idle_frames")
        stream = self.stream_playback
        self._start_fork()
        opening = first or self.dialog.open()
        if stream and not v.forks.connected(call.uuid):
            self.opening = opening             # spoken on ForkConnected: audio needs the fork
            call.call_later(FORK_WAIT_S, FORK_TIMER)
            self._apply_listen()
            return
        self._reply(opening, turn=None)

    def _start_fork(self) -> None:
        """``uuid_audio_fork <uuid> start`` towards our fork server (``CallControlError`` if
        the switch refuses twice). mod_audio_fork refuses a start while a bug of the same
        name is on the channel (one left by a fork that never connected, before the call was
        released and offered again): that bug is stopped and the start tried once more."""
        stream = self.stream_playback

        def start() -> None:
            self.call.control.audio_fork_start(
                self.fork_url, self.v.rate, {"call_uuid": self.call.uuid},
                bidi_rate=self.v.rate if stream else None)

        try:
            start()
        except CallControlError as e:
            self.log.warning("conversation.fork_start_refused", error=str(e),
                             action="stop the channel's fork, start again")
            try:
                self.call.control.audio_fork_stop()
            except CallControlError:
                pass
            start()

    @property
    def stream_playback(self) -> bool:
        """Replies are streamed on the fork (``playback.mode = "stream"``, not given up)."""
        return self.cfg.playback.mode == "stream" and self.stream_off is None

    def _stream_fallback(self, reason: str) -> None:
        """Give up stream playback for this call: file playback from the next reply on."""
        if self.stream_off is not None:
            return
        self.stream_off = reason
        self.v.metrics.playback_fallbacks.labels(reason=reason).inc()
        self.log.warning("conversation.stream_fallback", reason=reason,
                         marks_seen=self.marks_seen, action="file playback for this call")

    def _stream_unheard(self, h: PlaybackHandle) -> bool:
        """A streamed reply the caller did not hear (module doc): fall back and say it again
        with file playback. True if so (the new reply replaces ``h``)."""
        if not isinstance(h, StreamPlayback) or not h.marks_missing or h.interrupted \
                or h.closed or h.pauses or self.marks_seen or self.stream_off is not None:
            return False
        utt = self.utt
        self._stream_fallback("marks_missing")
        # the module still holds the unheard audio: it would play over the first file
        self.v.forks.send_text(self.call.uuid, '{"type":"killAudio"}')
        if utt is None or utt.handle is not h:
            return False
        again = [*utt.sentences, *utt.queue]
        if not again:
            return False
        new = self._open_utterance(utt.turn, h.interruptible, utt.pump)
        new.queue.extend(again)
        new.complete = utt.complete
        self._next_sentence()
        return True

    def _fork_lost(self) -> None:
        """No audio for ``media.no_audio_timeout_s`` and no fork connected: the caller is not
        heard. Start the fork again (``FORK_RESTARTS`` times, ``media.no_audio_timeout_s``
        apart); after that, release the call to the dialplan, whose fallback takes it."""
        if self.ended or self.v.forks.connected(self.call.uuid):
            return
        if self.fork_restarts >= FORK_RESTARTS:
            self.log.error("conversation.fork_lost", restarts=self.fork_restarts,
                           action="released to the dialplan")
            try:
                self.call.control.audio_fork_stop()     # the call is no longer ours
            except CallControlError:
                pass
            self.call.request_release("fork_lost")
            return
        self.fork_restarts += 1
        self.log.warning("conversation.fork_restart", attempt=self.fork_restarts)
        try:
            self.call.control.audio_fork_stop()     # a bug still attached but not connected
        except CallControlError:
            pass
        try:
            self._start_fork()
        except CallControlError as e:
            self.log.error("conversation.fork_restart_failed", error=str(e))
        self.call.call_later(self.cfg.media.no_audio_timeout_s, FORK_CHECK_TIMER)

    def _speak_opening(self, why: str) -> None:
        opening, self.opening = self.opening, None
        if opening is not None:
            self.call.cancel_timer(FORK_TIMER)
            if why != "connected":
                self.log.error("conversation.fork_not_connected", waited_s=FORK_WAIT_S)
            self._reply(opening, turn=None)

    def on_event(self, event: object) -> None:
        if isinstance(event, ChunkReady | ReplySynthesized):
            self._synthesized(event)
        elif isinstance(event, PartReady):
            self._part_ready(event)
        elif isinstance(event, PartsDone):
            self._parts_done(event)
        elif isinstance(event, PlayedOut):
            self._check_played()
        elif isinstance(event, EslEvent):
            self._esl(event)
        elif isinstance(event, ForkText):
            self._fork_text(event)
        elif isinstance(event, ForkConnected):
            self._speak_opening("connected")
        elif isinstance(event, TimerFired):
            self._timer(event.name)
        elif isinstance(event, SpeechStarted):
            self._speech_started(event)
        elif isinstance(event, SpeechEnded):
            self._speech_ended(event)
        elif isinstance(event, PartialTranscript):
            self.partial = event.text
        elif isinstance(event, FinalTranscript):
            self._final(event)
        elif isinstance(event, TurnResumed):
            self._drop_speculation()
        elif isinstance(event, TurnCommitted):
            self._committed(event)
        elif isinstance(event, NoInput):
            if not self._talking() and self.pump is None:
                self._respond(DialogNoInput(), None)
        elif isinstance(event, NoAudio):
            self.log.warning("conversation.no_audio", seconds=round(event.seconds, 1))
            self._fork_lost()
        elif isinstance(event, AsrFailed):
            self.v.metrics.engine_failures.labels(engine=self.cfg.asr.engine).inc()
            self.log.error("conversation.asr_failed", error=event.error)
        elif isinstance(event, AsrRecovered):
            self._apply_listen()                  # the fresh recognizer gets the grammar
        self._observe_latency()

    def on_end(self, cause: str) -> None:
        if self.ended:
            return
        self.ended = True
        self._drop_speculation()
        self._drop_ahead()
        for pump in (self.pump, self.spec_pump):
            if pump is not None:
                pump.stop()
        self.pump = self.spec_pump = None
        if self.utt is not None and self.utt.current is not None:
            self.utt.current.cancel()
        if self.handle is not None:
            self.handle.close()
        for g in self.helpers:
            g.kill(block=False)
        if self.listener is not None:
            self.listener.stop()
        if self.listener_g is not None:
            self.listener_g.join(timeout=1.0)
            self.listener_g.kill(block=True, timeout=1.0)
        v = self.v
        if self.vad is not None:
            if self.listener_g is None or self.listener_g.dead:
                v.release_vad(self.vad)            # nothing feeds it any more
            self.vad = None
        if self.recognizer is not None and v.asr is not None:
            if self.listener is not None:
                self.listener.release(v.asr)       # dropped if still decoding in a thread
            else:
                v.asr.release(self.recognizer)
            self.recognizer = None
        v.forks.unregister(self.call.uuid)
        if cause == LEASE_LOST_CAUSE:          # another node drives the call now
            return
        state = self.dialog.state() if self.dialog is not None else {}
        self.record = self._with(state="ended", end_cause=cause, ended_at=time.time(),
                                 dialog_state=state, turns=self.turns)
        v.store.call_ended(self.record)

    # -- listener events --------------------------------------------------------------------

    def _from_listener(self, event: object) -> None:
        """Called on the listener's greenlet: hand over to the call's greenlet."""
        self.call.inbox.put_control(event)

    def _new_turn(self) -> Turn:
        self.turns += 1
        return Turn(self.turns)

    def _final(self, ev: FinalTranscript) -> None:
        self._judge_stopped(ev.text)
        if ev.speculative:
            self._speculate(ev.text)

    def _timer(self, name: str) -> None:
        if name in (BARGEIN_TIMER, PAUSE_TIMER):
            self._bargein_timer(name)
        elif name == FORK_TIMER:
            self._speak_opening("timeout")
        elif name == FORK_CHECK_TIMER:
            self._fork_lost()
        elif name == DIGIT_TIMER and self.digits:
            self.digits = ""
            self._respond(DialogNoInput(), None)

    # -- turns ------------------------------------------------------------------------------

    def _speculate(self, text: str) -> None:
        """Answer the speculative transcript now; keep the reply until the turn commits."""
        self._drop_speculation()
        if self.dialog is None or self.dialog.listen is None or not text.strip() \
                or self._talking() or self.deferred is not None \
                or self.pump is not None:   # a streamed reply still running: no stale guess
            return
        proposal = self.dialog.propose(Speech(text, final=False))
        if self.streaming:
            self.spec_pump = Pump(proposal, self.call.inbox.put_control, self.log, None,
                                   text=text, live=False)
            return
        reply = proposal.reply()
        self.spec = (text, proposal, reply)
        # its sentences are synthesized into memory now (never into the prompt cache: they
        # may hold caller data); the committed reply plays them (``_next_sentence``)
        self._drop_ahead()
        self.ahead = {p.text: self.v.speaker.prerender(p.text) for p in reply.prompts
                      if p.text.strip() and not p.audio}

    def _drop_ahead(self) -> None:
        """Cancel the speculative sentences still synthesizing or unused."""
        for ahead in self.ahead.values():
            ahead.cancel()
        self.ahead = {}

    def _drop_speculation(self) -> None:
        if self.spec is not None:
            self.spec[1].cancel()
            self.spec = None
            self._drop_ahead()
        if self.spec_pump is not None:
            self.spec_pump.stop()
            self.spec_pump = None

    def _committed(self, ev: TurnCommitted) -> None:
        turn = ev.turn
        turn.transcript = ev.text
        hops = turn.hops()                        # the listener's marks: speech end → …
        for hop in ("endpoint", "asr_final"):
            if hop in hops:
                self.v.metrics.observe_hop(hop, hops[hop])
        self._judge_stopped(ev.text)              # when no speculative final came
        if self._bot() is Bot.PAUSED:             # still undecided: the turn decides it
            self._judge(self._obs(Bot.PAUSED, Signal.SPEECH_STOPPED, 0, ev.text))
        bot = self._bot()
        if bot is Bot.SPEAKING:
            # the policy let the bot talk over this speech: a backchannel or noise is not a
            # turn; real words (too few to interrupt, or over a prompt that cannot be
            # interrupted) are answered once the reply has played
            self._drop_speculation()
            real = bool(self._real_words(ev.text))
            if real:
                turn.mark("deferred")             # answered late on purpose: see _observe
                self.deferred = (Speech(ev.text, final=True), turn)
            self.log.info("conversation.turn_over_bot", words=len(words_of(ev.text)),
                          deferred=real)
            return
        if bot is Bot.CUT and not self._real_words(ev.text):
            self._drop_speculation()              # a cough / "mhm" cut the bot: carry on
            self.v.metrics.bargeins.labels(kind="false").inc()
            self._resume()
            return
        if not ev.text.strip():
            self._respond(DialogNoMatch("nothing recognized"), turn)
            return
        self.call.cancel_timer(DIGIT_TIMER)
        self.digits = ""
        if self.spec is not None and self.spec[0] == ev.text:
            _, proposal, reply = self.spec
            self.spec = None                      # its prerendered sentences stay (ahead)
            self._end_previous_reply()
            try:
                proposal.commit()
            except DialogError as e:             # stale: the dialog moved on (DTMF turn)
                self.log.warning("conversation.speculation_stale", error=str(e))
                self._respond(Speech(ev.text, final=True), turn)
                return
            self._after_dialog(reply, turn)
        elif self.spec_pump is not None and self.spec_pump.text == ev.text:
            pump, self.spec_pump = self.spec_pump, None
            self._end_previous_reply()
            self._go_live(pump, turn)
        else:
            self._respond(Speech(ev.text, final=True), turn)

    def _end_previous_reply(self) -> None:
        """A new reply starts: the live LLM stream of the last one is cut and committed
        (the history keeps what was produced), the cut bot yields the floor for good."""
        self.cut = None
        self.deferred = None
        pump, self.pump = self.pump, None
        if pump is not None:
            pump.stop()
            self._commit_pump(pump)

    def _respond(self, inp: TurnInput, turn: Turn | None) -> None:
        """Answer a committed turn input (speech, DTMF, no input, no match)."""
        if self.dialog is None or self.dialog.listen is None:
            return
        self._drop_speculation()
        self._end_previous_reply()
        proposal = self.dialog.propose(inp)
        self._go(Trigger.THINK)
        if self.streaming:
            self._go_live(Pump(proposal, self.call.inbox.put_control, self.log, turn), turn)
            return
        reply = proposal.reply()
        proposal.commit()
        self._after_dialog(reply, turn)

    def _go_live(self, pump: Pump, turn: Turn | None) -> None:
        """Make ``pump`` the reply of ``turn``: replay what it held back, speak the rest as
        it comes."""
        pump.live, pump.turn = True, turn
        self.pump = pump
        if turn is not None:
            turn.mark("dialog")
        held, pump.held = pump.held, []
        for part in held:
            self._part(pump, part)
        if pump.finished:
            self._finish_pump(pump)

    def _part_ready(self, ev: PartReady) -> None:
        pump = ev.pump
        if pump is self.spec_pump and not pump.live:
            pump.held.append(ev.part)
        elif pump is self.pump:
            self._part(pump, ev.part)

    def _part(self, pump: Pump, part: ReplyPart) -> None:
        if isinstance(part, Prompt):
            if part.filler and pump.spoke:
                return
            pump.spoke = pump.spoke or not part.filler
            if self.utt is None or self.utt.pump is not pump or self.utt.complete \
                    or self.played is self.utt.handle:
                self._open_utterance(pump.turn, interruptible=True, pump=pump)
            if pump.turn is not None and not part.filler:
                pump.turn.reply = f"{pump.turn.reply} {part.text}".strip()
            self._say_more(Line(part.text, part.audio))
        else:
            self._action(part)

    def _parts_done(self, ev: PartsDone) -> None:
        pump = ev.pump
        pump.finished = True
        if pump is self.pump:
            self._finish_pump(pump)

    def _finish_pump(self, pump: Pump) -> None:
        self.pump = None
        self._commit_pump(pump)
        self._save_dialog()
        if self.utt is not None and self.utt.pump is pump and self.played is not \
                self.utt.handle and (pump.spoke or self.utt.sentences or self.utt.queue):
            self._end_utterance()
            self._after_cut()
        else:
            self._reply_played()

    def _commit_pump(self, pump: Pump) -> None:
        if pump.committed:
            return
        pump.committed = True
        try:
            pump.proposal.commit()
        except DialogError as e:
            self.log.warning("conversation.commit_stale", error=str(e))
        self._apply_listen()

    def _after_dialog(self, reply: Reply, turn: Turn | None) -> None:
        if turn is not None:
            turn.mark("dialog")
            turn.reply = " ".join(reply.sentences)
            if "asr_final" in turn.marks and "deferred" not in turn.marks:
                self.v.metrics.observe_hop("dialog", turn.marks["dialog"] - turn.marks["asr_final"])
        self._reply(reply, turn)

    def _reply(self, reply: Reply, turn: Turn | None) -> None:
        """Speak a complete ``reply``; run its actions (terminal ones after it has played)."""
        self._apply_listen()
        for action in reply.actions:
            self._action(action)
        self._save_dialog()
        lines = [Line(p.text, p.audio) for p in reply.prompts if p.text.strip() or p.audio]
        if not lines:
            self._reply_played()
            return
        self._open_utterance(turn, interruptible=True)
        for line in lines:
            self._say_more(line)
        self._end_utterance()

    def _action(self, action: Action) -> None:
        if isinstance(action, SetVar):
            try:
                self.call.control.setvar(action.name, action.value)
            except CallControlError as e:
                self.log.warning("conversation.setvar_failed", name=action.name, error=str(e))
        elif isinstance(action, EmitEvent):
            self.log.info("conversation.event", name=action.name)
            self.v.store.dialog_event(self.record, action.name, action.data)
        elif isinstance(action, Webhook):          # fire-and-forget, bounded by its deadline
            gevent.spawn(post_webhook, action, self.call.uuid, self.log, self.v.webhooks)
        elif isinstance(action, Transfer | Hangup):
            self.pending.append(action)

    def _save_dialog(self) -> None:
        if self.dialog is not None:
            state = self.dialog.state()
            self.record = self._with(dialog_state=state, flow_node=flow_node(state),
                                     turns=self.turns)
            self.v.store.save_call(self.record)

    def _apply_listen(self) -> None:
        """Tell the recognizer what the next turn expects (a flow node's phrases), and the
        listener whether digits are expected (a number read out pauses between groups)."""
        listen = self.dialog.listen if self.dialog is not None else None
        if self.listener is not None:
            self.listener.expect_number(listen is not None and listen.max_digits is not None)
        if self.listener is not None and self.recognizer is not None:
            self.recognizer = self.listener.recognizer     # replaced after a failure
        if self.recognizer is not None:
            try:
                self.recognizer.set_grammar(listen.grammar if listen is not None else None)
            except Exception:                  # a grammar is an optimisation, never fatal
                self.log.exception("conversation.grammar_failed")

    # -- speaking ---------------------------------------------------------------------------

    def _open_utterance(self, turn: Turn | None, interruptible: bool,
                        pump: Pump | None = None) -> Utterance:
        """A new reply with its own playback handle; whatever still plays is stopped."""
        old = self.utt
        if old is not None and old.current is not None:
            old.current.cancel()
        if self.handle is not None and not self.handle.done:
            try:
                self.handle.interrupt()       # two replies never overlap
            except PlaybackError as e:
                self.log.warning("conversation.stop_failed", error=str(e))
        v, call = self.v, self.call
        handle: PlaybackHandle
        if self.stream_playback:
            handle = StreamPlayback(
                lambda pcm: v.forks.send_binary(call.uuid, pcm),
                lambda txt: v.forks.send_text(call.uuid, txt), v.rate, turn=turn,
                metrics=v.metrics, interruptible=interruptible, call_uuid=call.uuid)
        else:
            handle = FilePlayback(call.control, self.playback_dir(), turn=turn,
                                  metrics=v.metrics, interruptible=interruptible,
                                  call_uuid=call.uuid)
        self.handle = handle
        self.utt = Utterance(handle, turn, pump)
        self.cut = None
        self.onset = None
        if self.listener is not None:
            self.listener.disarm_no_input()
        self.helpers = [g for g in self.helpers if not g.dead]
        self.helpers.append(gevent.spawn(self._watch, handle))
        self._go(Trigger.SPEAK)
        return self.utt

    def _say_more(self, line: Line) -> None:
        utt = self.utt
        assert utt is not None
        utt.queue.append(line)
        if utt.current is None:
            self._next_sentence()

    def _end_utterance(self) -> None:
        utt = self.utt
        if utt is None:
            return
        utt.complete = True
        if utt.current is None:
            self._next_sentence()

    def _next_sentence(self) -> None:
        """Start synthesizing the next queued sentence, or finish the handle."""
        utt = self.utt
        if utt is None or utt.current is not None or utt.handle.done:
            return
        while utt.queue and utt.queue[0].audio and not utt.handle.done:
            line = utt.queue.popleft()         # a prerecorded prompt: straight to playback
            utt.sentences.append(line)
            if not self._play_file(utt, line):
                utt.queue.appendleft(Line(line.text))
                utt.sentences.pop()
                break
        if utt.handle.done:
            return
        if utt.queue:
            line = utt.queue.popleft()
            utt.sentences.append(line)
            utt.current = self.v.speaker.say(line.text, utt.handle, turn=utt.turn,
                                             post=self.call.inbox.put_control,
                                             ready=self.ahead.pop(line.text, None))
        elif utt.complete:
            utt.handle.finish()
            self._check_played()

    def _play_file(self, utt: Utterance, line: Line) -> bool:
        """Queue a prerecorded prompt; False (logged) when it cannot be played."""
        assert line.audio is not None
        try:
            pcm, rate = read_wav(Path(line.audio))
            if rate != self.v.rate:
                pcm = resample(np.frombuffer(pcm, dtype="<i2"), rate, self.v.rate)
            before = len(utt.handle.pieces)
            utt.handle.add(AudioChunk(pcm, self.v.rate, line.text))
        except (OSError, TtsError, PlaybackError, ValueError) as e:
            self.log.warning("conversation.audio_prompt_unusable", audio=line.audio,
                             error=str(e)[:200])
            return False
        if len(utt.handle.pieces) > before:
            utt.piece_sentence.append(len(utt.sentences) - 1)
        if utt.turn is not None and "tts_first_chunk" not in utt.turn.marks:
            utt.turn.mark("tts_first_chunk")
        return True

    def _synthesized(self, item: ChunkReady | ReplySynthesized) -> None:
        utt = self.utt
        if utt is None or item.reply is not utt.current:
            return                              # a cancelled sentence's leftovers
        if isinstance(item, ReplySynthesized):
            utt.current = None
            self._next_sentence()
            return
        before = len(utt.handle.pieces)
        try:
            item.reply.deliver(item)
        except PlaybackError as e:
            self.log.warning("conversation.playback_failed", error=str(e))
        if len(utt.handle.pieces) > before:
            utt.piece_sentence.append(len(utt.sentences) - 1)

    def _watch(self, handle: PlaybackHandle) -> None:
        """Post ``PlayedOut`` when ``handle`` is done, however it ends (stream-mode marks and
        their grace timer finish it on other greenlets)."""
        while not handle.wait(5.0):
            if self.ended:
                return
        if not self.ended:
            self.call.inbox.put_control(PlayedOut(handle))

    def playback_dir(self) -> Path:
        return self.v.playback_dir / self.call.uuid[:2]

    def _fork_text(self, ev: ForkText) -> None:
        """Stream mode: the module echoes our marks as they play out."""
        try:
            msg = json.loads(ev.text)
        except ValueError:
            return
        if isinstance(msg, dict) and msg.get("type") == "mark" \
                and isinstance(msg.get("data"), dict) and msg["data"].get("event") == "playout":
            self.marks_seen += 1
        if isinstance(msg, dict) and self.handle is not None:
            self.handle.on_fork_message(msg)
            self._check_played()

    def _esl(self, ev: EslEvent) -> None:
        name = ev.headers.get("Event-Name", "")
        if self.handle is not None:
            self.handle.on_event(name, ev.headers)
        if name == "DTMF":
            self._dtmf(ev.headers.get("DTMF-Digit", ""))
        elif ev.headers.get("Event-Subclass", "").startswith("mod_audio_fork::"):
            self.log.info("conversation.fork_event", subclass=ev.headers["Event-Subclass"],
                          body=(ev.body or "")[:200])
        self._check_played()

    def _check_played(self, force: bool = False) -> None:
        """Once per reply: when its handle is done (and not cut), go on (``_reply_played``)."""
        h = self.handle
        if h is None or self.played is h or self.ended:
            return
        if not force and (not h.done or h.interrupted or h.closed):
            return
        if self.utt is not None and self.utt.handle is h and not self.utt.complete \
                and not force:
            return
        if self.call.state not in (CallState.SPEAKING, CallState.ANSWERED,
                                   CallState.THINKING, CallState.LISTENING):
            return
        if self._stream_unheard(h):
            return
        self.played = h
        self._reply_played()

    def _observe_latency(self) -> None:
        h = self.handle
        if h is None or h.started is None:
            return
        if not self.first_audio:
            self.first_audio = True
            answered = self.call.answered_at or self.origin
            self.v.metrics.answer_to_first_audio.labels(route=self.call.route_label).observe(
                max(0.0, h.started - answered))
        turn = self.utt.turn if self.utt is not None and self.utt.handle is h else None
        if turn is not None and turn.index not in self.latency_done:
            latency = turn.turn_latency()
            if latency is not None:
                self.latency_done.add(turn.index)
                # a deferred turn waited for the bot's prompt to end: its "latency" is that
                # prompt, not ours (stored with its "deferred" mark, kept out of the metric)
                if "deferred" not in turn.marks:
                    self.v.metrics.turn_latency.labels(route=self.call.route_label).observe(
                        latency)
                self.v.store.add_turn(self.record, TurnRecord.from_timeline(turn, self.origin))
                self.log.info("conversation.turn", index=turn.index,
                              deferred="deferred" in turn.marks,
                              latency_ms=round(latency * 1000), hops_ms={
                                  k: round(s * 1000) for k, s in turn.hops().items()})

    def _dtmf(self, digit: str) -> None:
        if not digit:
            return
        if self._talking():
            self._judge(self._obs(self._bot(), Signal.DTMF))
        listen = self.dialog.listen if self.dialog is not None else None
        if listen is None or not listen.dtmf:
            return
        if listen.max_digits:
            self.digits += digit
            done = digit == listen.terminator or len(self.digits) >= listen.max_digits
            if not done:
                self.call.call_later(5.0, DIGIT_TIMER)
                return
            digits, self.digits = self.digits, ""
            self.call.cancel_timer(DIGIT_TIMER)
            self._key_turn(Dtmf(digits))
        else:
            self._key_turn(Dtmf(digit))

    def _key_turn(self, inp: Dtmf) -> None:
        if self._talking():        # over a prompt that cannot be interrupted
            self.deferred = (inp, None)
            return
        self._respond(inp, None)

    def _reply_played(self) -> None:
        """The reply finished playing: run the terminal action, a deferred turn, or listen."""
        if self.pump is not None:
            return                             # the streamed reply is not complete yet
        if self.pending:
            action = self.pending.pop(0)
            self.pending.clear()
            if isinstance(action, Transfer):
                self.call.request_transfer(action.target)
                self.v.store.call_transferred(self.record, action.target)
            else:
                self.call.request_hangup(action.cause)
            return
        if self.dialog is not None and self.dialog.listen is None:
            self.call.request_hangup("NORMAL_CLEARING")
            return
        if self.deferred is not None:
            inp, turn = self.deferred
            self.deferred = None
            self._respond(inp, turn)
            return
        self._go(Trigger.LISTEN)
        if self.listener is not None:
            self.listener.arm_no_input(self._no_input_at())

    def _no_input_at(self) -> float:
        """When the no-input wait starts, shifted so a node's ``no_input_ms`` applies."""
        now = time.monotonic()
        listen = self.dialog.listen if self.dialog is not None else None
        if listen is None or listen.no_input_ms is None:
            return now
        return now + (listen.no_input_ms - self.v.policy.no_input_ms) / 1000

    def _go(self, trigger: Trigger) -> None:
        if self.call.machine.can(trigger):
            self.call.transition(trigger)

    def _with(self, **changes: Any) -> CallRecord:
        return dataclasses.replace(self.record, updated_at=time.time(), **changes)
