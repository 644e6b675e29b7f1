"""The dialog loop of a call: fork → listener (VAD, ASR, endpointing) → dialog → TTS →
playback, with barge-in; and ``Voice``, the process-wide engines every call shares.

How this works: the daemon builds one ``Voice`` (``make_factory``); ``Voice.start()`` binds the
mod_audio_fork WebSocket server, opens the store, loads the recognizer model and pre-renders
every static prompt of every flow, before the daemon says READY. For each answered call the
``CallSession`` asks ``Voice`` for a ``Conversation`` (``Voice(call)``). The conversation's
three hooks run in the call's own greenlet:

- ``on_start``: store the call, open the dialog, start the fork and the ``Listener`` (its
  events come back through the call's inbox), speak the opening prompts.
- ``on_event``: listener events (speech start/end, partial, speculative final, turn
  resumed/committed, no input), speaker posts (``ChunkReady``/``ReplySynthesized``), timers
  and ESL events (playback progress, DTMF). The speculative final transcript is answered by
  the dialog at once and its reply text is rendered into the prompt cache while the
  endpoint timer runs; the committed turn then plays from the cache. Caller speech over the
  bot is judged by ``callctl.bargein`` (a timer re-asks after ``bargein_min_speech_ms``).
- ``on_end``: cancel synthesis, stop playback and the listener, return the recognizer to
  the pool, close the fork, mark the call ended in the store. Runs once.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent

from callctl.asr.base import Engine, FinalTranscript, PartialTranscript, Recognizer
from callctl.bargein import Bot, Decision, Observation, Signal, decide
from callctl.call.control import CallControlError
from callctl.call.session import CallSession, TimerFired
from callctl.call.state import CallState, Trigger
from callctl.call.timeline import Turn
from callctl.config import Config
from callctl.dialog import Dialogs
from callctl.dialog.base import (
    CallContext,
    DialogEngine,
    Dtmf,
    EmitEvent,
    Hangup,
    Proposal,
    Reply,
    SetVar,
    Speech,
    Transfer,
    TurnInput,
    Webhook,
)
from callctl.dialog.base import NoInput as DialogNoInput
from callctl.dialog.base import NoMatch as DialogNoMatch
from callctl.esl.adapter import EslEvent
from callctl.log import get_logger
from callctl.media.forkserver import ForkServer
from callctl.media.listener import Listener
from callctl.media.vad import SpeechEnded, SpeechStarted, Vad
from callctl.metrics import Metrics
from callctl.ownership import LEASE_LOST_CAUSE
from callctl.playback import FilePlayback, PlaybackHandle, StreamPlayback
from callctl.resume import RESUMED_FIELDS, flow_node, resume_reply
from callctl.store import SessionStore, open_store
from callctl.store.base import CallRecord, TurnRecord
from callctl.tts import build_speaker
from callctl.tts.speaker import ChunkReady, ReplySynthesized, Speaker
from callctl.tts.speaker import Reply as SpokenReply
from callctl.turns import AsrFailed, EndpointPolicy, NoAudio, NoInput, TurnCommitted, TurnResumed

BARGEIN_TIMER = "bargein"
DIGIT_TIMER = "digits"


class Voice:
    """Engines shared by all calls of one daemon, and the ``ConversationFactory``."""

    def __init__(self, cfg: Config, metrics: Metrics, config_path: str | None = None,
                 flows_dir: str | Path | None = None, store: SessionStore | None = None,
                 asr: Engine | None = None, speaker: Speaker | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.log = get_logger(component="voice")
        self.rate = cfg.media.sample_rate
        self.forks = ForkServer.from_config(cfg.media, metrics)
        self.dialogs = Dialogs(cfg, config_path=config_path, directory=flows_dir)
        self.store = store if store is not None else open_store(cfg.store, metrics)
        self.asr = asr
        self.speaker = speaker if speaker is not None else build_speaker(
            cfg.tts, self.rate, metrics)
        self.policy = EndpointPolicy.from_config(cfg.turns)
        self.playback_dir = Path(cfg.playback.dir)
        self.loaded = False

    def start(self) -> None:
        """Bind the fork server, open the store, load models, pre-render prompts (blocking)."""
        self.forks.start()
        if self.cfg.media.listen_port == 0:        # tests and the demo: an ephemeral port
            host, port = self.forks.address
            self.forks.public_url = f"ws://{host}:{port}"
        self.store.start()
        t0 = time.monotonic()
        if self.asr is None:
            from callctl.asr import build_engine

            self.asr = build_engine(self.cfg.asr, self.metrics, self.rate)
        prompts = [*self.dialogs.static_prompts(),
                   *([self.cfg.dialog.resume_prompt] if self.cfg.dialog.resume_prompt else [])]
        counts = self.speaker.prepare(prompts)
        self.loaded = True
        self.log.info("voice.ready", asr=type(self.asr).__name__, tts=self.cfg.tts.engine,
                      prompts=len(prompts), rendered=counts, fork_port=self.forks.address[1],
                      took_s=round(time.monotonic() - t0, 2))

    def ready(self) -> bool:
        return self.loaded

    def close(self) -> None:
        self.forks.stop()
        self.store.close()

    def __call__(self, call: CallSession) -> Conversation:
        if self.asr is None:
            raise RuntimeError("Voice.start() was not called")
        return Conversation(self, call)


def make_factory(cfg: Config, metrics: Metrics, config_path: str | None = None) -> Voice:
    """The daemon's hook (see ``callctl.daemon``)."""
    return Voice(cfg, metrics, config_path=config_path)


class Conversation:
    """One call's dialog loop (module docstring). Every method runs in the call's greenlet."""

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
        self.recognizer: Recognizer | None = None
        self.listener: Listener | None = None
        self.listener_g: gevent.Greenlet[Any, Any] | None = None
        self.handle: PlaybackHandle | None = None
        self.spoken: SpokenReply | None = None
        self.speaking_turn: Turn | None = None
        self.pending: list[Any] = []          # actions to run once the reply has played
        self.spec: tuple[str, Proposal, Reply] | None = None
        self.turns = 0
        self.partial = ""
        self.onset: float | None = None
        self.digits = ""
        self.first_audio = False
        self.latency_done: set[int] = set()
        self.ended = False

    # -- hooks ------------------------------------------------------------------------------

    def on_start(self, call: CallSession) -> None:
        v = self.v
        flow = call.route.flow or self.cfg.routing.default_flow
        ctx = CallContext(call.uuid, call.caller, call.did, flow, call.route.language)
        self.dialog = v.dialogs.engine(flow, ctx)
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
        assert v.asr is not None
        self.recognizer = v.asr.acquire()
        self.listener = Listener(
            inbox, self.recognizer, Vad.from_config(self.cfg.vad, v.rate), v.policy,
            emit=self._from_listener, turn_factory=self._new_turn,
            padding_ms=self.cfg.asr.padding_ms,
            no_audio_timeout_s=self.cfg.media.no_audio_timeout_s, call_uuid=call.uuid)
        self.listener_g = gevent.spawn(self.listener.run)
        call.control.audio_fork_start(url, v.rate, {"call_uuid": call.uuid})
        self._reply(first or self.dialog.open(), turn=None)

    def on_event(self, event: object) -> None:
        if isinstance(event, ChunkReady | ReplySynthesized):
            if self.spoken is not None:
                self.spoken.deliver(event)
        elif isinstance(event, EslEvent):
            self._esl(event)
        elif isinstance(event, TimerFired):
            self._timer(event.name)
        elif isinstance(event, SpeechStarted):
            self._speech_started(event)
        elif isinstance(event, SpeechEnded):
            self._speech_ended(event)
        elif isinstance(event, PartialTranscript):
            self.partial = event.text
        elif isinstance(event, FinalTranscript):
            self._speculate(event.text)
        elif isinstance(event, TurnResumed):
            self._drop_speculation()
        elif isinstance(event, TurnCommitted):
            self._committed(event)
        elif isinstance(event, NoInput):
            self._turn_input(DialogNoInput(), None)
        elif isinstance(event, NoAudio):
            self.log.warning("conversation.no_audio", seconds=round(event.seconds, 1))
        elif isinstance(event, AsrFailed):
            self.v.metrics.engine_failures.labels(engine=self.cfg.asr.engine).inc()
            self.log.error("conversation.asr_failed", error=event.error)

    def on_end(self, cause: str) -> None:
        if self.ended:
            return
        self.ended = True
        self._drop_speculation()
        if self.spoken is not None:
            self.spoken.cancel()
        if self.handle is not None:
            self.handle.close()
        if self.listener is not None:
            self.listener.stop()
        if self.listener_g is not None:
            self.listener_g.join(timeout=1.0)
            self.listener_g.kill(block=False)
        v = self.v
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

    def _bot(self) -> Bot:
        h = self.handle
        if h is None or h.done:
            return Bot.CUT if h is not None and h.interrupted and self.onset else Bot.SILENT
        return Bot.CUT if h.interrupted else Bot.SPEAKING

    def _speech_started(self, ev: SpeechStarted) -> None:
        self.onset = ev.at
        self.partial = ""
        if self._bot() is Bot.SPEAKING:
            self.call.call_later(self.cfg.turns.bargein_min_speech_ms / 1000, BARGEIN_TIMER)

    def _speech_ended(self, ev: SpeechEnded) -> None:
        bot = self._bot()
        if bot is Bot.SILENT or self.onset is None:
            self.onset = None
            return
        speech_ms = int(getattr(ev, "speech_s", 0.0) * 1000)
        self._judge(Observation(bot, Signal.SPEECH_STOPPED, self._interruptible(), speech_ms,
                                self.partial))
        self.onset = None

    def _timer(self, name: str) -> None:
        if name == BARGEIN_TIMER and self.onset is not None and self._bot() is Bot.SPEAKING:
            speech_ms = int((time.monotonic() - self.onset) * 1000)
            if self._judge(Observation(Bot.SPEAKING, Signal.SPEECH, self._interruptible(),
                                       speech_ms, self.partial)) is Decision.WAIT:
                self.call.call_later(0.04, BARGEIN_TIMER)
        elif name == DIGIT_TIMER and self.digits:
            self.digits = ""
            self._turn_input(DialogNoInput(), None)

    def _interruptible(self) -> bool:
        return self.handle.interruptible if self.handle is not None else True

    def _judge(self, obs: Observation) -> Decision:
        verdict = decide(obs, self.cfg.turns)
        if verdict.decision is Decision.INTERRUPT and self.handle is not None:
            if self.handle.interrupt():
                kind = "dtmf" if obs.signal is Signal.DTMF else "speech"
                self.v.metrics.bargeins.labels(kind=kind).inc()
                if self.onset is not None and kind == "speech":
                    self.v.metrics.bargein_latency.labels(route=self.call.route_label).observe(
                        max(0.0, time.monotonic() - self.onset))
                self.log.info("conversation.bargein", kind=kind, rule=verdict.rule,
                              why=verdict.why)
        elif verdict.decision is Decision.RESUME and self.spoken is not None:
            again = self.spoken.remaining_text()
            self.v.metrics.bargeins.labels(kind="false").inc()
            self.log.info("conversation.resume", why=verdict.why)
            if again:
                self._speak(again, self.speaking_turn, interruptible=True)
        return verdict.decision

    # -- turns ------------------------------------------------------------------------------

    def _speculate(self, text: str) -> None:
        """Answer the speculative transcript now and render the reply into the cache."""
        self._drop_speculation()
        if self.dialog is None or not text.strip() or self._bot() is Bot.SPEAKING:
            return
        proposal = self.dialog.propose(Speech(text, final=False))
        reply = proposal.reply()
        self.spec = (text, proposal, reply)
        cache = self.v.speaker.cache
        spoken = " ".join(reply.sentences)
        if cache is not None and spoken and cache.get(self.v.speaker.primary, spoken,
                                                      self.v.rate) is None:
            gevent.spawn(self._prerender, spoken)

    def _prerender(self, text: str) -> None:
        try:
            self.v.speaker.prepare([text])
        except Exception:
            self.log.exception("conversation.prerender_failed")

    def _drop_speculation(self) -> None:
        if self.spec is not None:
            self.spec[1].cancel()
            self.spec = None

    def _committed(self, ev: TurnCommitted) -> None:
        turn = ev.turn
        turn.transcript = ev.text
        if not ev.text.strip():
            self._drop_speculation()
            if self.handle is not None and self.handle.interrupted and self.spoken is not None:
                again = self.spoken.remaining_text()       # false interruption: carry on
                if again:
                    self._speak(again, self.speaking_turn, interruptible=True)
                return
            self._turn_input(DialogNoMatch("nothing recognized"), turn)
            return
        if self.spec is not None and self.spec[0] == ev.text:
            _, proposal, reply = self.spec
            self.spec = None
            proposal.commit()
        else:
            self._drop_speculation()
            assert self.dialog is not None
            reply = self.dialog.respond(Speech(ev.text, final=True))
        self._after_dialog(reply, turn)

    def _turn_input(self, inp: TurnInput, turn: Turn | None) -> None:
        if self.dialog is None or self.dialog.listen is None:
            return
        self._drop_speculation()
        reply = self.dialog.respond(inp)
        self._after_dialog(reply, turn)

    def _after_dialog(self, reply: Reply, turn: Turn | None) -> None:
        if turn is not None:
            turn.mark("dialog")
            turn.reply = " ".join(reply.sentences)
            if "asr_final" in turn.marks:
                self.v.metrics.observe_hop("dialog", turn.marks["dialog"] - turn.marks["asr_final"])
        self._reply(reply, turn)

    def _reply(self, reply: Reply, turn: Turn | None) -> None:
        """Speak ``reply``; run its actions (terminal ones after it has played)."""
        for action in reply.actions:
            if isinstance(action, SetVar):
                self.call.control.setvar(action.name, action.value)
            elif isinstance(action, EmitEvent):
                self.log.info("conversation.event", name=action.name)
            elif isinstance(action, Webhook):
                gevent.spawn(_post_webhook, action, self.call.uuid, self.log)
            elif isinstance(action, Transfer | Hangup):
                self.pending.append(action)
        if self.dialog is not None:
            state = self.dialog.state()
            self.record = self._with(dialog_state=state, flow_node=flow_node(state),
                                     turns=self.turns)
            self.v.store.save_call(self.record)
        text = " ".join(reply.sentences)
        if text:
            self._speak(text, turn, interruptible=True)
        else:
            self._reply_played()

    def _speak(self, text: str, turn: Turn | None, interruptible: bool) -> None:
        if self.spoken is not None:
            self.spoken.cancel()
        if self.handle is not None and not self.handle.done:
            self.handle.close()
        v, call = self.v, self.call
        if self.cfg.playback.mode == "stream":
            self.handle = StreamPlayback(
                lambda pcm: v.forks.send_binary(call.uuid, pcm),
                lambda txt: v.forks.send_text(call.uuid, txt), v.rate, turn=turn,
                metrics=v.metrics, interruptible=interruptible, call_uuid=call.uuid)
            post: Callable[[object], object] | None = None
        else:
            self.handle = FilePlayback(call.control, self.playback_dir(), turn=turn,
                                       metrics=v.metrics, interruptible=interruptible,
                                       call_uuid=call.uuid)
            post = call.inbox.put_control
        self.speaking_turn = turn
        self.onset = None
        if self.listener is not None:
            self.listener.disarm_no_input()
        self.spoken = v.speaker.say(text, self.handle, turn=turn, post=post)
        self._go(Trigger.SPEAK)

    def playback_dir(self) -> Path:
        return self.v.playback_dir / self.call.uuid[:2]

    def _esl(self, ev: EslEvent) -> None:
        name = ev.headers.get("Event-Name", "")
        if self.handle is not None:
            self.handle.on_event(name, ev.headers)
            self._observe_latency()
        if name == "DTMF":
            self._dtmf(ev.headers.get("DTMF-Digit", ""))
        elif ev.headers.get("Event-Subclass", "").startswith("mod_audio_fork::"):
            self.log.info("conversation.fork_event", subclass=ev.headers["Event-Subclass"],
                          body=(ev.body or "")[:200])
        if self.handle is not None and self.handle.done and self.call.state in (
                CallState.SPEAKING, CallState.ANSWERED) and not self.handle.interrupted:
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
        turn = self.speaking_turn
        if turn is not None and turn.index not in self.latency_done:
            latency = turn.turn_latency()
            if latency is not None:
                self.latency_done.add(turn.index)
                self.v.metrics.turn_latency.labels(route=self.call.route_label).observe(latency)
                self.v.store.add_turn(self.record, TurnRecord.from_timeline(turn, self.origin))
                self.log.info("conversation.turn", index=turn.index,
                              latency_ms=round(latency * 1000), hops_ms={
                                  k: round(s * 1000) for k, s in turn.hops().items()})

    def _dtmf(self, digit: str) -> None:
        if not digit:
            return
        if self._bot() is Bot.SPEAKING:
            self._judge(Observation(Bot.SPEAKING, Signal.DTMF, self._interruptible()))
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
            self._turn_input(Dtmf(digits), None)
        else:
            self._turn_input(Dtmf(digit), None)

    def _reply_played(self) -> None:
        """The reply finished playing: run the terminal action, or listen again."""
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
        self._go(Trigger.LISTEN)
        if self.listener is not None:
            self.listener.arm_no_input()

    def _go(self, trigger: Trigger) -> None:
        if self.call.machine.can(trigger):
            self.call.transition(trigger)

    def _with(self, **changes: Any) -> CallRecord:
        import dataclasses

        return dataclasses.replace(self.record, updated_at=time.time(), **changes)


def _post_webhook(hook: Webhook, call_uuid: str, log: Any) -> None:
    """POST the webhook's payload as JSON; give up after its deadline. Never raises."""
    body = json.dumps({"call_uuid": call_uuid, **hook.payload}).encode()
    req = urllib.request.Request(hook.url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with gevent.Timeout(hook.deadline_ms / 1000), \
                urllib.request.urlopen(req, timeout=hook.deadline_ms / 1000) as resp:
            resp.read(4096)
        log.info("conversation.webhook", status=resp.status)
    except (Exception, gevent.Timeout) as e:
        log.warning("conversation.webhook_failed", error=repr(e)[:200])
